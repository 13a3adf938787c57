"""Where the numba backend's training step spends its time, measured inside the epoch itself.

    from fastmlp.backends.numba.backend import Backend
    from fastmlp.backends.numba.timeline import StepTimeline

    backend = Backend(threads=2)
    backend.timeline = StepTimeline()         # the next epochs stamp their steps
    backend.train_epoch(model, X, y, batch_size=64, lr=0.01, rng=rng)
    print(backend.timeline.report())          # the last epoch's phases, worker by worker

Each worker writes the CPU's cycle counter (fastmlp/runtime/cycles.py) at the points of a step that
fastmlp/backends/numba/step.py names (STEP_BEGIN ... STEP_END) into an array of its own steps; a timeline
turns the differences into each phase's median over the epoch's steps. Unlike timing each phase alone on a
batch already in cache (benchmarks/profile_fused_step.py), this sees what the phases cost where they run:
after another phase has filled the caches, on lines the other workers wrote, and the barriers' waits.

A stamp is a read of the counter and a store (tens of cycles, no fence); a step of the default net takes
tens of microseconds or more, so the stamps do not change what they measure. Without a timeline the epoch
passes None, and its compiled step holds no stamp at all (with a timeline, the epoch function compiles once
more, a few seconds). Stamps never change the arithmetic: the same bits.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from ...runtime.cycles import read_cycle_counter
from .step import (
    AFTER_PREFETCHED,
    BACKWARD_DONE,
    FIRST_BARRIER_PASSED,
    LAYER0_FORWARD_DONE,
    LAYER0_UPDATED,
    LAYERS_UPDATED,
    NEXT_GATHERED,
    SECOND_BARRIER_PASSED,
    SOFTMAX_DONE,
    STAMP_POINTS,
    STEP_BEGIN,
    STEP_END,
    UPPER_FORWARD_DONE,
)
from .threads import layer1_split_by_k

# Each phase of a step: (name, the point it starts at, the point it ends at), in the order a step runs them.
PHASES = (
    ("layer-0 forward", STEP_BEGIN, LAYER0_FORWARD_DONE),
    ("first barrier", LAYER0_FORWARD_DONE, FIRST_BARRIER_PASSED),
    ("upper forward", FIRST_BARRIER_PASSED, UPPER_FORWARD_DONE),
    ("softmax", UPPER_FORWARD_DONE, SOFTMAX_DONE),
    ("backward", SOFTMAX_DONE, BACKWARD_DONE),
    ("next gather", BACKWARD_DONE, NEXT_GATHERED),
    ("prefetch", NEXT_GATHERED, AFTER_PREFETCHED),
    ("second barrier", AFTER_PREFETCHED, SECOND_BARRIER_PASSED),
    ("layer-0 update", SECOND_BARRIER_PASSED, LAYER0_UPDATED),
    ("upper updates", LAYER0_UPDATED, LAYERS_UPDATED),
    ("labels", LAYERS_UPDATED, STEP_END),
)

# An empty timeline (nothing stamped yet).
_EMPTY = np.zeros((0, 0, STAMP_POINTS), dtype=np.int64)


@dataclass(frozen=True)
class EpochShape:
    """What the stamped epoch ran: its batch size, worker count, split of the upper layers (replicated on two
    workers: layer 1 split by k, fastmlp/backends/numba/step.py) and input buffers (a worker's own or shared)."""

    batch_size: int
    workers: int
    replicated: bool
    private_inputs: bool = True


class StepTimeline:
    """The stamps of a numba backend's epochs, worker by worker, and their per-phase medians.

    Give it to a `Backend` (`backend.timeline = StepTimeline()`): every epoch that backend runs then
    stamps its steps, and the timeline keeps the last epoch's. `skip_first` steps at an epoch's start
    (caches and branch predictors still warming, the first batch gathered apart) are left out of the
    medians, and so is its last step (no next batch to gather).
    """

    def __init__(self, skip_first: int = 2) -> None:
        if skip_first < 0:
            raise ValueError(f"skip_first must be >= 0, got {skip_first}")
        self.skip_first = skip_first
        self.stamps: npt.NDArray[np.int64] = _EMPTY
        self.shape: EpochShape | None = None
        self.ticks_per_second = 0.0
        self._started: tuple[int, float] = (0, 0.0)

    def start(self, shape: EpochShape, steps: int) -> npt.NDArray[np.int64]:
        """The buffer for an epoch of `steps` steps on shape.workers workers (zeros); called by the backend as the
        epoch starts."""
        self.shape = shape
        self.stamps = np.zeros((shape.workers, steps, STAMP_POINTS), dtype=np.int64)
        self._started = (read_cycle_counter(), time.perf_counter())
        return self.stamps

    def stop(self) -> None:
        """Called by the backend as the epoch ends: ties the cycle counter to seconds over the epoch."""
        cycles, seconds = read_cycle_counter() - self._started[0], time.perf_counter() - self._started[1]
        self.ticks_per_second = cycles / seconds if cycles > 0 and seconds > 0 else 0.0

    def _steps(self) -> npt.NDArray[np.int64]:
        """The stamps of the steps the medians cover: (workers, steps, points)."""
        complete = self.stamps[:, :, STEP_END].min(axis=0) > 0 if self.stamps.size else np.zeros(0, bool)
        last = int(np.flatnonzero(complete)[-1]) if complete.any() else -1  # an epoch cut short: its steps taken
        return self.stamps[:, self.skip_first:last]

    def phase_seconds(self) -> dict[str, list[float]]:
        """{phase: [median seconds over the steps, for each worker]}, in PHASES' order, then "step" (from one
        step's begin to the next's). Empty when no step was stamped past the first skip_first."""
        steps = self._steps()
        if steps.shape[1] < 2 or self.ticks_per_second <= 0:
            return {}
        per_tick = 1.0 / self.ticks_per_second
        medians = {name: [float(np.median(w[:, end] - w[:, begin])) * per_tick for w in steps]
                   for name, begin, end in PHASES}
        medians["step"] = [float(np.median(np.diff(w[:, STEP_BEGIN]))) * per_tick for w in steps]
        return medians

    def report(self) -> str:
        """A table of the last stamped epoch: each phase's median (microseconds) and its share of the median
        step, worker by worker."""
        medians = self.phase_seconds()
        if not medians or self.shape is None:
            return "step timeline: no steps stamped (an epoch of more than skip_first + 2 steps is needed)"
        shape = self.shape
        split = ("replicated, layer 1 split by k" if layer1_split_by_k(shape.replicated, shape.workers) else
                 "replicated" if shape.replicated else "split")
        split += "" if shape.private_inputs else ", inputs shared"
        workers = "one worker" if shape.workers == 1 else f"{shape.workers} workers, the upper layers {split}"
        lines = [f"step timeline, batch {shape.batch_size}, {workers}: medians over {self._steps().shape[1]} steps; "
                 f"cycle counter at {self.ticks_per_second / 1e9:.2f} GHz",
                 f"  {'phase':16s}" + "".join(f"{f'worker {t}':>22s}" for t in range(shape.workers))]
        steps = medians["step"]
        for name, seconds in medians.items():
            shares = "".join(f"  {s * 1e6:9.1f} us {100 * s / step:5.1f} %" for s, step in zip(seconds, steps))
            lines.append(f"  {name:16s}{shares}")
        lines.append("  (medians of each phase: they need not add up to the median step)")
        return "\n".join(lines)
