"""The fused Numba backend against the NumPy reference: forward, loss, gradients, steps, epochs."""

import numpy as np
import pytest

from fastmlp import MLP, Pixels, Trainer, get_backend
from fastmlp.backends.numba.backend import EVALUATION_ROWS
from fastmlp.testing import scaled_error

pytestmark = pytest.mark.kernels  # run again per ISA and with bounds checks by .ci/run

numba_backend = get_backend("numba")
numpy_backend = get_backend("numpy")
RTOL = 1e-5

SHAPES = [
    ((784, 128, 64, 10), 32),
    ((12, 7, 5), 1),  # batch of one
    ((9, 1, 4), 6),  # hidden width one
    ((6, 3), 5),  # no hidden layer
    ((5, 4, 4, 3, 3), 11),  # deeper
    ((300, 257, 33, 10), 37),  # widths past several panels, none a multiple of the tile
]


def batch(sizes, n, seed=0):
    rng = np.random.default_rng(seed)
    return rng.random((n, sizes[0]), dtype=np.float32), rng.integers(0, sizes[-1], n)


def assert_same(a, b, rtol=RTOL):
    error, where = scaled_error(a, b)
    assert error <= rtol, f"scaled difference {error:.3g} at {where}"


def assert_same_params(m1, m2, rtol=RTOL):
    for p1, p2 in zip(m1.weights + m1.biases, m2.weights + m2.biases):
        assert_same(p1, p2, rtol)


def assert_same_loss_and_grads(model, X, y):
    loss1, dW1, db1 = numba_backend.loss_and_grads(model, X, y)
    loss2, dW2, db2 = numpy_backend.loss_and_grads(model, X, y)
    assert loss1 == pytest.approx(loss2, rel=RTOL, abs=1e-6)
    for g1, g2 in zip(dW1 + db1, dW2 + db2):
        assert_same(g1, g2)


@pytest.mark.parametrize("sizes, n", SHAPES)
def test_numba_forward_loss_and_grads_match_reference(sizes, n):
    model = MLP(sizes, seed=1)
    X, y = batch(sizes, n)
    assert_same(numba_backend.forward(model, X), numpy_backend.forward(model, X))
    assert_same_loss_and_grads(model, X, y)


@pytest.mark.parametrize("sizes, n", [*SHAPES, ((784, 128, 64, 10), 2 * EVALUATION_ROWS + 3)])
def test_numba_logits_for_evaluation_match_reference(sizes, n):
    # A Trainer's evaluation scores these: float32 rows and Pixels, blocks of EVALUATION_ROWS and a short last one.
    model = MLP(sizes, seed=1)
    X, _ = batch(sizes, n)
    assert_same(numba_backend._evaluation_logits(model, X), numpy_backend._evaluation_logits(model, X))
    pixels = Pixels(np.random.default_rng(3).integers(0, 256, (n, sizes[0]), dtype=np.uint8))
    logits = numba_backend._evaluation_logits(model, pixels)
    assert logits.shape == (n, sizes[-1]) and logits.dtype == np.float32
    assert_same(logits, numpy_backend._evaluation_logits(model, pixels.to_float32()))


def test_numba_logits_for_evaluation_are_the_same_bits_on_any_number_of_threads(monkeypatch):
    from fastmlp.backends.numba import backend as numba_module

    monkeypatch.setattr(numba_module, "usable_cpus", lambda: 8)  # the parts run at once on any machine
    sizes = (784, 128, 64, 10)
    model = MLP(sizes, seed=1)
    X, _ = batch(sizes, 3 * EVALUATION_ROWS + 5)
    one = numba_module.Backend(threads=1)._evaluation_logits(model, X)
    for threads in (2, 3, 5):  # 5: more threads than blocks of rows (4)
        np.testing.assert_array_equal(numba_module.Backend(threads=threads)._evaluation_logits(model, X), one)


def test_trainer_evaluation_on_the_numba_backend_matches_the_reference():
    sizes = (784, 128, 64, 10)
    model = MLP(sizes, seed=1)
    X = batch(sizes, 700, seed=4)[0] - np.float32(0.5)
    y = (X @ np.random.default_rng(6).normal(size=(784, 10))).argmax(axis=1)  # a linear teacher's classes
    Trainer(model, "numpy", lr=0.1, batch_size=32, seed=0).fit(X, y, epochs=3)  # away from the uniform guess
    pixels = Pixels(np.random.default_rng(5).integers(0, 256, (700, 784), dtype=np.uint8))
    for data in (X, pixels):
        loss, accuracy = Trainer(model, numba_backend).evaluate(data, y)
        ref_loss, ref_accuracy = Trainer(model, numpy_backend).evaluate(data, y)
        assert loss == pytest.approx(ref_loss, rel=RTOL)
        assert abs(accuracy - ref_accuracy) <= 1 / 700  # a near tie may fall either way in float32
    assert Trainer(model, numba_backend).evaluate(X, y)[1] > 0.5  # it learned: a score worth comparing


@pytest.mark.parametrize("sizes, n", SHAPES)
def test_numba_sgd_step_matches_reference(sizes, n):
    model = MLP(sizes, seed=1)
    X, y = batch(sizes, n)
    m1, m2 = model.copy(), model.copy()
    assert numba_backend.sgd_step(m1, X, y, 0.1) == pytest.approx(numpy_backend.sgd_step(m2, X, y, 0.1), rel=RTOL)
    assert_same_params(m1, m2)


def test_numba_matches_reference_on_logits_of_1e4():
    model = MLP((8, 5, 4), seed=0)
    model.weights[-1] *= np.float32(1e4)
    X, y = batch((8, 5, 4), 16)
    assert_same(numba_backend.forward(model, X), numpy_backend.forward(model, X))
    assert_same_loss_and_grads(model, X, y)


def test_numba_matches_reference_on_all_zero_input():
    model = MLP((8, 5, 4), seed=0)
    model.biases[0][:] = np.linspace(-1, 1, 5, dtype=np.float32)
    X, y = np.zeros((7, 8), np.float32), np.arange(7) % 4
    assert_same_loss_and_grads(model, X, y)


def test_numba_matches_reference_when_all_labels_are_the_same():
    model = MLP((8, 6, 4), seed=0)
    X, _ = batch((8, 6, 4), 10)
    assert_same_loss_and_grads(model, X, np.full(10, 2))


@pytest.mark.parametrize("batch_size", [1, 7, 32, 100])
def test_numba_train_epoch_matches_reference_from_the_same_seed(batch_size):
    sizes = (20, 16, 8, 5)
    model = MLP(sizes, seed=0)
    X, y = batch(sizes, 100)
    m1, m2 = model.copy(), model.copy()
    loss1 = numba_backend.train_epoch(m1, X, y, batch_size=batch_size, lr=0.1, rng=np.random.default_rng(3))
    loss2 = numpy_backend.train_epoch(m2, X, y, batch_size=batch_size, lr=0.1, rng=np.random.default_rng(3))
    assert loss1 == pytest.approx(loss2, rel=1e-5)
    assert_same_params(m1, m2, rtol=1e-4)


def test_numba_train_epoch_on_pixels_equals_the_float32_input():
    sizes = (20, 8, 4)
    rng = np.random.default_rng(0)
    pixels = Pixels(rng.integers(0, 256, (60, 20)).astype(np.uint8))
    y = rng.integers(0, 4, 60)
    m1, m2 = MLP(sizes, seed=0), MLP(sizes, seed=0)
    loss1 = numba_backend.train_epoch(m1, pixels, y, batch_size=16, lr=0.1, rng=np.random.default_rng(1))
    loss2 = numba_backend.train_epoch(m2, pixels.to_float32(), y, batch_size=16, lr=0.1, rng=np.random.default_rng(1))
    assert loss1 == loss2
    for p1, p2 in zip(m1.weights + m1.biases, m2.weights + m2.biases):
        np.testing.assert_array_equal(p1, p2)


def test_numba_train_epoch_matches_reference_at_small_and_large_batches():
    sizes = (10, 6, 3)
    X, y = batch(sizes, 200)
    for batch_size in (16, 150):
        m1, m2 = MLP(sizes, seed=0), MLP(sizes, seed=0)
        numba_backend.train_epoch(m1, X, y, batch_size=batch_size, lr=0.1, rng=np.random.default_rng(2))
        numpy_backend.train_epoch(m2, X, y, batch_size=batch_size, lr=0.1, rng=np.random.default_rng(2))
        assert_same_params(m1, m2, rtol=1e-4)




@pytest.mark.parametrize("backend", [numpy_backend, numba_backend], ids=["numpy", "numba"])
def test_progress_counts_every_sample_and_leaves_the_result_unchanged(backend):
    sizes = (10, 6, 3)
    X, y = batch(sizes, 1000)
    m1, m2 = MLP(sizes, seed=0), MLP(sizes, seed=0)
    updates = []
    loss1 = backend.train_epoch(m1, X, y, batch_size=7, lr=0.1, rng=np.random.default_rng(2), progress=updates.append)
    loss2 = backend.train_epoch(m2, X, y, batch_size=7, lr=0.1, rng=np.random.default_rng(2))
    assert sum(updates) == 1000 and 10 <= len(updates) <= 60
    assert all(n % 7 == 0 for n in updates[:-1])  # whole batches: chunking never splits one
    assert loss1 == pytest.approx(loss2, rel=1e-12)
    for p1, p2 in zip(m1.weights + m1.biases, m2.weights + m2.biases):
        np.testing.assert_array_equal(p1, p2)


@pytest.mark.parametrize("pixels", [False, True])
def test_warm_up_compiles_the_epoch_function_for_the_input_dtype_and_depth(pixels):
    from fastmlp.backends.numba.backend import train_batches_worker

    model = MLP((6, 4, 3, 2))  # depth 3: the tuples of weights in the signature have 3 entries
    assert numba_backend.warm_up(model, pixels=pixels) >= 0.0
    dtype = "uint8" if pixels else "float32"
    compiled = [sig for sig in train_batches_worker.signatures
                if len(sig[3]) == 3 and str(sig[8].dtype) == dtype]
    assert compiled, f"no epoch function compiled for depth 3 and {dtype} input"
    assert numpy_backend.warm_up(model, pixels=pixels) == 0.0
