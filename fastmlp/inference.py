"""Class probabilities for serving: fast at one row and at ten thousand, safe to call from many threads.

`probabilities(weights, biases, X)` runs `fastmlp.kernels.rowmajor` straight off the arrays it is
given (an `MLP`'s own; `predict_proba(model, X)` checks them and X first): nothing is packed or cached, so an edit of `model.weights` in place is seen
by the next call, and concurrent calls share no buffer (each one allocates its output and, per
thread, two small scratch blocks). A large batch is cut into contiguous row ranges run on a pool of
threads (the nopython kernel releases the GIL); a small one runs on the caller's thread alone.

A row's probabilities are the same bits whatever its position, the batch it comes in and the
threads that split it (see fastmlp/kernels/rowmajor.py), and the same as the numba backend's
forward. This layer sits below `fastmlp.model`: it imports only the kernels, the runtime and the input checks.
"""

from __future__ import annotations

import math
import os
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

import numpy as np

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

# A thread takes at least this many multiply-adds of a call (~50-100 us of work on one core):
# below it, handing rows to another thread costs more than it saves. The default net (109 k a row)
# goes on a second thread from 20 rows on.
MIN_MACS_PER_THREAD = 2_000_000
_CPUS_RECHECK_SECONDS = 1.0  # usable_cpus() reads the affinity mask and cgroup files (~0.1 ms)

_lock = threading.Lock()
_pool: ThreadPoolExecutor | None = None
_pool_pid = 0
_pool_size = 0
_cpus = 1
_cpus_read_at = -math.inf


def predict_proba(model: MLP, X: Features, batch_size: int = 4096) -> FloatArray:
    """`MLP.predict_proba`: the checks of the public edge, then `probabilities`.

    A float32 C-contiguous X (what a server usually holds) skips `check_features`' copies and
    reductions: its shape is checked here and its values for NaN and inf by the kernel, in the
    same pass that reads them (the same errors either way).
    """
    check_model(model, writable=False)
    check_positive_int(batch_size, "batch_size")
    if not (type(X) is np.ndarray and X.dtype == np.float32 and X.ndim == 2 and X.flags.c_contiguous
            and X.shape[1] == model.n_features and X.shape[0] > 0):
        X = check_features(X, model.n_features)
    probs = probabilities(model.weights, model.biases, X)
    if probs is None:
        raise ValueError(_NOT_FINITE)
    return probs


_NOT_FINITE = "X contains NaN or inf (or values too large for float32)"  # check_features' words


def probabilities(weights: Sequence[FloatArray], biases: Sequence[FloatArray], X: FloatArray | Pixels) -> FloatArray | None:
    """Softmax of the net's logits of X, float32 (n, classes), ReLU hidden layers; None if X holds NaN or inf.

    weights[l] (K_l, N_l) and biases[l] (N_l,) float32 C-contiguous (as `check_model` makes sure),
    X a C-contiguous float32 (n, K_0) array or `Pixels`.
    """
    if isinstance(X, Pixels):
        X = X.to_float32()
    weights, biases = _same_kind(weights), _same_kind(biases)
    n = X.shape[0]
    out = np.empty((n, weights[-1].shape[1]), dtype=np.float32)
    macs = n * sum(W.shape[0] * W.shape[1] for W in weights)
    parts = 1 if macs < 2 * MIN_MACS_PER_THREAD else min(_usable_cpus(), macs // MIN_MACS_PER_THREAD,
                                                        -(-n // ROW_TILE))
    if parts <= 1:
        return out if rowmajor_forward_probs_into(out, X, weights, biases, 0, n) else None
    # Part boundaries on whole row tiles: every part but the last runs whole MR-row tiles.
    tiles = -(-n // ROW_TILE)
    bounds = [min(n, (tiles * p // parts) * ROW_TILE) for p in range(parts + 1)]
    pool = _thread_pool(parts - 1)
    futures = [pool.submit(rowmajor_forward_probs_into, out, X, weights, biases, bounds[p], bounds[p + 1])
               for p in range(1, parts)]
    finite = False
    try:
        finite = rowmajor_forward_probs_into(out, X, weights, biases, bounds[0], bounds[1])
    finally:
        for future in futures:
            finite = future.result() and finite  # waits (the others write into out); raises the first error
    return out if finite else None


def _same_kind(arrays: Sequence[FloatArray]) -> tuple[FloatArray, ...]:
    """The arrays as a tuple Numba types as one (homogeneous) tuple: read-only views of all of them where
    some are read-only (a model loaded by joblib with mmap_mode), so that one compiled kernel takes them."""
    arrays = tuple(arrays)
    if all(a.flags.writeable for a in arrays) or not any(a.flags.writeable for a in arrays):
        return arrays
    views = tuple(a.view() for a in arrays)
    for v in views:
        v.flags.writeable = False
    return views


def _usable_cpus() -> int:
    """usable_cpus(), re-read at most once per _CPUS_RECHECK_SECONDS."""
    global _cpus, _cpus_read_at
    now = time.monotonic()
    if now - _cpus_read_at >= _CPUS_RECHECK_SECONDS:
        _cpus, _cpus_read_at = usable_cpus(), now
    return _cpus


def _thread_pool(helpers: int) -> ThreadPoolExecutor:
    """The process's pool of at least `helpers` inference threads (made again in a forked child, whose
    copy of the pool has no threads)."""
    global _pool, _pool_pid, _pool_size
    with _lock:
        if _pool is None or _pool_pid != os.getpid() or _pool_size < helpers:
            old = _pool if _pool_pid == os.getpid() else None
            _pool = ThreadPoolExecutor(max_workers=helpers, thread_name_prefix="fastmlp-inference")
            _pool_pid, _pool_size = os.getpid(), helpers
            if old is not None:
                old.shutdown(wait=False)  # its threads end once the work handed to them is done
        return _pool
