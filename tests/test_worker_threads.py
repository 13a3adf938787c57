"""The numba backend's epoch on several worker threads: same maths, BLAS limits restored, failures never hang."""

import threading

import numpy as np
import pytest
from threadpoolctl import threadpool_info, threadpool_limits

from fastmlp import MLP, get_backend
from fastmlp.backends.numba import backend as numba_fused
from fastmlp.backends.numba.backend import Backend, part_of, training_threads
from fastmlp.optim import AdamMoments, Velocity
from fastmlp.runtime.barrier import abort_barrier, barrier_state, barrier_wait
from fastmlp.testing import scaled_error

# .ci/run runs these again per instruction set and with bounds checks (kernels), and under other
# OpenBLAS kernel sets (equivalence).
pytestmark = [pytest.mark.kernels, pytest.mark.equivalence]

numpy_backend = get_backend("numpy")
SGD_RULES = {"plain": {}, "momentum": {"momentum": 0.9}, "nesterov": {"momentum": 0.9, "nesterov": True},
             "decay": {"weight_decay": 1e-3}}
# Adam's rules on the same split (their moments are compared too); lr 1e-2, Adam's step being ~lr per entry.
ADAM_RULES = {"adam": {"optimizer": "adam", "lr": 1e-2},
              "adam-l2": {"optimizer": "adam", "weight_decay": 1e-3, "betas": (0.8, 0.99), "lr": 1e-2},
              "adamw": {"optimizer": "adamw", "weight_decay": 1e-2, "lr": 1e-2}}
RULES = {**SGD_RULES, **ADAM_RULES}


@pytest.fixture(autouse=True)
def every_thread_a_worker(request, monkeypatch):
    """Run `threads` workers (at most one per row) whatever the batch and net: the default caps of
    `epoch_workers` would put these tiny nets and batches on one worker, and the point here is the
    split itself, idle workers (more workers than panels or rows) included."""
    if "epoch_workers" not in request.node.name:
        monkeypatch.setattr(numba_fused, "epoch_workers", lambda threads, rows, sizes: max(1, min(threads, rows)))


def epoch(backend, sizes, batch_size, sgd, seed=0, n=90, with_state=False):
    """(loss, model) after one epoch from MLP(sizes, seed=1); with_state: (loss, model, velocity or moments)."""
    rng = np.random.default_rng(seed)
    X, y = rng.random((n, sizes[0]), dtype=np.float32), rng.integers(0, sizes[-1], n)
    model = MLP(sizes, seed=1)
    sgd = dict(sgd)
    lr = sgd.pop("lr", 0.05)
    state = None
    if "momentum" in sgd:
        state = sgd["velocity"] = Velocity(model)
    elif sgd.get("optimizer") in ("adam", "adamw"):
        state = sgd["moments"] = AdamMoments(model)
    loss = backend.train_epoch(model, X, y, batch_size=batch_size, lr=lr, rng=np.random.default_rng(2), **sgd)
    return (loss, model, state) if with_state else (loss, model)


def assert_models_close(m1, m2, rtol=1e-5, bias_scale="own"):
    """Parameters equal to rtol, each array's difference scaled by its largest entry; with
    bias_scale="layer", a bias by the largest entry of its layer's weights and biases."""
    for W1, W2, b1, b2 in zip(m1.weights, m2.weights, m1.biases, m2.biases):
        floor = max(np.abs(W1).max(), np.abs(b1).max()) if bias_scale == "layer" else 1e-12
        for p1, p2, p_floor in ((W1, W2, 1e-12), (b1, b2, floor)):
            error, where = scaled_error(p1, p2, floor=p_floor)
            assert error <= rtol, f"scaled difference {error:.3g} at {where}"


def assert_states_close(s1, s2, rtol=1e-5):
    """Velocities, or Adam's moments and step counts, equal to rtol (scaled by each array's largest entry)."""
    if isinstance(s1, AdamMoments):
        assert s1.step == s2.step
        pairs = [(s1.first, s2.first), (s1.second, s2.second)]
    else:
        pairs = [] if s1 is None else [(s1, s2)]
    for b1, b2 in pairs:
        for p1, p2 in zip(b1.weights + b1.biases, b2.weights + b2.biases):
            error, where = scaled_error(p1, p2)
            assert error <= rtol, f"scaled difference {error:.3g} at {where}"


@pytest.mark.parametrize("rule", RULES)
@pytest.mark.parametrize("threads", [1, 2, 3])
@pytest.mark.parametrize("sizes, batch_size", [
    ((12, 9, 6, 4), 8),
    ((12, 9, 6, 4), 7),  # parts of unequal size, a last batch of 6
    ((5, 1, 3), 5),  # a layer of width one: some workers own no row of W and no bias
    ((6, 3), 1),  # batch of one: a single worker whatever the thread count
    ((40, 30, 20, 10, 5), 64),  # the whole set in one batch
])
def test_any_thread_count_matches_the_reference_epoch(rule, threads, sizes, batch_size):
    loss_ref, ref, state_ref = epoch(numpy_backend, sizes, batch_size, RULES[rule], with_state=True)
    loss, model, state = epoch(Backend(threads=threads), sizes, batch_size, RULES[rule], with_state=True)
    assert loss == pytest.approx(loss_ref, rel=1e-5)
    # Adam's biases start at 0 and move by about lr each step whatever the gradient's size, so
    # float32 rounding of the gradient (~1e-7 of it) becomes ~1e-7 of lr per step in them: 90
    # steps of a batch of one (seen: 1.1e-5 of the biases' own largest entry, on one worker)
    # drift beyond rtol on their own scale. They are judged on their layer's scale instead.
    assert_models_close(model, ref, bias_scale="layer" if rule in ADAM_RULES else "own")
    assert_states_close(state, state_ref)


@pytest.mark.parametrize("threads", [1, 2])
def test_the_same_thread_count_gives_bit_identical_epochs(threads):
    runs = [epoch(Backend(threads=threads), (30, 20, 10), 16, SGD_RULES["nesterov"], n=400) for _ in range(2)]
    (loss1, m1), (loss2, m2) = runs
    assert loss1 == loss2
    for p1, p2 in zip(m1.weights + m1.biases, m2.weights + m2.biases):
        np.testing.assert_array_equal(p1, p2)


def test_progress_with_workers_counts_every_sample_and_changes_nothing():
    updates = []
    rng = np.random.default_rng(0)
    X, y = rng.random((1000, 6), dtype=np.float32), rng.integers(0, 3, 1000)
    m1, m2 = MLP([6, 5, 3], seed=0), MLP([6, 5, 3], seed=0)
    loss1 = Backend(threads=2).train_epoch(m1, X, y, batch_size=7, lr=0.1, rng=np.random.default_rng(2),
                                           progress=updates.append)
    loss2 = Backend(threads=2).train_epoch(m2, X, y, batch_size=7, lr=0.1, rng=np.random.default_rng(2))
    assert sum(updates) == 1000 and 10 <= len(updates) <= 60
    assert loss1 == loss2
    for p1, p2 in zip(m1.weights + m1.biases, m2.weights + m2.biases):
        np.testing.assert_array_equal(p1, p2)


def test_part_of_cuts_a_range_into_contiguous_near_equal_parts():
    for n in range(20):
        for parts in range(1, 6):
            bounds = [part_of(t, n, parts) for t in range(parts)]
            assert bounds[0][0] == 0 and bounds[-1][1] == n
            assert all(a[1] == b[0] for a, b in zip(bounds, bounds[1:]))
            sizes = [stop - start for start, stop in bounds]
            assert max(sizes) - min(sizes) <= 1


def blas_threads_now():
    return sorted((lib["filepath"], lib["num_threads"]) for lib in threadpool_info() if lib["user_api"] == "blas")


def test_an_epoch_on_workers_leaves_the_blas_thread_counts_as_it_found_them():
    before = blas_threads_now()
    epoch(Backend(threads=2), (12, 9, 4), 32, {}, n=200)
    assert blas_threads_now() == before


@pytest.mark.parametrize("threads, batch_rows, sizes, expected", [
    (16, 32, (784, 128, 64, 10), 4),  # 16 cores at batch 32: MIN_ROWS_PER_WORKER (8) rows each
    (16, 1024, (784, 128, 64, 10), 16),  # more workers than panels of the first layer: split by rows
    (16, 1024, (784, 512, 256, 10), 16),
    (2, 1024, (784, 128, 64, 10), 2),
    (3, 15, (784, 128, 64, 10), 1),  # a batch too small to share
    (4, 64, (6, 1), 1),  # a step too small to share
    (16, 1024, (2, 10, 2), 2),  # 205 kFLOP a step: MIN_FLOPS_PER_WORKER each
])
def test_epoch_workers_never_exceed_what_a_batch_and_a_step_can_use(threads, batch_rows, sizes, expected):
    assert numba_fused.epoch_workers(threads, batch_rows, sizes) == expected


def test_training_threads_follow_the_blas_limit():
    with threadpool_limits(1, user_api="blas"):
        assert training_threads() == 1
    assert 1 <= training_threads() <= numba_fused.usable_cpus()


@pytest.mark.parametrize("threads, error", [(0, ValueError), (-2, ValueError), (2.0, TypeError), ("2", TypeError),
                                            (True, TypeError)])
def test_a_bad_thread_count_is_refused(threads, error):
    with pytest.raises(error, match="threads"):
        Backend(threads=threads)


def run_with_deadline(fn, seconds=120):
    """fn() on a thread; fails the test if it has not returned after `seconds` (a hang)."""
    outcome = {}

    def target():
        try:
            outcome["value"] = fn()
        except BaseException as exc:  # reported to the test below
            outcome["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), "the epoch hung"
    return outcome


def test_an_error_in_progress_stops_every_worker_and_reaches_the_caller():
    rng = np.random.default_rng(0)
    X, y = rng.random((2000, 6), dtype=np.float32), rng.integers(0, 3, 2000)

    def progress(n):
        raise RuntimeError("progress failed")

    outcome = run_with_deadline(lambda: Backend(threads=2).train_epoch(
        MLP([6, 5, 3], seed=0), X, y, batch_size=4, lr=0.1, rng=rng, progress=progress))
    assert isinstance(outcome.get("error"), RuntimeError)
    assert [t for t in threading.enumerate() if t.name.startswith("fastmlp-worker")] == []


def test_a_failing_worker_stops_the_others_and_its_error_reaches_the_caller(monkeypatch):
    real_worker = numba_fused.train_batches_worker

    def worker(t, *args):
        if t == 1:
            raise MemoryError("worker 1 failed")
        return real_worker(t, *args)  # waits at its first barrier until worker 1's failure aborts it

    monkeypatch.setattr(numba_fused, "train_batches_worker", worker)
    rng = np.random.default_rng(0)
    X, y = rng.random((200, 6), dtype=np.float32), rng.integers(0, 3, 200)
    outcome = run_with_deadline(lambda: Backend(threads=2).train_epoch(
        MLP([6, 5, 3], seed=0), X, y, batch_size=8, lr=0.1, rng=rng))
    assert isinstance(outcome.get("error"), MemoryError)


def test_the_barrier_releases_every_party_and_an_abort_releases_the_waiters():
    state = barrier_state()
    results = []
    threads = [threading.Thread(target=lambda: results.append(all(barrier_wait(state, 3) for _ in range(200))))
               for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert results == [True, True, True]

    state = barrier_state()
    waiter = threading.Thread(target=lambda: results.append(barrier_wait(state, 2)), daemon=True)
    waiter.start()
    abort_barrier(state)
    waiter.join(60)
    assert not waiter.is_alive() and results[-1] is False
    assert barrier_wait(state, 1) is False  # an aborted barrier stays aborted


def test_an_epoch_takes_only_the_cores_other_work_leaves_free_unless_threads_is_fixed(monkeypatch):
    cpus = 6  # the machine's cores and default thread count, faked: whatever this one has

    class Load:  # a CpuLoad whose other processes keep `busy` of the cores busy
        busy = 1.0

        def __init__(self, paused=False):
            self.cpus, self.watched = cpus, 0.0  # seconds watched: a window's worth, or none yet

        def others_busy(self):
            self.watched = 0.0
            return self.busy

        def watched_seconds(self):
            return self.watched

        def pause(self):
            pass

        def resume(self):
            pass

    def watched(backend, busy):
        """backend with a fake load of `busy` cores, its window over: the next epoch reads it."""
        Load.busy = busy
        backend._free_threads()  # the first call starts watching
        backend._load = Load()
        backend._load.watched = np.inf
        return backend

    monkeypatch.setattr(numba_fused, "CpuLoad", Load)
    monkeypatch.setattr(numba_fused, "training_threads", lambda: cpus)
    running = [0]  # threads of other processes runnable as an epoch starts
    monkeypatch.setattr(numba_fused, "others_running", lambda: running[0])
    assert Backend()._free_threads() == cpus  # before a first window: the threads runnable now
    running[0] = cpus - 1
    assert Backend()._free_threads() == 1  # jobs started just now
    assert watched(Backend(), 0.0)._free_threads() == cpus  # after one: the window's reading
    running[0] = 0
    assert watched(Backend(), cpus - 1.0)._free_threads() == 1
    assert watched(Backend(), 1.0)._free_threads() == cpus - 1
    assert watched(Backend(), 0.1)._free_threads() == cpus
    backend = watched(Backend(), cpus - 1.0)
    assert backend._free_threads() == 1
    Load.busy = 0.0
    assert backend._free_threads() == 1  # within the window the last reading stands
    asked = []
    monkeypatch.setattr(numba_fused, "epoch_workers", lambda threads, rows, sizes: asked.append(threads) or 1)
    for b in (watched(Backend(), cpus - 1.0), watched(Backend(threads=2), cpus - 1.0)):
        b.train_epoch(MLP([6, 3], seed=0), np.zeros((4, 6), np.float32), np.zeros(4, np.int64), batch_size=2,
                      lr=0.1, rng=np.random.default_rng(0))
    assert asked == [1, 2]


DEFAULT_NET = (784, 128, 64, 10)
PANELS = numba_fused.PANEL_WIDTH  # columns of one panel of packed weights


@pytest.mark.parametrize("rule", SGD_RULES)
@pytest.mark.parametrize("threads", [2, 3, 5, 8, 16])
def test_more_workers_than_first_layer_panels_match_the_reference_on_the_default_net(rule, threads):
    """128 / PANEL_WIDTH panels (4 with AVX-512, 8 with AVX2): the larger counts split layer 0 by rows."""
    loss_ref, ref = epoch(numpy_backend, DEFAULT_NET, 32, SGD_RULES[rule], n=80)  # a last batch of 16
    loss, model = epoch(Backend(threads=threads), DEFAULT_NET, 32, SGD_RULES[rule], n=80)
    assert loss == pytest.approx(loss_ref, rel=1e-5)
    assert_models_close(model, ref)


@pytest.mark.parametrize("rule", SGD_RULES)
@pytest.mark.parametrize("threads", [2, 3, 4, 7])  # 3 panels: by panels for 2 and 3, by rows for 4 and 7
@pytest.mark.parametrize("hidden", [3 * PANELS, 2 * PANELS + 5])  # the last panel full, or partly padding
def test_layer_0_split_by_panels_or_by_rows_matches_the_reference(rule, threads, hidden):
    sizes = (30, hidden, 7, 5)
    loss_ref, ref = epoch(numpy_backend, sizes, 16, SGD_RULES[rule], n=75)
    loss, model = epoch(Backend(threads=threads), sizes, 16, SGD_RULES[rule], n=75)
    assert loss == pytest.approx(loss_ref, rel=1e-5)
    assert_models_close(model, ref)


@pytest.mark.parametrize("threads", [3, 5, 16])
def test_the_same_thread_count_gives_bit_identical_epochs_whichever_way_layer_0_is_split(threads):
    sizes = (40, 3 * PANELS, 10)  # 3 panels: by panels for 3 workers, by rows for 5 and 16
    runs = [epoch(Backend(threads=threads), sizes, 32, SGD_RULES["nesterov"], n=300) for _ in range(2)]
    (loss1, m1), (loss2, m2) = runs
    assert loss1 == loss2
    for p1, p2 in zip(m1.weights + m1.biases, m2.weights + m2.biases):
        np.testing.assert_array_equal(p1, p2)


@pytest.mark.parametrize("threads", [2, 3])  # by panels: the next step's layer 0 starts with no barrier before it
@pytest.mark.parametrize("sizes", [(6, 3 * PANELS, 3), (6, 3 * PANELS)])
def test_progress_chunks_change_nothing_when_layer_0_is_split_by_panels(threads, sizes):
    """Worker 0 leaves nopython code between chunks while the others go on: their barriers must still pair up."""
    rng = np.random.default_rng(0)
    X, y = rng.random((700, 6), dtype=np.float32), rng.integers(0, sizes[-1], 700)
    m1, m2 = MLP(sizes, seed=0), MLP(sizes, seed=0)
    updates = []
    loss1 = Backend(threads=threads).train_epoch(m1, X, y, batch_size=7, lr=0.1, rng=np.random.default_rng(2),
                                                 progress=updates.append)
    loss2 = Backend(threads=threads).train_epoch(m2, X, y, batch_size=7, lr=0.1, rng=np.random.default_rng(2))
    assert sum(updates) == 700 and len(updates) > 10
    assert loss1 == loss2
    for p1, p2 in zip(m1.weights + m1.biases, m2.weights + m2.biases):
        np.testing.assert_array_equal(p1, p2)


@pytest.mark.parametrize("threads, hidden", [(2, 2 * PANELS), (3, PANELS)])  # by panels, by rows
def test_a_step_on_several_workers_meets_at_two_barriers(monkeypatch, threads, hidden):
    """Two barriers a step whichever way layer 0 is split, and one more to gather the epoch's first batch."""
    from fastmlp.runtime import barrier as barrier_module

    states = []

    def recorded():
        states.append(barrier_state())
        return states[-1]

    monkeypatch.setattr(numba_fused, "barrier_state", recorded)
    epoch(Backend(threads=threads), (20, hidden, 4), 8, {}, n=80)  # 10 steps
    assert states[-1][barrier_module._GENERATION] == 1 + 2 * 10


@pytest.mark.parametrize("rule", SGD_RULES)
def test_any_worker_count_gives_the_weights_of_one_worker_bit_for_bit(rule):
    """The split decides which worker computes each weight, never how (every product and sum runs over the
    same rows in the same order): a step that read a part before another worker wrote it would show here."""
    sizes = (30, 3 * PANELS, 7, 5)  # 3 panels: by panels for 2 and 3 workers, by rows for 5 and 16
    _, one = epoch(Backend(threads=1), sizes, 16, SGD_RULES[rule], n=75)
    for threads in (2, 3, 5, 16):
        _, model = epoch(Backend(threads=threads), sizes, 16, SGD_RULES[rule], n=75)
        for p1, p2 in zip(one.weights + one.biases, model.weights + model.biases):
            np.testing.assert_array_equal(p1, p2, err_msg=f"threads={threads}")


@pytest.mark.parametrize("threads, hidden, private", [(2, 3 * PANELS, True), (3, 3 * PANELS, True),
                                                       (4, 3 * PANELS, False), (1, 3 * PANELS, False)])
def test_workers_that_split_layer_0_by_panels_gather_the_whole_batch_into_buffers_of_their_own(threads, hidden,
                                                                                              private):
    """Two input buffers a worker where each reads every row (layer 0 by panels), shared by rows or alone; and the
    same weights bit for bit whichever buffers an epoch gathers into."""
    from fastmlp.backends.numba import threads as worker_threads

    sizes = (30, hidden, 7, 5)
    assert worker_threads.private_inputs(threads, 16, sizes) is private
    backend = Backend(threads=threads)
    _, model = epoch(backend, sizes, 16, SGD_RULES["nesterov"], n=75)
    (ws,) = backend._workspaces.values()
    assert ws.inputs_for(threads).shape[0] == (2 * threads if private else 2)
    _, one = epoch(Backend(threads=1), sizes, 16, SGD_RULES["nesterov"], n=75)
    for p1, p2 in zip(one.weights + one.biases, model.weights + model.biases):
        np.testing.assert_array_equal(p1, p2)


def test_private_input_buffers_stay_within_their_byte_budget():
    from fastmlp.backends.numba.threads import PRIVATE_INPUT_BYTES, private_inputs

    sizes = (784, 128, 64, 10)
    rows = PRIVATE_INPUT_BYTES // (2 * 784 * 4)  # the most rows two workers may copy
    assert private_inputs(2, rows, sizes) and not private_inputs(2, rows + 1, sizes)
    assert not private_inputs(2, 64, (784, PANELS, 10))  # one panel: layer 0 split by rows


# Layer 0 holds nearly all of these nets' weights: the upper layers may be replicated on every worker.
LAYER0_HEAVY = [(200, 3 * PANELS, 4, 3), (200, 2 * PANELS + 5, 6)]


@pytest.mark.parametrize("rule", RULES)
@pytest.mark.parametrize("threads", [2, 3])
@pytest.mark.parametrize("sizes", LAYER0_HEAVY)
def test_replicated_upper_layers_give_the_weights_of_one_worker_bit_for_bit(monkeypatch, rule, threads, sizes):
    """Every worker runs the upper layers for every row on copies of its own, one barrier a step: the same products
    in the same order as one worker's, so the same bits, loss and optimiser state included (worker 0's copies
    are the model's); a read of a layer-0 output before its barrier, or of the next step's, would show here."""
    from fastmlp.backends.numba import threads as worker_threads
    from fastmlp.runtime import barrier as barrier_module

    assert worker_threads.may_replicate_upper(threads, 16, sizes)
    loss_one, one, state_one = epoch(Backend(threads=1), sizes, 16, RULES[rule], n=75, with_state=True)
    states = []

    def recorded():
        states.append(barrier_state())
        return states[-1]

    monkeypatch.setattr(numba_fused, "barrier_state", recorded)
    monkeypatch.setattr(worker_threads, "SPLITS", worker_threads.SplitChooser(forced=True))
    loss, model, state = epoch(Backend(threads=threads), sizes, 16, RULES[rule], n=75, with_state=True)
    assert states[-1][barrier_module._GENERATION] == 1 + 5  # the first gather's, then one for each of 5 steps
    assert loss == loss_one
    for p1, p2 in zip(one.weights + one.biases, model.weights + model.biases):
        np.testing.assert_array_equal(p1, p2)
    assert_states_close(state_one, state, rtol=0)


@pytest.mark.parametrize("threads", [2, 3])
def test_progress_chunks_change_nothing_with_replicated_upper_layers(monkeypatch, threads):
    """Worker 0 leaves nopython code between chunks while the others go on at one barrier a step."""
    from fastmlp.backends.numba import threads as worker_threads

    monkeypatch.setattr(worker_threads, "SPLITS", worker_threads.SplitChooser(forced=True))
    sizes = LAYER0_HEAVY[0]
    rng = np.random.default_rng(0)
    X, y = rng.random((700, sizes[0]), dtype=np.float32), rng.integers(0, sizes[-1], 700)
    m1, m2 = MLP(sizes, seed=0), MLP(sizes, seed=0)
    updates = []
    loss1 = Backend(threads=threads).train_epoch(m1, X, y, batch_size=9, lr=0.1, rng=np.random.default_rng(2),
                                                 progress=updates.append)
    loss2 = Backend(threads=1).train_epoch(m2, X, y, batch_size=9, lr=0.1, rng=np.random.default_rng(2))
    assert sum(updates) == 700 and len(updates) > 10
    assert loss1 == loss2
    for p1, p2 in zip(m1.weights + m1.biases, m2.weights + m2.biases):
        np.testing.assert_array_equal(p1, p2)


def test_upper_layers_are_replicated_only_where_layer_0_holds_nearly_all_of_the_weights():
    from fastmlp.backends.numba.threads import may_replicate_upper

    assert may_replicate_upper(2, 64, DEFAULT_NET)  # 8,832 upper weights against 100,352
    assert not may_replicate_upper(2, 64, (784, 1024, 1024, 10))  # the upper layers as big as layer 0
    assert not may_replicate_upper(2, 64, (784, 128))  # no upper layer
    assert not may_replicate_upper(1, 64, DEFAULT_NET)  # one worker
    assert not may_replicate_upper(2, 4096, DEFAULT_NET)  # a batch too big to gather on every worker


def test_layer_1_is_summed_in_two_parts_for_the_nets_that_may_replicate_whatever_the_workers():
    # A property of the net alone (fastmlp/backends/numba/layer1.py), so that every worker count sums alike.
    from fastmlp.backends.numba.buffers import _Workspace
    from fastmlp.backends.numba.threads import upper_layers_small

    assert upper_layers_small(DEFAULT_NET)
    assert not upper_layers_small((784, 1024, 1024, 10)) and not upper_layers_small((784, 128))
    assert not upper_layers_small((784, PANELS, 4, 3))  # one panel of layer 0: nothing to cut
    assert _Workspace(DEFAULT_NET, 16).layer1_halves.shape == (2, 2, 16, 64)
    assert _Workspace((784, 1024, 1024, 10), 16).layer1_halves.shape[2] == 0  # summed in one chain


@pytest.mark.parametrize("choices", [2, 3])
def test_the_split_chooser_times_each_split_in_turn_then_keeps_the_fastest(choices):
    from fastmlp.backends.numba.threads import SPLIT_TRIALS, SplitChooser, StepSplit

    splits = (StepSplit(False, True), StepSplit(True, True), StepSplit(False, False))[:choices]
    for fastest in splits:
        chooser, key, ran = SplitChooser(), ("net", 32, 2), []
        for _ in range(1 + choices * SPLIT_TRIALS):
            split = chooser.next_split(key, splits)
            ran.append(split)
            chooser.record(key, split, 1.0 if split == fastest else 1.2, choices)
            assert chooser.timing() == (set() if key in chooser.chosen_splits() else {key})
        # the first split first (it may compile; not timed), then each in turn
        assert ran == [splits[0]] + (list(splits[1:]) + [splits[0]]) * SPLIT_TRIALS
        assert [chooser.next_split(key, splits) for _ in range(3)] == [fastest] * 3
        assert chooser.chosen_splits() == {key: fastest}
        assert chooser.next_split(("another net", 32, 2), splits) == splits[0]  # each shape its own trials
    chooser.record(("one split", 32, 1), splits[0], 1.0, 1)
    assert chooser.timing() == set()  # a shape with nothing to choose is never timed
    assert SplitChooser(forced=True).next_split(key, splits) == StepSplit(True, True)
    assert SplitChooser(forced=True).next_split(key, splits[::2]) == splits[0]  # no replicated split: the first
    assert SplitChooser(forced=False).next_split(key, splits) == splits[0]


def _kept(chooser, key, splits, fastest, seconds=1.0):
    """Run a fresh shape's trials on `chooser`, `fastest` timed fastest; returns the split it keeps."""
    from fastmlp.backends.numba.threads import SPLIT_TRIALS

    for _ in range(1 + len(splits) * SPLIT_TRIALS):
        split = chooser.next_split(key, splits)
        chooser.record(key, split, seconds if split == fastest else 1.2 * seconds, len(splits), 1.0)
    return chooser.chosen_splits()[key]


@pytest.mark.parametrize("drift", [1.3, 1 / 1.3])
def test_a_kept_split_whose_epochs_drift_is_timed_again(drift):
    """A kept split's epochs RETIME_EPOCHS in a row slower or faster than its best trial by more than RETIME_DRIFT
    (the host moved the cores): the splits are timed again, and the new fastest kept."""
    from fastmlp.backends.numba.threads import RETIME_EPOCHS, SPLIT_TRIALS, SplitChooser, StepSplit

    splits, key = (StepSplit(False, True), StepSplit(True, True)), ("net", 32, 2)
    chooser = SplitChooser()
    assert _kept(chooser, key, splits, splits[0]) == splits[0]
    for _ in range(RETIME_EPOCHS - 1):
        chooser.record(key, splits[0], drift, 2, 1.0)
    chooser.record(key, splits[0], 1.0, 2, 1.0)  # back: the count starts again
    for _ in range(RETIME_EPOCHS - 1):
        chooser.record(key, splits[0], drift, 2, 1.0)
    assert chooser.timing() == set() and chooser.next_split(key, splits) == splits[0]
    chooser.record(key, splits[0], drift, 2, 1.0)
    assert chooser.timing() == {key} and chooser.chosen_splits() == {}
    ran = []
    for _ in range(len(splits) * SPLIT_TRIALS):  # every split timed again, the second first
        split = chooser.next_split(key, splits)
        ran.append(split)
        chooser.record(key, split, 0.9 if split == splits[1] else 1.1, 2, 1.0)
    assert ran == [splits[1], splits[0]] * SPLIT_TRIALS
    assert chooser.chosen_splits() == {key: splits[1]}


@pytest.fixture
def kept_on_a_fake_clock(monkeypatch):
    """(chooser, key, splits, clock): a SplitChooser that has kept splits[0] for key, time.monotonic() reading
    clock[0] seconds."""
    from fastmlp.backends.numba import threads as worker_threads
    from fastmlp.backends.numba.threads import SplitChooser, StepSplit

    clock = [1000.0]
    monkeypatch.setattr(worker_threads.time, "monotonic", lambda: clock[0])
    splits, key = (StepSplit(False, True), StepSplit(True, True)), ("net", 32, 2)
    chooser = SplitChooser()
    _kept(chooser, key, splits, splits[0])
    return chooser, key, splits, clock


def test_kept_as_is_holds_a_kept_split_through_drift_and_time(kept_on_a_fake_clock):
    """A benchmark's measured epochs run the kept split, whatever they take (SplitChooser.kept_as_is)."""
    from fastmlp.backends.numba.threads import RETIME_AFTER_SECONDS, RETIME_EPOCHS

    chooser, key, splits, clock = kept_on_a_fake_clock
    with chooser.kept_as_is():
        clock[0] += RETIME_AFTER_SECONDS
        for _ in range(2 * RETIME_EPOCHS):
            chooser.record(key, splits[0], 2.0, 2, 1.0)
        assert chooser.chosen_splits() == {key: splits[0]}
    chooser.record(key, splits[0], 1.0, 2, 1.0)  # after the block, the minute since it was kept counts again
    assert chooser.timing() == {key}



def test_retime_times_a_kept_split_again_even_within_kept_as_is(kept_on_a_fake_clock):
    """A caller that saw the machine change (fastmlp bench between rounds) has the shape's splits timed again, the
    second split first, and the new fastest kept; a shape with no kept split is left as it is."""
    from fastmlp.backends.numba.threads import SPLIT_TRIALS

    chooser, key, splits, _ = kept_on_a_fake_clock
    chooser.retime(("another net", 32, 2))
    assert chooser.chosen_splits() == {key: splits[0]}
    with chooser.kept_as_is():
        chooser.retime(key)
        assert chooser.timing() == {key} and chooser.chosen_splits() == {}
        ran = []
        for _ in range(len(splits) * SPLIT_TRIALS):
            split = chooser.next_split(key, splits)
            ran.append(split)
            chooser.record(key, split, 0.9 if split == splits[1] else 1.1, 2, 1.0)
    assert ran == [splits[1], splits[0]] * SPLIT_TRIALS
    assert chooser.chosen_splits() == {key: splits[1]}

def test_short_epochs_never_retime_a_kept_split_but_time_does(kept_on_a_fake_clock):
    from fastmlp.backends.numba.threads import RETIME_AFTER_SECONDS, RETIME_MIN_SECONDS

    chooser, key, splits, clock = kept_on_a_fake_clock
    for _ in range(20):  # noisy short epochs: no trials
        chooser.record(key, splits[0], 3.0, 2, RETIME_MIN_SECONDS / 2)
    assert chooser.chosen_splits() == {key: splits[0]}
    clock[0] += RETIME_AFTER_SECONDS
    chooser.record(key, splits[0], 1.0, 2, RETIME_MIN_SECONDS / 2)
    assert chooser.timing() == {key}


def test_a_large_batch_or_long_rows_also_time_input_buffers_shared_by_the_workers():
    # Which input buffers are faster where the gathers are costly is the machine's (threads.SHARED_INPUT_TRIAL_BYTES).
    from fastmlp.backends.numba.threads import SHARED_INPUT_TRIAL_BYTES, StepSplit, step_splits
    from fastmlp.kernels.gather import PREFETCH_ROW_BYTES

    rows = SHARED_INPUT_TRIAL_BYTES // (2 * 784 * 4)  # the most rows whose two copies are never timed shared
    assert step_splits(2, rows, DEFAULT_NET) == (StepSplit(False, True), StepSplit(True, True))
    assert step_splits(2, rows + 1, DEFAULT_NET) == (StepSplit(False, True), StepSplit(True, True),
                                                     StepSplit(False, False))
    assert step_splits(2, 1024, (784, 1024, 1024, 10)) == (StepSplit(False, True), StepSplit(False, False))
    assert step_splits(2, 64, (784, 1024, 1024, 10)) == (StepSplit(False, True),)
    assert step_splits(1, 1024, DEFAULT_NET) == (StepSplit(False, False),)  # one worker: one buffer pair
    assert step_splits(2, 4096, DEFAULT_NET) == (StepSplit(False, False),)  # copies over PRIVATE_INPUT_BYTES
    # Rows longer than the step's L2 prefetch covers (float32 MNIST) make every gather wait: timed at every batch.
    assert step_splits(2, 32, DEFAULT_NET, 784 * 4)[-1] == StepSplit(False, False)
    assert step_splits(2, 32, DEFAULT_NET, 784) == step_splits(2, 32, DEFAULT_NET)  # uint8 rows: prefetched whole
    assert step_splits(2, 32, DEFAULT_NET, PREFETCH_ROW_BYTES + 1)[-1] == StepSplit(False, False)
    assert step_splits(2, 32, DEFAULT_NET, PREFETCH_ROW_BYTES) == step_splits(2, 32, DEFAULT_NET)


@pytest.mark.parametrize("private", [True, False])
def test_a_batch_gathered_into_shared_or_private_buffers_gives_the_same_bits(monkeypatch, private):
    """The chooser's splits at a batch big enough to time shared inputs: each gives one worker's weights."""
    from fastmlp.backends.numba import threads as worker_threads
    from fastmlp.backends.numba.threads import StepSplit

    sizes = (3000, 3 * PANELS, 7, 5)
    rows = 48  # 2 x 48 x 3000 x 4 bytes: over SHARED_INPUT_TRIAL_BYTES
    assert StepSplit(False, False) in worker_threads.step_splits(2, rows, sizes)

    class Fixed(worker_threads.SplitChooser):
        def next_split(self, key, splits):
            return StepSplit(False, private)

    monkeypatch.setattr(worker_threads, "SPLITS", Fixed())
    backend = Backend(threads=2)
    _, model = epoch(backend, sizes, rows, SGD_RULES["nesterov"], n=150)
    (ws,) = backend._workspaces.values()
    assert ws.inputs.shape[0] == (4 if private else 2)
    _, one = epoch(Backend(threads=1), sizes, rows, SGD_RULES["nesterov"], n=150)
    for p1, p2 in zip(one.weights + one.biases, model.weights + model.biases):
        np.testing.assert_array_equal(p1, p2)
