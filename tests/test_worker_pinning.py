"""The numba backend's workers pinned to distinct cores: which cores, the caller's CPU set given back,
and an epoch that trains the same where the OS refuses to pin."""

import os
import threading

import numpy as np
import pytest

from fastmlp import MLP, get_backend
from fastmlp.backends.numba import backend as numba_fused
from fastmlp.backends.numba import threads as worker_threads
from fastmlp.runtime.barrier import barrier_state
from fastmlp.testing import scaled_error

pytestmark = pytest.mark.skipif(not hasattr(os, "sched_getaffinity"), reason="no CPU affinity on this OS")


def fake_machine(monkeypatch, cpus, core_of):
    """This thread may run on `cpus`; core_of(cpu) is the (package, core) sysfs would give."""
    monkeypatch.setattr(worker_threads.os, "sched_getaffinity", lambda pid: set(cpus))
    monkeypatch.setattr(worker_threads, "_core_of", core_of)


@pytest.mark.parametrize("workers, expected", [
    (1, None),  # one worker: nothing to keep apart
    (3, None),  # fewer workers than cores: the OS places them beside the other work it sees
    (4, [0, 1, 2, 3]),
    (6, [0, 1, 2, 3, 4, 5]),  # then the SMT siblings
    (10, [0, 1, 2, 3, 4, 5, 6, 7, 0, 1]),  # more workers than CPUs: in turn
])
def test_workers_get_one_cpu_of_each_core_before_any_sibling(monkeypatch, workers, expected):
    fake_machine(monkeypatch, range(8), lambda cpu: ("0", str(cpu % 4)))  # CPUs 0-3 and their siblings 4-7
    assert worker_threads.worker_cpus(workers) == expected


def test_siblings_numbered_next_to_each_other_are_kept_apart(monkeypatch):
    fake_machine(monkeypatch, [2, 3, 4, 5, 6, 7], lambda cpu: ("0", str(cpu // 2)))  # cores {2,3}, {4,5}, {6,7}
    assert worker_threads.worker_cpus(3) == [2, 4, 6]
    assert worker_threads.worker_cpus(6) == [2, 4, 6, 3, 5, 7]


def test_two_packages_with_the_same_core_ids_are_different_cores(monkeypatch):
    fake_machine(monkeypatch, range(4), lambda cpu: (str(cpu // 2), str(cpu % 2)))
    assert worker_threads.worker_cpus(4) == [0, 1, 2, 3]


def test_the_real_topology_gives_each_usable_cpu_once():
    cpus = sorted(os.sched_getaffinity(0))
    assert sorted(worker_threads.worker_cpus(len(cpus)) or cpus) == cpus


def test_pinning_refused_by_the_os_changes_nothing():
    before = os.sched_getaffinity(0)
    assert worker_threads.pin_this_thread({4095}) is None  # no such CPU: EINVAL
    assert os.sched_getaffinity(0) == before


def epoch(backend, n=96, sizes=(12, 9, 4)):
    rng = np.random.default_rng(0)
    X, y = rng.random((n, sizes[0]), dtype=np.float32), rng.integers(0, sizes[-1], n)
    model = MLP(sizes, seed=1)
    loss = backend.train_epoch(model, X, y, batch_size=16, lr=0.05, rng=np.random.default_rng(2))
    return loss, model


def test_each_worker_runs_on_its_cpu_and_the_caller_gets_its_cpus_back(monkeypatch):
    cpus = sorted(os.sched_getaffinity(0))
    chosen = [cpus[-1], cpus[0], cpus[len(cpus) // 2]]
    monkeypatch.setattr(worker_threads, "worker_cpus", lambda workers: chosen[:workers])
    seen = {}

    def run(t, begin, end):  # a worker's part of the epoch: here only where it runs
        seen.setdefault(t, os.sched_getaffinity(0))
        return 1.0

    before = os.sched_getaffinity(0)
    probe = []
    thread = threading.Thread(target=lambda: probe.append(worker_threads.pin_this_thread({cpus[-1]})))
    thread.start()
    thread.join()
    assert worker_threads.run_workers(run, 3, 10, 5, None, barrier_state()) == 3.0
    assert os.sched_getaffinity(0) == before
    if probe[0] is None:
        pytest.skip("the OS refuses to pin threads here")
    assert seen == {t: {cpu} for t, cpu in enumerate(chosen)}


@pytest.mark.parametrize("threads", [2, 3])
def test_an_epoch_on_pinned_workers_matches_the_reference(monkeypatch, threads):
    monkeypatch.setattr(numba_fused, "epoch_workers", lambda threads, rows, sizes: threads)
    cpus = sorted(os.sched_getaffinity(0))
    monkeypatch.setattr(worker_threads, "worker_cpus", lambda workers: [cpus[t % len(cpus)] for t in range(workers)])
    before = os.sched_getaffinity(0)
    loss_ref, ref = epoch(get_backend("numpy"))
    loss, model = epoch(numba_fused.Backend(threads=threads))
    assert os.sched_getaffinity(0) == before
    assert loss == pytest.approx(loss_ref, rel=1e-5)
    for p, q in zip(model.weights + model.biases, ref.weights + ref.biases):
        assert scaled_error(p, q)[0] <= 1e-5


def test_an_epoch_trains_the_same_where_the_os_refuses_to_pin(monkeypatch):
    monkeypatch.setattr(numba_fused, "epoch_workers", lambda threads, rows, sizes: threads)
    monkeypatch.setattr(worker_threads, "worker_cpus", lambda workers: list(range(workers)))

    def refuse(pid, cpus):
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(worker_threads.os, "sched_setaffinity", refuse)
    loss_ref, ref = epoch(get_backend("numpy"))
    loss, model = epoch(numba_fused.Backend(threads=3))
    assert loss == pytest.approx(loss_ref, rel=1e-5)
    for p, q in zip(model.weights + model.biases, ref.weights + ref.biases):
        assert scaled_error(p, q)[0] <= 1e-5
