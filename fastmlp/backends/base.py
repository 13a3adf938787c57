"""The public edge shared by every backend: validate once, then call the backend's maths."""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from types import FrameType
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from ..inputs import (
    Features,
    FloatArray,
    Pixels,
    check_features,
    check_labels,
    check_model,
    check_positive_float,
    check_positive_int,
)
from ..optim import (
    ADAM_OPTIMIZERS,
    AdamMoments,
    Velocity,
    check_adam_options,
    check_moments,
    check_optimizer,
    check_sgd_options,
    check_velocity,
)

if TYPE_CHECKING:
    from ..model import MLP

Progress = Callable[[int], object]
"""Called with the number of samples just trained (e.g. `tqdm.update`)."""
Labels = npt.NDArray[np.int64]
DEFAULT_BETAS = (0.9, 0.999)
DEFAULT_EPS = 1e-8


class BackendBase:
    """Validates the arguments of the four protocol methods and hands valid arrays to
    `_forward`, `_loss_and_grads`, `_sgd_step` and `_train_epoch`, which subclasses write."""

    name: str | None = None

    def __repr__(self) -> str:
        return f"<fastmlp backend {self.name!r}>"

    def __reduce__(self) -> tuple[Any, ...]:
        """Pickle (and deepcopy) the configuration, never the runtime state.

        A backend may hold a lock and scratch buffers (the numba one does); a copy gets its own,
        made as the original's were. The instance `get_backend(name)` shares comes back as that
        same shared instance; any other one as `type(self)(threads=...)` when it has a thread setting.
        """
        from . import _instances, get_backend

        if self.name is not None and _instances.get(self.name) is self:
            return get_backend, (self.name,)
        threads = getattr(self, "threads", _NO_SETTING)
        return _rebuild_backend, (type(self), {} if threads is _NO_SETTING else {"threads": threads})

    def forward(self, model: MLP, X: Features) -> FloatArray:
        """Class probabilities of X, float32 (n, classes)."""
        check_model(model, writable=False)
        return self._forward(model, _as_array(check_features(X, model.n_features)))

    def loss_and_grads(
        self, model: MLP, X: Features, y: npt.ArrayLike
    ) -> tuple[float, list[FloatArray], list[FloatArray]]:
        """(mean cross-entropy, dW list, db list) of the batch (X, y)."""
        X, y = self._check_batch(model, X, y)
        return self._loss_and_grads(model, _as_array(X), y)

    def sgd_step(self, model: MLP, X: Features, y: npt.ArrayLike, lr: float, *, momentum: float = 0.0,
                 nesterov: bool = False, weight_decay: float = 0.0, velocity: Velocity | None = None,
                 optimizer: str = "sgd", betas: tuple[float, float] = DEFAULT_BETAS, eps: float = DEFAULT_EPS,
                 moments: AdamMoments | None = None) -> float:
        """One optimiser step on the batch, in place; returns the loss before it.

        Plain SGD (the defaults) is parameters -= lr * grad; momentum, nesterov and weight_decay
        follow fastmlp/optim.py, with velocity a `fastmlp.optim.Velocity(model)` updated in place.
        optimizer="adam" or "adamw" takes Adam's step instead (fastmlp/optim.py) with betas, eps
        and weight_decay, moments a `fastmlp.optim.AdamMoments(model)` updated in place (its
        step count too); momentum and nesterov are then SGD's alone and must stay unset.
        """
        X, y = self._check_batch(model, X, y)
        lr = check_positive_float(lr, "lr")
        sgd = sgd_options(model, momentum, nesterov, weight_decay, velocity, optimizer, betas, eps, moments)
        return self._sgd_step(model, _as_array(X), y, lr, **sgd)

    def train_epoch(self, model: MLP, X: Features, y: npt.ArrayLike, *, batch_size: int, lr: float,
                    rng: np.random.Generator, progress: Progress | None = None, momentum: float = 0.0,
                    nesterov: bool = False, weight_decay: float = 0.0, velocity: Velocity | None = None,
                    optimizer: str = "sgd", betas: tuple[float, float] = DEFAULT_BETAS, eps: float = DEFAULT_EPS,
                    moments: AdamMoments | None = None) -> float:
        """One shuffled pass of SGD (or Adam) over (X, y); returns the mean loss over the samples.

        progress, if given, is called with the number of samples just trained, a few dozen
        times per epoch at most (e.g. `tqdm.update`). The optimiser options are those of `sgd_step`.
        """
        X, y = self._check_batch(model, X, y)
        batch_size = check_positive_int(batch_size, "batch_size")
        lr = check_positive_float(lr, "lr")
        if not isinstance(rng, np.random.Generator):
            raise TypeError(f"rng must be a numpy.random.Generator, got {type(rng).__name__}")
        if progress is not None and not callable(progress):
            raise TypeError(f"progress must be callable or None, got {type(progress).__name__}")
        sgd = sgd_options(model, momentum, nesterov, weight_decay, velocity, optimizer, betas, eps, moments)
        return self._train_epoch(model, X, y, batch_size, lr, rng, progress, **sgd)

    def between_epochs(self) -> AbstractContextManager[object]:
        """A context manager for the work a Trainer does between epochs (evaluation); nothing here."""
        return nullcontext()

    def warm_up(self, model: MLP, *, pixels: bool = False, momentum: bool = False) -> float:
        """Prepare whatever the first epoch would otherwise pay for (JIT compilation); returns seconds.

        `momentum` is accepted for callers of 0.2.0 and ignored: one compiled epoch serves every update rule."""
        return 0.0

    def training_inputs(self, X: FloatArray | Pixels, epochs: int) -> FloatArray | Pixels:
        """X (validated) in the form this backend trains fastest on for `epochs` epochs over the same rows, with
        the same values, so that the epochs give the same bits: X itself here. A Trainer asks once a `fit`."""
        return X

    # What a backend implements, on arrays the public methods above have validated.

    def _forward(self, model: MLP, X: FloatArray) -> FloatArray:
        raise NotImplementedError

    def _loss_and_grads(self, model: MLP, X: FloatArray, y: Labels) -> tuple[float, list[FloatArray], list[FloatArray]]:
        raise NotImplementedError

    def _sgd_step(self, model: MLP, X: FloatArray, y: Labels, lr: float, *, momentum: float = 0.0,
                  nesterov: bool = False, weight_decay: float = 0.0, velocity: Velocity | None = None,
                  optimizer: str = "sgd", betas: tuple[float, float] | None = None, eps: float | None = None,
                  moments: AdamMoments | None = None) -> float:
        raise NotImplementedError

    def _train_epoch(self, model: MLP, X: FloatArray | Pixels, y: Labels, batch_size: int, lr: float,
                     rng: np.random.Generator, progress: Progress | None = None, **sgd: Any) -> float:
        raise NotImplementedError

    def _evaluation_logits(self, model: MLP, X: FloatArray | Pixels) -> FloatArray:
        """The logits of X's rows, float32 (n, classes): what a Trainer's evaluation scores (it takes their
        log-softmax and argmax). The reference forward (NumPy and BLAS) unless a backend has a faster one."""
        from ..kernels.reference import hidden_and_logits  # NumPy only, but fastmlp.kernels loads Numba

        return hidden_and_logits(model.weights, model.biases, _as_array(X))[1]

    @staticmethod
    def _check_batch(model: MLP, X: Features, y: npt.ArrayLike) -> tuple[FloatArray | Pixels, Labels]:
        check_model(model)
        X = check_features(X, model.n_features)
        y = check_labels(y, len(X), model.n_classes)
        return X, y


_NO_SETTING = object()


class WholeSteps:
    """Within the block, a Ctrl-C waits for the end of the steps in progress: `step_done()` raises it.

    So an interrupted epoch stops between two steps, and Adam's t can count exactly the steps
    taken: the numpy backend's updates run layer by layer in Python (a KeyboardInterrupt between
    two of its lines would leave a step half applied), and the numba backend notes the end of
    each range of steps just after the nopython call returns. Only the main thread receives
    SIGINT; elsewhere, or under a handler other than Python's own, nothing changes.

    Blocks nest (`Trainer.fit` holds one over all its epochs, the backend one per epoch): then a
    Ctrl-C is never raised by the signal handler wherever the program happens to be, such as a
    finalizer (`__del__`), where Python would print it and drop it, but only at `step_done()` or
    at the end of a block.
    """

    def __enter__(self) -> WholeSteps:
        self.pending, self._old = False, None
        if threading.current_thread() is threading.main_thread():
            handler = signal.getsignal(signal.SIGINT)
            if handler is signal.default_int_handler or isinstance(getattr(handler, "__self__", None), WholeSteps):
                self._old = signal.signal(signal.SIGINT, self._defer)
        return self

    def _defer(self, signum: int, frame: FrameType | None) -> None:
        self.pending = True

    def step_done(self) -> None:
        if self.pending:
            self.pending = False
            raise KeyboardInterrupt

    def __exit__(self, *exc: object) -> None:
        if self._old is not None:
            signal.signal(signal.SIGINT, self._old)
        if self.pending and exc[0] is None:
            raise KeyboardInterrupt


def _rebuild_backend(cls: type[BackendBase], settings: dict[str, Any]) -> BackendBase:
    """A fresh backend of class cls with the pickled settings (`BackendBase.__reduce__`)."""
    return cls(**settings)


PROGRESS_UPDATES = 50


def epoch_ranges(n: int, batch_size: int, progress: Progress | None) -> list[tuple[int, int]]:
    """(begin, end) pieces of range(n) in whole batches: one piece without progress, about PROGRESS_UPDATES with it."""
    if progress is None:
        return [(0, n)]
    batches_per_chunk = max(1, -(-n // (batch_size * PROGRESS_UPDATES)))
    step = batches_per_chunk * batch_size
    return [(start, min(start + step, n)) for start in range(0, n, step)]


def epoch_chunks(
    order: npt.NDArray[np.int64], batch_size: int, progress: Progress | None
) -> list[npt.NDArray[np.int64]]:
    """`order` cut into whole batches: one piece without progress, about PROGRESS_UPDATES with it."""
    return [order[begin:end] for begin, end in epoch_ranges(len(order), batch_size, progress)]


def sgd_options(model: MLP, momentum: float, nesterov: bool, weight_decay: float, velocity: Velocity | None,
                optimizer: str = "sgd", betas: tuple[float, float] = DEFAULT_BETAS, eps: float = DEFAULT_EPS,
                moments: AdamMoments | None = None) -> dict[str, Any]:
    """The checked keyword arguments for `_sgd_step` / `_train_epoch`: none for plain SGD, whose path stays as it is.

    Adam's: optimizer, betas, eps, weight_decay and moments (no momentum, nesterov or velocity).
    """
    optimizer = check_optimizer(optimizer)
    momentum, nesterov, weight_decay = check_sgd_options(momentum, nesterov, weight_decay)
    if optimizer in ADAM_OPTIMIZERS:
        if momentum or nesterov:
            raise ValueError(f"momentum and nesterov are SGD options: optimizer={optimizer!r} takes "
                             f"betas=(beta1, beta2) instead (got momentum={momentum!r}, nesterov={nesterov!r})")
        betas, eps = check_adam_options(betas, eps)
        check_moments(moments, model)
        return {"optimizer": optimizer, "betas": betas, "eps": eps, "weight_decay": weight_decay, "moments": moments}
    if momentum > 0:
        check_velocity(velocity, model)
    if momentum == 0 and weight_decay == 0:
        return {}
    return {"momentum": momentum, "nesterov": nesterov, "weight_decay": weight_decay,
            "velocity": velocity if momentum else None}


def _as_array(X: FloatArray | Pixels) -> FloatArray:
    return X.to_float32() if isinstance(X, Pixels) else X
