"""The thread policy: BLAS on the cores other work leaves free, one knob to fix it, limits always undone.

The load is faked (the clock, /proc/stat's busy seconds, this process's CPU time): no test here
depends on what else runs on the machine, nor measures time.
"""

import numpy as np
import pytest
from threadpoolctl import threadpool_info

import fastmlp.cli.train
from fastmlp import MLP, Trainer, get_backend
from fastmlp.backends import numpy_ref
from fastmlp.runtime import thread_policy
from fastmlp.runtime.blas_threads import blas_threads_limited
from fastmlp.runtime.thread_policy import BlasThreadPolicy, CpuLoad, free_cores


def blas_thread_counts():
    return {i["filepath"]: i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"}


class FakeMachine:
    """A clock, the busy seconds of our CPUs and our own CPU time, advanced by `run(seconds, others, ours)`."""

    def __init__(self, monkeypatch, cpus=2):
        self.now, self.busy, self.own = 100.0, 1000.0, 5.0
        monkeypatch.setattr(thread_policy, "_affinity", lambda: set(range(cpus)))
        monkeypatch.setattr(thread_policy, "_busy_seconds", lambda cpu_set: self.busy)
        monkeypatch.setattr(thread_policy, "monotonic", lambda: self.now)
        monkeypatch.setattr(thread_policy, "process_time", lambda: self.own)

    def run(self, seconds, others, ours):
        """`seconds` pass with `others` cores busy with other work and `ours` with this process."""
        self.now += seconds
        self.busy += seconds * (others + ours)
        self.own += seconds * ours


def test_cpu_load_counts_other_work_but_not_our_own_threads(monkeypatch):
    machine = FakeMachine(monkeypatch)
    load = CpuLoad()
    machine.run(1.0, others=0.0, ours=2.0)  # our two spinning BLAS threads alone
    assert load.others_busy() == pytest.approx(0.0)
    machine.run(0.5, others=1.0, ours=1.0)
    assert load.others_busy() == pytest.approx(1.0)


def test_cpu_load_falls_back_on_the_load_average_without_proc_stat(monkeypatch):
    machine = FakeMachine(monkeypatch)
    monkeypatch.setattr(thread_policy, "_busy_seconds", lambda cpu_set: None)
    monkeypatch.setattr(thread_policy.os, "getloadavg", lambda: (1.5, 1.0, 1.0))
    load = CpuLoad()
    machine.run(1.0, others=0.0, ours=0.5)
    assert load.others_busy() == pytest.approx(1.0)


def test_a_paused_cpu_load_counts_only_the_periods_it_watched(monkeypatch):
    machine = FakeMachine(monkeypatch)
    load = CpuLoad(paused=True)
    machine.run(5.0, others=1.0, ours=0.0)  # before the first epoch: not watched
    assert load.watched_seconds() == 0.0
    load.resume()
    machine.run(0.4, others=0.0, ours=2.0)  # our epoch, alone
    load.pause()
    machine.run(0.4, others=1.0, ours=0.0)  # another process's work, taking turns with ours
    load.resume()
    machine.run(0.6, others=0.5, ours=1.0)  # an epoch beside work that keeps half a core busy
    assert load.watched_seconds() == pytest.approx(1.0)
    load.pause()
    load.pause()  # a second pause changes nothing
    machine.run(3.0, others=1.0, ours=0.0)
    assert load.watched_seconds() == pytest.approx(1.0)
    assert load.others_busy() == pytest.approx(0.3)  # half a core over 0.6 of the 1.0 s watched
    assert load.watched_seconds() == 0.0  # read: the watched time starts anew
    load.resume()
    machine.run(0.5, others=1.0, ours=1.0)
    assert load.others_busy() == pytest.approx(1.0)  # without a pause, up to the reading


def test_a_numba_epoch_counts_only_the_work_beside_its_own_epochs(monkeypatch):
    """The automatic worker count reads the load over LOAD_WINDOW_SECONDS of epochs: another process that keeps
    a core busy only between them (its epochs taking turns with ours) leaves both cores to ours; one that runs
    during them takes one."""
    from fastmlp.backends.numba import backend as numba_backend

    machine = FakeMachine(monkeypatch)
    monkeypatch.setattr(thread_policy, "usable_cpus", lambda: 2)
    monkeypatch.setattr(numba_backend, "training_threads", lambda: 2)
    monkeypatch.setattr(numba_backend, "others_running", lambda: 0)
    asked = []
    monkeypatch.setattr(numba_backend, "epoch_workers", lambda threads, rows, sizes: asked.append(threads) or 1)
    others_during = [0.0]
    real_run_chunks = numba_backend.run_chunks

    def epoch_lasting_half_a_second(*args):  # the fake clock advances by an epoch's time as it runs
        machine.run(0.5, others=others_during[0], ours=1.0)
        return real_run_chunks(*args)

    monkeypatch.setattr(numba_backend, "run_chunks", epoch_lasting_half_a_second)
    X, y = np.zeros((4, 6), np.float32), np.zeros(4, np.int64)
    for others in (0.0, 1.0):
        backend, others_during[0], asked[:] = numba_backend.Backend(), others, []
        for _ in range(4):
            backend.train_epoch(MLP([6, 3], seed=0), X, y, batch_size=2, lr=0.1, rng=np.random.default_rng(0))
            machine.run(0.5, others=2.0 - others, ours=0.0)  # between epochs: both cores busy elsewhere
        # two epochs before a window's worth (1 s) is watched, then the window's reading
        assert asked == [2, 2, 2, 2] if others == 0.0 else [2, 2, 1, 1], others


@pytest.mark.parametrize("others, expected", [(0.0, 2), (0.2, 2), (0.3, 1), (1.0, 1), (2.0, 1)])
def test_a_core_counts_as_free_when_others_leave_three_quarters_of_it(others, expected):
    assert free_cores(others, 2) == expected


def test_policy_starts_at_blas_count_drops_to_the_free_cores_and_comes_back(monkeypatch):
    machine = FakeMachine(monkeypatch)
    set_counts = []
    monkeypatch.setattr(thread_policy, "set_blas_threads_here", set_counts.append)
    monkeypatch.setattr(thread_policy, "blas_thread_count", lambda: 2)
    monkeypatch.setattr(thread_policy, "usable_cpus", lambda: 2)
    policy = BlasThreadPolicy()
    policy.start()
    assert policy.apply() == 2 and set_counts == []  # BLAS's own count: nothing to set
    machine.run(0.3, others=1.0, ours=1.0)  # another training starts
    assert policy.apply() == 1 and set_counts == [1]
    machine.run(0.1, others=1.0, ours=1.0)  # within RECHECK_SECONDS: the same decision, nothing set
    assert policy.apply() == 1 and set_counts == [1]
    machine.run(1.0, others=0.0, ours=1.0)  # it has ended
    assert policy.apply() == 2 and set_counts == [1, None]
    policy.stop()
    assert set_counts == [1, None]


def test_policy_leaves_out_other_work_that_runs_between_its_blocks(monkeypatch):
    machine = FakeMachine(monkeypatch)
    monkeypatch.setattr(thread_policy, "set_blas_threads_here", lambda count: None)
    monkeypatch.setattr(thread_policy, "blas_thread_count", lambda: 2)
    monkeypatch.setattr(thread_policy, "usable_cpus", lambda: 2)
    policy = BlasThreadPolicy()
    for epoch in range(3):
        policy.start()
        assert policy.apply() == 2, epoch
        machine.run(0.2, others=0.0, ours=1.0)  # our epoch, alone
        policy.stop()
        machine.run(2.0, others=1.0, ours=0.0)  # another process's epoch, taking turns with ours
    policy.start()
    machine.run(0.2, others=1.0, ours=1.0)  # now beside ours
    assert policy.apply() == 1


def test_a_fixed_thread_count_ignores_the_load_and_is_undone_by_stop(monkeypatch):
    machine = FakeMachine(monkeypatch)
    set_counts = []
    monkeypatch.setattr(thread_policy, "set_blas_threads_here", set_counts.append)
    policy = BlasThreadPolicy(threads=3)
    policy.start()
    machine.run(1.0, others=2.0, ours=0.0)
    assert policy.apply() == 3
    policy.stop()
    assert set_counts == [3, None]


def test_numpy_epochs_run_blas_on_one_thread_beside_other_work_and_restore_it(monkeypatch):
    cpus = 6  # the machine's cores, faked: whatever this one has
    monkeypatch.setattr(thread_policy, "_affinity", lambda: set(range(cpus)))
    monkeypatch.setattr(thread_policy, "usable_cpus", lambda: cpus)
    monkeypatch.setattr(thread_policy, "RECHECK_SECONDS", 0.0)  # decide before every step
    monkeypatch.setattr(CpuLoad, "others_busy", lambda self: float(cpus))  # every core busy elsewhere
    backend = numpy_ref.Backend()
    seen = []
    real_step = backend._sgd_step
    monkeypatch.setattr(backend, "_sgd_step",
                        lambda *a, **k: (seen.append(blas_thread_counts()), real_step(*a, **k))[1])
    before = blas_thread_counts()
    rng = np.random.default_rng(0)
    X, y = rng.random((64, 20), dtype=np.float32), rng.integers(0, 3, 64)
    Trainer(MLP([20, 8, 3]), backend, batch_size=16).fit(X, y, epochs=1)
    assert seen and all(set(counts.values()) == {1} for counts in seen)
    assert blas_thread_counts() == before


@pytest.mark.parametrize("name", ["numpy", "numba"])
def test_threads_pins_the_backends_thread_count(name):
    backend = get_backend(name, threads=3)
    assert backend.threads == 3 and backend is get_backend(name, threads=3)
    assert backend is not get_backend(name)
    assert Trainer(MLP([4, 3]), name, threads=3).backend is backend


def test_numpy_backend_with_fixed_threads_runs_blas_on_them_in_single_calls(monkeypatch):
    backend = numpy_ref.Backend(threads=1)
    seen = []
    real = numpy_ref.hidden_activations
    monkeypatch.setattr(numpy_ref, "hidden_activations", lambda *a: (seen.append(blas_thread_counts()), real(*a))[1])
    before = blas_thread_counts()
    backend.forward(MLP([4, 3]), np.ones((2, 4), np.float32))
    assert set(seen[0].values()) == {1} and blas_thread_counts() == before


@pytest.mark.parametrize("threads, error", [(0, ValueError), (1.5, TypeError), (True, TypeError)])
def test_bad_thread_counts_are_refused_naming_threads(threads, error):
    with pytest.raises(error, match="threads"):
        get_backend("numpy", threads=threads)
    with pytest.raises(error, match="threads"):
        numpy_ref.Backend(threads=threads)
    with pytest.raises(error, match="threads"):
        with blas_threads_limited(threads):
            pass


def test_trainer_refuses_threads_beside_a_backend_object():
    with pytest.raises(ValueError, match="threads"):
        Trainer(MLP([4, 3]), get_backend("numpy"), threads=2)


def test_blas_threads_limited_covers_the_kernels_blas_and_is_undone():
    import fastmlp.kernels

    before = blas_thread_counts()
    with fastmlp.kernels.blas_threads_limited():
        inside = blas_thread_counts()
    assert len(inside) == len(before) >= 1 and set(inside.values()) == {1}
    assert blas_thread_counts() == before
    assert "blas_threads_limited" not in fastmlp.kernels.__all__  # not a kernel: no checked wrapper, no bench case


@pytest.mark.parametrize("flag", ["--threads", "--blas-threads"])
def test_cli_threads_and_its_old_name_reach_the_backend(monkeypatch, tiny_mnist_dir, flag):
    seen = []
    monkeypatch.setattr(fastmlp.cli.train, "get_backend", lambda name, threads=None: seen.append((name, threads)) or
                        get_backend(name, threads))
    assert fastmlp.cli.train.main(["--data-dir", str(tiny_mnist_dir), "--backend", "numpy", "--epochs", "1", "--quiet",
                               flag, "1"]) == 0
    assert seen == [("numpy", 1)]


def test_a_busy_core_among_many_free_ones_leaves_blas_its_own_count(monkeypatch):
    machine = FakeMachine(monkeypatch, cpus=8)
    monkeypatch.setattr(thread_policy, "set_blas_threads_here", lambda threads: None)
    monkeypatch.setattr(thread_policy, "blas_thread_count", lambda: 2)
    monkeypatch.setattr(thread_policy, "usable_cpus", lambda: 8)
    policy = BlasThreadPolicy()
    policy.start()
    machine.run(1.0, others=1.0, ours=2.0)
    assert policy.apply() == 2
    machine.run(1.0, others=7.0, ours=1.0)
    assert policy.apply() == 1


def test_others_running_is_the_least_runnable_count_of_a_few_readings_less_the_reader(monkeypatch):
    import io

    from fastmlp.runtime import thread_policy

    readings = iter(["0.50 0.40 0.30 3/120 4242\n", "0.50 0.40 0.30 2/120 4242\n", "0.50 0.40 0.30 4/120 4242\n"])
    monkeypatch.setattr(thread_policy, "open", lambda path: io.StringIO(next(readings)), raising=False)
    monkeypatch.setattr(thread_policy, "own_running", lambda: 1)  # the reader alone
    assert thread_policy.others_running(samples=3, gap_seconds=0.0) == 1


def test_others_running_stops_reading_at_a_reading_of_none(monkeypatch):
    # The least can only fall: once a reading finds no other runnable thread, the rest (and their waits) are
    # skipped. An idle machine's epochs otherwise paid ~1.2 ms each for five readings 0.2 ms apart.
    import io

    from fastmlp.runtime import thread_policy

    readings = ["0.50 0.40 0.30 3/120 4242\n", "0.50 0.40 0.30 1/120 4242\n", "0.50 0.40 0.30 5/120 4242\n"]
    opened, waits = [], []

    def fake_open(path):
        opened.append(path)
        return io.StringIO(readings[len(opened) - 1])

    monkeypatch.setattr(thread_policy, "open", fake_open, raising=False)
    monkeypatch.setattr(thread_policy, "own_running", lambda: 1)
    monkeypatch.setattr(thread_policy, "sleep", waits.append)
    assert thread_policy.others_running(samples=5, gap_seconds=0.001) == 0
    assert len(opened) == 2 and waits == [0.001]


def test_others_running_leaves_out_this_processs_own_runnable_threads(monkeypatch):
    import io

    from fastmlp.runtime import thread_policy

    monkeypatch.setattr(thread_policy, "open", lambda path: io.StringIO("0.5 0.4 0.3 5/120 4242\n"), raising=False)
    monkeypatch.setattr(thread_policy, "own_running", lambda: 3)  # the reader and two spinning threads of ours
    assert thread_policy.others_running(samples=2, gap_seconds=0.0) == 2


def test_a_spinning_thread_of_this_process_is_not_counted_as_other_work():
    # OpenBLAS's threads spin after NumPy's products; counted as another process's, they cost the
    # next epoch of the numba backend a worker. A nopython thread spinning without the GIL stands in.
    import threading
    import time

    from numba import njit

    from fastmlp.runtime import thread_policy
    from fastmlp.runtime.barrier import atomic_load, cpu_relax

    @njit(nogil=True)
    def spin(flag):
        while atomic_load(flag, 0) == 0:  # read again at every turn (a plain load would be hoisted)
            cpu_relax()

    def least(readings=20):
        return min(thread_policy.others_running() for _ in range(readings))

    spin(np.ones(1, dtype=np.int64))  # compiled before the thread starts
    # Other processes' work is read before, during and after the spin: counted, the spinner would lift the reading
    # during it above both. Other work that starts or ends meanwhile (another test run) can lift a window on its
    # own, so up to three tries, each of the three windows.
    readings = []
    for _ in range(3):
        before = least()
        flag = np.zeros(1, dtype=np.int64)
        spinner = threading.Thread(target=spin, args=(flag,))
        spinner.start()
        try:
            time.sleep(0.05)
            assert thread_policy.own_running() >= 2  # the reader and the spinner
            during = least()
        finally:
            flag[0] = 1
            spinner.join()
        readings.append((before, during, least()))
        if during <= max(before, readings[-1][2]):
            break
    else:
        pytest.fail(f"a spinning thread of this process was counted as other work: (before, during, after) {readings}")
