"""fastmlp.bench.barrier_meeting: two threads meeting at the numba backend's barrier, and the bench line reporting
it. Its speed is never asserted: what is checked is that it measures, which CPUs it picks, and that it cleans up."""

import os
import threading

import pytest

from fastmlp.backends.numba import threads as worker_threads
from fastmlp.bench import barrier_meeting
from fastmlp.bench.report import meeting_lines

pytestmark = pytest.mark.skipif(not hasattr(os, "sched_getaffinity"), reason="no CPU affinity on this OS")


def test_two_threads_meet_and_the_callers_cpu_set_is_given_back():
    before = os.sched_getaffinity(0)
    cpu = min(before)
    # Both on one CPU, so that it runs on any machine: the barrier's waiter yields the core to the other.
    seconds = barrier_meeting.barrier_meeting_seconds((cpu, cpu), meetings=200)
    assert seconds is not None and 0 < seconds < 0.1
    assert os.sched_getaffinity(0) == before
    assert not [t for t in threading.enumerate() if t.name == "fastmlp-bench-meeting"]


def test_the_meeting_cpus_are_the_first_two_workers_cpus(monkeypatch):
    monkeypatch.setattr(worker_threads.os, "sched_getaffinity", lambda pid: {0, 1, 2, 3})
    monkeypatch.setattr(barrier_meeting.os, "sched_getaffinity", lambda pid: {0, 1, 2, 3})
    monkeypatch.setattr(worker_threads, "_core_of", lambda cpu: (0, cpu % 2))  # 0 and 2 share a core, 1 and 3
    assert barrier_meeting.meeting_cpus() == (0, 1)  # one logical CPU of each core first


def test_one_usable_cpu_has_no_meeting(monkeypatch):
    monkeypatch.setattr(barrier_meeting.os, "sched_getaffinity", lambda pid: {3})
    assert barrier_meeting.meeting_cpus() is None
    assert barrier_meeting.barrier_meeting_seconds() is None


def test_meetings_must_be_positive():
    with pytest.raises(ValueError, match="meetings must be >= 1"):
        barrier_meeting.barrier_meeting_seconds((0, 0), meetings=0)


def test_a_failing_other_thread_is_raised_here_not_waited_for(monkeypatch):
    main = threading.main_thread()

    def pin(cpus):
        if threading.current_thread() is not main:
            raise RuntimeError("pinning refused")
        return None

    monkeypatch.setattr(barrier_meeting, "pin_this_thread", pin)
    cpu = min(os.sched_getaffinity(0))
    with pytest.raises(RuntimeError, match="pinning refused"):
        barrier_meeting.barrier_meeting_seconds((cpu, cpu), meetings=10_000)


def test_the_report_gives_each_batch_sizes_least_and_most_meeting():
    rows = [{"batch_size": 32, "backend": name, "barrier_meeting_ns": [60.0, 310.4, 72.0]} for name in ("a", "b")]
    rows.append({"batch_size": 64, "backend": "a", "barrier_meeting_ns": [55.2, 58.0]})
    (line,) = meeting_lines(rows, [0, 1])
    assert "CPUs 0 and 1" in line and "batch 32 60-310 ns, batch 64 55-58 ns" in line
    assert meeting_lines([{"batch_size": 32, "barrier_meeting_ns": None}], []) == []
