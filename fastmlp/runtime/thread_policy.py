"""How many BLAS threads the numpy backend trains with: as many as the cores other work leaves free.

OpenBLAS's threads spin while they wait for work. Alone on the machine, more of them make the
numpy backend's step faster at every batch size from 32 to 1024 (measured: the products of a step
are small, but still pay). Beside any other busy process the spinning threads outnumber the free
cores and every hand-off waits for a scheduler time slice: two numpy trainings at once ran dozens
of times slower (the figures are in docs/results.md). So the policy
counts the cores others use, from the CPU time of this process's CPUs in /proc/stat minus this
process's own CPU time, over the last RECHECK_SECONDS of the policy's own blocks (a training
epoch: the time between epochs is left out, so that work taking turns with ours takes none of its
cores), and runs BLAS on the cores left free
(at most the BLAS thread count and the usable CPUs: affinity mask and CPU quota). Elsewhere than Linux the
1-minute load average stands in for /proc/stat; it lags a minute behind.

Counting our own CPU time out matters: our own spinning BLAS threads show up as busy CPUs, and
would otherwise make the policy drop to one thread when alone. A fixed `threads` skips it all.

The thread count changes the last bits of OpenBLAS's sums (and so can flip a ReLU whose input is
near 0), so results under the automatic policy depend on the machine's load; a fixed count gives
the same bits in every run.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Container, Iterator
from contextlib import contextmanager
from time import monotonic, process_time, sleep
from typing import cast

from .blas_threads import blas_thread_count, set_blas_threads_here, usable_cpu_ids, usable_cpus

RECHECK_SECONDS = 0.25  # ~50 clock ticks of /proc/stat on 2 CPUs: the busy count to ~2 %
# A core counts as free once others leave 75 % of it: an other process runnable a third of the
# time already makes a second spinning thread wait for it at every hand-off.
FREE_CORE_SHARE = 0.75
_CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
_BUSY_FIELDS = (0, 1, 2, 5, 6, 7)  # user nice system (idle iowait) irq softirq steal, of a cpuN line


def _busy_seconds(cpus: Container[int]) -> float | None:
    """CPU seconds spent busy since boot on the CPUs numbered in `cpus`, or None without /proc/stat."""
    try:
        with open("/proc/stat") as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    ticks = 0
    for line in lines:
        name, _, rest = line.partition(" ")
        if name.startswith("cpu") and name[3:].isdigit() and int(name[3:]) in cpus:
            values = rest.split()
            ticks += sum(int(values[i]) for i in _BUSY_FIELDS if i < len(values))
    return ticks / _CLOCK_TICKS


_affinity = usable_cpu_ids  # a name of this module, so that the tests can fake the machine's CPUs


class CpuLoad:
    """Cores that other processes kept busy on this process's CPUs: over the time between two calls of
    `others_busy`, or, once paused, over the periods between each `resume()` and the `pause()` after it alone.

    Watching only some periods (a backend's epochs) tells work that competes with them from work that
    runs only while they wait: another process's epochs taking turns with ours (an A/B benchmark) kept one core
    of two busy over any window of wall time, and an epoch that counted it ran on one worker instead of two.
    """

    def __init__(self, paused: bool = False) -> None:
        self._cpus = _affinity()  # the CPUs whose lines of /proc/stat count
        # as many cores as a container's CPU quota gives, where it gives fewer than the mask shows
        self.cpus = max(1, min(len(self._cpus), usable_cpus()))
        self._last = self._sample()  # where the period being watched began
        self._paused = paused
        # The periods watched and closed since the last others_busy(): wall seconds, busy seconds of the CPUs
        # (None once a reading of /proc/stat failed) and this process's CPU seconds.
        self._watched: tuple[float, float | None, float] = (0.0, 0.0, 0.0)

    def _sample(self) -> tuple[float, float | None, float]:
        return monotonic(), _busy_seconds(self._cpus), process_time()

    def _close_period(self) -> None:
        """Add the period watched since the last sample to the watched totals; a new one begins now."""
        last, now = self._last, self._sample()
        self._last = now
        wall, busy, ours = self._watched
        if busy is not None and now[1] is not None and last[1] is not None:
            busy += now[1] - last[1]
        else:
            busy = None
        self._watched = (wall + now[0] - last[0], busy, ours + now[2] - last[2])

    def pause(self) -> None:
        """Stop watching: what runs from now until `resume()` is left out of `others_busy`."""
        if not self._paused:
            self._close_period()
            self._paused = True

    def resume(self) -> None:
        """Watch again from now on."""
        if self._paused:
            self._last = self._sample()
            self._paused = False

    def watched_seconds(self) -> float:
        """Wall seconds watched since the last `others_busy` (or construction)."""
        return self._watched[0] + (0.0 if self._paused else monotonic() - self._last[0])

    def others_busy(self) -> float:
        """Cores busy with other work over the time watched since the last call (or construction): 0 up to the
        usable CPUs. The watched time starts anew."""
        if not self._paused:
            self._close_period()
        (wall, busy, ours), self._watched = self._watched, (0.0, 0.0, 0.0)
        if wall <= 0:
            return 0.0
        ours /= wall
        if busy is None:
            try:
                return max(0.0, os.getloadavg()[0] - ours)
            except (AttributeError, OSError):
                return 0.0
        return min(float(self.cpus), max(0.0, busy / wall - ours))


def others_running(samples: int = 5, gap_seconds: float = 0.0002) -> int | None:
    """Threads of other processes that are runnable right now, or None without /proc/loadavg.

    /proc/loadavg's fourth field counts the runnable threads of the whole machine, the reader
    included; the least of a few readings `gap_seconds` apart skips a thread that ran only for
    a moment (read back to back, an idle machine here showed a runnable thread in 14 % of them).
    This process's own runnable threads are taken out (`own_running`): OpenBLAS's threads spin for
    a while after NumPy's last product, and counted as others they cost the next epoch a worker.
    A reading of none ends the readings early: no later one can lower the least below it (on an idle
    machine the first reading is that one, and the call costs one read instead of all and their waits).
    """
    least = 0
    for i in range(samples):
        try:
            with open("/proc/loadavg") as f:
                machine = int(f.read().split()[3].split("/")[0])
        except (OSError, IndexError, ValueError):
            return None
        ours = own_running() if machine > 1 else None  # one runnable thread: the reader
        count = machine - (ours or 1)
        if count <= 0:
            return 0
        least = count if i == 0 else min(least, count)
        if i + 1 < samples:
            sleep(gap_seconds)
    return least


def own_running() -> int | None:
    """Threads of this process that are runnable right now, the caller among them (from the state field of
    /proc/self/task/*/stat), or None where that cannot be read."""
    try:
        tasks = os.listdir("/proc/self/task")
    except OSError:
        return None
    running = 0
    for task in tasks:
        try:
            with open(f"/proc/self/task/{task}/stat") as f:
                stat = f.read()
        except OSError:  # the thread ended meanwhile
            continue
        end = stat.rfind(")")  # the state follows the command name, in parentheses (which may hold any character)
        running += stat[end + 2 : end + 3] == "R"
    return running or None


def free_cores(others_busy: float, cpus: int, free_share: float = FREE_CORE_SHARE) -> int:
    """Cores free for our threads when others keep `others_busy` of `cpus` cores busy: at least 1.

    A core counts as free once others leave `free_share` of it.
    """
    return max(1, int(cpus - others_busy + (1 - free_share)))


class _PerThread(threading.local):
    """A policy's state in one thread: BLAS's count is set per thread (openblas_set_num_threads_local),
    so a policy shared by threads (one backend instance) must track what it set in each of them."""

    def __init__(self) -> None:
        self.load: CpuLoad | None = None
        self.ceiling: int | None = None
        self.ceiling_at = -float("inf")
        self.current: int | None = None  # the count apply() set, None: BLAS's own
        self.decision: int | None = None  # None until start(): then the ceiling, until a first window is measured


class BlasThreadPolicy:
    """The BLAS thread count of one backend: fixed (`threads`), or as many as cores are free (None).

    `start()` reads the ceiling where no limit of the policy is in force (BLAS's own count, which
    OPENBLAS_NUM_THREADS or threadpoolctl's limits set, and the usable CPUs); `apply()`, as often
    as once per step, re-reads the load every RECHECK_SECONDS watched and sets BLAS's count for this
    thread only when the decision changes; `stop()` gives BLAS its own count back. The load is watched
    from each `start()` to the `stop()` after it (`CpuLoad`'s pauses).
    `limited()` wraps the three around one block. Each thread that uses the policy has its own
    state: one backend may train or predict in several threads at once.
    """

    def __init__(self, threads: int | None = None) -> None:
        self.threads = threads
        self._state = _PerThread()

    def start(self) -> None:
        state, now = self._state, monotonic()
        if state.current is None and now - state.ceiling_at >= RECHECK_SECONDS:
            state.ceiling, state.ceiling_at = max(1, min(blas_thread_count(), usable_cpus())), now
        if state.load is None and self.threads is None:
            # Until a first window is measured, BLAS's own count: on an idle machine the policy
            # then never changes it, and results stay those of that count, bit for bit.
            state.load, state.decision = CpuLoad(paused=True), state.ceiling
        if state.load is not None:
            state.load.resume()

    def decide(self) -> int:
        """The thread count for BLAS calls from now on."""
        if self.threads is not None:
            return self.threads
        state = self._state
        # start() has set all three (before it, the automatic mode has no load to read).
        assert state.load is not None and state.ceiling is not None and state.decision is not None, "start() first"
        if state.load.watched_seconds() >= RECHECK_SECONDS:
            # Free cores among all this process may use: on 8 CPUs with one busy, 2 BLAS threads still fit.
            state.decision = min(state.ceiling, free_cores(state.load.others_busy(), state.load.cpus))
        return state.decision

    def apply(self) -> int:
        """Make this thread's BLAS count `decide()`; returns it. Changes it only when the decision does."""
        threads = self.decide()
        state = self._state
        # In the automatic mode, the ceiling is BLAS's own count: no limit to set for it
        # (start() has read it; decide() checked that start() came first).
        target = None if self.threads is None and threads >= cast(int, state.ceiling) else threads
        if target != state.current:
            set_blas_threads_here(target)
            state.current = target
        return threads

    def stop(self) -> None:
        if self._state.load is not None:
            self._state.load.pause()
        if self._state.current is not None:
            set_blas_threads_here(None)
            self._state.current = None

    @contextmanager
    def limited(self) -> Iterator[None]:
        """BLAS on the policy's thread count within the block (one decision, re-read at most every RECHECK_SECONDS)."""
        self.start()
        self.apply()
        try:
            yield
        finally:
            self.stop()
