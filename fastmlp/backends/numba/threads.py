"""How many worker threads the numba backend's epoch runs on, and how they run it.

The count: the BLAS thread count (OPENBLAS_NUM_THREADS, threadpoolctl, --threads), at most the usable
CPUs, no more than a batch gives MIN_ROWS_PER_WORKER rows each nor than a step has arithmetic for
(MIN_FLOPS_PER_WORKER each), and, unless the caller fixed it, no more than the cores other
processes leave free (`FreeCores`). Any count splits a step (more workers than the first layer
has panels split it by rows: fastmlp/backends/numba/step.py).

The workers are pinned to distinct cores (`worker_cpus`) when there is one for every core the
process may use, so that none migrates away from the weights its core's cache holds; with fewer
workers the OS places them, since it sees the cores that other work (another training, too)
keeps busy.
"""

from __future__ import annotations

import functools
import os
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from itertools import pairwise
from typing import NamedTuple

import numpy as np
import numpy.typing as npt

from ...kernels.gather import PREFETCH_ROW_BYTES
from ...kernels.packed import panel_count
from ...runtime.barrier import abort_barrier, barrier_aborted
from ...runtime.blas_threads import blas_thread_count, usable_cpus
from ..base import Progress, epoch_ranges

# run(t, begin, end): worker t's part of the batches of order[begin:end], its summed loss.
Run = Callable[[int, int, int], float]

# A worker takes at least this many rows of a batch: one tile of rows of the forward kernel on
# AVX-512 (8; 6 on AVX2), below which its tile runs partly empty, and each step's two barriers
# cost more than the rows' share of the work saves.
MIN_ROWS_PER_WORKER = 8
# ... and at least this much of a step's arithmetic (FLOPs, `step_flops`): a few microseconds of
# one core, below which the barriers cost as much as the share saves (a tiny net on many cores).
MIN_FLOPS_PER_WORKER = 100_000
# How long the CPU load is watched before the worker count follows it (see FreeCores).
LOAD_WINDOW_SECONDS = 1.0


def training_threads() -> int:
    """Threads `train_epoch` uses by default: the BLAS thread count, at most the usable CPUs.

    So OPENBLAS_NUM_THREADS, threadpoolctl's limits and the CLI's --blas-threads set it.
    """
    return max(1, min(blas_thread_count(), usable_cpus()))


def step_flops(batch_rows: int, layer_sizes: Sequence[int]) -> int:
    """FLOPs of one training step: each weight takes part in a forward, a backward (but W_0, whose
    input gradient is never needed) and a weight-gradient product, 2 FLOPs per row each."""
    weights = [k * n for k, n in pairwise(layer_sizes)]
    return 2 * batch_rows * (3 * sum(weights) - weights[0])


# Each worker gathers the whole batch into input buffers of its own (`private_inputs`) while all of them
# together hold at most this many bytes of it: a few MB, what two to four cores' L2 caches hold.
PRIVATE_INPUT_BYTES = 8 << 20


def private_inputs(workers: int, batch_rows: int, layer_sizes: Sequence[int]) -> bool:
    """True when each of an epoch's workers gathers every row of a batch into buffers of its own, rather
    than its share of the rows into buffers they all read (fastmlp/backends/numba/step.py).

    With layer 0 split by panels, each worker reads every row of the batch twice a step (the forward,
    the update), and with a shared batch half of it was just written by the other worker: lines read
    from another core's cache. On a 2-core Intel Xeon (AVX-512) that cost 10-20 % of a step; gathering
    every row on every worker costs a share of a gather more. Only where the batch's copies stay small
    (PRIVATE_INPUT_BYTES): at a large batch on many cores, each core gathering all of it would fill L3.
    """
    return (1 < workers <= panel_count(layer_sizes[1])
            and _copies_bytes(workers, batch_rows, layer_sizes) <= PRIVATE_INPUT_BYTES)


def _copies_bytes(workers: int, batch_rows: int, layer_sizes: Sequence[int]) -> int:
    """Bytes of float32 input a batch takes with a copy of it on every worker."""
    return workers * batch_rows * layer_sizes[0] * 4


# With the upper layers replicated, each worker computes them for every row of the batch: only where they are
# this small a share of the net (weights past W_0 against W_0's), so that the repeated work stays small.
REPLICATED_UPPER_SHARE = 1 / 8


def upper_layers_small(layer_sizes: Sequence[int]) -> bool:
    """True for a net whose layers above the first hold at most REPLICATED_UPPER_SHARE of W_0's weights (it has
    some) and whose layer 0 has two panels or more: the nets whose upper layers an epoch may replicate, and
    whose training steps therefore sum layer 1 in two parts whatever the worker count (fastmlp/backends/numba/
    layer1.py; a bigger layer 1 in one, where the parts would cost an elementwise pass and never be split)."""
    weights = [k * n for k, n in pairwise(layer_sizes)]
    return (len(weights) > 1 and sum(weights[1:]) <= REPLICATED_UPPER_SHARE * weights[0]
            and panel_count(layer_sizes[1]) >= 2)


def layer1_split_by_k(replicated: bool, workers: int) -> bool:
    """Whether an epoch whose upper layers are replicated (or not) on `workers` workers splits layer 1 by k instead
    of replicating it (fastmlp/backends/numba/step.py): on two workers, whose parts of layer 1's sum are its two."""
    return replicated and workers == 2


def may_replicate_upper(workers: int, batch_rows: int, layer_sizes: Sequence[int]) -> bool:
    """True where an epoch's step may replicate the layers above the first on every worker (each its own copy,
    run for every row of the batch; fastmlp/backends/numba/step.py): where every worker gathers the whole batch
    (`private_inputs`), the net has such layers, and they hold at most REPLICATED_UPPER_SHARE of W_0's weights.
    `SplitChooser` decides whether it does."""
    return private_inputs(workers, batch_rows, layer_sizes) and upper_layers_small(layer_sizes)


# Private input buffers (`private_inputs`) are timed against one shared buffer (`step_splits`) where the workers'
# gathers are costly: their copies of the batch hold more than this many bytes in all, or a row of the data is
# longer than the head of it that the step prefetches into L2 (gather.PREFETCH_ROW_BYTES: a whole uint8 MNIST
# row, a quarter of a float32 one), so that each worker's gather waits for memory. Which buffer is faster then is
# the machine's: on a 2-core Intel Xeon (2 MB L2) a shared buffer ran 0.95-0.98x the private copies' speed at
# batch 1024 (pixels); on a 2-core AMD EPYC Zen 4 (1 MB L2) it was the faster at 1024 (two-worker median steps
# 0.93-0.94x) and on float32 rows at 32-256 (0.93-0.98x), and private copies of pixel rows at 64-256 (1.01-1.03x).
SHARED_INPUT_TRIAL_BYTES = 1 << 20


class StepSplit(NamedTuple):
    """How an epoch's workers share a step: the upper layers replicated on every worker (else split by rows), and
    whether each worker gathers the whole batch into input buffers of its own (else its share of the rows into
    buffers they all read). Every split gives the same bits; only the speed differs."""

    replicated: bool
    private_inputs: bool


def step_splits(workers: int, batch_rows: int, layer_sizes: Sequence[int],
                data_row_bytes: int = 0) -> tuple[StepSplit, ...]:
    """The splits an epoch of this shape may run, its default first (by rows, private inputs where `private_inputs`
    says): then replicated where `may_replicate_upper` allows, and a shared input buffer where private copies hold
    over SHARED_INPUT_TRIAL_BYTES or a row of the data the batch is gathered from (`data_row_bytes`, e.g. 784 for
    uint8 pixels, 3,136 for float32) is longer than gather.PREFETCH_ROW_BYTES. With more than one, `SplitChooser`
    times them."""
    private = private_inputs(workers, batch_rows, layer_sizes)
    splits = [StepSplit(False, private)]
    if may_replicate_upper(workers, batch_rows, layer_sizes):
        splits.append(StepSplit(True, True))
    if private and (_copies_bytes(workers, batch_rows, layer_sizes) > SHARED_INPUT_TRIAL_BYTES
                    or data_row_bytes > PREFETCH_ROW_BYTES):
        splits.append(StepSplit(False, False))
    return tuple(splits)


# Whole epochs of each split that SplitChooser times before it keeps the fastest.
SPLIT_TRIALS = 2
# A kept split is timed again (SplitChooser.record) once RETIME_EPOCHS epochs in a row ran over RETIME_DRIFT times
# its best trial's seconds per sample, or under 1 / RETIME_DRIFT times; only epochs of RETIME_MIN_SECONDS or more
# count (shorter ones are noisy). On a 2-core Zen 5 VM the host moved the two vCPUs between cores near each other
# and cores on different dies for minutes at a time (fastmlp.bench.barrier_meeting), and which split was fastest
# moved with them: at batch 64 on pixels split by rows 66.3 ms an epoch against replicated 67.7 near, 90.7
# against 84.3 far; the kept split's epochs moved by 1.17-1.7x at batch 32-128 (docs/results.md).
RETIME_DRIFT = 1.15
RETIME_EPOCHS = 3
RETIME_MIN_SECONDS = 0.05
# ... and in any case once this long after it was kept: a move that leaves the kept split's speed as it was can
# still change which split is fastest (batch 1024, float32: split by rows 80.2 and 82.4 ms near and far, shared
# inputs 71.4 and 84.2).
RETIME_AFTER_SECONDS = 60.0
Shape = tuple[object, ...]  # SplitChooser's key: (layer sizes, batch rows, workers, input dtype, rule)


class SplitChooser:
    """Which of the splits of a step (`step_splits`) an epoch runs where there are several: the upper layers split
    by rows between the workers or replicated on every one, and the batch gathered into input buffers of each
    worker's own or into shared ones. Measured on this machine, by the epochs themselves, per shape: layer sizes,
    batch rows, workers, input dtype and update rule (the backend's key).

    Replicated, a worker repeats the other workers' share of the upper layers' arithmetic (on two workers all
    but layer 1's, split by k: step.py), and saves a barrier and the cache lines of the upper weights that went
    between the cores every step: a fixed cost a step against one that grows with the batch, their balance the
    machine's (on a 2-core Intel Xeon, replicated with layer 1 split by k ran 1.03-1.10x faster than split at
    batch 32-64, as fast at 128, 0.92-0.96x at 1024). Private inputs cost a gather of the whole batch on every
    worker and save the reads of the rows another core wrote (SHARED_INPUT_TRIAL_BYTES). Every split gives the
    same bits (the same products in the same order), so the choice changes only the speed: the first epoch of a
    shape runs the first split (it may compile), the next SPLIT_TRIALS rounds run each in turn, and the one with
    the fastest best epoch is kept for the process's later epochs of that shape, until the machine changes under
    it: where the kept split's epochs drift from its best trial (RETIME_DRIFT), or RETIME_AFTER_SECONDS after it
    was kept, the splits are timed again. `forced` True or False: always the replicated split, where it is one of
    the shape's, or always the first (for tests and benchmarks).
    """

    def __init__(self, forced: bool | None = None) -> None:
        self.forced = forced
        self._lock = threading.Lock()
        self._epochs: dict[Shape, int] = {}
        self._best: dict[Shape, dict[StepSplit, float]] = {}
        self._chosen: dict[Shape, StepSplit] = {}
        self._kept_at: dict[Shape, float] = {}  # time.monotonic() when the split was kept
        self._drifting: dict[Shape, int] = {}  # the kept split's epochs in a row off its best trial
        self._retime = True  # False within kept_as_is()

    @contextmanager
    def kept_as_is(self) -> Iterator[None]:
        """Within the block, a kept split is never timed again: for a benchmark's measured epochs, among which its
        trials would otherwise run (`fastmlp bench`, benchmarks/profile_fused_step.py)."""
        previous, self._retime = self._retime, False
        try:
            yield
        finally:
            self._retime = previous

    def chosen_splits(self) -> dict[Shape, StepSplit]:
        """The splits kept so far, by shape (key): what `fastmlp bench` reports."""
        with self._lock:
            return dict(self._chosen)

    def timing(self) -> set[Shape]:
        """The shapes whose splits are still being timed: an epoch of theirs ran, none kept yet. (A shape with
        one split is never timed, and never listed.) `fastmlp bench` trains them until none is left, so that
        its steady-state epochs run the kept split, not the trials."""
        with self._lock:
            return set(self._epochs) - set(self._chosen)

    def next_split(self, key: Shape, splits: Sequence[StepSplit]) -> StepSplit:
        """The split the next epoch of this shape (key) runs, one of `splits` (`step_splits`, the default first)."""
        if len(splits) == 1:
            return splits[0]
        if self.forced is not None:
            return next((s for s in splits if s.replicated), splits[0]) if self.forced else splits[0]
        with self._lock:
            if key in self._chosen:
                return self._chosen[key]
            epochs = self._epochs.get(key, 0)  # the first (not timed), then each in turn: 0, 1, .., 0, 1, ..
            return splits[0] if epochs == 0 else splits[epochs % len(splits)]

    def record(self, key: Shape, split: StepSplit, seconds_per_sample: float, choices: int,
               epoch_seconds: float = 0.0) -> None:
        """An epoch of this shape ran (whole: not interrupted) on `split` in seconds_per_sample, epoch_seconds in
        all; the shape has `choices` splits (the length of the `splits` given to next_split): nothing to time
        where it has one."""
        if self.forced is not None or choices == 1:
            return
        with self._lock:
            if key in self._chosen:
                if self._retime and self._machine_changed(key, seconds_per_sample, epoch_seconds):
                    self._forget(key)
                return
            epochs = self._epochs[key] = self._epochs.get(key, 0) + 1
            if epochs == 1:
                return
            best = self._best.setdefault(key, {})
            best[split] = min(best.get(split, seconds_per_sample), seconds_per_sample)
            if epochs > choices * SPLIT_TRIALS:
                self._chosen[key] = min(best, key=best.__getitem__)
                self._kept_at[key], self._drifting[key] = time.monotonic(), 0

    def retime(self, key: Shape) -> None:
        """Time this shape's splits again from its next epoch, its kept split forgotten: for a caller that knows the
        machine changed under it (`fastmlp bench` between its rounds, where kept_as_is holds the kept split through
        the drift this class watches for). Nothing where no split of the shape is kept."""
        with self._lock:
            if key in self._chosen:
                self._forget(key)

    def _forget(self, key: Shape) -> None:
        """The kept split of the shape forgotten and its trials begun again, from the second split (the first
        epoch of a shape is left untimed only because it may compile); called with the lock held."""
        del self._chosen[key]
        self._best[key], self._epochs[key] = {}, 1

    def _machine_changed(self, key: Shape, seconds_per_sample: float, epoch_seconds: float) -> bool:
        """Whether the splits of a shape whose kept split just ran an epoch should be timed again (the class
        doc); called with the lock held."""
        if time.monotonic() - self._kept_at[key] >= RETIME_AFTER_SECONDS:
            return True
        if epoch_seconds < RETIME_MIN_SECONDS:
            return False
        drift = seconds_per_sample / self._best[key][self._chosen[key]]
        off = not 1 / RETIME_DRIFT <= drift <= RETIME_DRIFT
        self._drifting[key] = self._drifting[key] + 1 if off else 0
        return self._drifting[key] >= RETIME_EPOCHS


SPLITS = SplitChooser()  # the process's: every Backend's epochs


def epoch_workers(threads: int, batch_rows: int, layer_sizes: Sequence[int]) -> int:
    """Workers an epoch runs on: `threads`, but no more than a batch gives MIN_ROWS_PER_WORKER rows
    each, nor than a step gives MIN_FLOPS_PER_WORKER each."""
    by_work = step_flops(batch_rows, layer_sizes) // MIN_FLOPS_PER_WORKER
    return max(1, min(threads, batch_rows // MIN_ROWS_PER_WORKER, by_work))


@functools.cache  # a CPU's core does not change while the process runs; sysfs's two reads cost ~25 us a CPU
def _core_of(cpu: int) -> object:
    """(package, core) of a logical CPU, from Linux's sysfs; the CPU itself where that is unreadable."""
    topology = f"/sys/devices/system/cpu/cpu{cpu}/topology/"
    try:
        with open(topology + "physical_package_id") as package, open(topology + "core_id") as core:
            return package.read().strip(), core.read().strip()
    except OSError:
        return cpu


def worker_cpus(workers: int) -> list[int] | None:
    """The CPU to pin each worker to, or None to leave them to the OS.

    Pins only when there is a worker for every physical core of the CPUs this thread may use:
    the first workers get one logical CPU of each core (so SMT siblings share no core while a
    core is free), the next ones their siblings, in turn. Never raises: None where the OS does
    not say which CPUs are usable.
    """
    try:
        cpus = sorted(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        return None
    seen: set[object] = set()
    first: list[int] = []
    siblings: list[int] = []
    for cpu in cpus:
        core = _core_of(cpu)
        (siblings if core in seen else first).append(cpu)
        seen.add(core)
    if workers < 2 or workers < len(first):
        return None
    order = first + siblings
    return [order[t % len(order)] for t in range(workers)]


def pin_this_thread(cpus: set[int]) -> set[int] | None:
    """Run the calling thread only on `cpus` (a set of CPU numbers); returns its CPU set before,
    for `pin_this_thread(previous)`, or None where the OS refused (then nothing changed)."""
    try:
        tid = threading.get_native_id()
        previous = os.sched_getaffinity(tid)
        os.sched_setaffinity(tid, cpus)
        return previous
    except (AttributeError, OSError, ValueError):  # not Linux, a container's seccomp, a CPU gone offline
        return None


def run_chunks(run: Run, n: int, batch_size: int, progress: Progress | None, barrier: npt.NDArray[np.int64]) -> float:
    """Worker 0's part of the epoch on this thread: one nopython call, or ~50 with progress."""
    total = 0.0
    for begin, end in epoch_ranges(n, batch_size, progress):
        total += run(0, begin, end)
        if barrier_aborted(barrier):
            break
        if progress is not None:
            progress(end - begin)
    return total

def run_workers(run: Run, workers: int, n: int, batch_size: int, progress: Progress | None,
                barrier: npt.NDArray[np.int64]) -> float:
    """Workers 1.. on threads of their own over the whole epoch, worker 0 here; returns the summed loss.

    Each runs pinned to its CPU of `worker_cpus` where there are enough workers (this thread's
    own CPU set is given back when the epoch ends). If any of them fails (or progress raises, or
    Ctrl-C arrives between chunks), the barrier is aborted so the others stop at their next
    meeting, and the first error is raised.
    """
    totals, errors = [0.0] * workers, list[BaseException]()
    cpus = worker_cpus(workers)

    def helper(t: int) -> None:
        try:
            if cpus is not None:
                pin_this_thread({cpus[t]})  # a thread of its own, ended with the epoch: nothing to restore
            totals[t] = run(t, 0, n)
        except BaseException as exc:  # handed to the caller's thread below
            errors.append(exc)
            abort_barrier(barrier)

    threads = [threading.Thread(target=helper, args=(t,), name=f"fastmlp-worker-{t}", daemon=True)
               for t in range(1, workers)]
    previous: set[int] | None = None
    try:
        if cpus is not None:
            previous = pin_this_thread({cpus[0]})
        for thread in threads:
            thread.start()
        totals[0] = run_chunks(run, n, batch_size, progress, barrier)
    except BaseException:
        abort_barrier(barrier)
        raise
    finally:
        for thread in threads:
            if thread.ident is not None:  # started
                thread.join()
        if previous is not None:
            pin_this_thread(previous)
    if errors:
        raise errors[0]
    return sum(totals)
