"""Equivalence checks between backends, for fastmlp's tests and for other projects' CI.

Differences are measured relative to the largest magnitude of the compared quantity:
    error(a, b) = max|a - b| / max(max|a|, max|b|, floor)
so that a gradient whose entries span many orders of magnitude is judged by its scale, as
float32 rounding is. A quantity passes if max|a - b| <= atol + rtol * max(max|a|, max|b|).
The atol term is for results that cancel: the output gradient p - 1 of a confident prediction
(p near 1) keeps the ~1e-7 absolute rounding of p, and a bias gradient, a column sum of such
terms, keeps theirs; either can be far smaller than the terms it came from, so its rounding is
large relative to itself (seen: 6e-5 relative on a 2-class batch of one).
Default float32 tolerances: rtol 1e-5 and atol 1e-6 for one forward/backward pass and for one
optimizer step; losses are judged relative to max(|loss|, 1). A gradient entry may also differ by
its own rounding, `gradient_rounding` (and by `kink_allowance`), as in the steps below: atol covers
the rounding of p - 1 only where the activation it multiplies is of order 1 (seen: a generated
223-1-14 net on a batch of one, p = 0.99999946 for the true class and a hidden activation of 21.5,
so dW[1] = 21.5 (p - 1) = -1.15e-5 in NumPy and -1.28e-5 with the AVX2 tiles: 1.3e-6 apart, 21.5
times p's rounding, and over atol).

Steps from identical states. Each of `steps` optimizer steps is compared from one state: both
backends are loaded with the same parameters and optimizer state (SGD's velocity; Adam's moments
and step count t), take one step on the same batch, and their loss, parameters, velocity or
moments and t are compared. The state then moves on along the first backend's step, so a
difference never carries into the next step, and nor does any allowance made for one step. A
step's result may differ, entry by entry, by
    rtol * (the largest change the step made to that array)    a wrong update is judged by its size
  + ROUNDING_ULPS float32 ulps of |old| + |new|                each backend rounds the result
  + what the error dg of that entry's gradient moves it by,
with dg = atol + rtol * max|g| (the single pass's tolerance) + `gradient_rounding` + `kink_allowance`
for that step's batch. SGD moves a parameter by lr * dg ((1 + momentum) * lr * dg with Nesterov),
the velocity by lr * dg, Adam's moments by (1 - beta1) * dg and (1 - beta2) * (2|g| dg + dg^2).

ReLU kinks. A hidden pre-activation within rounding of 0 takes different branches in two correct
float32 backends (two sgemm implementations sum in different orders; seen: 1 of 32,768 units of a
512-row MNIST-shaped batch), and that unit's gradient then differs by far more than rounding.
Such units are found from a float64 forward pass of the state both backends start from:
|z| <= KINK_RTOL * (|A| @ |W| + |b|), the size of the rounding of that sum. `kink_allowance` bounds,
entry by entry, what flipping exactly those units could change, to first order; with no unit that
close to 0 it is zero. It applies to the step whose batch has the unit, never to a later one.

Adam. Its step lr * m^ / (sqrt(s^) + eps) divides by the gradient's own size, so a gradient error
dg moves it by about lr * dg / (sqrt(s^) + eps), not lr * dg as in SGD: harmless where the
gradient is large, but an entry whose gradient is within rounding of 0 (a sum that cancels, seen:
-9.6e-8 from terms of 1e-2 on the 784-128-64-10 net's first step) gets a step of either sign, up
to lr. A step of Adam therefore allows, entry by entry, 4 * lr * E / (sqrt(s^) + eps) with
E = (1 - beta1) * dg / (1 - beta1^t) the error of m^ (4 covers that error reaching the step through
both m^ and sqrt(s^)), capped at twice the largest step Adam takes, lr * max(1, (1 - beta1) /
sqrt(1 - beta2)) (Kingma & Ba, section 2.1). For an entry with a gradient well above its rounding
the allowance is ~1e-6 lr.

Free run. Both backends also take the same steps each from its own state, as training does. A
float32 trajectory is chaotic across kinks: once a unit takes different branches, the runs part
for good, and their parameters drift further apart with every step (seen on the 784-128-64-10
net at lr 0.1 with one OpenBLAS kernel set: a kink at step 29, then the layers 0.4 % apart by
step 30 and 5 % by step 100, in the norm of the difference over the norm; the losses of single
batches up to 27 % apart). The per-step comparisons judge the parameters; the free run is a loose
sanity check only, of the mean loss over the steps so far (0.4 % apart at worst in that run),
judged at trajectory_rtol against max(|mean loss|, 1): a backend that trains something else.
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
from .optim import (
    ADAM_OPTIMIZERS,
    AdamMoments,
    Velocity,
    check_adam_options,
    check_optimizer,
)

BackendPair = Sequence["str | BackendBase"]

DEFAULT_RTOL = 1e-5
DEFAULT_ATOL = 1e-6
# The free run's loose tolerance (see the module doc): a sanity check, not the equivalence itself.
DEFAULT_TRAJECTORY_RTOL = 1e-2
# A loss is a mean of log-sum-exp terms of order 1, rounded to ~1e-7 absolute whatever its value:
# a loss near 0 (a confident, correct net) is judged against 1, not against itself.
LOSS_SCALE_FLOOR = 1.0
# A float32 sum of a few hundred products is rounded by up to ~1e-5 of the sum of their magnitudes.
KINK_RTOL = 1e-5
# Each backend rounds a step's result (and its terms: W - lr * g, momentum * v, ...) to half an ulp.
ROUNDING_ULPS = 4
FLOAT32_EPS = float(np.finfo(np.float32).eps)


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


def kink_allowance(
    model: MLP, X: npt.ArrayLike, y: npt.NDArray[np.integer[Any]]
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Per-entry bounds (dW list, db list) on how much the gradient of (X, y) can change if every
    ReLU unit within rounding of its kink (see the module doc) took the other branch; zeros if none."""
    params = ([np.asarray(p, dtype=np.float64) for p in model.weights],
              [np.asarray(b, dtype=np.float64) for b in model.biases])
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
             scale_floor: float = 0.0, allowance: Any = None, scale: float | None = None) -> float:
    """Append a report line unless max|a - b| (less `allowance`, entry by entry) <= atol + rtol * scale;
    scale is max(max|a|, max|b|, scale_floor) unless given. Returns the scaled difference."""
    diff, own_scale, where = worst_difference(a, b)
    scale = max(own_scale if scale is None else scale, scale_floor)
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


def _float64_gradients(model: MLP, X: Any, y: Any) -> tuple[list[Any], list[Any]]:
    """(dW list, db list): the gradient of the mean cross-entropy of (X, y), in float64."""
    weights = [np.asarray(W, dtype=np.float64) for W in model.weights]
    acts = [np.asarray(X, dtype=np.float64)]
    for W, b in zip(weights[:-1], model.biases[:-1]):
        acts.append(np.maximum(acts[-1] @ W + b, 0.0))
    z = acts[-1] @ weights[-1] + model.biases[-1]
    z -= z.max(axis=1, keepdims=True)
    dZ = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
    dZ[np.arange(len(y)), y] -= 1
    dZ /= len(y)
    dW: list[Any] = [None] * len(weights)
    db: list[Any] = [None] * len(weights)
    for l in range(len(weights) - 1, -1, -1):
        dW[l], db[l] = acts[l].T @ dZ, dZ.sum(axis=0)
        if l > 0:
            dZ = (dZ @ weights[l].T) * (acts[l] > 0)
    return dW, db


OptimizerState = dict[str, Any]  # {"velocity": Velocity | None} or {"moments": AdamMoments}


def _fresh_state(model: MLP, adam: bool, momentum: float) -> OptimizerState:
    if adam:
        return {"moments": AdamMoments(model)}
    return {"velocity": Velocity(model) if momentum else None}


def _copy_buffers(to: Velocity, of: Velocity) -> None:
    for a, b in zip(to.weights + to.biases, of.weights + of.biases):
        a[...] = b


def _copy_state(state: OptimizerState, model: MLP) -> OptimizerState:
    """An independent copy of an optimizer state (its buffers and Adam's step count)."""
    velocity, moments = state.get("velocity"), state.get("moments")
    if moments is not None:
        copy = AdamMoments(model)
        _copy_buffers(copy.first, moments.first)
        _copy_buffers(copy.second, moments.second)
        copy.step = moments.step
        return {"moments": copy}
    if velocity is None:
        return {"velocity": None}
    new = Velocity(model)
    _copy_buffers(new, velocity)
    return {"velocity": new}


def _state_arrays(state: OptimizerState) -> dict[str, list[np.ndarray]]:
    """The optimizer's arrays by name ("velocity.weights", "first.biases", ...), to compare."""
    arrays: dict[str, list[np.ndarray]] = {}
    velocity, moments = state.get("velocity"), state.get("moments")
    for prefix, buffers in ((("velocity", velocity),) if velocity is not None else ()) + \
            ((("first", moments.first), ("second", moments.second)) if moments is not None else ()):
        arrays[f"{prefix}.weights"] = buffers.weights
        arrays[f"{prefix}.biases"] = buffers.biases
    return arrays


def _step_allowances(before: MLP, state: OptimizerState, after: MLP, after_state: OptimizerState, X: Any, y: Any,
                     lr: float, rtol: float, atol: float, adam: bool, l2: bool, momentum: float, nesterov: bool,
                     weight_decay: float, betas: tuple[float, float], eps: float) -> dict[str, list[np.ndarray]]:
    """Per entry, what one step from (before, state) on (X, y) may differ by between two correct backends,
    beyond rtol times the step's largest change (see the module doc); `after`, `after_state`: one result."""
    grads = dict(zip(("weights", "biases"), _float64_gradients(before, X, y)))
    if l2 and weight_decay:  # SGD's and Adam's L2 term is part of the gradient; AdamW's decay is not
        grads["weights"] = [g + weight_decay * np.asarray(W, np.float64)
                            for g, W in zip(grads["weights"], before.weights)]
    rounding = dict(zip(("weights", "biases"), gradient_rounding(before, X, y)))
    kinks = dict(zip(("weights", "biases"), kink_allowance(before, X, y)))
    ulp = ROUNDING_ULPS * FLOAT32_EPS
    allowed: dict[str, list[np.ndarray]] = {}
    old_state, new_state = _state_arrays(state), _state_arrays(after_state)
    for kind in ("weights", "biases"):
        error = [atol + rtol * (np.abs(g).max() if g.size else 0.0) + r + k
                 for g, r, k in zip(grads[kind], rounding[kind], kinks[kind])]
        olds, news = getattr(before, kind), getattr(after, kind)
        own = [ulp * (np.abs(o) + np.abs(n)) for o, n in zip(olds, news)]
        if adam:
            moments = after_state["moments"]
            t = moments.step  # the step just taken
            beta1, beta2 = betas
            cap = 2 * lr * max(1.0, (1 - beta1) / math.sqrt(1 - beta2))
            params = []
            for e, o, s in zip(error, own, getattr(moments.second, kind)):
                s_hat = np.asarray(s, np.float64) / (1 - beta2 ** t)
                m_hat_error = (1 - beta1) * e / (1 - beta1 ** t)
                params.append(o + np.minimum(4 * lr * m_hat_error / (np.sqrt(s_hat) + eps), cap))
            allowed[kind] = params
            allowed[f"first.{kind}"] = [(1 - beta1) * e + ulp * (np.abs(a) + np.abs(b))
                                        for e, a, b in zip(error, old_state[f"first.{kind}"],
                                                           new_state[f"first.{kind}"])]
            allowed[f"second.{kind}"] = [(1 - beta2) * (2 * np.abs(g) * e + e * e) + ulp * (np.abs(a) + np.abs(b))
                                         for e, g, a, b in zip(error, grads[kind], old_state[f"second.{kind}"],
                                                               new_state[f"second.{kind}"])]
        elif momentum:
            gain = lr * (1 + momentum) if nesterov else lr
            velocity_terms = [ulp * (np.abs(a) + np.abs(b)) for a, b in
                              zip(old_state[f"velocity.{kind}"], new_state[f"velocity.{kind}"])]
            allowed[kind] = [o + v + gain * e for o, v, e in zip(own, velocity_terms, error)]
            allowed[f"velocity.{kind}"] = [v + lr * e for v, e in zip(velocity_terms, error)]
        else:
            allowed[kind] = [o + lr * e for o, e in zip(own, error)]
    return allowed


def backend_differences(model: MLP, X: Features, y: npt.ArrayLike, *, backends: BackendPair = ("numpy", "numba"),
                        steps: int = 20, lr: float = 0.1, batch_size: int = 32, rtol: float = DEFAULT_RTOL,
                        atol: float = DEFAULT_ATOL, trajectory_rtol: float = DEFAULT_TRAJECTORY_RTOL, seed: Seed = 0,
                        momentum: float = 0.0, nesterov: bool = False,
                        weight_decay: float = 0.0, optimizer: str = "sgd", betas: tuple[float, float] = (0.9, 0.999),
                        eps: float = 1e-8) -> tuple[list[str], dict[str, float]]:
    """Compare two backends on (X, y) from `model`'s parameters, which are left unchanged.

    Returns (report lines for every quantity out of tolerance, {quantity: scaled error}).
    Compared (see the module doc for the tolerances): forward probabilities, loss and every
    gradient on the whole of X, at rtol and atol ("forward", "loss", "dW[i]", "db[i]"); then
    `steps` optimizer steps on batches of `batch_size` rows drawn with
    `numpy.random.default_rng(seed)` (`rng.choice(len(X), size=min(batch_size, len(X)), replace=False)`
    per step). Each step starts both backends from the same parameters and optimizer state
    and compares its loss, parameters and state at rtol ("trajectory": the worst scaled
    difference of any step, beyond its allowance); the state then moves on along the first
    backend's step. The same steps taken by each backend from its own state (the free run) are
    compared at the loose trajectory_rtol ("free_run"). The optimizer: SGD with momentum,
    nesterov and weight_decay (velocities from zero), or optimizer="adam" / "adamw" with betas,
    eps and weight_decay (moments from zero).
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
    first, second = (get_backend(b) if isinstance(b, str) else b for b in backends)
    names = tuple(b if isinstance(b, str) else getattr(b, "name", None) or repr(b) for b in backends)
    report: list[str] = []
    errors: dict[str, float] = {}

    errors["forward"] = _compare(report, "forward", names, first.forward(model, X), second.forward(model, X),
                                 rtol, atol)
    loss_a, dW_a, db_a = first.loss_and_grads(model, X, y)
    loss_b, dW_b, db_b = second.loss_and_grads(model, X, y)
    errors["loss"] = _compare(report, "loss", names, loss_a, loss_b, rtol, atol, LOSS_SCALE_FLOOR)
    kink_dW, kink_db = kink_allowance(model, X, y)
    rounding_dW, rounding_db = gradient_rounding(model, X, y)
    for i in range(len(dW_a)):
        errors[f"dW[{i}]"] = _compare(report, f"dW[{i}]", names, dW_a[i], dW_b[i], rtol, atol,
                                      allowance=kink_dW[i] + rounding_dW[i])
        errors[f"db[{i}]"] = _compare(report, f"db[{i}]", names, db_a[i], db_b[i], rtol, atol,
                                      allowance=kink_db[i] + rounding_db[i])

    if adam:
        options = {"optimizer": optimizer, "betas": betas, "eps": eps, "weight_decay": weight_decay}
    else:
        options = {"momentum": momentum, "nesterov": nesterov, "weight_decay": weight_decay}
    l2 = optimizer != "adamw"
    # The first backend's trajectory carries the state every step starts from; `free` is the second's own.
    driver, driver_state = model.copy(), _fresh_state(model, adam, momentum)
    free, free_state = model.copy(), _fresh_state(model, adam, momentum)
    worst_step = worst_free = 0.0
    free_report: list[str] = []
    mean_losses = [0.0, 0.0]  # over the steps so far
    for step in range(1, int(steps) + 1):
        batch = rng.choice(len(X), size=min(batch_size, len(X)), replace=False)
        Xb, yb = X[batch], y[batch]
        before, before_state = driver.copy(), _copy_state(driver_state, model)
        other, other_state = driver.copy(), _copy_state(driver_state, model)
        losses = [first.sgd_step(driver, Xb, yb, lr, **driver_state, **options),
                  second.sgd_step(other, Xb, yb, lr, **other_state, **options)]
        free_loss = second.sgd_step(free, Xb, yb, lr, **free_state, **options)

        step_report: list[str] = []
        worst_step = max(worst_step, _compare(step_report, f"step {step} loss", names, losses[0], losses[1], rtol, atol,
                                              LOSS_SCALE_FLOOR))
        allowed = _step_allowances(before, before_state, driver, driver_state, Xb, yb, lr, rtol, atol, adam, l2,
                                   momentum, nesterov, weight_decay, betas, eps)
        results = [dict(_state_arrays(s), weights=m.weights, biases=m.biases)
                   for m, s in ((driver, driver_state), (other, other_state))]
        starts = dict(_state_arrays(before_state), weights=before.weights, biases=before.biases)
        for quantity, arrays in results[0].items():
            for i, (a, b) in enumerate(zip(arrays, results[1][quantity])):
                change = max(np.abs(np.asarray(a, np.float64) - starts[quantity][i]).max(initial=0.0),
                             np.abs(np.asarray(b, np.float64) - starts[quantity][i]).max(initial=0.0))
                worst_step = max(worst_step, _compare(step_report, f"step {step} {quantity}[{i}]", names, a, b, rtol,
                                                      0.0, allowance=allowed[quantity][i], scale=change))
        if adam and driver_state["moments"].step != other_state["moments"].step:
            step_report.append(f"step {step} Adam's step count: {names[0]} {driver_state['moments'].step}, "
                               f"{names[1]} {other_state['moments'].step}")

        # The free run: its mean loss so far, loosely; reported once (parted runs stay parted).
        mean_losses[0] += (losses[0] - mean_losses[0]) / step
        mean_losses[1] += (free_loss - mean_losses[1]) / step
        if not free_report:
            worst_free = max(worst_free, _compare(free_report, f"free run step {step} mean loss",
                                                  (names[0], f"{names[1]} (free run)"), mean_losses[0],
                                                  mean_losses[1], trajectory_rtol, atol, LOSS_SCALE_FLOOR))
            report.extend(free_report)
        if step_report:
            report.extend(step_report)
            break  # each later step would be judged the same way: the first failing one says it
    errors["trajectory"] = worst_step
    errors["free_run"] = worst_free
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
