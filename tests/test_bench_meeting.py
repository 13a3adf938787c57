"""fastmlp.bench.barrier_meeting: two workers meeting at the numba backend's barrier, and the bench line reporting
it. Its speed is never asserted: what is checked is that it measures, which CPUs it reports, and that it cleans up."""

import os
import threading

import pytest

from fastmlp.backends.numba import threads as worker_threads
from fastmlp.bench import barrier_meeting
from fastmlp.bench.report import meeting_lines

pytestmark = pytest.mark.skipif(not hasattr(os, "sched_getaffinity"), reason="no CPU affinity on this OS")


@pytest.fixture
def one_cpu_for_both(monkeypatch):
    """Both workers pinned to this process's first CPU, so that the tests run on any machine: the barrier's
    waiter yields the core to the other."""
    cpu = min(os.sched_getaffinity(0))
    monkeypatch.setattr(worker_threads, "worker_cpus", lambda workers: [cpu] * workers)
    monkeypatch.setattr(barrier_meeting, "usable_cpus", lambda: 2)
    return cpu


def test_two_workers_meet_and_the_callers_cpu_set_is_given_back(one_cpu_for_both):
    before = os.sched_getaffinity(0)
    seconds = barrier_meeting.barrier_meeting_seconds(meetings=200)
    assert seconds is not None and seconds > 0  # its speed is never asserted
    assert os.sched_getaffinity(0) == before
    assert not [t for t in threading.enumerate() if t.name.startswith("fastmlp-worker")]
    assert barrier_meeting.meeting_cpus() == (one_cpu_for_both, one_cpu_for_both)


def test_the_meeting_cpus_are_those_the_backend_pins_two_workers_to(monkeypatch):
    monkeypatch.setattr(worker_threads.os, "sched_getaffinity", lambda pid: {0, 1, 2, 3})
    monkeypatch.setattr(worker_threads, "_core_of", lambda cpu: (0, cpu % 2))  # 0 and 2 share a core, 1 and 3
    assert barrier_meeting.meeting_cpus() == (0, 1)  # one logical CPU of each core first
    monkeypatch.setattr(worker_threads, "_core_of", lambda cpu: (0, cpu))  # four cores: two workers left to the OS
    assert barrier_meeting.meeting_cpus() is None


def test_one_usable_cpu_has_no_meeting(monkeypatch):
    monkeypatch.setattr(barrier_meeting, "usable_cpus", lambda: 1)
    assert barrier_meeting.barrier_meeting_seconds() is None


def test_meetings_must_be_positive():
    with pytest.raises(ValueError, match="meetings must be >= 1"):
        barrier_meeting.barrier_meeting_seconds(meetings=0)


def test_a_failing_worker_is_raised_here_not_waited_for(monkeypatch, one_cpu_for_both):
    main = threading.current_thread()

    def pin(cpus):
        if threading.current_thread() is not main:
            raise RuntimeError("pinning refused")
        return None

    monkeypatch.setattr(worker_threads, "pin_this_thread", pin)
    with pytest.raises(RuntimeError, match="pinning refused"):
        barrier_meeting.barrier_meeting_seconds(meetings=10_000)


def test_the_report_gives_each_batch_sizes_least_and_most_meeting():
    rows = [{"batch_size": 32, "backend": name, "barrier_meeting_ns": [60.0, 310.4, 72.0]} for name in ("a", "b")]
    rows.append({"batch_size": 64, "backend": "a", "barrier_meeting_ns": [55.2, 58.0]})
    (line,) = meeting_lines(rows, [0, 1])
    assert "CPUs 0 and 1" in line and "batch 32 60-310 ns, batch 64 55-58 ns" in line
    assert "two CPUs the OS chose" in meeting_lines(rows, [])[0]
    assert meeting_lines([{"batch_size": 32, "barrier_meeting_ns": None}], []) == []
