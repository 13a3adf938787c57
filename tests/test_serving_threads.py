"""Serving a batch on several threads (fastmlp.inference.threads, fastmlp.kernels.serving): the copies of the
weights kept between calls follow every in-place edit, serving threads that went to sleep wake for the next
call, models beyond the last few used give their threads back, and a forked child serves with threads of its
own. Every answer is compared bit for bit with the row-major path, which keeps nothing between calls."""

import multiprocessing
import re
import threading
import time

import numpy as np
import pytest

from fastmlp import MLP, inference
from fastmlp.inference import threads
from fastmlp.kernels import packed
from fastmlp.kernels.reference import packed as pack_weights
from fastmlp.kernels.rowmajor import (
    layer_part_into,
    on_cache_lines,
    packed_layer_part_into,
    reads_straight,
    rowmajor_forward_probs_into,
    rowmajor_layer_part_into,
    rowmajor_layer_rows,
)
from fastmlp.runtime.aligned import CACHE_LINE, aligned_zeros

pytestmark = pytest.mark.kernels  # run again per ISA and with bounds checks by .ci/run

SIZES = (784, 128, 64, 10)


def rowmajor_probabilities(model, X):
    """The probabilities by the row-major kernels alone: nothing packed, nothing kept."""
    out = np.empty((len(X), model.n_classes), dtype=np.float32)
    weights, biases = threads.uniform(tuple(model.weights)), threads.uniform(tuple(model.biases))
    assert rowmajor_forward_probs_into(out, X, weights, biases, 0, len(X))
    return out


def off_cache_lines(a, offset=16):
    """A copy of a whose data starts `offset` bytes past a cache line (as NumPy places large arrays)."""
    buffer = aligned_zeros(a.size + CACHE_LINE // 4, a.dtype)
    copy = buffer[offset // a.itemsize : offset // a.itemsize + a.size].reshape(a.shape)
    copy[...] = a
    return copy


def model_with_biases(sizes=SIZES, seed=0):
    model = MLP(sizes, seed=seed)
    rng = np.random.default_rng(seed)
    for b in model.biases:
        b[:] = rng.standard_normal(b.shape).astype(np.float32) * 0.1
    return model


@pytest.fixture
def parts(monkeypatch):
    """Set how many threads a call may take, whatever this machine's cores."""
    def set_parts(count):
        monkeypatch.setattr(inference, "_usable_cpus", lambda: count)
        monkeypatch.setattr(inference, "MIN_MACS_PER_THREAD", 1)
    return set_parts


def test_a_kept_packed_copy_is_checked_as_it_is_read_and_exactly_its_stale_panels_repacked():
    rng = np.random.default_rng(0)
    K, N = 37, 3 * packed.PANEL_WIDTH + 5  # a partial last panel
    n = 2 * packed.TILE_ROWS + 3  # a partial last tile of rows
    W = rng.standard_normal((K, N)).astype(np.float32)
    b = rng.standard_normal(N).astype(np.float32)
    A = rng.standard_normal((n, K)).astype(np.float32)
    P = np.zeros(packed.packed_shape(K, N), dtype=np.float32)  # as kept at first: all stale
    panels = P.shape[0]

    def layer(p0, p1):
        """The layer's columns of panels p0:p1 through the kept copy, and by the row-major kernel from W."""
        C, expected = np.full((n, N), np.nan, np.float32), np.empty((n, N), np.float32)
        assert packed_layer_part_into(C, A, W, P, b, True, 0, n, p0, p1, True)
        rowmajor_layer_rows(expected, 0, A, 0, n, W, b, True)
        cols = slice(p0 * packed.PANEL_WIDTH, p1 * packed.PANEL_WIDTH)
        np.testing.assert_array_equal(C[:, cols].view(np.uint32), expected[:, cols].view(np.uint32))

    layer(0, panels)
    np.testing.assert_array_equal(P, pack_weights(W))
    for col in (0, packed.PANEL_WIDTH + 3, N - 1):
        p = col // packed.PANEL_WIDTH
        W[11, col] = -W[11, col] + 1.0
        before = P.copy()
        for q in range(panels):
            if q != p:
                layer(q, q + 1)  # other panels: right, and the stale one left as it was
        np.testing.assert_array_equal(P, before)
        layer(p, p + 1)
        np.testing.assert_array_equal(P, pack_weights(W))
    W[3, 4] = 0.0
    layer(0, panels)
    W[3, 4] = -0.0  # equal as numbers, other bits: a change all the same
    layer(0, 1)
    np.testing.assert_array_equal(P.view(np.uint32), pack_weights(W).view(np.uint32))


def test_a_layer_part_read_straight_off_w_equals_the_packed_copys_bits_and_leaves_the_copy_alone():
    rng = np.random.default_rng(6)
    K, N = 600, 4 * packed.PANEL_WIDTH  # rows of whole cache lines; W larger than L1 (STRAIGHT_MAX_BYTES) on any tile
    n = 2 * packed.TILE_ROWS + 5
    A = rng.standard_normal((n, K)).astype(np.float32)
    b = rng.standard_normal(N).astype(np.float32)
    on_lines = aligned_zeros((K, N))
    on_lines[...] = rng.standard_normal((K, N))
    off_lines = off_cache_lines(on_lines)
    assert on_cache_lines(on_lines) and not on_cache_lines(off_lines)
    assert not on_cache_lines(aligned_zeros((K, N - 3)))  # rows of 244 bytes: most start inside a line
    assert reads_straight(on_lines) and not reads_straight(off_lines)
    assert reads_straight(off_cache_lines(aligned_zeros((30, 64))))  # 7.5 KB: in L1, read straight all the same
    expected = np.empty((n, N), np.float32)
    rowmajor_layer_rows(expected, 0, A, 0, n, on_lines, b, True)
    for r0, r1, p0, p1 in [(0, n, 0, 4), (3, n - 2, 1, 3), (packed.TILE_ROWS, n, 3, 4)]:
        cols = slice(p0 * packed.PANEL_WIDTH, p1 * packed.PANEL_WIDTH)
        for W in (on_lines, off_lines):
            C, P = np.full((n, N), np.nan, np.float32), np.zeros(packed.packed_shape(K, N), np.float32)
            assert rowmajor_layer_part_into(C, A, W, b, True, r0, r1, p0, p1, True)
            np.testing.assert_array_equal(C[r0:r1, cols].view(np.uint32), expected[r0:r1, cols].view(np.uint32))
            outside = np.ones(C.shape, bool)
            outside[r0:r1, cols] = False
            assert np.isnan(C[outside]).all()  # nothing written outside its part
            C[...] = np.nan
            assert layer_part_into(C, A, W, P, b, True, r0, r1, p0, p1, True)
            np.testing.assert_array_equal(C[r0:r1, cols].view(np.uint32), expected[r0:r1, cols].view(np.uint32))
            # on cache lines, W is read straight and its packed copy never touched; else the copy is packed
            assert (P == 0).all() if W is on_lines else (P[p0:p1] == pack_weights(W)[p0:p1]).all()
    A[n - 1, 7] = np.nan
    assert not rowmajor_layer_part_into(np.empty((n, N), np.float32), A, on_lines, b, True, 0, n, 0, 4, True)
    assert rowmajor_layer_part_into(np.empty((n, N), np.float32), A, on_lines, b, True, 0, n - 1, 0, 4, True)


@pytest.mark.parametrize("K, N", [(30, 4 * 16 + 5), (64, 10), (9, 3 * 16)])
def test_a_small_layers_short_last_rows_have_the_bits_of_the_whole_tiles(K, N):
    """W in L1: rows short of a whole MR tile go one by one through the single-row tile where that is fewer FMAs."""
    rng = np.random.default_rng(K)
    W, b = rng.standard_normal((K, N)).astype(np.float32), rng.standard_normal(N).astype(np.float32)
    panels = packed.panel_count(N)
    for n in range(1, 3 * packed.TILE_ROWS):
        A = rng.standard_normal((n, K)).astype(np.float32)
        expected = np.empty((n, N), np.float32)
        rowmajor_layer_rows(expected, 0, A, 0, n, W, b, True)
        for r0, p0, p1 in [(0, 0, panels), (n // 2, 1, panels), (n // 3, 0, 1)]:
            C = np.full((n, N), np.nan, np.float32)
            assert rowmajor_layer_part_into(C, A, W, b, True, r0, n, p0, p1, True)
            cols = slice(p0 * packed.PANEL_WIDTH, p1 * packed.PANEL_WIDTH)
            np.testing.assert_array_equal(C[r0:, cols].view(np.uint32), expected[r0:, cols].view(np.uint32))
            outside = np.ones(C.shape, bool)
            outside[r0:, cols] = False
            assert np.isnan(C[outside]).all()


@pytest.mark.parametrize("lines", ["on cache lines", "16 bytes off"])
@pytest.mark.parametrize("count", [1, 2, 3])
def test_every_in_place_edit_is_seen_by_the_next_call_on_any_number_of_threads(count, lines, parts):
    parts(count)
    model = model_with_biases(seed=1)
    if lines == "16 bytes off":  # read through the packed copies kept between calls, checked against W
        model.weights = [off_cache_lines(W) for W in model.weights]
    X = np.random.default_rng(2).random((70, SIZES[0]), dtype=np.float32)
    rng = np.random.default_rng(3)
    for step in range(8):
        np.testing.assert_array_equal(model.predict_proba(X), rowmajor_probabilities(model, X))
        layer = step % 3
        W = model.weights[layer]
        k, j = rng.integers(W.shape[0]), rng.integers(W.shape[1])
        W[k, j] += 0.5  # one element of one column: the one panel holding it must be repacked
        if step == 5:
            model.weights[0] = model.weights[0].copy()  # an array put in the old one's place
        if step == 6:
            model.biases[1][:] = 0.25


def test_a_model_with_some_read_only_weights_is_served_and_its_edits_seen(parts):
    parts(2)
    model = model_with_biases(seed=4)
    model.weights[1].flags.writeable = False  # Numba types a mixed tuple apart
    X = np.random.default_rng(5).random((64, SIZES[0]), dtype=np.float32)
    np.testing.assert_array_equal(model.predict_proba(X), rowmajor_probabilities(model, X))
    model.weights[0][7, 9] = 3.0
    np.testing.assert_array_equal(model.predict_proba(X), rowmajor_probabilities(model, X))


def test_serving_threads_that_went_to_sleep_wake_for_the_next_call(parts):
    parts(2)
    model = model_with_biases(seed=6)
    X = np.random.default_rng(7).random((64, SIZES[0]), dtype=np.float32)
    expected = rowmajor_probabilities(model, X)
    np.testing.assert_array_equal(model.predict_proba(X), expected)
    serving = threads.serving_threads(tuple(model.weights), tuple(model.biases), 2, 1)
    deadline = time.monotonic() + 10
    while serving.control[threads_awake_slot(1)] != 0 and time.monotonic() < deadline:
        time.sleep(0.01)  # the serving thread stops spinning and sleeps once idle
    assert serving.control[threads_awake_slot(1)] == 0
    for _ in range(3):
        np.testing.assert_array_equal(model.predict_proba(X), expected)


def threads_awake_slot(part):
    from fastmlp.kernels.serving import AWAKE

    return AWAKE + 8 * part


def test_models_beyond_the_last_few_used_give_their_threads_back(parts):
    parts(2)
    X = np.random.default_rng(8).random((40, SIZES[0]), dtype=np.float32)
    models = [model_with_biases(seed=s) for s in range(threads.MAX_MODELS + 2)]
    before = threading.active_count()
    for model in models:
        np.testing.assert_array_equal(model.predict_proba(X), rowmajor_probabilities(model, X))
    deadline = time.monotonic() + 10
    while threading.active_count() > before + threads.MAX_MODELS and time.monotonic() < deadline:
        time.sleep(0.01)
    assert threading.active_count() <= before + threads.MAX_MODELS  # one serving thread per kept model
    np.testing.assert_array_equal(models[0].predict_proba(X), rowmajor_probabilities(models[0], X))


def test_calls_from_many_threads_on_one_model_at_once_each_get_their_own_answer(parts):
    parts(2)
    model = model_with_biases(seed=9)
    inputs = [np.random.default_rng(s).random((n, SIZES[0]), dtype=np.float32) for s, n in enumerate((30, 64, 100))]
    expected = [rowmajor_probabilities(model, X) for X in inputs]
    wrong, errors = [], []

    def serve(i):
        try:
            for _ in range(30):
                j = (i + _) % len(inputs)
                if not np.array_equal(model.predict_proba(inputs[j]), expected[j]):
                    wrong.append(j)
        except BaseException as exc:
            errors.append(exc)

    workers = [threading.Thread(target=serve, args=(i,)) for i in range(4)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    assert not errors and not wrong


def _child_probabilities(queue, weights, biases, X):
    inference._usable_cpus = lambda: 2
    inference.MIN_MACS_PER_THREAD = 1
    model = MLP(SIZES, seed=0)
    model.weights, model.biases = weights, biases
    queue.put(model.predict_proba(X))


def test_a_forked_child_serves_with_threads_of_its_own(parts):
    if "fork" not in multiprocessing.get_all_start_methods():
        pytest.skip("no fork on this platform")
    parts(2)
    model = model_with_biases(seed=10)
    X = np.random.default_rng(11).random((64, SIZES[0]), dtype=np.float32)
    expected = rowmajor_probabilities(model, X)
    np.testing.assert_array_equal(model.predict_proba(X), expected)  # the parent's serving threads exist
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    child = context.Process(target=_child_probabilities, args=(queue, model.weights, model.biases, X))
    child.start()
    got = queue.get(timeout=60)
    child.join(timeout=60)
    assert child.exitcode == 0
    np.testing.assert_array_equal(got, expected)


def _child_probabilities_of(queue, model, X):
    inference._usable_cpus = lambda: 2
    inference.MIN_MACS_PER_THREAD = 1
    queue.put([model.predict_proba(X[:64]), model.predict_proba(X)])  # the serving threads', and the pool's


def test_a_forked_child_of_a_server_serves_the_same_model_though_a_parent_thread_held_a_lock(parts):
    if "fork" not in multiprocessing.get_all_start_methods():
        pytest.skip("no fork on this platform")
    parts(2)
    model = model_with_biases(seed=14)
    X = np.random.default_rng(15).random((2 * inference.ROW_SPLIT_MIN_ROWS, SIZES[0]), dtype=np.float32)
    expected = [rowmajor_probabilities(model, X[:64]), rowmajor_probabilities(model, X)]
    for _ in range(2):  # the model is remembered with its serving threads, which exist in this process only
        np.testing.assert_array_equal(model.predict_proba(X[:64]), expected[0])
    held, release = threading.Event(), threading.Event()

    def hold_the_lock():
        with threads._lock:
            held.set()
            release.wait()

    holder = threading.Thread(target=hold_the_lock)
    holder.start()
    held.wait()
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    child = context.Process(target=_child_probabilities_of, args=(queue, model, X), daemon=True)
    try:
        child.start()
        got = queue.get(timeout=60)  # a child waiting forever (a parent's thread or lock) fails here
    finally:
        release.set()
        holder.join()
        child.join(timeout=60)
        if child.is_alive():
            child.kill()
    assert child.exitcode == 0
    for g, e in zip(got, expected):
        np.testing.assert_array_equal(g, e)


@pytest.mark.parametrize("what, change", [
    ("a weight reshaped in place", lambda m: setattr(m.weights[0], "shape", (SIZES[1], SIZES[0]))),
    ("a weight's dtype changed in place", lambda m: setattr(m.biases[0], "dtype", np.int32)),
    ("a float64 weight put in place", lambda m: m.weights.__setitem__(1, m.weights[1].astype(np.float64))),
    ("a layer missing", lambda m: (m.weights.pop(), m.biases.pop())),
    ("other layer sizes", lambda m: setattr(m, "layer_sizes", (SIZES[0], SIZES[1], SIZES[2] + 1, SIZES[3]))),
])
@pytest.mark.parametrize("rows", [1, 64])  # the row-major kernel's short path, and the serving threads'
def test_a_served_model_broken_afterwards_is_refused_as_check_model_does(what, change, rows, parts):
    from fastmlp.inputs import check_model

    parts(2)
    model = model_with_biases(seed=8)
    X = np.random.default_rng(9).random((rows, SIZES[0]), dtype=np.float32)
    expected = rowmajor_probabilities(model, X)
    for _ in range(2):  # the second call takes the short path of a model served before
        np.testing.assert_array_equal(model.predict_proba(X), expected)
    change(model)
    with pytest.raises((ValueError, TypeError)) as refused:
        check_model(model, writable=False)
    with pytest.raises(type(refused.value), match=re.escape(str(refused.value))):
        model.predict_proba(X)


def test_a_serving_thread_outlives_an_in_place_change_of_the_models_arrays(parts, monkeypatch):
    """A serving thread calls serve_parts again after each sleep: with the model's own arrays, one whose dtype
    was set in place since would be typed anew there, and the thread die of a TypingError."""
    failures = []
    monkeypatch.setattr(threading, "excepthook", failures.append)
    parts(2)
    model = model_with_biases(seed=14)
    X = np.random.default_rng(15).random((64, SIZES[0]), dtype=np.float32)
    np.testing.assert_array_equal(model.predict_proba(X), rowmajor_probabilities(model, X))
    serving = threads.last_serving_threads()
    assert serving is not None and serving.serves((*model.weights, *model.biases))
    model.biases[0].dtype = np.int32  # predict_proba refuses the model now; its threads live on
    wakeup = serving.wakeups[1]
    for _ in range(2):  # the second wakeup is taken only by a thread that came back from serve_parts
        wakeup.set()
        deadline = time.monotonic() + 60
        while wakeup.is_set() and time.monotonic() < deadline and not failures:
            time.sleep(0.01)
    assert not failures, failures[0].exc_value
    assert not wakeup.is_set() and not threads.barrier_aborted(serving.barrier)
    serving.stop()


@pytest.mark.parametrize("rows", [1, 64])
def test_nan_in_x_is_refused_on_the_short_path_of_a_served_model(rows, parts):
    parts(2)
    model = model_with_biases(seed=10)
    X = np.random.default_rng(11).random((rows, SIZES[0]), dtype=np.float32)
    model.predict_proba(X)
    for row in {0, rows // 2, rows - 1}:
        Y = X.copy()
        Y[row, 5] = np.nan
        with pytest.raises(ValueError, match="X contains NaN or inf"):
            model.predict_proba(Y)
    np.testing.assert_array_equal(model.predict_proba(X), rowmajor_probabilities(model, X))


@pytest.mark.parametrize("rows", [1, 64])
def test_a_model_called_again_skips_the_full_checks_and_gives_the_same_bits(rows, parts, monkeypatch):
    parts(2)
    model = model_with_biases(seed=12)
    X = np.random.default_rng(13).random((rows, SIZES[0]), dtype=np.float32)
    expected = rowmajor_probabilities(model, X)
    np.testing.assert_array_equal(model.predict_proba(X), expected)  # the full path, which remembers the model

    def not_again(*args, **kwargs):
        raise AssertionError("the full path's checks ran again")

    monkeypatch.setattr(inference, "check_model", not_again)
    monkeypatch.setattr(inference, "_model_ok", not_again)
    model.weights[0][7] *= 0.5  # values may change: every path reads them afresh
    np.testing.assert_array_equal(model.predict_proba(X), rowmajor_probabilities(model, X))
