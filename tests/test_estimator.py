"""MLPClassifier follows scikit-learn's conventions, checked with scikit-learn itself and without it."""

import subprocess
import sys

import numpy as np
import pytest

from fastmlp import MLPClassifier
from fastmlp.estimator import NotFittedError

sklearn = pytest.importorskip("sklearn")  # in the dev extra, so CI runs these


def blobs(n=240, seed=0, labels=("cat", "dog", "emu")):
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 3, (len(labels), 6))
    index = rng.integers(0, len(labels), n)
    return centres[index] + rng.normal(size=(n, 6)), np.asarray(labels)[index]


def small(**params):
    return MLPClassifier((16,), **{"backend": "numpy", "max_iter": 5, "random_state": 0, **params})


def test_fit_returns_self_and_learns_arbitrary_labels():
    X, y = blobs()
    clf = small()
    assert clf.fit(X, y) is clf
    assert clf.classes_.tolist() == ["cat", "dog", "emu"] and clf.n_features_in_ == 6
    assert set(clf.predict(X)) <= set(clf.classes_)
    assert clf.score(X, y) > 0.9
    assert clf.n_iter_ == 5 and len(clf.loss_curve_) == 5 and clf.loss_curve_[-1] < clf.loss_curve_[0]
    proba = clf.predict_proba(X)
    assert proba.shape == (len(X), 3)
    np.testing.assert_allclose(proba.sum(axis=1), 1, rtol=1e-5)
    np.testing.assert_array_equal(clf.classes_[proba.argmax(axis=1)], clf.predict(X))


def test_momentum_options_reach_the_trainer():
    X, y = blobs()
    clf = small(momentum=0.9, nesterov=True, weight_decay=1e-4, schedule="cosine", learning_rate_init=0.02).fit(X, y)
    assert clf._trainer.velocity is not None and clf._trainer.history[-1].lr < 0.02
    assert clf.score(X, y) > 0.9


def test_numeric_labels_keep_their_values_and_dtype():
    X, y = blobs(labels=(-1, 7))
    clf = small().fit(X, y)
    assert clf.classes_.tolist() == [-1, 7] and clf.predict(X).dtype == y.dtype


def test_same_random_state_gives_the_same_model_and_refit_starts_over():
    X, y = blobs()
    a, b = small().fit(X, y), small().fit(X, y)
    np.testing.assert_array_equal(a.predict_proba(X), b.predict_proba(X))
    a.fit(X, y)
    np.testing.assert_array_equal(a.predict_proba(X), b.predict_proba(X))
    assert a.n_iter_ == 5


def test_both_backends_agree_on_the_same_recipe():
    X, y = blobs()
    p = [small(backend=name).fit(X, y).predict_proba(X) for name in ("numpy", "numba")]
    np.testing.assert_allclose(p[0], p[1], atol=1e-3)


def test_partial_fit_needs_classes_first_then_continues_one_epoch_at_a_time():
    X, y = blobs()
    clf = small()
    with pytest.raises(ValueError, match="classes must be given on the first call"):
        clf.partial_fit(X, y)
    assert clf.partial_fit(X[:50], y[:50], classes=["emu", "cat", "dog"]) is clf
    assert clf.classes_.tolist() == ["cat", "dog", "emu"]
    for _ in range(4):
        clf.partial_fit(X, y)
    assert clf.n_iter_ == 5 and clf.score(X, y) > 0.9
    with pytest.raises(ValueError, match="labels not among classes_"):
        clf.partial_fit(X[:2], ["cat", "yak"])
    with pytest.raises(ValueError, match="differ from those of the first call"):
        clf.partial_fit(X, y, classes=["cat", "dog"])


def test_get_params_follow_init_and_set_params_returns_self():
    clf = MLPClassifier((8, 4), learning_rate_init=0.05)
    params = clf.get_params()
    assert params["hidden_layer_sizes"] == (8, 4) and params["learning_rate_init"] == 0.05
    assert set(params) == {"hidden_layer_sizes", "backend", "learning_rate_init", "batch_size", "max_iter",
                           "random_state", "momentum", "nesterov", "weight_decay", "schedule", "init", "verbose"}
    assert clf.set_params(max_iter=3, backend="numpy") is clf and clf.max_iter == 3
    with pytest.raises(ValueError, match="invalid parameter 'epochs'"):
        clf.set_params(epochs=3)
    assert repr(clf) == "MLPClassifier(backend='numpy', hidden_layer_sizes=(8, 4), learning_rate_init=0.05, max_iter=3)"


def test_sklearn_clone_copies_params_not_fitted_state():
    from sklearn.base import clone, is_classifier

    X, y = blobs()
    clf = small(batch_size=8).fit(X, y)
    twin = clone(clf)
    assert twin.get_params() == clf.get_params() and not hasattr(twin, "classes_")
    assert is_classifier(twin)


def test_sklearn_cross_val_score_and_grid_search_run_it():
    from sklearn.model_selection import GridSearchCV, cross_val_score

    X, y = blobs(n=300)
    scores = cross_val_score(small(), X, y, cv=3)
    assert scores.shape == (3,) and scores.min() > 0.85
    search = GridSearchCV(small(), {"learning_rate_init": [0.01, 0.1]}, cv=2).fit(X, y)
    assert search.best_params_["learning_rate_init"] in (0.01, 0.1)


@pytest.mark.parametrize(
    "params, match",
    [
        ({"random_state": -1}, "random_state must be None or an int >= 0"),
        ({"learning_rate_init": 0}, "lr must be finite and > 0"),
        ({"batch_size": 0}, "batch_size must be >= 1"),
        ({"hidden_layer_sizes": (0,)}, r"layer_sizes\[1\] must be an int >= 1"),
        ({"momentum": 1.0}, r"momentum must be in \[0, 1\)"),
        ({"schedule": "exp"}, "schedule must be one of"),
    ],
)
def test_bad_params_are_refused_at_fit(params, match):
    X, y = blobs(n=20)
    clf = MLPClassifier(**params)  # __init__ stores, fit validates: the scikit-learn convention
    with pytest.raises(ValueError, match=match):
        clf.fit(X, y)


def test_bad_data_is_refused_with_clear_errors():
    X, y = blobs(n=20)
    with pytest.raises(ValueError, match="at least 2 classes"):
        small().fit(X, np.zeros(20))
    with pytest.raises(ValueError, match="y has 19 labels but X has 20"):
        small().fit(X, y[:-1])
    with pytest.raises(ValueError, match="X must be 2-D"):
        small().fit(X[0], y)
    with pytest.raises(NotFittedError, match="not fitted yet"):
        small().predict(X)
    with pytest.raises(ValueError, match="X must have 6 columns"):
        small().fit(X, y).predict(X[:, :3])


def test_fastmlp_itself_never_imports_sklearn():
    code = ("import sys, numpy as np, fastmlp; X = np.random.default_rng(0).random((20, 3)); "
            "fastmlp.MLPClassifier((4,), backend='numpy', max_iter=1).fit(X, X[:, 0] > 0.5).predict(X); "
            "print('sklearn' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"
