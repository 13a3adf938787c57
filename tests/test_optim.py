"""Momentum, Nesterov, weight decay and learning-rate schedules: the formulas of fastmlp/optim.py."""

import math

import numpy as np
import pytest

from fastmlp import MLP, get_backend
from fastmlp.optim import LRSchedule, Velocity


def batch(seed=0, n=16):
    rng = np.random.default_rng(seed)
    return rng.random((n, 6), dtype=np.float32), rng.integers(0, 3, n)


def expected_steps(model, X, y, lr, steps, momentum, nesterov, weight_decay):
    """The optim.py formulas in float64 on gradients taken from the reference backend."""
    params = [p.astype(np.float64) for p in model.weights + model.biases]
    velocity = [np.zeros_like(p) for p in params]
    current = model.copy()
    L = len(model.weights)
    for _ in range(steps):
        _, dW, db = get_backend("numpy").loss_and_grads(current, X, y)
        for i, (p, v, g) in enumerate(zip(params, velocity, dW + db)):
            g = g + weight_decay * p if i < L else g
            if momentum:
                v *= momentum
                v -= lr * g
                p += momentum * v - lr * g if nesterov else v
            else:
                p -= lr * g
        current.weights = [p.astype(np.float32) for p in params[:L]]
        current.biases = [p.astype(np.float32) for p in params[L:]]
    return params


@pytest.mark.parametrize("momentum, nesterov, weight_decay",
                         [(0.0, False, 0.0), (0.0, False, 0.01), (0.9, False, 0.0), (0.9, True, 0.0),
                          (0.5, True, 0.05)])
def test_reference_step_follows_the_documented_formulas(momentum, nesterov, weight_decay):
    X, y = batch()
    model = MLP([6, 5, 3], seed=0)
    expected = expected_steps(model, X, y, 0.1, 3, momentum, nesterov, weight_decay)
    velocity = Velocity(model) if momentum else None
    for _ in range(3):
        get_backend("numpy").sgd_step(model, X, y, 0.1, momentum=momentum, nesterov=nesterov,
                                      weight_decay=weight_decay, velocity=velocity)
    for actual, want in zip(model.weights + model.biases, expected):
        np.testing.assert_allclose(actual, want, rtol=1e-4, atol=1e-6)


def test_momentum_keeps_moving_where_plain_sgd_stops():
    X, y = batch()
    plain, heavy = MLP([6, 5, 3], seed=0), MLP([6, 5, 3], seed=0)
    velocity = Velocity(heavy)
    backend = get_backend("numpy")
    for _ in range(3):  # displacements 1 + 1.9 + 2.71 steps' worth against 3
        backend.sgd_step(plain, X, y, 0.1)
        backend.sgd_step(heavy, X, y, 0.1, momentum=0.9, velocity=velocity)
    start = MLP([6, 5, 3], seed=0).weights[0]
    assert np.abs(heavy.weights[0] - start).sum() > 1.5 * np.abs(plain.weights[0] - start).sum()


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"momentum": 1.0}, ValueError, r"momentum must be in \[0, 1\)"),
        ({"momentum": -0.1}, ValueError, r"momentum must be in \[0, 1\)"),
        ({"momentum": "0.9"}, TypeError, "momentum must be a finite number"),
        ({"momentum": 0.9}, TypeError, r"momentum > 0 needs velocity=fastmlp.optim.Velocity\(model\)"),
        ({"momentum": 0.9, "velocity": Velocity(MLP([6, 4, 3]))}, ValueError, "velocity was made for layer sizes"),
        ({"nesterov": True}, ValueError, "nesterov=True needs a momentum > 0"),
        ({"nesterov": 1}, TypeError, "nesterov must be True or False"),
        ({"weight_decay": -1e-4}, ValueError, "weight_decay must be >= 0"),
        ({"weight_decay": float("nan")}, TypeError, "weight_decay must be a finite number"),
    ],
)
@pytest.mark.parametrize("backend", ["numpy", "numba"])
def test_bad_sgd_options_are_refused_by_every_backend(backend, kwargs, error, match):
    X, y = batch()
    model = MLP([6, 5, 3], seed=0)
    with pytest.raises(error, match=match):
        get_backend(backend).sgd_step(model, X, y, 0.1, **kwargs)
    with pytest.raises(error, match=match):
        get_backend(backend).train_epoch(model, X, y, batch_size=4, lr=0.1, rng=np.random.default_rng(0), **kwargs)


def test_step_schedule_divides_by_gamma_every_step_size_epochs_across_fit_calls():
    schedule = LRSchedule("step", step_size=2, gamma=0.5)
    assert [schedule.lr(0.4, e, 1, 3) for e in (1, 2, 3)] + [schedule.lr(0.4, e, 4, 6) for e in (4, 5)] == \
        pytest.approx([0.4, 0.4, 0.2, 0.2, 0.1])


def test_cosine_schedule_starts_at_lr_decreases_and_stays_positive():
    schedule = LRSchedule("cosine")
    rates = [schedule.lr(0.1, e, 1, 10) for e in range(1, 11)]
    assert rates[0] == 0.1 and all(a > b for a, b in zip(rates, rates[1:])) and rates[-1] > 0
    assert rates[5] == pytest.approx(0.05)
    assert schedule.lr(0.1, 11, 11, 12) == 0.1  # a second fit call restarts the cycle
    assert LRSchedule(None).lr(0.1, 7, 1, 10) == LRSchedule("none").lr(0.1, 7, 1, 10) == 0.1
    assert math.isclose(rates[-1], 0.1 * 0.5 * (1 + math.cos(math.pi * 0.9)))


@pytest.mark.parametrize(
    "args, kwargs, match",
    [(("linear",), {}, "schedule must be one of"), (("step",), {"step_size": 0}, "step_size must be >= 1"),
     (("step",), {"gamma": 1.5}, r"gamma must be in \(0, 1\]"), (("step",), {"gamma": 0}, r"gamma must be in")],
)
def test_bad_schedules_are_refused(args, kwargs, match):
    with pytest.raises(ValueError, match=match):
        LRSchedule(*args, **kwargs)
