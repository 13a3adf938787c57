"""Trainer and History: shuffled minibatch SGD over epochs with any backend, and its metrics."""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
from tqdm import tqdm

from .backends import get_backend
from .backends.base import DEFAULT_BETAS, DEFAULT_EPS, BackendBase, WholeSteps, sgd_options
from .inputs import (
    Features,
    FloatArray,
    Pixels,
    Seed,
    check_features,
    check_labels,
    check_model,
    check_positive_float,
    check_positive_int,
    make_rng,
    take_rows,
)
from .model import MLP
from .optim import (
    ADAM_OPTIMIZERS,
    AdamMoments,
    LRSchedule,
    Velocity,
    check_adam_options,
    check_optimizer,
    check_sgd_options,
)
from .runtime.compile_notice import announce_compiling


class TrainingDivergedError(FloatingPointError):
    """The training loss became NaN or infinite."""


@dataclass
class EpochRecord:
    """What one epoch measured; `val_*` are None without validation data."""

    epoch: int
    train_loss: float
    val_loss: float | None
    val_accuracy: float | None
    seconds: float
    samples_per_s: float
    lr: float


@dataclass
class History:
    """One `EpochRecord` per epoch trained, across every call to `Trainer.fit`.

    best_epoch: after `fit(..., patience=N)`, the epoch of the lowest validation loss, whose
    parameters the model was given back (None without patience).
    compile_seconds: what `fit` spent preparing the backend (JIT compilation, or loading it from
    Numba's cache) before its first timed epoch; no epoch's `seconds` includes it.
    """

    epochs: list[EpochRecord] = field(default_factory=list)
    best_epoch: int | None = None
    compile_seconds: float = 0.0

    def __len__(self) -> int:
        return len(self.epochs)

    def __getitem__(self, i: int) -> EpochRecord:
        return self.epochs[i]

    def column(self, name: str) -> list[Any]:
        """One field of every epoch, e.g. `history.column("train_loss")`."""
        return [getattr(record, name) for record in self.epochs]

    def as_dicts(self) -> list[dict[str, Any]]:
        return [asdict(record) for record in self.epochs]


def format_epoch(record: EpochRecord, total_epochs: int, val_label: str = "val") -> str:
    """The one-line summary of an epoch that `fit(verbose=True)` and the CLI print."""
    width = len(str(total_epochs))
    line = f"epoch {record.epoch:>{width}}/{total_epochs}  train loss {record.train_loss:.4f}"
    if record.val_loss is not None and record.val_accuracy is not None:
        line += f"  {val_label} loss {record.val_loss:.4f}  {val_label} acc {100 * record.val_accuracy:.2f}%"
    return line + f"  lr {record.lr:<8.3g}{record.seconds:6.2f} s  {record.samples_per_s:>9,.0f} samples/s"


SGD_DEFAULT_LR = 0.1  # Trainer's lr when none is given, whatever the optimizer (see Trainer)


class Trainer:
    """Trains `model` in place with minibatch SGD (or Adam) on the backend named `backend`.

    momentum (classical, or Nesterov's with nesterov=True) and weight_decay (L2, on the weights)
    follow fastmlp/optim.py; the velocity lives on the Trainer. optimizer="adam" (Kingma & Ba,
    weight_decay as an L2 term) or "adamw" (weight_decay decoupled) takes Adam's step with betas
    and eps instead of momentum (which must then stay 0, and nesterov False); its moments and
    step count live on the Trainer (`moments`, a `fastmlp.optim.AdamMoments`). Adam wants a far
    smaller lr than SGD's default 0.1: 1e-3 is the usual (the command line's default with
    --optimizer adam). Left out, lr stays 0.1 with Adam too, so that existing code keeps its results,
    and a warning says so: pass lr (lr=1e-3, or lr=0.1 to keep it) to silence it. schedule ("step", "cosine" or
    None) sets each epoch's rate from lr, see `fastmlp.optim.LRSchedule` (step_size, gamma).
    The shuffling order comes from `numpy.random.default_rng(seed)`, so the same seed and
    backend (and thread count) give the same parameters. Calling `fit` again continues.
    threads (with a backend name): the threads it trains on, see `fastmlp.get_backend`; default:
    the backend's choice, which leaves out the cores other work keeps busy.
    """

    def __init__(self, model: MLP, backend: str | BackendBase = "numba", *, lr: float | None = None,
                 batch_size: int = 32, seed: Seed = 0, momentum: float = 0.0, nesterov: bool = False,
                 weight_decay: float = 0.0, schedule: str | None = None, step_size: int = 10, gamma: float = 0.1,
                 threads: int | None = None, optimizer: str = "sgd", betas: tuple[float, float] = DEFAULT_BETAS,
                 eps: float = DEFAULT_EPS) -> None:
        check_model(model)
        if not isinstance(backend, (str, BackendBase)):
            raise TypeError(f"backend must be a backend name or a fastmlp backend, got {type(backend).__name__}")
        if threads is not None and not isinstance(backend, str):
            raise ValueError("threads goes with a backend name; a backend object has its own "
                             "(e.g. fastmlp.backends.numba_fused.Backend(threads=N))")
        self.model = model
        self.backend = get_backend(backend, threads) if isinstance(backend, str) else backend
        self.lr = check_positive_float(SGD_DEFAULT_LR if lr is None else lr, "lr")
        self.batch_size = check_positive_int(batch_size, "batch_size")
        self.optimizer = check_optimizer(optimizer)
        momentum, nesterov, weight_decay = check_sgd_options(momentum, nesterov, weight_decay)
        betas, eps = check_adam_options(betas, eps)
        adam = self.optimizer in ADAM_OPTIMIZERS
        self.velocity = Velocity(model) if momentum > 0 and not adam else None
        self.moments = AdamMoments(model) if adam else None
        if adam and lr is None:
            warnings.warn(f"Trainer(optimizer={self.optimizer!r}) without lr trains with lr={SGD_DEFAULT_LR}, the SGD "
                          f"default, which is usually too large for Adam: pass lr=1e-3 (the command line's "
                          f"default for Adam), or lr={SGD_DEFAULT_LR} to keep it", UserWarning, stacklevel=2)
        self._sgd = sgd_options(model, momentum, nesterov, weight_decay, self.velocity, self.optimizer, betas, eps,
                                self.moments)
        self.schedule = LRSchedule(schedule, step_size=step_size, gamma=gamma)
        self.rng = make_rng(seed)
        self.history = History()
        self._warmed_up: set[bool] = set()  # input kinds (Pixels or not) the backend has compiled its epoch for

    def fit(self, X: Features, y: npt.ArrayLike, *, epochs: int,
            validation_data: tuple[Features, npt.ArrayLike] | None = None, verbose: bool = False,
            val_label: str = "val", on_epoch_end: Callable[[EpochRecord], object] | None = None,
            progress_bar: bool = False, patience: int | None = None) -> History:
        """Train for `epochs` more epochs; return the History of every epoch so far.

        verbose prints one line per epoch; `on_epoch_end(record)` is called after each epoch;
        progress_bar shows a tqdm bar on stderr within each epoch.
        patience: stop early once the validation loss has not improved for that many epochs,
        and put back the parameters of the best epoch (`history.best_epoch`); needs validation_data.
        Raises TrainingDivergedError, naming the epoch, if the loss becomes NaN or inf.
        The backend compiles its epoch (`warm_up`) before the first one is timed, once per input
        kind (float32 or Pixels): no epoch's seconds include JIT time, `history.compile_seconds` holds it.
        The backend may train on X in a form of its own with the same values, read once before the first epoch
        (`training_inputs`: the numba backend reads float32 X whose entries are bytes times 1/255, as
        `load_mnist` gives them, as those bytes); with on_epoch_end, each epoch reads X as it is then.
        """
        epochs = check_positive_int(epochs, "epochs")
        if on_epoch_end is not None and not callable(on_epoch_end):
            raise TypeError(f"on_epoch_end must be callable or None, got {type(on_epoch_end).__name__}")
        check_model(self.model)
        X = check_features(X, self.model.n_features)
        y = check_labels(y, len(X), self.model.n_classes)
        if validation_data is not None:
            X_val, y_val = _check_pair(validation_data, self.model)
        if patience is not None:
            patience = check_positive_int(patience, "patience")
            if validation_data is None:
                raise ValueError("patience (early stopping) needs validation_data to watch")
            best = _Best()
        if on_epoch_end is None:  # else every epoch reads X itself: the callback may change it between epochs
            X = self.backend.training_inputs(X, epochs)
        self._warm_up(X)
        first = len(self.history) + 1
        last = first + epochs - 1
        # One block for all the epochs: a Ctrl-C is raised between two steps of an epoch or at an epoch's end,
        # never by the signal handler inside a finalizer (a progress bar's __del__), where Python drops it.
        with WholeSteps() as whole:
            for epoch in range(first, last + 1):
                lr = self.schedule.lr(self.lr, epoch, first, last)
                with tqdm(total=len(X), desc=f"epoch {epoch}/{last}", unit="samples", unit_scale=True,
                          leave=False, disable=not progress_bar) as bar:
                    start = time.perf_counter()
                    # Validated once above: the public train_epoch would scan X for NaN again every epoch.
                    loss = self.backend._train_epoch(self.model, X, y, self.batch_size, lr, self.rng,
                                                     bar.update if progress_bar else None, **self._sgd)
                    seconds = time.perf_counter() - start
                if not math.isfinite(loss):
                    raise TrainingDivergedError(
                        f"training diverged in epoch {epoch}: the loss became {loss} "
                        f"(try a smaller learning rate than {self.lr})"
                    )
                val_loss = val_accuracy = None
                if validation_data is not None:
                    val_loss, val_accuracy = self._evaluate(X_val, y_val)
                record = EpochRecord(epoch, loss, val_loss, val_accuracy, seconds, len(X) / seconds, lr)
                self.history.epochs.append(record)
                if verbose:
                    print(format_epoch(record, last, val_label), flush=True)
                if on_epoch_end is not None:
                    on_epoch_end(record)
                if patience is not None and best.stop_after(record, self.model, patience):
                    break
                whole.step_done()
        if patience is not None:
            self._restore(best, verbose)
        return self.history

    def _warm_up(self, X: Features) -> None:
        """Compile the backend's epoch for this kind of input before any epoch is timed (once per kind)."""
        pixels = isinstance(X, Pixels)
        if pixels in self._warmed_up:
            return
        # A new net depth compiles for seconds: say so, once, when Numba really compiles (not on a cache hit).
        with announce_compiling(f"the training epoch for nets of depth {len(self.model.layer_sizes) - 1}"):
            self.history.compile_seconds += self.backend.warm_up(self.model, pixels=pixels)
        self._warmed_up.add(pixels)

    def _restore(self, best: _Best, verbose: bool) -> None:
        """Put back the best epoch's parameters, in the model's own arrays; momentum (or Adam) then starts afresh."""
        self.history.best_epoch = best.epoch
        if best.epoch == self.history[-1].epoch:
            return
        for param, saved in zip(self.model.weights + self.model.biases, best.params):
            param[...] = saved
        if self.velocity is not None:
            self.velocity.reset()
        if self.moments is not None:
            self.moments.reset()
        if verbose:
            print(f"early stopping: restored the parameters of epoch {best.epoch} (val loss {best.loss:.4f})")

    def evaluate(self, X: Features, y: npt.ArrayLike) -> tuple[float, float]:
        """(mean cross-entropy loss, accuracy) of the model on (X, y)."""
        return self._evaluate(*_check_pair((X, y), self.model))

    def _evaluate(self, X: FloatArray | Pixels, y: npt.NDArray[np.int64], chunk: int = 8192) -> tuple[float, float]:
        with self.backend.between_epochs():
            return self._evaluate_chunks(X, y, chunk)

    def _evaluate_chunks(self, X: FloatArray | Pixels, y: npt.NDArray[np.int64], chunk: int) -> tuple[float, float]:
        from .kernels.reference import log_softmax  # NumPy only, but fastmlp.kernels loads Numba

        total_loss = 0.0
        correct = 0
        for start in range(0, len(X), chunk):
            Xc = take_rows(X, slice(start, start + chunk))  # Pixels stay uint8: the backend's forward converts them
            yc = y[start : start + chunk]
            logits = self.backend._evaluation_logits(self.model, Xc)
            log_probs = log_softmax(logits)
            total_loss -= float(log_probs[np.arange(len(yc)), yc].sum(dtype=np.float64))
            correct += int((logits.argmax(axis=1) == yc).sum())
        return total_loss / len(X), correct / len(X)


class _Best:
    """Early stopping's memory: the lowest validation loss so far, its epoch and a copy of its parameters."""

    def __init__(self) -> None:
        self.loss: float = math.inf
        self.epoch: int | None = None
        self.params: list[FloatArray] = []
        self.waited = 0

    def stop_after(self, record: EpochRecord, model: MLP, patience: int) -> bool:
        """Note this epoch; True once `patience` epochs in a row have not improved on the best."""
        if record.val_loss is not None and record.val_loss < self.loss:  # fit passes validation data
            self.loss, self.epoch, self.waited = record.val_loss, record.epoch, 0
            self.params = [p.copy() for p in model.weights + model.biases]
            return False
        self.waited += 1
        return self.waited >= patience


def _check_pair(data: Any, model: MLP) -> tuple[FloatArray | Pixels, npt.NDArray[np.int64]]:
    try:
        X, y = data
    except (TypeError, ValueError):
        raise TypeError("validation data must be a pair (X, y)") from None
    X = check_features(X, model.n_features, "validation X")
    return X, check_labels(y, len(X), model.n_classes, "validation y")
