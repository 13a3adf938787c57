"""`fastmlp.testing` catches a wrong step after a ReLU kink: errors injected into a backend at a later step.

Each step of `backend_differences` starts both backends from the same state and allows a kink's
effect for that step alone. Before, an entry a kink had once reached kept an allowance of Adam's
largest step (SGD: lr times the kink's gradient change) for the rest of the run, and a kink in
layer 2 reaches most of W0 through |W|^T. On these data (a kink in layer 2 at step 1, reaching
most of W0, asserted by each test) that helper let the W0 error and the missing decay below pass
all five steps; it caught the other two at step 3. Here each must be reported at exactly the
step it was injected at, INJECT_AT.

The wrong backends wrap the numpy backend and go wrong only on the batch of step INJECT_AT (in
both the step-by-step comparison and the free run), so every step before it is a control: the
report must say nothing about it.

The single pass's gradients (`GradientChanged`) are allowed their float32 rounding as the steps are,
and a gradient 0.1 % off is still reported.
"""

import numpy as np
import pytest

from fastmlp import MLP, get_backend
from fastmlp.optim import AdamMoments, Velocity
from fastmlp.testing import backend_differences, kink_allowance

pytestmark = pytest.mark.equivalence

NumpyBackend = type(get_backend("numpy"))
INJECT_AT = 3
STEPS = INJECT_AT + 2
BATCH_SIZE = 32
SEED = 0


def data():
    """128 MNIST-shaped rows on which the first steps meet kinks (asserted by `kinks_before_injection`)."""
    rng = np.random.default_rng(0)
    X, y = rng.random((128, 784), dtype=np.float32), rng.integers(0, 10, 128)
    return MLP([784, 128, 64, 10], seed=0), X, y


def batches(X, steps):
    """The batches `backend_differences` draws (its docstring gives the rule)."""
    rng = np.random.default_rng(SEED)
    return [rng.choice(len(X), size=min(BATCH_SIZE, len(X)), replace=False) for _ in range(steps)]


def kinks_before_injection(model, X, y, lr, **options):
    """{step: entries of W0 the kink allowance reaches} for the steps before INJECT_AT, along the
    trajectory `backend_differences` compares from (the first backend's, here numpy's)."""
    model = model.copy()
    if options.get("optimizer", "sgd") == "sgd":
        state = {"velocity": Velocity(model) if options.get("momentum") else None}
    else:
        state = {"moments": AdamMoments(model)}
    reached = {}
    for step, batch in enumerate(batches(X, INJECT_AT - 1), start=1):
        dW, _ = kink_allowance(model, X[batch], y[batch])
        reached[step] = int(np.count_nonzero(dW[0]))
        get_backend("numpy").sgd_step(model, X[batch], y[batch], lr, **state, **options)
    return reached


class WrongAtOneStep(NumpyBackend):
    """The numpy backend, except on one batch (that of step INJECT_AT), where `wrong_step` runs instead."""

    name = "injected"

    def __init__(self, X):
        super().__init__()
        self.batch = X[batches(X, INJECT_AT)[-1]]

    def _sgd_step(self, model, X, y, lr, **options):
        if X.shape == self.batch.shape and np.array_equal(X, self.batch):
            return self.wrong_step(model, X, y, lr, **options)
        return self.right_step(model, X, y, lr, **options)

    def right_step(self, model, X, y, lr, **options):
        return NumpyBackend._sgd_step(self, model, X, y, lr, **options)


class WrongW0Update(WrongAtOneStep):
    """W0's gradient 0.03 % too large."""

    def wrong_step(self, model, X, y, lr, **options):
        true_grads = self._loss_and_grads

        def scaled(model, X, y):
            loss, dW, db = true_grads(model, X, y)
            dW[0] = dW[0] * np.float32(1.0003)
            return loss, dW, db

        self._loss_and_grads = scaled
        try:
            return self.right_step(model, X, y, lr, **options)
        finally:
            del self._loss_and_grads


class BiasCorrectionOffByOne(WrongAtOneStep):
    """Adam's bias correction of step t computed with t - 1."""

    def wrong_step(self, model, X, y, lr, moments, **options):
        moments.step -= 1
        try:
            return self.right_step(model, X, y, lr, moments=moments, **options)
        finally:
            moments.step += 1


class MomentumSignWrong(WrongAtOneStep):
    """v = -momentum * v - lr * g instead of momentum * v - lr * g."""

    def wrong_step(self, model, X, y, lr, velocity, **options):
        for v in velocity.weights + velocity.biases:
            v *= -1
        return self.right_step(model, X, y, lr, velocity=velocity, **options)


class NoDecayOnLayer1(WrongAtOneStep):
    """AdamW's decoupled weight decay skipped on layer 1 (W1 -= lr * weight_decay * W1 left out)."""

    def wrong_step(self, model, X, y, lr, weight_decay, **options):
        W1 = model.weights[1].copy()
        loss = self.right_step(model, X, y, lr, weight_decay=weight_decay, **options)
        model.weights[1] += np.float32(lr) * np.float32(weight_decay) * W1
        return loss


INJECTED = {
    "W0 update 0.03 % off": (WrongW0Update, {"lr": 0.05, "momentum": 0.9}, "weights[0]"),
    "bias correction off by one step": (BiasCorrectionOffByOne, {"lr": 1e-3, "optimizer": "adam"}, "weights["),
    "momentum of the wrong sign": (MomentumSignWrong, {"lr": 0.05, "momentum": 0.9}, "velocity.weights["),
    "no weight decay on layer 1": (NoDecayOnLayer1, {"lr": 1e-3, "optimizer": "adamw", "weight_decay": 1e-2},
                                   "weights[1]"),
}


def steps_reported(report):
    """The step numbers of the step-by-step comparisons that failed ("step N ..." lines)."""
    return sorted({int(line.split()[1]) for line in report if line.startswith("step ")})


@pytest.mark.parametrize("error", INJECTED)
def test_an_error_injected_after_a_kink_is_caught_at_its_step(error):
    wrong, options, quantity = INJECTED[error]
    model, X, y = data()
    reached = kinks_before_injection(model, X, y, **options)
    # The premise: a kink before the injected step, reaching most of W0 (a kink in layer 2).
    assert max(reached.values()) > model.weights[0].size // 2, reached

    report, _ = backend_differences(model, X, y, backends=("numpy", NumpyBackend()), steps=STEPS,
                                    batch_size=BATCH_SIZE, seed=SEED, **options)
    assert report == []  # the control: the same run without the error passes

    report, _ = backend_differences(model, X, y, backends=("numpy", wrong(X)), steps=STEPS, batch_size=BATCH_SIZE,
                                    seed=SEED, **options)
    caught_at = steps_reported(report)
    print(f"{error}: injected at step {INJECT_AT}, caught at step {caught_at[0] if caught_at else None}")
    assert caught_at == [INJECT_AT], report
    assert any(line.startswith(f"step {INJECT_AT} {quantity}") for line in report), report


def test_adams_step_count_is_compared():
    class NoCount(NumpyBackend):  # forgets to count the step
        name = "uncounted"

        def _sgd_step(self, model, X, y, lr, moments, **options):
            loss = super()._sgd_step(model, X, y, lr, moments=moments, **options)
            moments.step -= 1
            return loss

    model, X, y = data()
    report, _ = backend_differences(model, X[:16], y[:16], backends=("numpy", NoCount()), steps=1, lr=1e-3,
                                    optimizer="adam")
    assert "step 1 Adam's step count: numpy 1, uncounted 0" in report


class GradientChanged(NumpyBackend):
    """The numpy backend with change(dW) applied to the gradients of `loss_and_grads` (the single pass)."""

    name = "changed"

    def __init__(self, change):
        super().__init__()
        self.change = change

    def _loss_and_grads(self, model, X, y):
        loss, dW, db = super()._loss_and_grads(model, X, y)
        self.change(dW)
        return loss, dW, db


def test_a_gradient_may_differ_by_the_rounding_of_p_times_a_large_activation():
    # A generated net on which OpenBLAS and the AVX2 tiles gave dW[1] 1.3e-6 apart (over atol): the true class's
    # p is 0.99999946 and the one hidden activation 21.5, so dW[1] = 21.5 (p - 1) carries 21.5 times p's rounding.
    rng = np.random.default_rng(0)
    model = MLP([223, 1, 14], seed=0)
    X, y = rng.standard_normal((1, 223), dtype=np.float32), rng.integers(0, 14, 1)
    hidden = float(np.maximum(X @ model.weights[0] + model.biases[0], 0)[0, 0])
    error = hidden * 2 * 2.0**-24  # two ulps of a float32 just below 1, times the activation
    _, dW, _ = get_backend("numpy").loss_and_grads(model, X, y)
    assert error > 1e-6 + 1e-5 * np.abs(dW[1]).max()  # the premise: past the default atol + rtol alone

    def shifted(dW):
        dW[1][0, y[0]] += np.float32(error)

    report, _ = backend_differences(model, X, y, backends=("numpy", GradientChanged(shifted)), steps=0)
    assert report == []


def test_a_gradient_a_tenth_of_a_percent_off_is_reported():
    model, X, y = data()
    report, _ = backend_differences(model, X[:32], y[:32], backends=("numpy", NumpyBackend()), steps=0)
    assert report == []  # the control

    def scaled(dW):
        dW[0] *= np.float32(1.001)

    report, _ = backend_differences(model, X[:32], y[:32], backends=("numpy", GradientChanged(scaled)), steps=0)
    assert any(line.startswith("dW[0]: ") for line in report), report
