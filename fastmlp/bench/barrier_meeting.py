"""How long two of the numba backend's workers take to meet at its barrier: how far apart the host put two cores.

Two workers meet at `fastmlp.runtime.barrier.barrier_wait` twice a step, and read what the other wrote between
meetings; both cost a cache line's trip from one core to the other. On a virtual machine that trip depends on
where the host runs the two vCPUs, and the host moves them: on the 2-core AMD EPYC Zen 5 of docs/results.md a
line's round trip between the two read about 100 ns for a while and about 410 ns for another (two cores on
different dies), and two workers' epochs at batch 64 ran 1.81x one worker's in the first state and 1.32x in the
second (medians of 30 and 8 rounds), while one worker's epochs and the FMA peak on both cores did not move.
`fastmlp bench` measures a meeting once a round, just before numba's epochs, so that its report says which state
each batch size's epochs ran in.

A meeting: two workers, run as an epoch runs them, call `barrier_wait` in a loop; the time of `meetings` meetings
on the first, once both are in the loop, divided by `meetings`.
"""

from __future__ import annotations

import time
from typing import no_type_check

from ..backends.numba import threads
from ..runtime.barrier import barrier_state, barrier_wait
from ..runtime.blas_threads import usable_cpus
from ..runtime.jit import cached_njit

MEETINGS = 20_000  # a few milliseconds: 50-500 ns each


@cached_njit(nogil=True)
@no_type_check  # a Numba body
def _meet(state, parties, meetings):
    """Meet the other parties `meetings` times at the barrier `state`; False if it was aborted."""
    for _ in range(meetings):
        if not barrier_wait(state, parties):
            return False
    return True


def meeting_cpus() -> tuple[int, int] | None:
    """The CPUs the numba backend pins two workers to on this machine (`threads.worker_cpus`), or None where it
    leaves them to the OS (more cores than workers, or no way to pin)."""
    cpus = threads.worker_cpus(2)
    return None if cpus is None else (cpus[0], cpus[1])


def barrier_meeting_seconds(meetings: int = MEETINGS) -> float | None:
    """Seconds a meeting at the numba backend's barrier takes between two workers run as its epochs run them
    (`threads.run_workers`: a thread started for the second, each pinned where the backend pins them); None where
    this process may use only one CPU."""
    if meetings < 1:
        raise ValueError(f"meetings must be >= 1, got {meetings}")
    if usable_cpus() < 2:
        return None
    state = barrier_state()
    _meet(state, 1, 1)  # compiled (or loaded from Numba's cache) before the other worker waits on it
    seconds: list[float] = []

    def run(t: int, begin: int, end: int) -> float:
        if t > 0:
            _meet(state, 2, meetings + 1)
        elif _meet(state, 2, 1):  # both in their loops from here
            start = time.perf_counter()
            if _meet(state, 2, meetings):
                seconds.append((time.perf_counter() - start) / meetings)
        return 0.0

    threads.run_workers(run, 2, 1, 1, None, state)  # raises what a worker raised
    return seconds[0] if seconds else None
