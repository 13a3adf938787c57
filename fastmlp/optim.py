"""What SGD does beyond `W -= lr * grad`: momentum, weight decay and a learning rate per epoch.

With g = dW + weight_decay * W (weights only: biases are not decayed) and velocity v, one step is
    momentum 0:   W -= lr * g
    classical:    v = momentum * v - lr * g;   W += v
    Nesterov:     v = momentum * v - lr * g;   W += momentum * v - lr * g
(the Sutskever form, whose velocity carries lr, so a schedule's lr change takes effect gradually).
Both backends implement exactly these formulas; `Velocity` holds v, per model.
"""

from __future__ import annotations

import math
import numbers
from typing import TYPE_CHECKING

import numpy as np

from .inputs import FloatArray, check_positive_int

if TYPE_CHECKING:
    from .model import MLP

SCHEDULES = ("none", "step", "cosine")


class Velocity:
    """The momentum buffers of one model: float32 zeros shaped like its weights and biases."""

    def __init__(self, model: MLP) -> None:
        self.layer_sizes = tuple(model.layer_sizes)
        self.weights: list[FloatArray] = [np.zeros_like(W) for W in model.weights]
        self.biases: list[FloatArray] = [np.zeros_like(b) for b in model.biases]

    def fits(self, model: MLP) -> bool:
        return self.layer_sizes == tuple(model.layer_sizes)

    def reset(self) -> None:
        """Zero every buffer, in place."""
        for v in self.weights + self.biases:
            v[...] = 0


def check_sgd_options(momentum: float, nesterov: bool, weight_decay: float) -> tuple[float, bool, float]:
    """Validate momentum, nesterov and weight_decay; returns them as (float, bool, float)."""
    momentum = _check_real(momentum, "momentum")
    weight_decay = _check_real(weight_decay, "weight_decay")
    if not 0 <= momentum < 1:
        raise ValueError(f"momentum must be in [0, 1), got {momentum!r}")
    if not weight_decay >= 0:
        raise ValueError(f"weight_decay must be >= 0, got {weight_decay!r}")
    if not isinstance(nesterov, (bool, np.bool_)):
        raise TypeError(f"nesterov must be True or False, got {nesterov!r}")
    if nesterov and momentum == 0:
        raise ValueError("nesterov=True needs a momentum > 0")
    return momentum, bool(nesterov), weight_decay


def check_velocity(velocity: object, model: MLP) -> None:
    """Raise unless velocity is a `Velocity` made for model's layer sizes."""
    if not isinstance(velocity, Velocity):
        raise TypeError(f"momentum > 0 needs velocity=fastmlp.optim.Velocity(model), got {type(velocity).__name__}")
    if not velocity.fits(model):
        raise ValueError(f"velocity was made for layer sizes {velocity.layer_sizes}, "
                         f"not the model's {tuple(model.layer_sizes)}")


def _check_real(value: object, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise TypeError(f"{name} must be a finite number, got {value!r}")
    return float(value)


class LRSchedule:
    """The learning rate of each epoch of a `Trainer.fit` call.

    "none": lr throughout. "step": lr * gamma ** ((epoch - 1) // step_size), counting the epochs
    of all fit calls. "cosine": lr * (1 + cos(pi * i / n)) / 2 in the i-th (from 0) of a fit
    call's n epochs, so the first epoch uses lr and the rate never reaches 0; a second fit call
    starts a new cycle (a warm restart).
    """

    def __init__(self, kind: str | None = "none", *, step_size: int = 10, gamma: float = 0.1) -> None:
        if kind is None:
            kind = "none"
        if kind not in SCHEDULES:
            raise ValueError(f"schedule must be one of {SCHEDULES} (or None), got {kind!r}")
        self.kind = kind
        self.step_size = check_positive_int(step_size, "step_size")
        gamma = _check_real(gamma, "gamma")
        if not 0 < gamma <= 1:
            raise ValueError(f"gamma must be in (0, 1], got {gamma!r}")
        self.gamma = gamma

    def __repr__(self) -> str:
        extra = f", step_size={self.step_size}, gamma={self.gamma:g}" if self.kind == "step" else ""
        return f"LRSchedule({self.kind!r}{extra})"

    def lr(self, base_lr: float, epoch: int, first_epoch: int, last_epoch: int) -> float:
        """The rate of `epoch` (1-based over all fit calls) in a fit call spanning first_epoch..last_epoch."""
        if self.kind == "step":
            return base_lr * self.gamma ** ((epoch - 1) // self.step_size)
        if self.kind == "cosine":
            return base_lr * 0.5 * (1 + math.cos(math.pi * (epoch - first_epoch) / (last_epoch - first_epoch + 1)))
        return base_lr
