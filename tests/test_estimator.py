"""MLPClassifier follows scikit-learn's conventions, checked with scikit-learn itself and without it."""

import subprocess
import sys

import numpy as np
import pytest

import fastmlp
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
                           "random_state", "momentum", "nesterov", "weight_decay", "schedule", "init", "verbose",
                           "solver", "beta_1", "beta_2", "epsilon"}
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
        ({"learning_rate_init": 0}, "learning_rate_init must be finite and > 0"),
        ({"batch_size": 0}, "batch_size must be >= 1"),
        ({"max_iter": 0}, "max_iter must be >= 1"),
        ({"hidden_layer_sizes": (0,)}, r"hidden_layer_sizes\[0\] must be an int >= 1"),
        ({"hidden_layer_sizes": (16, -2)}, r"hidden_layer_sizes\[1\] must be an int >= 1"),
        ({"backend": "cuda"}, "MLPClassifier: unknown backend 'cuda'"),
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
    with pytest.raises(ValueError, match="at least 2 classes; y holds 1 class"):
        small().fit(X, np.zeros(20))
    with pytest.raises(ValueError, match="y has 19 labels but X has 20"):
        small().fit(X, y[:-1])
    with pytest.raises(ValueError, match="Reshape your data"):
        small().fit(X[0], y)
    with pytest.raises(NotFittedError, match="not fitted yet"):
        small().predict(X)
    with pytest.raises(ValueError, match="X has 3 features, but MLPClassifier is expecting 6 features as input"):
        small().fit(X, y).predict(X[:, :3])
    with pytest.raises(ValueError, match="requires y to be passed, but the target y is None"):
        small().fit(X, None)
    with pytest.raises(ValueError, match="Unknown label type: continuous"):
        small().fit(X, np.linspace(0, 1, 20))
    with pytest.raises(ValueError, match=r"0 feature\(s\) \(shape=\(20, 0\)\)"):
        small().fit(X[:, :0], y)
    with pytest.raises(TypeError, match="sparse input is not supported"):
        small().fit(__import__("scipy.sparse").sparse.csr_matrix(X), y)


def test_fastmlp_itself_never_imports_sklearn():
    code = ("import sys, numpy as np, fastmlp; X = np.random.default_rng(0).random((20, 3)); "
            "fastmlp.MLPClassifier((4,), backend='numpy', max_iter=1).fit(X, X[:, 0] > 0.5).predict(X); "
            "print('sklearn' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"


def test_sklearn_not_fitted_error_is_raised_once_sklearn_is_imported():
    from sklearn.exceptions import NotFittedError as SklearnNotFittedError

    with pytest.raises(SklearnNotFittedError) as info:
        small().predict_proba(np.zeros((2, 6)))
    import pickle

    copy = pickle.loads(pickle.dumps(info.value))  # as a worker process would send it back
    assert type(copy) is NotFittedError and copy.args == info.value.args


def test_y_column_vector_is_raveled_with_a_data_conversion_warning():
    from sklearn.exceptions import DataConversionWarning

    X, y = blobs(n=60)
    with pytest.warns(DataConversionWarning, match="column-vector y"):
        clf = small().fit(X, y[:, None])
    np.testing.assert_array_equal(clf.predict(X), small().fit(X, y).predict(X))


@pytest.mark.parametrize("backend", ["numpy", "numba"])
def test_a_diverged_fit_or_partial_fit_leaves_the_estimator_as_it_was(backend):
    X, y = blobs(n=60)
    with np.errstate(all="ignore"):  # the huge learning rate overflows float32, as meant
        clf = small(backend=backend).fit(X, y)
        before = (clf.predict_proba(X), list(clf.loss_curve_), clf.n_iter_, clf.model_)
        with pytest.raises(fastmlp.TrainingDivergedError, match="smaller learning_rate_init"):
            clf.set_params(learning_rate_init=1e6).fit(X * 1e3, y)  # finite loss in epoch 1, NaN in epoch 2
        assert clf.model_ is before[3] and clf.loss_curve_ == before[1] and clf.n_iter_ == before[2]
        np.testing.assert_array_equal(clf.predict_proba(X), before[0])

        clf = small(backend=backend, learning_rate_init=1e6).partial_fit(X * 1e3, y, classes=["cat", "dog", "emu"])
        before = (clf.predict_proba(X), list(clf.loss_curve_), clf.n_iter_, clf._trainer.rng.bit_generator.state)
        with pytest.raises(fastmlp.TrainingDivergedError):
            clf.partial_fit(X * 1e3, y)
        assert clf.loss_curve_ == before[1] and clf.n_iter_ == before[2] == len(clf._trainer.history)
        assert clf._trainer.rng.bit_generator.state == before[3]
        np.testing.assert_array_equal(clf.predict_proba(X), before[0])
        with pytest.raises(fastmlp.TrainingDivergedError):
            fresh = small(backend=backend, learning_rate_init=1e6)
            fresh.fit(X * 1e3, y)
        assert not hasattr(fresh, "model_") and not hasattr(fresh, "n_iter_")


def test_dataframe_records_feature_names_and_refuses_reordered_or_renamed_columns():
    pd = pytest.importorskip("pandas")
    X, y = blobs(n=60)
    columns = [f"f{i}" for i in range(6)]
    frame = pd.DataFrame(X, columns=columns)
    clf = small().fit(frame, y)
    assert clf.feature_names_in_.tolist() == columns
    np.testing.assert_array_equal(clf.predict_proba(frame), clf.model_.predict_proba(X))
    with pytest.raises(ValueError, match="must be in the same order"):
        clf.predict(frame[columns[::-1]])
    with pytest.raises(ValueError, match="unseen at fit time"):
        clf.predict(frame.rename(columns={"f0": "g0"}))
    with pytest.warns(UserWarning, match="X does not have valid feature names"):
        clf.predict(X)
    assert not hasattr(small().fit(X, y), "feature_names_in_")


def test_numeric_object_and_nullable_integer_columns_are_converted():
    pd = pytest.importorskip("pandas")
    X, y = blobs(n=60)
    frame = pd.DataFrame({"a": pd.array(np.round(X[:, 0] * 10).astype(int), dtype="Int64"), "b": X[:, 1]})
    clf = small().fit(frame, y)
    assert clf.n_features_in_ == 2 and clf.predict(frame).shape == (60,)
    small().fit(X.astype(object), y)
    frame.loc[0, "a"] = pd.NA
    with pytest.raises(ValueError, match="NaN"):
        small().fit(frame, y)


# --- scikit-learn's conformance suite, and the round trips users rely on -----------------------

CHECK_PARAMS = {"hidden_layer_sizes": (8,), "max_iter": 3, "random_state": 0}


def _conformance_cases():
    import warnings

    from sklearn.utils.estimator_checks import parametrize_with_checks

    with warnings.catch_warnings():  # "does not inherit from BaseEstimator": deliberately (README)
        warnings.filterwarnings("ignore", "Estimator MLPClassifier does not inherit", UserWarning)
        return parametrize_with_checks([MLPClassifier(backend=backend, **CHECK_PARAMS)
                                        for backend in ("numpy", "numba")])


@_conformance_cases()
def test_sklearn_estimator_checks(estimator, check):
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # overflow in checks that feed huge values
        check(estimator)


BACKENDS = ["numpy", "numba"]


def fitted(backend, momentum=0.9):
    X, y = blobs(n=90)
    return small(backend=backend, momentum=momentum).fit(X, y), X, y


@pytest.mark.parametrize("backend", BACKENDS)
def test_pickle_and_deepcopy_keep_predictions_and_carry_no_runtime_state(backend):
    import copy
    import pickle

    clf, X, y = fitted(backend)
    expected = clf.predict_proba(X)
    for twin in (pickle.loads(pickle.dumps(clf)), copy.deepcopy(clf)):
        np.testing.assert_array_equal(twin.predict_proba(X), expected)
        assert twin._trainer.backend.name == backend
        twin.partial_fit(X, y)  # keeps training, on its own parameters
        assert twin.n_iter_ == clf.n_iter_ + 1
    np.testing.assert_array_equal(clf.predict_proba(X), expected)


def test_a_pinned_numba_backend_pickles_as_its_thread_setting():
    import pickle

    from fastmlp.backends.numba.backend import Backend

    backend = Backend(threads=1)
    backend.train_epoch(fastmlp.MLP([6, 4, 3], seed=0), blobs(n=20)[0].astype(np.float32), np.zeros(20, dtype=int),
                        batch_size=8, lr=0.1, rng=np.random.default_rng(0))
    assert backend._workspaces
    twin = pickle.loads(pickle.dumps(backend))
    assert type(twin) is Backend and twin.threads == 1 and not twin._workspaces
    assert twin._epoch_lock is not backend._epoch_lock
    assert pickle.loads(pickle.dumps(fastmlp.get_backend("numba"))) is fastmlp.get_backend("numba")


@pytest.mark.parametrize("backend", BACKENDS)
def test_joblib_load_with_mmap_predicts_on_read_only_weights(backend, tmp_path):
    joblib = pytest.importorskip("joblib")
    clf, X, y = fitted(backend)
    joblib.dump(clf, tmp_path / "clf.joblib")
    loaded = joblib.load(tmp_path / "clf.joblib", mmap_mode="r")
    assert not loaded.model_.weights[0].flags.writeable
    np.testing.assert_array_equal(loaded.predict_proba(X), clf.predict_proba(X))
    loaded.partial_fit(X, y)  # training again makes writable copies, the file is left alone
    assert loaded.model_.weights[0].flags.writeable and loaded.n_iter_ == clf.n_iter_ + 1
    np.testing.assert_array_equal(joblib.load(tmp_path / "clf.joblib").predict_proba(X), clf.predict_proba(X))


@pytest.mark.parametrize("backend", BACKENDS)
def test_cross_validate_and_grid_search_in_two_processes(backend):
    from sklearn.model_selection import GridSearchCV, cross_validate

    X, y = blobs(n=120)
    result = cross_validate(small(backend=backend), X, y, cv=2, n_jobs=2, return_estimator=True)
    assert result["test_score"].min() > 0.8
    for clf in result["estimator"]:
        assert clf.predict(X).shape == (120,) and clf._trainer.backend.name == backend
    search = GridSearchCV(small(backend=backend), {"learning_rate_init": [0.01, 0.1]}, cv=2, n_jobs=2).fit(X, y)
    assert search.best_estimator_.score(X, y) > 0.8
