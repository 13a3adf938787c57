"""The threads an inference call runs on besides the caller's.

- `run_parts(kernel, calls)`: a large batch's row ranges, each on a thread of a pool at once (the first on
  the caller's), each range a whole nopython call. The pool's threads sleep on a queue between calls:
  their wake-up (tens of microseconds) is nothing beside a range's milliseconds.
- `ServingThreads`: a mid-sized batch (a few dozen to a few hundred rows) is a few hundred microseconds of
  work, as long as such a wake-up; its parts run on serving threads kept per model, which wait for the next
  call spinning in nopython code, without the GIL (fastmlp/kernels/serving.py), and sleep once idle.
- `kept_packed(W)`: the packed copy of a weight matrix that one thread keeps between calls, read where W's rows
  do not start on cache lines (kernels.rowmajor.packed_layer_part_into checks it against W as it reads it, at
  every call); zeros until then, in pages the OS gives only once written.

Every thread has packed copies of its own, and a call's threads share only the call's own arrays: concurrent
calls never write the same memory. Threads are made again in a forked child (whose copy has none).
"""

from __future__ import annotations

import operator
import os
import queue
import threading
import weakref
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, cast

import numpy as np
from numba import typeof

from ..inputs import FloatArray
from ..kernels.packed import packed_shape
from ..kernels.serving import STOP, call_parts, control_state, serve_parts
from ..runtime.aligned import aligned_zeros
from ..runtime.barrier import abort_barrier, barrier_aborted, barrier_state

# --- the pool for large batches -----------------------------------------------------------------

_lock = threading.Lock()
_tasks: queue.SimpleQueue[tuple[Any, ...]] = queue.SimpleQueue()  # (kernel, args, done queue) for the pool
_helpers = 0  # threads of the pool, all reading _tasks
_in_flight = 0  # tasks queued or running
_pool_pid = 0


def run_parts(kernel: Callable[..., bool], calls: list[tuple[Any, ...]]) -> list[bool]:
    """[kernel(*args) for args in calls], the first on this thread and the others on the pool's at once;
    returns when all are done (they write into shared arrays), raising the first error any of them raised."""
    if len(calls) == 1:
        return [bool(kernel(*calls[0]))]
    done: queue.SimpleQueue[BaseException | bool] = queue.SimpleQueue()
    _hand_to_pool([(kernel, args, done) for args in calls[1:]])
    results, error = [], None
    try:
        results.append(bool(kernel(*calls[0])))
    except BaseException as exc:
        error = exc
    for _ in range(len(calls) - 1):  # every part is waited for: they write into shared arrays
        result = done.get()
        if isinstance(result, BaseException):
            error = error or result
        else:
            results.append(result)
    if error is not None:
        raise error
    return results


def _hand_to_pool(tasks: list[tuple[Any, ...]]) -> None:
    """Queue the tasks for the pool, first growing it to one thread per task in flight (queued or running, from
    any caller), so that a queued task always has a thread to take it."""
    global _helpers, _pool_pid, _tasks, _in_flight
    with _lock:
        if _pool_pid != os.getpid():
            _tasks, _helpers, _in_flight, _pool_pid = queue.SimpleQueue(), 0, 0, os.getpid()
        _in_flight += len(tasks)
        while _helpers < _in_flight:
            threading.Thread(target=_pool_thread, args=(_tasks,), name=f"fastmlp-inference-{_helpers}",
                             daemon=True).start()
            _helpers += 1
        for task in tasks:
            _tasks.put(task)


def _pool_thread(tasks: queue.SimpleQueue[tuple[Any, ...]]) -> None:
    """A thread of the pool: runs the calls handed to it, and puts each result (or error) in its done queue."""
    global _in_flight
    while True:
        kernel, args, done = tasks.get()
        try:
            result: BaseException | bool = bool(kernel(*args))
        except BaseException as exc:  # handed to the caller, which raises it
            result = exc
        with _lock:
            _in_flight -= 1
        done.put(result)


# --- copies of the weights kept between calls -------------------------------------------------------

_local = threading.local()


def _new_packed(W: FloatArray) -> FloatArray:
    """A packed copy of W to be, all zeros: the first call finds it stale and packs it."""
    return aligned_zeros(packed_shape(*W.shape))  # on a cache line, as the training buffers (runtime/aligned.py)


def kept_packed(W: FloatArray) -> FloatArray:
    """This thread's packed copy of W, kept while W lives. Found by W's identity, so that an array put in W's
    place gets a copy of its own."""
    kept = getattr(_local, "kept", None)
    if kept is None:
        kept = _local.kept = {}
    key = id(W)
    entry = kept.get(key)
    if entry is None or entry[0]() is not W or entry[1].shape != packed_shape(*W.shape):
        def forget(_: object, key: int = key, kept: dict[int, Any] = kept) -> None:
            kept.pop(key, None)

        entry = kept[key] = (weakref.ref(W, forget), _new_packed(W))
    return entry[1]


# --- serving threads for mid-sized batches -----------------------------------------------------------

MAX_MODELS = 4  # models with serving threads at once; the least recently used one's stop beyond


class ServingThreads:
    """Threads 1..threads-1 kept for one model's calls (the caller is thread 0), each with its own packed copies
    of the weights, waiting for the next call in kernels.serving.serve_parts; one call at a time."""

    def __init__(self, weights: tuple[FloatArray, ...], biases: tuple[FloatArray, ...], threads: int,
                 max_rows: int) -> None:
        self.sources = weights + biases  # the model's own arrays, by which it is found
        # Views of them, not the arrays: the threads call serve_parts again after each sleep, with these tuples,
        # and an array whose shape or dtype was set in place since (predict_proba then refuses the model) would
        # type them anew: a TypingError in a serving thread. A view keeps the types it was made with.
        weights, biases = uniform(_views(weights)), uniform(_views(biases))
        self.weights, self.biases, self.threads = weights, biases, threads
        hidden = tuple(aligned_zeros((max_rows, W.shape[1])) for W in weights[:-1])
        self.hidden = hidden or (np.empty((0, 0), dtype=np.float32),)  # never read without hidden layers
        self.max_rows = max_rows
        self.control, self.barrier = control_state(threads), barrier_state()
        self.finite = aligned_zeros(threads, np.int64)  # on a line of its own, as the barrier's and control's
        self.packed = [tuple(_new_packed(W) for W in weights) for _ in range(threads)]
        self.busy = threading.Lock()
        self.stopped = False
        self._entry_points: dict[bool, Callable[..., tuple[int, int, int]]] = {}  # by X's flags.writeable
        self.wakeups = [threading.Event() for _ in range(threads)]
        for part in range(1, threads):
            threading.Thread(target=self._serve, args=(part,), name=f"fastmlp-serving-{part}", daemon=True).start()

    def serves(self, arrays: tuple[FloatArray, ...]) -> bool:
        """Whether these are the arrays these threads serve (the model's weights, then its biases): the same objects."""
        return len(arrays) == len(self.sources) and all(map(operator.is_, arrays, self.sources))

    def _serve(self, part: int) -> None:
        seen = 0
        try:
            while not self.stopped:
                seen = serve_parts(self.control, self.hidden, self.weights, self.biases, self.packed[part], part,
                                   self.barrier, self.finite, seen)
                self.wakeups[part].wait()
                self.wakeups[part].clear()
        except BaseException:  # not expected from nopython code; the caller then raises
            abort_barrier(self.barrier)
            raise

    def call(self, out: FloatArray, X: FloatArray, parts: int) -> bool | None:
        """out = the probabilities of X (at most max_rows rows, C-contiguous and aligned float32) on `parts` of
        the threads; whether X was finite. None, with nothing done, if another call holds the threads."""
        if not self.busy.acquire(blocking=False):
            return None
        try:
            # X and out stay referenced here until every part has passed the last barrier.
            args = (self.control, self.hidden, out, X, self.weights, self.biases, self.packed[0], parts,
                    self.barrier, self.finite)
            run = self._call_parts(X, out, args)
            try:
                asleep, finite, ok = run(*args, False)
                if asleep:
                    for part in range(1, parts):
                        if part >= 63 or asleep >> part & 1:
                            self.wakeups[part].set()
                    asleep, finite, ok = run(*args, True)
            except BaseException:  # a Ctrl-C between posting the call and running part 0: the other parts would
                abort_barrier(self.barrier)  # wait for it at the barrier forever; they return, and these threads end
                self.stop()
                raise
            if not ok:
                self.stop()
                raise RuntimeError("a fastmlp serving thread failed; predict_proba's threads for this model "
                                   "are stopped, and the next call starts new ones")
            return bool(finite)
        finally:
            self.busy.release()

    def _call_parts(self, X: FloatArray, out: FloatArray, args: tuple[Any, ...]) -> Callable[..., tuple[int, int, int]]:
        """kernels.serving.call_parts, or its compiled entry point where the types of X and out are those it was
        compiled for (only X's writeable flag varies from call to call): Numba's dispatcher would type each
        array in the tuples again at every call, some microseconds."""
        writeable = X.flags.writeable
        entry = self._entry_points.get(writeable)
        if entry is not None:
            return entry
        call_parts(*args[:7], 1, *args[8:], True)  # parts = 1, posted: compiles without touching the threads
        signature = tuple(typeof(a) for a in (*args, True))
        compiled = call_parts.overloads.get(signature)
        if compiled is None:
            return cast(Callable[..., tuple[int, int, int]], call_parts)
        self._entry_points[writeable] = compiled.entry_point
        return cast(Callable[..., tuple[int, int, int]], compiled.entry_point)

    def stop(self) -> None:
        """End the threads (each returns from its wait at once)."""
        self.stopped = True
        self.control[STOP] = 1
        for event in self.wakeups:
            event.set()


_serving: OrderedDict[tuple[int, ...], ServingThreads] = OrderedDict()
_serving_pid = 0
_last: ServingThreads | None = None  # the one found last: a server calls with one model, again and again


def serving_threads(weights: tuple[FloatArray, ...], biases: tuple[FloatArray, ...], threads: int,
                    max_rows: int) -> ServingThreads:
    """The serving threads of the model with these weight and bias arrays (the same objects), at least
    `threads` in all and room for max_rows rows; made (and the least recently used model's stopped) as needed.

    They keep the arrays (read-only views of them all where some are read-only and some not: Numba types a
    tuple as one only if its arrays agree), so a model keeps them alive while among the MAX_MODELS last used.
    """
    global _serving_pid, _last
    last = _last  # None in a forked child (_forget_parent_threads)
    if (last is not None and last.threads >= threads and last.max_rows >= max_rows and not last.stopped
            and last.serves(weights + biases)):
        return last
    key = tuple(id(a) for a in weights + biases)
    with _lock:
        if _serving_pid != os.getpid():
            _serving.clear()
            _serving_pid = os.getpid()
        found = _serving.get(key)
        if found is not None and (found.stopped or barrier_aborted(found.barrier) or found.threads < threads
                                  or found.max_rows < max_rows
                                  or not found.serves(weights + biases)):
            found.stop()
            found = None
        if found is None:
            found = _serving[key] = ServingThreads(weights, biases, threads, max_rows)
            while len(_serving) > MAX_MODELS:
                _serving.popitem(last=False)[1].stop()
        _serving.move_to_end(key)
        _last = found
        return found


def last_serving_threads() -> ServingThreads | None:
    """The serving threads found last by serving_threads (None in a forked child, or before any)."""
    return _last


def _forget_parent_threads() -> None:
    """In a forked child: the parent's serving threads do not exist here (the next call starts new ones), and a
    lock that one of the parent's other threads held at the fork would never be released here."""
    global _last, _lock
    _last = None
    _lock = threading.Lock()


os.register_at_fork(after_in_child=_forget_parent_threads)


def _views(arrays: tuple[FloatArray, ...]) -> tuple[FloatArray, ...]:
    """New array objects on the same memory, with the arrays' shapes, dtypes and flags."""
    return tuple(a.view() for a in arrays)


def uniform(arrays: tuple[FloatArray, ...]) -> tuple[FloatArray, ...]:
    """The arrays, or read-only views of them all where some are read-only and some not (a model loaded by
    joblib with mmap_mode): Numba types a tuple as one (indexable) tuple only if its arrays agree."""
    if len({a.flags.writeable for a in arrays}) <= 1:
        return arrays
    views = tuple(a.view() for a in arrays)
    for v in views:
        v.flags.writeable = False
    return views
