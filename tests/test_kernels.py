"""Each fastmlp.kernels kernel against its NumPy one-liner (float32), a kernel call from user @njit
code, and the fused training loop's allocation count."""

import numpy as np
import pytest
from numba import njit
from numba.core.runtime import _nrt_python, rtsys

from fastmlp import MLP, kernels
from fastmlp.backends.numba.backend import Backend, epoch_workers
from fastmlp.kernels import reference
from fastmlp.kernels.reference import assert_close

pytestmark = pytest.mark.kernels  # run again per ISA and with bounds checks by .ci/run

RTOL = 1e-5


def rand(rng, *shape):
    return rng.standard_normal(shape, dtype=np.float32)


@pytest.fixture
def rng():
    return np.random.default_rng(0)


@pytest.mark.parametrize("m, k, n", [(32, 784, 128), (5, 3, 7), (1, 1, 1)])
def test_matmul_kernels_match_numpy(rng, m, k, n):
    A, B, C = rand(rng, m, k), rand(rng, k, n), np.empty((m, n), np.float32)
    kernels.matmul_into(C, A, B)
    assert_close(C, A @ B)
    kernels.matmul_bt_into(C, A, np.ascontiguousarray(B.T))
    assert_close(C, A @ B)
    kernels.matmul_at_into(C, np.ascontiguousarray(A.T), B)
    assert_close(C, A @ B)


def test_gemm_inplace_accumulates_with_alpha_and_beta(rng):
    A, B, C = rand(rng, 6, 4), rand(rng, 5, 4), rand(rng, 6, 5)
    expected = np.float32(0.5) * A @ B.T + np.float32(2.0) * C
    kernels.gemm_inplace(C, A, B, np.float32(0.5), np.float32(2.0), False, True)
    assert_close(C, expected)


def test_gemm_into_row_slice_of_a_larger_buffer_leaves_other_rows(rng):
    A, B = rand(rng, 8, 3), rand(rng, 3, 4)
    C = np.full((8, 4), 7.0, np.float32)
    kernels.matmul_into(C[:5], A[:5], B)
    assert_close(C[:5], A[:5] @ B)
    assert (C[5:] == 7.0).all()


def test_sgd_gemm_update_is_w_minus_lr_at_dz(rng):
    W, A, dZ = rand(rng, 9, 4), rand(rng, 6, 9), rand(rng, 6, 4)
    expected = W - np.float32(0.1) * (A.T @ dZ)
    kernels.sgd_gemm_update_inplace(W, A, dZ, np.float32(0.1))
    assert_close(W, expected)


def test_momentum_gemm_update_is_mu_v_minus_lr_at_dz(rng):
    V, A, dZ = rand(rng, 9, 4), rand(rng, 6, 9), rand(rng, 6, 4)
    expected = np.float32(0.9) * V - np.float32(0.1) * (A.T @ dZ)
    kernels.momentum_gemm_update_inplace(V, A, dZ, np.float32(0.1), np.float32(0.9))
    assert_close(V, expected)


def test_momentum_apply_decays_the_velocity_then_adds_it(rng):
    W, V = rand(rng, 9, 4), rand(rng, 9, 4)
    V_new = V - np.float32(0.01) * W
    W_new = W + V_new
    kernels.momentum_apply_inplace(W, V, np.float32(0.01))
    assert_close(V, V_new)
    assert_close(W, W_new)


@pytest.mark.parametrize("nesterov", [False, True])
@pytest.mark.parametrize("shape", [(9, 4), (7,)])
def test_momentum_update_matches_its_numpy_formula(rng, nesterov, shape):
    W, V, G = rand(rng, *shape), rand(rng, *shape), rand(rng, *shape)
    lr, mu, wd = np.float32(0.1), np.float32(0.9), np.float32(0.01)
    g = G + wd * W
    V_new = mu * V - lr * g
    W_new = W + (mu * V_new - lr * g if nesterov else V_new)
    kernels.momentum_update_inplace(W, V, G, lr, mu, wd, nesterov)
    assert_close(V, V_new)
    assert_close(W, W_new)


def test_bias_forward_kernels_match_numpy(rng):
    Z, b = rand(rng, 7, 5), rand(rng, 5)
    Z1, Z2 = Z.copy(), Z.copy()
    kernels.bias_forward_inplace(Z1, b)
    kernels.bias_relu_forward_inplace(Z2, b)
    assert_close(Z1, Z + b)
    assert_close(Z2, np.maximum(Z + b, 0))


@pytest.mark.parametrize("n", [1, 7, 16, 17, 64, 100])
@pytest.mark.parametrize("relu", [False, True])
def test_summing_two_parts_and_a_bias_is_exactly_numpys_float32_sum(rng, n, relu):
    # Layer 1's output from its two parts (fastmlp/backends/numba/layer1.py), in explicit vectors and a masked rest:
    # (a + b) + bias in float32, below 0 -> 0 with relu (a NaN stays), only the rows asked and the first n columns.
    from numba import njit

    from fastmlp.kernels.elementwise import sum_parts_bias_rows_into

    @njit
    def rows_into(out, a, b, bias, relu, r0, r1):
        sum_parts_bias_rows_into(out, a, b, bias, relu, r0, r1)

    a, b, bias = rand(rng, 9, n) - 0.5, rand(rng, 9, n) - 0.5, rand(rng, n) - 0.5
    a[3, 0] = np.nan
    out = np.full((9, n + 3), 7.0, np.float32)  # rows wider than n, as the step's padded activations
    rows_into(out, a, b, bias, relu, 2, 8)
    z = (a + b) + bias
    expected = np.where(z < 0, np.float32(0), z) if relu else z
    np.testing.assert_array_equal(out[2:8, :n].view(np.uint32), expected[2:8].view(np.uint32))
    assert np.isnan(out[3, 0])
    assert (out[:2] == 7).all() and (out[8:] == 7).all() and (out[:, n:] == 7).all()


def test_relu_backward_kernels_zero_where_activation_is_not_positive(rng):
    dA, A = rand(rng, 7, 5), np.maximum(rand(rng, 7, 5), 0)
    masked, db = dA.copy(), np.empty(5, np.float32)
    kernels.relu_backward_inplace(masked, A)
    assert_close(masked, dA * (A > 0))
    fused = dA.copy()
    kernels.relu_backward_bias_grad_inplace(fused, A, db)
    assert_close(fused, dA * (A > 0))
    assert_close(db, (dA * (A > 0)).sum(axis=0))


def reference_softmax_xent(Z, y):
    """The mean cross-entropy of kernels.reference's log-softmax, and its gradient."""
    return -reference.log_softmax(Z)[np.arange(len(y)), y].mean(), reference.softmax_xent_grad(Z, y)


@pytest.mark.parametrize("scale", [1.0, 1e4])
def test_softmax_xent_backward_matches_numpy_even_for_huge_logits(rng, scale):
    Z, y = rand(rng, 16, 10) * np.float32(scale), rng.integers(0, 10, 16)
    loss, grad = reference_softmax_xent(Z, y)
    out = Z.copy()
    assert kernels.softmax_xent_backward_inplace(out, y) == pytest.approx(loss, rel=RTOL)
    assert_close(out, grad)
    probs = Z.copy()
    kernels.softmax_inplace(probs)
    assert_close(probs, reference.softmax(Z))


def test_softmax_xent_backward_of_some_rows_is_their_share_of_the_batch(rng):
    Z, y = rand(rng, 16, 10), rng.integers(0, 10, 16)
    loss, grad = reference_softmax_xent(Z, y)
    top, bottom = Z[:5].copy(), Z[5:].copy()
    total = kernels.softmax_xent_backward_rows_inplace(top, y[:5], 16)
    total += kernels.softmax_xent_backward_rows_inplace(bottom, y[5:], 16)
    assert total / 16 == pytest.approx(loss, rel=RTOL)
    assert_close(np.concatenate([top, bottom]), grad)


@pytest.mark.parametrize("n", [1, 15, 16, 17, 70])
@pytest.mark.parametrize("k", [1, 2, 10, 16, 17, 40])
def test_softmax_xent_backward_matches_numpy_for_any_rows_and_classes(rng, n, k):
    # Rows of up to 16 classes run 16 rows a block in vector registers (fastmlp.kernels.softmax_ir, its own exp
    # and log), wider ones in the scalar loop: both, and blocks cut short, against the float64 reference.
    Z, y = rand(rng, n, k) * np.float32(4.0), rng.integers(0, k, n)
    loss, grad = reference_softmax_xent(Z, y)
    out = Z.copy()
    assert kernels.softmax_xent_backward_rows_inplace(out, y, n) / n == pytest.approx(loss, rel=RTOL)
    assert_close(out, grad)


@pytest.mark.parametrize("dtype", [np.int32, np.uint8, np.int16, np.uint64])
def test_softmax_xent_backward_reads_labels_of_any_integer_type(rng, dtype):
    Z, y = rand(rng, 37, 10), rng.integers(0, 10, 37)
    expected, out = Z.copy(), Z.copy()
    loss = kernels.softmax_xent_backward_rows_inplace(expected, y.astype(np.int64), 37)
    assert kernels.softmax_xent_backward_rows_inplace(out, y.astype(dtype), 37) == loss
    np.testing.assert_array_equal(out, expected)


def test_softmax_xent_backward_of_a_nan_logit_is_nan_not_a_number_made_up(rng):
    for k in (10, 20):  # the vector kernel and the scalar loop
        Z = rand(rng, 3, k)
        Z[1, 4] = np.nan
        loss = kernels.softmax_xent_backward_rows_inplace(Z, np.zeros(3, np.int64), 3)
        assert np.isnan(loss) and np.isnan(Z[1]).all() and np.isfinite(Z[[0, 2]]).all()


def test_softmax_xent_backward_flushes_subnormal_gradients():
    Z = np.array([[0.0, -100.0, 50.0]], np.float32)  # exp(-150) is far below float32's normal range
    kernels.softmax_xent_backward_inplace(Z, np.array([2]))
    tiny = np.finfo(np.float32).tiny
    assert not ((np.abs(Z) > 0) & (np.abs(Z) < tiny)).any()


def test_bias_grad_and_sgd_update_match_numpy(rng):
    dZ, out = rand(rng, 9, 4), np.empty(4, np.float32)
    kernels.bias_grad(dZ, out)
    assert_close(out, dZ.sum(axis=0))
    W, dW = rand(rng, 3, 4), rand(rng, 3, 4)
    expected = W - np.float32(0.1) * dW
    kernels.sgd_update_inplace(W, dW, np.float32(0.1))
    assert_close(W, expected)


# 7 columns: rows shorter than a cache line; 301: float32 rows longer than gather.PREFETCH_ROW_BYTES, prefetched
# past it into L2 (a width that ends inside a cache line), and uint8 rows shorter than it.
@pytest.mark.parametrize("width", [7, 301])
def test_gathers_match_fancy_indexing(rng, width):
    X = rand(rng, 50, width)
    pixels = rng.integers(0, 256, (50, width)).astype(np.uint8)
    rows = rng.integers(0, 50, 9)
    out = np.empty((9, width), np.float32)
    kernels.gather_rows(out, X, rows)
    np.testing.assert_array_equal(out, X[rows])
    kernels.gather_rows_scaled(out, pixels, rows, np.float32(1 / 255))
    np.testing.assert_array_equal(out, np.multiply(pixels[rows], np.float32(1 / 255), dtype=np.float32))
    labels = np.empty(9, np.int64)
    kernels.gather_labels(labels, np.arange(50) * 3, rows)
    np.testing.assert_array_equal(labels, rows * 3)


@njit(cache=True)
def user_dense_relu_layer(X, W, b):
    out = np.empty((X.shape[0], W.shape[1]), dtype=np.float32)
    kernels.matmul_into(out, X, W)
    kernels.bias_relu_forward_inplace(out, b)
    return out


def test_kernels_are_callable_from_user_njit_code(rng):
    X, W, b = rand(rng, 6, 5), rand(rng, 5, 3), rand(rng, 3)
    assert_close(user_dense_relu_layer(X, W, b), np.maximum(X @ W + b, 0))


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("sgd", [{}, {"momentum": 0.9}, {"momentum": 0.9, "nesterov": True, "weight_decay": 1e-4}],
                         ids=["plain", "momentum", "nesterov"])
def test_fused_epoch_allocates_nothing_per_step(rng, threads, sgd):
    from fastmlp.optim import Velocity

    model = MLP([20, 64, 8, 4], seed=0)  # rows and work enough for 2 workers (MIN_FLOPS_PER_WORKER) on any tile
    backend = Backend(threads=threads)
    assert epoch_workers(threads, 32, model.layer_sizes) == threads
    if sgd:
        sgd = dict(sgd, velocity=Velocity(model))
    X = rng.random((5120, 20), dtype=np.float32)
    y = rng.integers(0, 4, 5120)
    epoch = lambda steps: backend.train_epoch(model, X[: steps * 32], y[: steps * 32], batch_size=32, lr=0.01,
                                              rng=np.random.default_rng(0), **sgd)
    epoch(80)  # compile first
    allocations = {}
    _nrt_python.memsys_enable_stats()
    try:
        for steps in (80, 160):  # epochs over the first 640 and all 1280 rows
            before = rtsys.get_allocation_stats().alloc
            epoch(steps)
            allocations[steps] = rtsys.get_allocation_stats().alloc - before
    finally:
        _nrt_python.memsys_disable_stats()
    # Unboxing the array arguments costs a fixed few per call and worker (the epoch's, and the packing
    # and unpacking of the weights around it); a step must add none.
    assert allocations[80] == allocations[160] <= 80 * threads
    if sgd:
        assert np.abs(sgd["velocity"].weights[0]).max() > 0  # the run did update the velocity it was given


def test_backend_reuses_its_buffers_across_epochs(rng):
    backend = Backend()
    model = MLP([6, 5, 3], seed=0)
    X, y = rng.random((40, 6), dtype=np.float32), rng.integers(0, 3, 40)
    backend.train_epoch(model, X, y, batch_size=8, lr=0.1, rng=rng)
    ws = backend._workspace(model.layer_sizes, 8)
    backend.train_epoch(model, X, y, batch_size=8, lr=0.1, rng=rng)
    assert backend._workspace(model.layer_sizes, 8) is ws


def test_argmax_rows_matches_numpy_argmax_ties_included(rng):
    Z = rand(rng, 37, 10)
    Z[3] = 1.0  # a row of ties: the first index, as np.argmax
    Z[5, [2, 7]] = 9.0
    Z[6] = -np.inf  # a row with nothing above the first entry
    out = np.full(37, -1, np.int64)
    kernels.argmax_rows_into(out, Z)
    np.testing.assert_array_equal(out, Z.argmax(axis=1))
    out32 = np.empty(4, np.int32)
    kernels.argmax_rows_into(out32, Z[10:14])
    np.testing.assert_array_equal(out32, Z[10:14].argmax(axis=1))
