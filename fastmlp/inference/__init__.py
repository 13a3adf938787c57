"""Class probabilities for serving: fast at one row and at ten thousand, safe to call from many threads.

`predict_proba(model, X)` checks the model and X, then `probabilities(weights, biases, X)` computes
with the arrays it is given (the model's own), three ways by batch size:

- up to PACKED_MIN_ROWS rows: `fastmlp.kernels.rowmajor` reads the row-major weights in place, on the
  calling thread (a row's work is reading W once; packing would cost more);
- more rows: the row-major tiles in MR-row tiles straight off W, where W's rows start on cache lines (as
  `fastmlp.MLP` allocates them); else the training forward tiles, off packed copies of W kept between
  calls, one set per thread (`threads.kept_packed`, `threads.ServingThreads`). At every call each thread
  checks the packed panels it reads against W's columns, bit for bit, as its tiles of rows read them, and
  repacks those that changed. Either way an edit of `model.weights` in place is seen by the next call,
  whatever it changed (kernels.rowmajor.layer_part_into). Up to
  ROW_SPLIT_MIN_ROWS rows per thread, the threads share each layer (the model's serving threads, which
  wait for the next call spinning without the GIL, then sleep); beyond, they split the rows, each
  packing all of W for the call.

A server calling again with the model checked last takes a short path at any of these sizes but the
largest: the model's checks are not made again while its arrays are the same objects, with the same
shapes, strides and dtypes, and the kernel (or the serving threads) found for it last runs at once
(`_short_path`).

Threads: at most the usable CPUs, each given MIN_MACS_PER_THREAD multiply-adds at least. Concurrent
calls share no memory they write (a call that finds the model's serving threads busy runs alone).

A row's probabilities are the same bits whatever its position, the batch it comes in and the
threads that split it (see fastmlp/kernels/rowmajor.py), and the same as the numba backend's
forward. This package sits below `fastmlp.model`: it imports the kernels, the runtime and the input
checks, never the backends.
"""

from __future__ import annotations

import math
import operator
import os
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from numba import typeof

from ..inputs import (
    Features,
    FloatArray,
    Pixels,
    check_features,
    check_model,
    check_positive_int,
)
from ..kernels.rowmajor import ROW_TILE, packing_forward_probs_into, rowmajor_forward_probs_into
from ..kernels.serving import forward_probs_part_into
from ..runtime.barrier import barrier_state
from ..runtime.blas_threads import usable_cpus
from .threads import ServingThreads, kept_packed, last_serving_threads, run_parts, serving_threads, uniform

if TYPE_CHECKING:
    from ..model import MLP

# A thread takes at least this many multiply-adds of a call (some tens of microseconds of work on
# one core): below it, handing rows to another thread (a wake-up, and the GIL for the call) costs
# more than it saves. The default net (109 k a row) goes on a second thread from 40 rows on.
MIN_MACS_PER_THREAD = 2_000_000
# From this many rows on, a call runs the training forward tiles on packed copies of W; below, it reads
# the row-major weights in place (fastmlp/kernels/rowmajor.py), where a row's work is W read once.
PACKED_MIN_ROWS = 24
# A call splits its rows between threads (each packing all of W, then running its rows through every layer)
# where every thread gets this many rows; a smaller batch's threads share each layer, on kept copies.
ROW_SPLIT_MIN_ROWS = 256
_CPUS_RECHECK_SECONDS = 1.0  # usable_cpus() reads the affinity mask and cgroup files (~0.1 ms)

_cpus = 1
_cpus_read_at = -math.inf
_entry_points: dict[tuple[Any, ...], Callable[..., bool]] = {}


def predict_proba(model: MLP, X: Features, batch_size: int = 4096) -> FloatArray:
    """`MLP.predict_proba`: the checks of the public edge, then `probabilities`.

    A float32 C-contiguous X (what a server usually holds) skips `check_features`' copies and
    reductions: its shape is checked here and its values for NaN and inf by the kernel, in the
    same pass that reads them (the same errors either way). A call with the model checked last, its
    arrays as they were, takes a short path (`_short_path`).
    """
    if type(batch_size) is not int or batch_size < 1:
        check_positive_int(batch_size, "batch_size")
    if type(X) is np.ndarray:
        probs = _short_path(model, X)
        if probs is not None:
            return probs
    if not _model_ok(model):
        check_model(model, writable=False)  # raises, naming what is wrong
    if not (type(X) is np.ndarray and X.dtype == np.float32 and X.ndim == 2 and X.flags.c_contiguous
            and X.shape[1] == model.n_features and X.shape[0] > 0):
        X = check_features(X, model.n_features)
    probs = probabilities(model.weights, model.biases, X)
    if probs is None:
        raise ValueError(_NOT_FINITE)
    _remember_checked(model)
    return probs


_LAYOUT = operator.attrgetter("shape", "strides", "dtype")
_F32 = np.dtype(np.float32)


class _Checked:
    """A model as predict_proba checked it (its arrays, their shapes, strides and dtypes), with what a call needs
    to run again without the checks and lookups of the full path: a server calls with one model, again and
    again, and at one row or a few dozen those Python steps cost as much as the kernels."""

    __slots__ = ("sizes", "arrays", "depth", "layouts", "uniform_weights", "uniform_biases", "entry_key", "macs",
                 "serving")

    def __init__(self, model: MLP, serving: ServingThreads | None) -> None:
        self.sizes = model.layer_sizes
        self.arrays = (*model.weights, *model.biases)
        self.depth = len(model.weights)
        self.layouts = list(map(_LAYOUT, self.arrays))
        self.uniform_weights, self.uniform_biases = uniform(tuple(model.weights)), uniform(tuple(model.biases))
        # _entry_points' key but its last item, X's writeable flag (added at each call)
        self.entry_key = (self.depth, self.uniform_weights[0].flags.writeable, self.uniform_biases[0].flags.writeable)
        self.macs = sum([W.size for W in model.weights])
        self.serving = serving  # the model's serving threads, if they ran a call

    def same(self, model: MLP) -> bool:
        """Whether model still has these arrays, with the same shapes, strides and dtypes (so its checks would pass
        again: only its arrays' values may have changed, which every path reads afresh)."""
        weights, biases = getattr(model, "weights", None), getattr(model, "biases", None)
        if not (getattr(model, "layer_sizes", None) is self.sizes and type(weights) is list and type(biases) is list
                and len(weights) == self.depth):
            return False
        arrays = weights + biases
        return (len(arrays) == len(self.arrays) and all(map(operator.is_, arrays, self.arrays))
                and list(map(_LAYOUT, arrays)) == self.layouts)


_checked: _Checked | None = None  # the model checked last


def _forget_checked() -> None:
    """In a forked child: the serving threads remembered with the model checked last do not exist here."""
    global _checked
    _checked = None


os.register_at_fork(after_in_child=_forget_checked)


def _remember_checked(model: MLP) -> None:
    """After a call that passed predict_proba's checks: remember the model, and its serving threads if they ran it."""
    global _checked
    serving = last_serving_threads()
    if serving is not None and not serving.serves((*model.weights, *model.biases)):
        serving = None
    last = _checked
    if last is None or last.serving is not serving or not last.same(model):
        _checked = _Checked(model, serving)


def _short_path(model: MLP, X: FloatArray) -> FloatArray | None:
    """predict_proba of X in fewer Python steps, or None to take the full path: where the model is the one checked
    last, its arrays as they were (`_Checked.same`), and X a float32 C-contiguous aligned batch whose kernel is known:
    up to PACKED_MIN_ROWS rows, the compiled row-major kernel's entry point; more, the same serving threads taking
    it whole (the path `probabilities` would choose). None also where another call holds those threads."""
    checked = _checked
    if checked is None or X.dtype is not _F32 or X.ndim != 2:
        return None
    flags = X.flags
    n, features = X.shape
    if not (flags.c_contiguous and flags.aligned and features == checked.sizes[0] and n > 0 and checked.same(model)):
        return None
    if n < PACKED_MIN_ROWS:
        kernel = _entry_points.get((*checked.entry_key, flags.writeable))
        if kernel is None:
            return None
        out = np.empty((n, checked.sizes[-1]), _F32)
        if not kernel(out, X, checked.uniform_weights, checked.uniform_biases, 0, n):
            raise ValueError(_NOT_FINITE)
        return out
    serving = checked.serving
    if serving is None:
        return None
    parts = min(_usable_cpus(), max(1, n * checked.macs // MIN_MACS_PER_THREAD))
    if not (n < parts * ROW_SPLIT_MIN_ROWS and 1 < parts <= serving.threads and n <= serving.max_rows
            and not serving.stopped):
        return None
    out = np.empty((n, checked.sizes[-1]), _F32)
    finite = serving.call(out, X, parts)
    if finite is None:
        return None
    if not finite:
        raise ValueError(_NOT_FINITE)
    return out


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
    n = X.shape[0]
    out = np.empty((n, weights[-1].shape[1]), dtype=np.float32)
    if n >= PACKED_MIN_ROWS:
        return out if _packed_probabilities_into(out, X, weights, biases) else None
    kernel, weights, biases = _kernel(X, weights, biases)
    if kernel is rowmajor_forward_probs_into and X.flags.aligned:  # the first call of this kind: compile, learn
        finite = kernel(out, X, weights, biases, 0, n)
        _learn_entry_point(X, weights, biases)
        return out if finite else None
    return out if kernel(out, X, weights, biases, 0, n) else None


def _packed_probabilities_into(out: FloatArray, X: FloatArray, weights: tuple[FloatArray, ...],
                               biases: tuple[FloatArray, ...]) -> bool:
    """out = the probabilities of X through the training forward tiles (False if X holds NaN or inf).

    As many threads as the usable CPUs, each with MIN_MACS_PER_THREAD multiply-adds at least. Where each gets
    ROW_SPLIT_MIN_ROWS rows, they split the rows and each packs all of W for its own (threads.run_parts);
    else they run the call layer by layer together, each reading its share of W from copies kept between
    calls: this thread's own when it is alone, else the model's serving threads' (threads.ServingThreads).
    """
    n = X.shape[0]
    parts = min(_usable_cpus(), max(1, n * sum([W.size for W in weights]) // MIN_MACS_PER_THREAD))
    if n >= parts * ROW_SPLIT_MIN_ROWS:
        tiles = -(-n // ROW_TILE)
        parts = min(parts, tiles)
        bounds = [min(n, (tiles * p // parts) * ROW_TILE) for p in range(parts + 1)]  # on whole row tiles
        weights, biases = uniform(weights), uniform(biases)
        calls = [(out, X, weights, biases, bounds[p], bounds[p + 1]) for p in range(parts)]
        return all(run_parts(packing_forward_probs_into, calls))
    if parts > 1 and X.dtype == np.float32 and X.flags.aligned and X.flags.c_contiguous:  # the serving threads'
        # kernel is called through its entry point, compiled for such an X (its types are not checked again)
        served = serving_threads(weights, biases, parts, parts * ROW_SPLIT_MIN_ROWS).call(out, X, parts)
        if served is not None:
            return served
    packed = tuple(kept_packed(W) for W in weights)  # alone: this thread's own copies (found by the model's arrays)
    weights, biases = uniform(weights), uniform(biases)
    hidden = tuple(np.empty((n, W.shape[1]), dtype=np.float32) for W in weights[:-1]) or (out,)
    finite = np.zeros(1, dtype=np.int64)
    forward_probs_part_into(hidden, out, X, weights, biases, packed, 0, 1, _ALONE, finite)
    return bool(finite[0])


_ALONE = barrier_state()  # a barrier of one party never waits: shared by every call that runs alone


def _kernel(X: FloatArray, weights: tuple[FloatArray, ...], biases: tuple[FloatArray, ...]
            ) -> tuple[Callable[..., bool], tuple[FloatArray, ...], tuple[FloatArray, ...]]:
    """(the compiled rowmajor_forward_probs_into for these arguments, weights, biases): its entry point once
    known, where Numba's dispatcher would type each array in the tuples again at every call.

    Numba types a tuple as one (indexable) tuple only if its arrays are all writable or all read-only:
    where some are read-only (a model loaded by joblib with mmap_mode), read-only views of all of them.
    A rare type (an array not aligned to its float32s) goes through the dispatcher.
    """
    weights, biases = uniform(weights), uniform(biases)
    key = _entry_key(X, weights, biases)
    entry = None if key is None else _entry_points.get(key)
    return entry or rowmajor_forward_probs_into, weights, biases


def _entry_key(X: FloatArray, weights: tuple[FloatArray, ...], biases: tuple[FloatArray, ...]
               ) -> tuple[int, bool, bool, bool] | None:
    """What selects the overload of a call (its depth and the writeable flags of the weights, the biases and X,
    each tuple made uniform), or None where an array is not aligned: such a call goes through the dispatcher."""
    if not (X.flags.aligned and all(a.flags.aligned for a in weights + biases)):
        return None
    return len(weights), weights[0].flags.writeable, biases[0].flags.writeable, X.flags.writeable


def _learn_entry_point(X: FloatArray, weights: tuple[FloatArray, ...], biases: tuple[FloatArray, ...]) -> None:
    """Remember the entry point of the overload that these arguments select (compiled by a call before)."""
    out = np.empty((1, weights[-1].shape[1]), dtype=np.float32)
    signature = tuple(typeof(a) for a in (out, X, weights, biases, 0, 1))
    compiled = rowmajor_forward_probs_into.overloads.get(signature)
    key = _entry_key(X, weights, biases)
    if compiled is not None and key is not None:
        _entry_points[key] = compiled.entry_point


def _usable_cpus() -> int:
    """usable_cpus(), re-read at most once per _CPUS_RECHECK_SECONDS."""
    global _cpus, _cpus_read_at
    now = time.monotonic()
    if now - _cpus_read_at >= _CPUS_RECHECK_SECONDS:
        _cpus, _cpus_read_at = usable_cpus(), now
    return _cpus
