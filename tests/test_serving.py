"""Serving: one backend shared by threads, and predictions straight off the model's weights.

- A shared numba backend gives every thread what it would compute alone: forwards beside a
  training on other weights, trainings beside each other, bit for bit.
- `MLP.predict_proba` (fastmlp.inference) sees in-place edits of the weights, gives a row the same
  bits whatever its position, batch and thread split, and agrees with both backends' forward.
"""

import re
import threading

import numpy as np
import pytest

from fastmlp import MLP, Pixels, get_backend, inference
from fastmlp.backends.numba.backend import Backend
from fastmlp.kernels.rowmajor import BLOCK_ROWS, WIDE_COLUMNS

pytestmark = pytest.mark.kernels  # run again per ISA and with bounds checks by .ci/run

SIZES = (784, 128, 64, 10)


def data(n, features=SIZES[0], classes=SIZES[-1], seed=0):
    rng = np.random.default_rng(seed)
    return rng.random((n, features), dtype=np.float32), rng.integers(0, classes, n)


def trained_alone(model, X, y, epochs=2):
    backend = Backend(threads=2)
    rng = np.random.default_rng(7)
    for _ in range(epochs):
        backend.train_epoch(model, X, y, batch_size=64, lr=0.05, rng=rng)
    return model


def assert_same_model(a, b):
    for x, y in zip(a.weights + a.biases, b.weights + b.biases):
        np.testing.assert_array_equal(x, y)


# --- one shared backend, several threads -----------------------------------------------------

def test_forwards_beside_a_training_on_the_same_shared_backend_see_only_their_model():
    X, y = data(1024)
    A, B = MLP(SIZES, seed=1), MLP(SIZES, seed=2)
    expected_A = trained_alone(A.copy(), X, y)
    queries = X[:96]
    expected_B = get_backend("numpy").forward(B, queries)  # a different code path: close, not bits
    alone_B = Backend(threads=2).forward(B, queries)
    alone_grads = Backend(threads=2).loss_and_grads(B, queries, y[:96])
    np.testing.assert_allclose(alone_B, expected_B, rtol=1e-4, atol=1e-6)
    shared = get_backend("numba", threads=2)
    wrong, calls, errors = [], [0], []
    done = threading.Event()

    def train():
        try:
            rng = np.random.default_rng(7)
            for _ in range(2):
                shared.train_epoch(A, X, y, batch_size=64, lr=0.05, rng=rng)
        except BaseException as exc:
            errors.append(exc)
        finally:
            done.set()

    trainer = threading.Thread(target=train)
    trainer.start()
    while not done.is_set() or calls[0] < 20:
        if calls[0] % 4 == 3:
            loss, dW, db = shared.loss_and_grads(B, queries, y[:96])
            if loss != alone_grads[0] or not all(np.array_equal(a, b) for a, b in zip(dW + db, alone_grads[1] +
                                                                                       alone_grads[2])):
                wrong.append(calls[0])
        elif not np.array_equal(shared.forward(B, queries), alone_B):
            wrong.append(calls[0])
        calls[0] += 1
    trainer.join()
    assert not errors
    assert wrong == [], f"{len(wrong)} of {calls[0]} calls differ from B's alone"
    assert_same_model(A, expected_A)


def test_two_trainings_on_one_shared_backend_each_equal_training_alone():
    X, y = data(512)
    models = [MLP(SIZES, seed=s) for s in (3, 4)]
    expected = [trained_alone(m.copy(), X, y) for m in models]
    shared = get_backend("numba", threads=2)
    threads = [threading.Thread(target=trained_alone_on, args=(shared, m, X, y)) for m in models]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for model, alone in zip(models, expected):
        assert_same_model(model, alone)


def trained_alone_on(backend, model, X, y):
    rng = np.random.default_rng(7)
    for _ in range(2):
        backend.train_epoch(model, X, y, batch_size=64, lr=0.05, rng=rng)


def test_get_backend_from_many_threads_at_once_gives_one_instance():
    from fastmlp import backends

    backends._instances.pop(("numpy", 5), None)
    seen = []
    threads = [threading.Thread(target=lambda: seen.append(get_backend("numpy", threads=5))) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len({id(b) for b in seen}) == 1


# --- predictions ---------------------------------------------------------------------------

NETS = [SIZES, (5, 3), (37, 70, 19, 4), (3, WIDE_COLUMNS + 9, 2)]


def with_biases(model, seed=0):
    rng = np.random.default_rng(seed)
    for b in model.biases:
        b[:] = rng.normal(size=b.shape)
    return model


@pytest.mark.parametrize("sizes", NETS, ids=str)
def test_predict_proba_agrees_with_both_backends(sizes):
    model = with_biases(MLP(sizes, seed=1))
    X, _ = data(203, sizes[0], sizes[-1])
    probs = model.predict_proba(X)
    np.testing.assert_array_equal(probs, Backend(threads=1).forward(model, X))  # the packed forward: same bits
    from fastmlp.backends.numba.batch import forward_probs_inplace
    from fastmlp.backends.numba.buffers import _Packed

    packed = _Packed(model.layer_sizes)
    packed.load(model, None)
    acts = tuple(np.empty((len(X), s), np.float32) for s in sizes[1:])
    forward_probs_inplace(packed.weights, tuple(model.biases), X, acts)
    np.testing.assert_array_equal(probs, acts[-1])
    np.testing.assert_allclose(probs, get_backend("numpy").forward(model, X), rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("sizes", NETS, ids=str)
def test_a_rows_probabilities_do_not_depend_on_its_position_batch_or_thread_split(sizes, monkeypatch):
    model = with_biases(MLP(sizes, seed=2))
    n = 2 * BLOCK_ROWS + 13  # several blocks, a partial one, rows past whole tiles
    X, _ = data(n, sizes[0], sizes[-1], seed=3)
    whole = model.predict_proba(X)
    rng = np.random.default_rng(4)
    for _ in range(3):
        order = rng.permutation(n)
        np.testing.assert_array_equal(model.predict_proba(X[order]), whole[order])
    for i in range(0, n, 7):
        np.testing.assert_array_equal(model.predict_proba(X[i : i + 1]), whole[i : i + 1])
    for size in (2, 5, 9, 64):
        np.testing.assert_array_equal(model.predict_proba(X[3 : 3 + size]), whole[3 : 3 + size])
    # Split across threads, whatever this machine's cores: 2, 3 and 5 parts.
    for parts in (2, 3, 5):
        monkeypatch.setattr(inference, "_usable_cpus", lambda parts=parts: parts)
        monkeypatch.setattr(inference, "MIN_MACS_PER_THREAD", 1)
        np.testing.assert_array_equal(model.predict_proba(X), whole)
        np.testing.assert_array_equal(model.predict_proba(X[order]), whole[order])


def test_predict_proba_sees_weights_edited_in_place():
    model = with_biases(MLP(SIZES, seed=5))
    X, _ = data(70)
    before = model.predict_proba(X)
    model.weights[0][3:9] *= -2.0
    model.biases[2][1] += 3.0
    after = model.predict_proba(X)
    assert not np.array_equal(after, before)
    np.testing.assert_array_equal(after, model.copy().predict_proba(X))
    np.testing.assert_allclose(after, get_backend("numpy").forward(model, X), rtol=1e-4, atol=1e-6)
    model.weights[0][...] = 0
    model.weights[1][...] = 0
    model.weights[2][...] = 0
    model.biases[2][...] = np.arange(10, dtype=np.float32)
    np.testing.assert_array_equal(model.predict(X), np.full(70, 9))


def test_predict_proba_takes_pixels_and_read_only_weights():
    model = with_biases(MLP(SIZES, seed=6))
    pixels = np.random.default_rng(0).integers(0, 256, (40, 784), dtype=np.uint8)
    as_floats = Pixels(pixels).to_float32()  # pixels * (1 / 255), as training reads them
    expected = model.predict_proba(as_floats)
    np.testing.assert_array_equal(model.predict_proba(Pixels(pixels)), expected)
    frozen = model.copy()
    frozen.weights[1].flags.writeable = False  # some read-only, some not (a mix Numba types apart)
    readonly_X = as_floats.copy()
    readonly_X.flags.writeable = False
    np.testing.assert_array_equal(frozen.predict_proba(readonly_X), expected)
    for a in frozen.weights + frozen.biases:
        a.flags.writeable = False
    np.testing.assert_array_equal(frozen.predict_proba(readonly_X), expected)


def test_predictions_from_many_threads_at_once_equal_each_alone(monkeypatch):
    monkeypatch.setattr(inference, "MIN_MACS_PER_THREAD", 100_000)  # large calls split too
    models = [with_biases(MLP(SIZES, seed=s), seed=s) for s in range(4)]
    inputs = [data(n, seed=n)[0] for n in (1, 64, 300, 7)]
    expected = [[m.predict_proba(X) for X in inputs] for m in models]
    wrong, errors = [], []

    def serve(i):
        try:
            for _ in range(15):
                for j, X in enumerate(inputs):
                    if not np.array_equal(models[i].predict_proba(X), expected[i][j]):
                        wrong.append((i, j))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=serve, args=(i,)) for i in range(len(models))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and not wrong


@pytest.mark.parametrize("backend", ["numpy", "numba"])
def test_the_estimators_predictions_pass_sklearns_sample_order_invariance_check(backend):
    pytest.importorskip("sklearn")
    from sklearn.utils.estimator_checks import check_methods_sample_order_invariance

    from fastmlp import MLPClassifier

    check_methods_sample_order_invariance("MLPClassifier", MLPClassifier((8,), backend=backend, max_iter=3,
                                                                         random_state=0))


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nan_or_inf_in_any_row_is_refused_on_the_float32_path_too(bad, monkeypatch):
    model = MLP(SIZES, seed=0)
    X, _ = data(3 * BLOCK_ROWS + 5)
    for row in (0, BLOCK_ROWS + 2, len(X) - 1):
        Y = X.copy()
        Y[row, 700] = bad
        for parts in (1, 3):
            monkeypatch.setattr(inference, "_usable_cpus", lambda parts=parts: parts)
            monkeypatch.setattr(inference, "MIN_MACS_PER_THREAD", 1 if parts > 1 else 10**12)
            with pytest.raises(ValueError, match="X contains NaN or inf"):
                model.predict_proba(Y)
            with pytest.raises(ValueError, match="X contains NaN or inf"):
                model.predict_proba(Y.astype(np.float64))


def broken_models():
    """(what is broken, a model broken so) pairs: predict_proba must refuse each as check_model does."""
    def broken(change):
        model = MLP((6, 5, 3), seed=0)
        change(model)
        return model

    return [
        ("float64 weights", broken(lambda m: m.weights.__setitem__(0, m.weights[0].astype(np.float64)))),
        ("big-endian weights", broken(lambda m: m.weights.__setitem__(0, m.weights[0].astype(">f4")))),
        ("a column slice", broken(lambda m: m.weights.__setitem__(1, np.zeros((5, 6), np.float32)[:, :3]))),
        ("a reshaped array", broken(lambda m: setattr(m.weights[0], "shape", (5, 6)))),
        ("a bias too short", broken(lambda m: m.biases.__setitem__(1, np.zeros(2, np.float32)))),
        ("a layer missing", broken(lambda m: m.weights.pop())),
        ("a list of lists", broken(lambda m: m.weights.__setitem__(0, m.weights[0].tolist()))),
    ]


@pytest.mark.parametrize("what, model", broken_models(), ids=[w for w, _ in broken_models()])
def test_predict_proba_refuses_a_broken_model_as_check_model_does(what, model):
    from fastmlp.inputs import check_model

    with pytest.raises((ValueError, TypeError)) as expected:
        check_model(model, writable=False)
    with pytest.raises(type(expected.value), match=re.escape(str(expected.value))):
        model.predict_proba(np.zeros((2, 6), np.float32))
