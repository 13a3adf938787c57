"""MLPClassifier's solver="adam": scikit-learn's names and defaults, checked as the other options are (at fit)."""

import numpy as np
import pytest

from fastmlp import MLPClassifier


def blobs(n=240, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 3, (3, 6))
    index = rng.integers(0, 3, n)
    return centres[index] + rng.normal(size=(n, 6)), index


def test_the_default_solver_stays_sgd_and_the_adam_params_carry_scikit_learns_defaults():
    params = MLPClassifier().get_params()
    assert (params["solver"], params["beta_1"], params["beta_2"], params["epsilon"]) == ("sgd", 0.9, 0.999, 1e-8)
    X, y = blobs()
    clf = MLPClassifier((16,), backend="numpy", max_iter=2, random_state=0).fit(X, y)
    assert clf._trainer.optimizer == "sgd" and clf._trainer.moments is None


@pytest.mark.parametrize("backend", ["numpy", "numba"])
def test_solver_adam_reaches_the_trainer_and_learns(backend):
    X, y = blobs()
    clf = MLPClassifier((16,), backend=backend, solver="adam", learning_rate_init=1e-2, beta_1=0.8, beta_2=0.99,
                        epsilon=1e-7, max_iter=5, random_state=0).fit(X, y)
    trainer = clf._trainer
    assert trainer.optimizer == "adam" and trainer.velocity is None
    assert trainer.moments.step == 5 * -(-len(X) // 32)  # one Adam step per batch of 32
    assert trainer._sgd["betas"] == (0.8, 0.99) and trainer._sgd["eps"] == 1e-7
    assert clf.score(X, y) > 0.9


@pytest.mark.parametrize(
    "params, match",
    [
        ({"solver": "lbfgs"}, "solver must be 'sgd' or 'adam', got 'lbfgs'"),
        ({"solver": "adam", "beta_1": 1.0}, r"beta_1 must be in \[0, 1\)"),
        ({"solver": "adam", "beta_2": -0.1}, r"beta_2 must be in \[0, 1\)"),
        ({"solver": "adam", "epsilon": 0.0}, "epsilon must be > 0"),
        ({"solver": "adam", "momentum": 0.9}, "momentum and nesterov are options of solver='sgd'"),
        ({"solver": "adam", "nesterov": True}, "momentum and nesterov are options of solver='sgd'"),
    ],
)
def test_bad_adam_params_are_refused_at_fit_by_their_names(params, match):
    X, y = blobs(n=20)
    clf = MLPClassifier(**params)
    with pytest.raises(ValueError, match=match):
        clf.fit(X, y)
