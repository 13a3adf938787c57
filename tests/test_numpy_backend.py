"""The reference backend against float64 central finite differences, and its numerics."""

import numpy as np
import pytest

from fastmlp import MLP, get_backend

numpy_backend = get_backend("numpy")


def float64_loss(weights, biases, X, y):
    """Mean cross-entropy of the MLP, in float64, written independently of the backend."""
    A = X.astype(np.float64)
    for W, b in zip(weights[:-1], biases[:-1]):
        A = np.maximum(A @ W + b, 0.0)
    Z = A @ weights[-1] + biases[-1]
    Z = Z - Z.max(axis=1, keepdims=True)
    return float(np.mean(np.log(np.exp(Z).sum(axis=1)) - Z[np.arange(len(y)), y]))


def finite_difference_grads(model, X, y, eps=1e-4):
    weights = [W.astype(np.float64) for W in model.weights]
    biases = [b.astype(np.float64) for b in model.biases]
    grads = []
    for params in (weights, biases):
        layer_grads = []
        for p in params:
            g = np.zeros_like(p)
            for idx in np.ndindex(p.shape):
                old = p[idx]
                p[idx] = old + eps
                up = float64_loss(weights, biases, X, y)
                p[idx] = old - eps
                down = float64_loss(weights, biases, X, y)
                p[idx] = old
                g[idx] = (up - down) / (2 * eps)
            layer_grads.append(g)
        grads.append(layer_grads)
    return grads


@pytest.mark.parametrize(
    "sizes, batch",
    [([5, 7, 3], 4), ([6, 4, 2], 1), ([4, 5, 2], 6), ([3, 6, 5, 4, 3], 5), ([8, 3], 3)],
    ids=["one-hidden", "batch-of-one", "two-classes", "four-layers", "no-hidden"],
)
def test_reference_grads_match_float64_finite_differences(sizes, batch):
    rng = np.random.default_rng(1)
    model = MLP(sizes, seed=2)
    for b in model.biases:  # non-zero biases, so that they are tested too
        b[...] = rng.normal(0, 0.1, b.shape)
    X = rng.normal(size=(batch, sizes[0])).astype(np.float32)
    y = rng.integers(0, sizes[-1], batch)

    loss, dW, db = numpy_backend.loss_and_grads(model, X, y)
    fd_dW, fd_db = finite_difference_grads(model, X, y)

    assert loss == pytest.approx(float64_loss(model.weights, model.biases, X, y), rel=1e-5)
    for analytic, numeric in zip(dW + db, fd_dW + fd_db):
        assert analytic.dtype == np.float32
        np.testing.assert_allclose(analytic, numeric, rtol=1e-3, atol=1e-4)


def test_softmax_and_loss_stay_finite_for_logits_of_1e4():
    model = MLP([2, 3], seed=0)
    model.weights[0][...] = [[1e4, -1e4, 0.0], [0.0, 0.0, 0.0]]
    X = np.array([[1.0, 0.0], [-1.0, 0.0]], dtype=np.float32)
    y = np.array([1, 0])
    probs = numpy_backend.forward(model, X)
    assert np.isfinite(probs).all()
    np.testing.assert_allclose(probs.sum(axis=1), 1, rtol=1e-6)
    np.testing.assert_allclose(probs, [[1, 0, 0], [0, 1, 0]], atol=1e-6)
    loss, dW, db = numpy_backend.loss_and_grads(model, X, y)
    assert loss == pytest.approx(2e4, rel=1e-6)  # each sample is 2e4 logits short of its class
    assert all(np.isfinite(g).all() for g in dW + db)


def test_forward_rows_are_float32_probabilities():
    model = MLP([10, 8, 4], seed=3)
    X = np.random.default_rng(0).normal(size=(17, 10))  # float64 is converted
    probs = numpy_backend.forward(model, X)
    assert probs.dtype == np.float32 and probs.shape == (17, 4)
    assert (probs >= 0).all()
    np.testing.assert_allclose(probs.sum(axis=1), 1, rtol=1e-6)


def test_sgd_step_moves_parameters_by_exactly_minus_lr_times_grad():
    model = MLP([6, 5, 3], seed=4)
    rng = np.random.default_rng(5)
    X = rng.normal(size=(8, 6)).astype(np.float32)
    y = rng.integers(0, 3, 8)
    before = model.copy()
    loss, dW, db = numpy_backend.loss_and_grads(model, X, y)
    returned = numpy_backend.sgd_step(model, X, y, 0.05)
    assert returned == loss
    lr = np.float32(0.05)
    for new, old, g in zip(model.weights + model.biases, before.weights + before.biases, dW + db):
        np.testing.assert_array_equal(new, old - lr * g)


def test_sgd_updates_the_models_own_arrays_in_place():
    model = MLP([4, 3, 2], seed=0)
    arrays = model.weights + model.biases
    X = np.ones((2, 4), np.float32)
    numpy_backend.sgd_step(model, X, [0, 1], 0.1)
    assert all(a is b for a, b in zip(arrays, model.weights + model.biases))


def test_train_epoch_visits_every_sample_once_including_the_last_partial_batch():
    # 10 samples, batch 4: batches of 4, 4 and 2. With a zero learning-rate-like tiny lr the
    # mean loss equals the mean over all samples of the per-sample loss at the start.
    model = MLP([3, 4, 2], seed=1)
    rng = np.random.default_rng(0)
    X = rng.normal(size=(10, 3)).astype(np.float32)
    y = rng.integers(0, 2, 10)
    full_loss, _, _ = numpy_backend.loss_and_grads(model, X, y)
    epoch_loss = numpy_backend.train_epoch(model.copy(), X, y, batch_size=4, lr=1e-12, rng=np.random.default_rng(3))
    assert epoch_loss == pytest.approx(full_loss, rel=1e-5)
