"""How long two of the numba backend's workers take to meet at its barrier: how far apart the host put two cores.

Two workers meet at `fastmlp.runtime.barrier.barrier_wait` twice a step, and read what the other wrote between
meetings; both cost a cache line's trip from one core to the other. On a virtual machine that trip depends on
where the host runs the two vCPUs, and the host moves them: on the 2-core AMD EPYC Zen 5 of docs/results.md a
line's round trip between the two read about 100 ns for a while and about 410 ns for another (two cores on
different dies), and two workers' epochs at batch 64 ran 1.81x one worker's in the first state and 1.32x in the
second (medians of 30 and 8 rounds), while one worker's epochs and the FMA peak on both cores did not move.
`fastmlp bench` measures a meeting once a round, just before numba's epochs, so that its report says which state
each batch size's epochs ran in.

A meeting: both threads pinned to their CPUs call `barrier_wait` in a loop; the time of `meetings` meetings on
one of them, once both are in the loop, divided by `meetings`.
"""

from __future__ import annotations

import os
import threading
import time
from typing import no_type_check

from ..backends.numba.threads import pin_this_thread, worker_cpus
from ..runtime.barrier import abort_barrier, barrier_state, barrier_wait
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
    """The CPUs of the numba backend's first two workers where it pins them on this machine (one logical CPU of
    each core first), else the first two this process may use; None where it may use only one."""
    try:
        usable = sorted(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux: no pinning, and no way to say which CPUs
        return None
    if len(usable) < 2:
        return None
    order = worker_cpus(len(usable)) or usable
    return order[0], order[1]


def barrier_meeting_seconds(cpus: tuple[int, int] | None = None, meetings: int = MEETINGS) -> float | None:
    """Seconds a meeting of two threads pinned to `cpus` (default `meeting_cpus()`) takes at the numba backend's
    barrier; None where this process may use only one CPU. The calling thread's CPU set is restored after."""
    if meetings < 1:
        raise ValueError(f"meetings must be >= 1, got {meetings}")
    cpus = cpus or meeting_cpus()
    if cpus is None:
        return None
    state = barrier_state()
    _meet(state, 1, 1)  # compiled (or loaded from Numba's cache) before the other thread waits on it
    errors: list[BaseException] = []

    def other() -> None:
        try:
            pin_this_thread({cpus[1]})
            _meet(state, 2, meetings + 1)
        except BaseException as exc:  # handed to the caller's thread below
            errors.append(exc)
            abort_barrier(state)

    previous = pin_this_thread({cpus[0]})
    thread = threading.Thread(target=other, name="fastmlp-bench-meeting", daemon=True)
    try:
        thread.start()
        _meet(state, 2, 1)  # both in their loops from here
        start = time.perf_counter()
        met = _meet(state, 2, meetings)
        seconds = (time.perf_counter() - start) / meetings
    except BaseException:
        abort_barrier(state)
        raise
    finally:
        if thread.ident is not None:  # started
            thread.join()
        if previous is not None:
            pin_this_thread(previous)
    if errors:
        raise errors[0]
    return seconds if met else None
