"""Equivalence checks between backends, for fastmlp's tests and for other projects' CI.

Differences are measured relative to the largest magnitude of the compared quantity:
    error(a, b) = max|a - b| / max(max|a|, max|b|, floor)
so that a gradient whose entries span many orders of magnitude is judged by its scale, as
float32 rounding is. A quantity passes if max|a - b| <= atol + rtol * max(max|a|, max|b|).
The atol term is for results that cancel: the output gradient p - 1 of a confident prediction
(p near 1) keeps the ~1e-7 absolute rounding of p, and a bias gradient, a column sum of such
terms, keeps theirs; either can be far smaller than the terms it came from, so its rounding is
large relative to itself (seen: 6e-5 relative on a 2-class batch of one).
Default float32 tolerances: rtol 1e-5 and atol 1e-6 for one forward/backward pass; rtol 1e-4
along a trajectory of SGD steps (rounding differences grow slowly with the steps). Losses are
judged relative to max(|loss|, 1).

ReLU kinks. A hidden pre-activation within rounding of 0 takes different branches in two correct
float32 backends (two sgemm implementations sum in different orders; seen: 1 of 32,768 units of a
512-row MNIST-shaped batch), and that unit's gradient then differs by far more than rounding.
Such units are found from a float64 forward pass of the first backend's model: |z| <= KINK_RTOL *
(|A| @ |W| + |b|), the size of the rounding of that sum. Each comparison of gradients (and of
parameters along a trajectory) allows, entry by entry, what flipping exactly those units could
change, to first order (`kink_allowance`); with no unit that close to 0 the allowance is zero and
the tolerances above apply unchanged. Trajectories still part beyond that over many steps, so
compare them on well-conditioned problems (inputs in [0, 1], a few dozen steps) and use steps=0
for arbitrary generated nets.

Adam. Its step lr * m^ / (sqrt(s^) + eps) divides by the gradient's own size, so a rounding
difference δg of the gradient moves it by about lr * δg / (sqrt(s^) + eps), not lr * δg as in
SGD: harmless where the gradient is large, but an entry whose gradient is within rounding of 0
(a sum that cancels, seen: -9.6e-8 from terms of 1e-2 on the 784-128-64-10 net's first step)
gets a step of either sign, up to lr. The trajectory of Adam therefore allows, entry by entry,
lr * 4 * E / (sqrt(s^) + eps) per step, where E is the rounding of the gradient
(`gradient_rounding`: KINK_RTOL times the sum of the magnitudes it was summed from) carried
through the first moment as the error itself is, E = beta1 E + (1 - beta1) δg, bias-corrected;
4 covers that error reaching the step through both m^ and sqrt(s^). Each step's allowance is
capped at twice the largest step Adam takes, lr * max(1, (1 - beta1) / sqrt(1 - beta2)) (Kingma &
Ba, section 2.1), which is also what an entry a kink flip reached gets from then on. For an entry
with a gradient well above its rounding the allowance is ~1e-6 lr per step: the tolerances above
hold unchanged for it.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from .backends import get_backend
from .backends.base import BackendBase
from .inputs import (
    Features,
    Seed,
    check_features,
    check_labels,
    check_model,
    check_positive_float,
    check_positive_int,
    make_rng,
)
from .model import MLP
from .optim import ADAM_OPTIMIZERS, AdamMoments, Velocity, check_adam_options, check_optimizer

BackendPair = Sequence["str | BackendBase"]

DEFAULT_RTOL = 1e-5
DEFAULT_ATOL = 1e-6
DEFAULT_TRAJECTORY_RTOL = 1e-4
# A loss is a mean of log-sum-exp terms of order 1, rounded to ~1e-7 absolute whatever its value:
# a loss near 0 (a confident, correct net) is judged against 1, not against itself.
LOSS_SCALE_FLOOR = 1.0
# A float32 sum of a few hundred products is rounded by up to ~1e-5 of the sum of their magnitudes.
KINK_RTOL = 1e-5


def worst_difference(a: npt.ArrayLike, b: npt.ArrayLike) -> tuple[float, float, tuple[int, ...] | None]:
    """(max|a - b|, max(max|a|, max|b|), index of the worst entry); inf and None if shapes differ."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        return np.inf, np.inf, None
    if a.size == 0:
        return 0.0, 0.0, None
    diff = np.abs(a - b)
    worst = np.unravel_index(np.argmax(diff), diff.shape)
    scale = max(np.abs(a).max(), np.abs(b).max())
    return float(diff[worst]), float(scale), tuple(int(i) for i in worst)


def scaled_error(a: npt.ArrayLike, b: npt.ArrayLike, floor: float = 1e-12) -> tuple[float, tuple[int, ...] | None]:
    """max|a - b| relative to the largest magnitude in a or b (at least `floor`), and where it is."""
    diff, scale, where = worst_difference(a, b)
    return diff / max(scale, floor), where


def kink_allowance(model: MLP, X: npt.ArrayLike, y: npt.NDArray[np.integer[Any]]) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Per-entry bounds (dW list, db list) on how much the gradient of (X, y) can change if every
    ReLU unit within rounding of its kink (see the module doc) took the other branch; zeros if none."""
    params = [np.asarray(p, dtype=np.float64) for p in model.weights], [np.asarray(b, dtype=np.float64) for b in model.biases]
    weights, biases = params
    acts, pre = [np.asarray(X, dtype=np.float64)], []
    for l, (W, b) in enumerate(zip(weights, biases)):
        z = acts[-1] @ W + b
        pre.append(z)
        if l < len(weights) - 1:
            acts.append(np.maximum(z, 0.0))
    kinks = [np.abs(z) <= KINK_RTOL * (np.abs(a) @ np.abs(W) + np.abs(b)) for z, a, W, b in
             zip(pre[:-1], acts[:-1], weights[:-1], biases[:-1])]
    dW = [np.zeros_like(W) for W in weights]
    db = [np.zeros_like(b) for b in biases]
    if not any(k.any() for k in kinks):
        return dW, db
    z = pre[-1] - pre[-1].max(axis=1, keepdims=True)
    probs = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
    probs[np.arange(len(y)), y] -= 1
    dZ, delta = probs / len(y), np.zeros_like(probs)  # the gradient, and the bound on its change
    for l in range(len(weights) - 1, -1, -1):
        dW[l] = np.abs(acts[l]).T @ delta
        db[l] = delta.sum(axis=0)
        if l == 0:
            break
        dA, delta_A = dZ @ weights[l].T, delta @ np.abs(weights[l]).T
        on = acts[l] > 0
        dZ = dA * on
        delta = delta_A * (on | kinks[l - 1]) + np.abs(dA) * kinks[l - 1]
    return dW, db


def gradient_rounding(model: MLP, X: Any, y: Any) -> tuple[list[Any], list[Any]]:
    """Per-entry bounds (dW list, db list) on the float32 rounding of the gradient of (X, y): KINK_RTOL times
    the sums of the magnitudes each entry is summed from, through the forward and the backward pass."""
    weights = [np.asarray(W, dtype=np.float64) for W in model.weights]
    biases = [np.asarray(b, dtype=np.float64) for b in model.biases]
    acts = [np.asarray(X, dtype=np.float64)]
    sizes = [np.abs(acts[0])]  # what each activation is summed from: |A_l-1| @ |W_l| + |b_l| where active
    for W, b in zip(weights[:-1], biases[:-1]):
        acts.append(np.maximum(acts[-1] @ W + b, 0.0))
        sizes.append((np.abs(acts[-2]) @ np.abs(W) + np.abs(b)) * (acts[-1] > 0))
    z = acts[-1] @ weights[-1] + biases[-1]
    z -= z.max(axis=1, keepdims=True)
    probs = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
    magnitude = (probs + np.eye(probs.shape[1])[y]) / len(y)  # |p| + |onehot|, what p - onehot is made of
    dW: list[Any] = [None] * len(weights)
    db: list[Any] = [None] * len(biases)
    for l in range(len(weights) - 1, -1, -1):
        dW[l] = KINK_RTOL * (sizes[l].T @ magnitude)
        db[l] = KINK_RTOL * magnitude.sum(axis=0)
        if l > 0:
            magnitude = (magnitude @ np.abs(weights[l]).T) * (acts[l] > 0)
    return dW, db


def _compare(report: list[str], what: str, names: Sequence[Any], a: Any, b: Any, rtol: float, atol: float,
             scale_floor: float = 0.0, allowance: Any = None) -> float:
    diff, scale, where = worst_difference(a, b)
    scale = max(scale, scale_floor)
    if allowance is not None and where is not None and np.any(allowance):
        excess = np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64)) - allowance
        where = tuple(int(i) for i in np.unravel_index(np.argmax(excess), excess.shape))
        diff = max(float(excess[where]), 0.0)
    if not diff <= atol + rtol * scale:  # also catches NaN
        if where is None:
            report.append(f"{what}: shapes differ, {names[0]} {np.shape(a)} vs {names[1]} {np.shape(b)}")
        else:
            report.append(
                f"{what}: scaled difference {diff / max(scale, 1e-12):.3g} > {rtol:g} (+ atol {atol:g}) at "
                f"{list(where)} ({names[0]} {np.asarray(a)[where]:.8g}, {names[1]} {np.asarray(b)[where]:.8g})"
            )
    return diff / max(scale, 1e-12)


def backend_differences(model: MLP, X: Features, y: npt.ArrayLike, *, backends: BackendPair = ("numpy", "numba"),
                        steps: int = 20, lr: float = 0.1, batch_size: int = 32, rtol: float = DEFAULT_RTOL,
                        atol: float = DEFAULT_ATOL, trajectory_rtol: float = DEFAULT_TRAJECTORY_RTOL, seed: Seed = 0,
                        momentum: float = 0.0, nesterov: bool = False,
                        weight_decay: float = 0.0, optimizer: str = "sgd", betas: tuple[float, float] = (0.9, 0.999),
                        eps: float = 1e-8) -> tuple[list[str], dict[str, float]]:
    """Compare two backends on (X, y) from `model`'s parameters, which are left unchanged.

    Returns (report lines for every quantity out of tolerance, {quantity: scaled error}).
    Compared: forward probabilities, loss, every gradient (on the whole of X), and the
    parameters after each of `steps` SGD steps taken from the same start on the same batches
    (batches of `batch_size` rows drawn with `numpy.random.default_rng(seed)`), with the given
    momentum, nesterov and weight_decay (each backend keeping its own velocity from zero), or
    with optimizer="adam" / "adamw" Adam's steps with betas, eps and weight_decay (each backend
    keeping its own moments from zero).
    """
    check_model(model)
    X = check_features(X, model.n_features)
    y = check_labels(y, len(X), model.n_classes)
    if isinstance(steps, bool) or not isinstance(steps, numbers.Integral) or steps < 0:
        raise ValueError(f"steps must be an integer >= 0, got {steps!r}")
    batch_size = check_positive_int(batch_size, "batch_size")
    for name, value in (("rtol", rtol), ("atol", atol), ("trajectory_rtol", trajectory_rtol)):
        if isinstance(value, bool) or not isinstance(value, numbers.Real) or not (math.isfinite(value) and value >= 0):
            raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
    if isinstance(backends, str) or len(backends) != 2:
        raise ValueError(f"backends must be a pair of backend names or backends, got {backends!r}")
    lr = check_positive_float(lr, "lr")
    adam = check_optimizer(optimizer) in ADAM_OPTIMIZERS
    betas, eps = check_adam_options(betas, eps)
    rng = make_rng(seed)
    names = tuple(backends)
    first, second = (get_backend(name) if isinstance(name, str) else name for name in names)
    report: list[str] = []
    errors: dict[str, float] = {}

    errors["forward"] = _compare(report, "forward", names, first.forward(model, X), second.forward(model, X), rtol, atol)
    loss_a, dW_a, db_a = first.loss_and_grads(model, X, y)
    loss_b, dW_b, db_b = second.loss_and_grads(model, X, y)
    errors["loss"] = _compare(report, "loss", names, loss_a, loss_b, rtol, atol, LOSS_SCALE_FLOOR)
    kink_dW, kink_db = kink_allowance(model, X, y)
    for i in range(len(dW_a)):
        errors[f"dW[{i}]"] = _compare(report, f"dW[{i}]", names, dW_a[i], dW_b[i], rtol, atol, allowance=kink_dW[i])
        errors[f"db[{i}]"] = _compare(report, f"db[{i}]", names, db_a[i], db_b[i], rtol, atol, allowance=kink_db[i])

    models = (model.copy(), model.copy())
    if adam:
        states = [{"moments": AdamMoments(m)} for m in models]
        sgd = {"optimizer": optimizer, "betas": betas, "eps": eps, "weight_decay": weight_decay}
    else:
        states = [{"velocity": Velocity(m) if momentum else None} for m in models]
        sgd = {"momentum": momentum, "nesterov": nesterov, "weight_decay": weight_decay}
    worst = 0.0
    # A kink flip in one step moves the parameters by lr times its gradient change, and momentum
    # carries that on: by at most (1 + momentum) / (1 - momentum) times as much in all.
    carry = lr * (1 + momentum) / (1 - momentum)
    adam_step_bound = 2 * lr * max(1.0, (1 - betas[0]) / math.sqrt(1 - betas[1]))
    allowed = {"weights": [np.zeros(W.shape) for W in model.weights], "biases": [np.zeros(b.shape) for b in model.biases]}
    touched = {"weights": [np.zeros(W.shape, bool) for W in model.weights],
               "biases": [np.zeros(b.shape, bool) for b in model.biases]}
    moment_error = {kind: [np.zeros(a.shape) for a in arrays] for kind, arrays in allowed.items()}
    for step in range(1, int(steps) + 1):
        batch = rng.choice(len(X), size=min(batch_size, len(X)), replace=False)
        kink_dW, kink_db = kink_allowance(models[0], X[batch], y[batch])
        rounding = dict(zip(("weights", "biases"), gradient_rounding(models[0], X[batch], y[batch]) if adam else ()))
        if not adam:
            for i in range(len(model.weights)):
                allowed["weights"][i] += carry * kink_dW[i]
                allowed["biases"][i] += carry * kink_db[i]
        losses = [backend.sgd_step(m, X[batch], y[batch], lr, **state, **sgd)
                  for backend, m, state in zip((first, second), models, states)]
        if adam:  # see the module doc; the second moments after the step are those it divided by
            second_moments = states[0]["moments"].second
            for i in range(len(model.weights)):
                for kind, kink in (("weights", kink_dW[i]), ("biases", kink_db[i])):
                    error = moment_error[kind][i]
                    error *= betas[0]
                    error += (1 - betas[0]) * rounding[kind][i]
                    s_hat = getattr(second_moments, kind)[i] / (1 - betas[1] ** step)
                    drift = 4 * lr * error / (1 - betas[0] ** step) / (np.sqrt(s_hat) + eps)
                    touched[kind][i] |= kink > 0
                    allowed[kind][i] += np.where(touched[kind][i], adam_step_bound,
                                                 np.minimum(drift, adam_step_bound))
        step_report: list[str] = []
        worst = max(worst, _compare(step_report, f"step {step} loss", names, losses[0], losses[1], trajectory_rtol,
                                    atol, LOSS_SCALE_FLOOR))
        for i in range(len(model.weights)):
            for kind in ("weights", "biases"):
                a, b = (getattr(m, kind)[i] for m in models)
                worst = max(worst, _compare(step_report, f"step {step} {kind}[{i}]", names, a, b, trajectory_rtol, atol,
                                            allowance=allowed[kind][i]))
        if step_report:
            report.extend(step_report)
            break  # later steps only repeat the divergence
    errors["trajectory"] = worst
    return report, errors


def assert_backends_equivalent(model: MLP, X: Features, y: npt.ArrayLike, *,
                               backends: BackendPair = ("numpy", "numba"), steps: int = 20, lr: float = 0.1,
                               batch_size: int = 32, rtol: float = DEFAULT_RTOL, atol: float = DEFAULT_ATOL,
                               trajectory_rtol: float = DEFAULT_TRAJECTORY_RTOL, seed: Seed = 0,
                               momentum: float = 0.0, nesterov: bool = False,
                               weight_decay: float = 0.0, optimizer: str = "sgd",
                               betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8) -> dict[str, float]:
    """Raise AssertionError, reporting the worst differences, unless two backends agree.

    See `backend_differences` for what is compared and how tolerances are measured.
    """
    report, errors = backend_differences(
        model, X, y, backends=backends, steps=steps, lr=lr, batch_size=batch_size, rtol=rtol, atol=atol,
        trajectory_rtol=trajectory_rtol, seed=seed, momentum=momentum, nesterov=nesterov, weight_decay=weight_decay,
        optimizer=optimizer, betas=betas, eps=eps,
    )
    if report:
        names = [getattr(b, "name", b) for b in backends]
        raise AssertionError(
            f"backends {names[0]!r} and {names[1]!r} differ on {model!r} with a batch of {np.shape(y)[0]}:\n  "
            + "\n  ".join(report)
        )
    return errors
