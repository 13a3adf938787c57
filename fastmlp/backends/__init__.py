"""Backends: one module per implementation of forward, backward and SGD, behind one protocol.

A backend offers

- `forward(model, X) -> probs`: float32 (n, classes), rows sum to 1;
- `loss_and_grads(model, X, y) -> (loss, dW, db)`: mean cross-entropy over the batch and
  its gradients, lists shaped like `model.weights` and `model.biases`;
- `sgd_step(model, X, y, lr) -> loss`: parameters -= lr * grad, in place; the loss before it;
- `train_epoch(model, X, y, *, batch_size, lr, rng) -> mean loss`: one pass in the order
  `rng.permutation(len(X))`, the last partial batch included.
Both take the keyword arguments momentum, nesterov, weight_decay and velocity (a
`fastmlp.optim.Velocity`) for the updates of fastmlp/optim.py; the defaults are plain SGD.
`between_epochs()` is the context a Trainer evaluates in between two epochs (the numba backend
makes BLAS single-threaded there, so that no spinning BLAS thread takes a core from its workers),
and `_evaluation_logits(model, X)` the forward it scores (the reference's, or the numba backend's own
tiles).

X is a float32 array (other real dtypes are converted) or `fastmlp.Pixels`; y holds class
indices. Inputs are validated by these public methods, once per call.
"""

import importlib
import threading
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .base import BackendBase

from ..inputs import check_positive_int

_MODULES = {"numpy": "numpy_ref", "numba": "numba"}
_instances: dict[str | tuple[str, int], "BackendBase"] = {}  # by name, or (name, threads)
_instances_lock = threading.RLock()  # two threads asking at once get the same instance


class BackendError(ValueError):
    """An unknown backend, or one that cannot be used on this machine."""


def available_backends() -> tuple[str, ...]:
    """Names of the backends that can be used here, the reference first."""
    names = []
    for name in _MODULES:
        try:
            get_backend(name)
        except BackendError:
            continue
        names.append(name)
    return tuple(names)


def get_backend(name: str, threads: int | None = None) -> "BackendBase":
    """The backend called `name` ("numpy" or "numba"); instances are shared, one per thread count.

    A shared instance may be used from several threads at once: each call computes what it would
    alone (training calls on one instance take turns; forward runs beside them).

    threads: None (default) lets the backend choose (see "On a busy machine" in README.md); N
    runs the numpy backend's BLAS, or the numba backend's worker threads, on N threads.
    """
    if name not in _MODULES:
        raise BackendError(f"unknown backend {name!r}; choose one of {sorted(_MODULES)}")
    if threads is not None:
        threads = check_positive_int(threads, "threads")
    key = name if threads is None else (name, threads)
    with _instances_lock:
        if key not in _instances:
            try:
                module = importlib.import_module(f"{__name__}.{_MODULES[name]}")
            except ImportError as exc:
                raise BackendError(f"backend {name!r} cannot be used here: {exc}") from exc
            _instances[key] = module.Backend() if threads is None else module.Backend(threads=threads)
        return _instances[key]
