"""Class probabilities for serving: fast at one row and at ten thousand, safe to call from many threads.

`predict_proba(model, X)` checks the model and X, then `probabilities(weights, biases, X)` runs
`fastmlp.kernels.rowmajor` straight off the arrays it is given (the model's own): nothing is packed
or cached, so an edit of `model.weights` in place is seen by the next call, and concurrent calls
share no buffer (each allocates its output and, per thread, two small scratch blocks). A large
batch is cut into contiguous row ranges run on a pool of threads (the nopython kernel releases the
GIL); a small one runs on the caller's thread alone.

A row's probabilities are the same bits whatever its position, the batch it comes in and the
threads that split it (see fastmlp/kernels/rowmajor.py), and the same as the numba backend's
forward. This module sits below `fastmlp.model`: it imports the kernels, the runtime and the input
checks, never the backends.
"""

from __future__ import annotations

import math
import os
import queue
import threading
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from numba import typeof

from .inputs import (
    Features,
    FloatArray,
    Pixels,
    check_features,
    check_model,
    check_positive_int,
)
from .kernels.rowmajor import ROW_TILE, rowmajor_forward_probs_into
from .runtime.blas_threads import usable_cpus

if TYPE_CHECKING:
    from .model import MLP

# A thread takes at least this many multiply-adds of a call (some tens of microseconds of work on
# one core): below it, handing rows to another thread (a wake-up, and the GIL for the call) costs
# more than it saves. The default net (109 k a row) goes on a second thread from 40 rows on.
MIN_MACS_PER_THREAD = 2_000_000
_CPUS_RECHECK_SECONDS = 1.0  # usable_cpus() reads the affinity mask and cgroup files (~0.1 ms)

_lock = threading.Lock()
_tasks: queue.SimpleQueue[tuple[Any, ...]] = queue.SimpleQueue()  # (row range, its done queue) for the pool
_helpers = 0  # threads of the pool, all reading _tasks
_pool_pid = 0
_cpus = 1
_cpus_read_at = -math.inf
_entry_points: dict[tuple[Any, ...], Callable[..., bool]] = {}


def predict_proba(model: MLP, X: Features, batch_size: int = 4096) -> FloatArray:
    """`MLP.predict_proba`: the checks of the public edge, then `probabilities`.

    A float32 C-contiguous X (what a server usually holds) skips `check_features`' copies and
    reductions: its shape is checked here and its values for NaN and inf by the kernel, in the
    same pass that reads them (the same errors either way).
    """
    if not _model_ok(model):
        check_model(model, writable=False)  # raises, naming what is wrong
    check_positive_int(batch_size, "batch_size")
    if not (type(X) is np.ndarray and X.dtype == np.float32 and X.ndim == 2 and X.flags.c_contiguous
            and X.shape[1] == model.n_features and X.shape[0] > 0):
        X = check_features(X, model.n_features)
    probs = probabilities(model.weights, model.biases, X)
    if probs is None:
        raise ValueError(_NOT_FINITE)
    return probs


_F32 = np.dtype(np.float32)


def _model_ok(model: MLP) -> bool:
    """True if `check_model(model, writable=False)` would pass, in fewer Python steps (at one row it cost about
    as much as the kernel); False where it might not, and check_model then decides (and names the problem)."""
    sizes = getattr(model, "layer_sizes", None)
    weights, biases = getattr(model, "weights", None), getattr(model, "biases", None)
    if not (type(sizes) is tuple and type(weights) is list and type(biases) is list):
        return False
    if len(weights) != len(sizes) - 1 or len(biases) != len(sizes) - 1:
        return False
    for i, (W, b) in enumerate(zip(weights, biases)):
        if not (type(W) is np.ndarray and type(b) is np.ndarray and W.dtype is _F32 and b.dtype is _F32
                and W.shape == (sizes[i], sizes[i + 1]) and b.shape == (sizes[i + 1],)
                and W.flags.c_contiguous and b.flags.c_contiguous):
            return False
    return True


_NOT_FINITE = "X contains NaN or inf (or values too large for float32)"  # check_features' words


def probabilities(
    weights: Sequence[FloatArray], biases: Sequence[FloatArray], X: FloatArray | Pixels
) -> FloatArray | None:
    """Softmax of the net's logits of X, float32 (n, classes), ReLU hidden layers; None if X holds NaN or inf.

    weights[l] (K_l, N_l) and biases[l] (N_l,) float32 C-contiguous (as `check_model` makes sure),
    X a C-contiguous float32 (n, K_0) array or `Pixels`.
    """
    if isinstance(X, Pixels):
        X = X.to_float32()
    weights, biases = tuple(weights), tuple(biases)
    kernel, weights, biases = _kernel(X, weights, biases)
    n = X.shape[0]
    out = np.empty((n, weights[-1].shape[1]), dtype=np.float32)
    parts = 1
    if n >= 2 * ROW_TILE:
        macs = n * sum(W.size for W in weights)
        if macs >= 2 * MIN_MACS_PER_THREAD:
            parts = min(_usable_cpus(), macs // MIN_MACS_PER_THREAD, -(-n // ROW_TILE))
    if kernel is rowmajor_forward_probs_into and X.flags.aligned:  # the first call of this kind: compile, learn
        finite = kernel(out, X, weights, biases, 0, n)
        _learn_entry_point(X, weights, biases)
        return out if finite else None
    if parts <= 1:
        return out if kernel(out, X, weights, biases, 0, n) else None
    # Part boundaries on whole row tiles: every part but the last runs whole MR-row tiles.
    tiles = -(-n // ROW_TILE)
    bounds = [min(n, (tiles * p // parts) * ROW_TILE) for p in range(parts + 1)]
    _start_helpers(parts - 1)
    done: queue.SimpleQueue[BaseException | bool] = queue.SimpleQueue()
    for p in range(1, parts):
        _tasks.put((kernel, out, X, weights, biases, bounds[p], bounds[p + 1], done))
    finite, error = False, None
    try:
        finite = kernel(out, X, weights, biases, bounds[0], bounds[1])
    finally:
        for _ in range(parts - 1):  # every part is waited for: they write into out
            result = done.get()
            if isinstance(result, BaseException):
                error = error or result
            else:
                finite = finite and result
    if error is not None:
        raise error
    return out if finite else None


def _kernel(X: FloatArray, weights: tuple[FloatArray, ...], biases: tuple[FloatArray, ...]
            ) -> tuple[Callable[..., bool], tuple[FloatArray, ...], tuple[FloatArray, ...]]:
    """(the compiled rowmajor_forward_probs_into for these arguments, weights, biases): its entry point once
    known, where Numba's dispatcher would type each array in the tuples again at every call.

    Numba types a tuple as one (indexable) tuple only if its arrays are all writable or all read-only:
    where some are read-only (a model loaded by joblib with mmap_mode), read-only views of all of them.
    A rare type (an array not aligned to its float32s) goes through the dispatcher.
    """
    weights_writeable, biases_writeable = _writeable(weights), _writeable(biases)
    if weights_writeable is None:
        weights, weights_writeable = _read_only(weights), False
    if biases_writeable is None:
        biases, biases_writeable = _read_only(biases), False
    x_flags = X.flags
    key = (len(weights), x_flags.writeable, weights_writeable, biases_writeable)
    entry = _entry_points.get(key)
    if entry is None or not x_flags.aligned:
        return rowmajor_forward_probs_into, weights, biases
    return entry, weights, biases


def _writeable(arrays: tuple[FloatArray, ...]) -> bool | None:
    """True if every array is writable, False if none is, None for a mix (or one not aligned: see _kernel)."""
    seen = set()
    for a in arrays:
        flags = a.flags
        if not flags.aligned:
            return None
        seen.add(flags.writeable)
    return seen.pop() if len(seen) == 1 else None


def _read_only(arrays: tuple[FloatArray, ...]) -> tuple[FloatArray, ...]:
    views = tuple(a.view() for a in arrays)
    for v in views:
        v.flags.writeable = False
    return views


def _learn_entry_point(X: FloatArray, weights: tuple[FloatArray, ...], biases: tuple[FloatArray, ...]) -> None:
    """Remember the entry point of the overload that these arguments select (compiled by a call before)."""
    out = np.empty((1, weights[-1].shape[1]), dtype=np.float32)
    signature = tuple(typeof(a) for a in (out, X, weights, biases, 0, 1))
    compiled = rowmajor_forward_probs_into.overloads.get(signature)
    if compiled is not None:
        _entry_points[(len(weights), X.flags.writeable, _writeable(weights), _writeable(biases))] = compiled.entry_point


def _usable_cpus() -> int:
    """usable_cpus(), re-read at most once per _CPUS_RECHECK_SECONDS."""
    global _cpus, _cpus_read_at
    now = time.monotonic()
    if now - _cpus_read_at >= _CPUS_RECHECK_SECONDS:
        _cpus, _cpus_read_at = usable_cpus(), now
    return _cpus


def _start_helpers(helpers: int) -> None:
    """Make the pool at least `helpers` threads (again in a forked child, whose copy has none)."""
    global _helpers, _pool_pid, _tasks
    with _lock:
        if _pool_pid != os.getpid():
            _tasks, _helpers, _pool_pid = queue.SimpleQueue(), 0, os.getpid()
        while _helpers < helpers:
            threading.Thread(target=_helper, args=(_tasks,), name=f"fastmlp-inference-{_helpers}", daemon=True).start()
            _helpers += 1


def _helper(tasks: queue.SimpleQueue[tuple[Any, ...]]) -> None:
    """A thread of the pool: runs the row ranges handed to it, and puts each result (or error) in its done queue."""
    while True:
        kernel, *args, done = tasks.get()
        try:
            done.put(bool(kernel(*args)))
        except BaseException as exc:  # handed to the caller, which raises it
            done.put(exc)
