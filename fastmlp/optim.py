"""What SGD does beyond `W -= lr * grad`: momentum, weight decay, Adam and a learning rate per epoch.

With g = dW + weight_decay * W (weights only: biases are not decayed) and velocity v, one step is
    momentum 0:   W -= lr * g
    classical:    v = momentum * v - lr * g;   W += v
    Nesterov:     v = momentum * v - lr * g;   W += momentum * v - lr * g
(the Sutskever form, whose velocity carries lr, so a schedule's lr change takes effect gradually).

Adam (Kingma & Ba 2015, Algorithm 1), step t = 1, 2, ... with moments m and s, betas (b1, b2):
    m = b1 * m + (1 - b1) * g;   s = b2 * s + (1 - b2) * g^2
    m^ = m / (1 - b1^t);         s^ = s / (1 - b2^t)
    W -= lr * m^ / (sqrt(s^) + eps)
"adam" takes weight_decay into g as above (an L2 term, like torch.optim.Adam); "adamw" (Loshchilov
& Hutter) uses g = dW and decays the weights apart from it, W -= lr * weight_decay * W, before the
step (like torch.optim.AdamW). Biases take the same step, never decayed. After each update, an
entry of v, m or s below the smallest normal float32 (~1.2e-38) is set to 0 (v before W uses it):
such a velocity or moment (that of a weight whose input is nearly always 0, decaying by momentum
or b1 every step) no longer moves its weight, and every operation on a subnormal float costs
about a hundred cycles on Intel cores (Nesterov's step of MNIST's default net ran 1.6x slower
for them). torch.optim keeps them; the weights differ by less than 1e-30.
Both backends implement exactly these formulas; `Velocity` holds v, `AdamMoments` m, s and t.
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
SMALLEST_NORMAL = np.float32(np.finfo(np.float32).tiny)  # velocities and moments below it are flushed to zero
OPTIMIZERS = ("sgd", "adam", "adamw")
ADAM_OPTIMIZERS = ("adam", "adamw")


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


class AdamMoments:
    """Adam's state for one model: first moments m (`first`), second moments s (`second`), each a
    `Velocity`-shaped set of float32 zeros, and `step`, the steps taken so far (t of the last one)."""

    def __init__(self, model: MLP) -> None:
        self.layer_sizes = tuple(model.layer_sizes)
        self.first = Velocity(model)
        self.second = Velocity(model)
        self.step = 0

    def fits(self, model: MLP) -> bool:
        return self.layer_sizes == tuple(model.layer_sizes)

    def reset(self) -> None:
        """Zero both moments and the step count, in place."""
        self.first.reset()
        self.second.reset()
        self.step = 0


def check_optimizer(optimizer: str) -> str:
    """Validate the optimizer name: one of OPTIMIZERS."""
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {optimizer!r}")
    return optimizer


def check_adam_options(betas: tuple[float, float], eps: float, *,
                       names: tuple[str, str, str] = ("betas[0]", "betas[1]", "eps"),
                       ) -> tuple[tuple[float, float], float]:
    """Validate Adam's betas (a pair, each in [0, 1)) and eps (> 0); returns ((float, float), float).

    names: what the caller calls beta1, beta2 and eps, for the messages (the CLI's and
    MLPClassifier's own names).
    """
    try:
        beta1, beta2 = betas
    except (TypeError, ValueError):
        raise TypeError(f"betas must be a pair (beta1, beta2), got {betas!r}") from None
    checked = []
    for name, beta in zip(names[:2], (beta1, beta2)):
        beta = _check_real(beta, name)
        if not 0 <= beta < 1:
            raise ValueError(f"{name} must be in [0, 1), got {beta!r}")
        checked.append(beta)
    eps = _check_real(eps, names[2])
    if not (eps > 0 and np.float32(eps) > 0):
        raise ValueError(f"{names[2]} must be > 0 (and not 0 in float32), got {eps!r}")
    return (checked[0], checked[1]), eps


def check_moments(moments: object, model: MLP) -> None:
    """Raise unless moments is an `AdamMoments` made for model's layer sizes."""
    _check_buffers(moments, AdamMoments, model, "Adam needs moments", "moments were")


def _check_buffers(buffers: object, kind: type, model: MLP, needs: str, were: str) -> None:
    """Raise unless buffers is a `kind` (Velocity, AdamMoments) made for model's layer sizes."""
    if not isinstance(buffers, kind):
        raise TypeError(f"{needs}=fastmlp.optim.{kind.__name__}(model), got {type(buffers).__name__}")
    if not buffers.fits(model):  # type: ignore[attr-defined]
        raise ValueError(f"{were} made for layer sizes {buffers.layer_sizes}, "  # type: ignore[attr-defined]
                         f"not the model's {tuple(model.layer_sizes)}")


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
    _check_buffers(velocity, Velocity, model, "momentum > 0 needs velocity", "velocity was")


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
