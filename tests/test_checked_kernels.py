"""fastmlp.checked_kernels: valid calls give the raw kernels' results; each kind of bad argument is
refused with the right exception type and a message naming the argument."""

import numpy as np
import pytest

from fastmlp import checked_kernels as ck
from fastmlp import kernels

pytestmark = pytest.mark.kernels  # run again per ISA and with bounds checks by .ci/run


def f32(*shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape, dtype=np.float32)


def test_every_kernel_has_a_checked_wrapper():
    assert sorted(ck.__all__) == sorted(kernels.__all__)
    assert all(callable(getattr(ck, name)) for name in kernels.__all__)


def test_valid_calls_give_the_kernels_results():
    A, B, W = f32(6, 4), f32(4, 5), f32(4, 5, seed=1)
    C = np.empty((6, 5), np.float32)
    ck.matmul_into(C, A, B)
    np.testing.assert_allclose(C, A @ B, rtol=1e-5, atol=1e-6)
    ck.gemm_inplace(C, A, np.ascontiguousarray(B.T), 2.0, 0.0, False, True)
    np.testing.assert_allclose(C, 2 * A @ B, rtol=1e-5, atol=1e-6)
    dZ = f32(6, 5, seed=2)
    expected = W - np.float32(0.1) * (A.T @ dZ)
    ck.sgd_gemm_update_inplace(W, A, dZ, 0.1)
    np.testing.assert_allclose(W, expected, rtol=1e-5, atol=1e-6)

    Z, y = f32(6, 5), np.array([0, 4, 2, 1, 3, 0])
    raw = Z.copy()
    loss = ck.softmax_xent_backward_inplace(Z, y)
    assert isinstance(loss, float) and loss == pytest.approx(kernels.softmax_xent_backward_inplace(raw, y))
    np.testing.assert_array_equal(Z, raw)
    Z, raw = f32(6, 5), f32(6, 5)
    loss = ck.softmax_xent_backward_rows_inplace(Z[:2], y[:2], 6)
    assert isinstance(loss, float)
    assert loss == pytest.approx(kernels.softmax_xent_backward_rows_inplace(raw[:2], y[:2], 6))
    np.testing.assert_array_equal(Z, raw)

    dA = f32(6, 5)
    A_relu = np.maximum(f32(6, 5, seed=3), 0)
    expected = dA * (A_relu > 0)
    ck.relu_backward_inplace(dA, A_relu)
    np.testing.assert_array_equal(dA, expected)
    same = f32(3, 3)
    expected = same * (same > 0)
    ck.relu_backward_inplace(same, same)  # the very same array is allowed for an elementwise kernel
    np.testing.assert_array_equal(same, expected)

    pixels = np.arange(40, dtype=np.uint8).reshape(8, 5)
    out, rows = np.empty((3, 5), np.float32), np.array([7, 0, 3])
    ck.gather_rows_scaled(out, pixels, rows, 0.5)
    np.testing.assert_array_equal(out, pixels[rows] * np.float32(0.5))
    labels = np.empty(3, np.int64)
    ck.gather_labels(labels, np.arange(8, dtype=np.int32) * 2, rows)
    np.testing.assert_array_equal(labels, rows * 2)


Z = f32(4, 3)
BUF = f32(10, 3)

CASES = {
    # kind: (call, exception, words the message must contain)
    "float64 operand": (lambda: ck.matmul_into(np.empty((4, 5), np.float32), f32(4, 3).astype(np.float64), f32(3, 5)),
                        TypeError, "A must be a float32 numpy array, got array of dtype float64"),
    "list operand": (lambda: ck.bias_grad([[1.0]], np.empty(1, np.float32)),
                     TypeError, "dZ must be a float32 numpy array, got list"),
    "column slice": (lambda: ck.matmul_into(np.empty((4, 2), np.float32), f32(4, 3), f32(3, 4)[:, :2]),
                     ValueError, "B must be C-contiguous"),
    "read-only output": (lambda: ck.softmax_inplace(
                             np.frombuffer(np.zeros(6, np.float32).tobytes(), np.float32).reshape(2, 3)),
                         ValueError, "Z must be writable"),
    "gemm shapes": (lambda: ck.matmul_bt_into(np.empty((4, 5), np.float32), f32(4, 3), f32(5, 2)),
                    ValueError, "C (4, 5) must be A (4, 3) @ B.T (2, 5)"),
    "gemm empty k": (lambda: ck.matmul_into(np.empty((4, 5), np.float32), f32(4, 0), f32(0, 5)),
                     ValueError, "A and B must not be empty along the summed dimension"),
    "gemm output aliases input": (lambda: ck.matmul_into(BUF[:3], BUF[2:5], f32(3, 3)),
                                  ValueError, "C must not share memory with A"),
    "sgd-gemm W aliases dZ": (lambda: ck.sgd_gemm_update_inplace(BUF[:3], f32(4, 3), BUF[:4], 0.1),
                              ValueError, "W must not share memory with dZ"),
    "gemm flag not bool": (lambda: ck.gemm_inplace(np.empty((4, 5), np.float32), f32(4, 3), f32(3, 5),
                                                   1.0, 0.0, 0, False),
                           TypeError, "trans_a must be a bool"),
    "gemm alpha nan": (lambda: ck.gemm_inplace(np.empty((4, 5), np.float32), f32(4, 3), f32(3, 5),
                                               float("nan"), 0.0, False, False),
                       ValueError, "alpha must be finite"),
    "gemm beta string": (lambda: ck.gemm_inplace(np.empty((4, 5), np.float32), f32(4, 3), f32(3, 5),
                                                 1.0, "0", False, False),
                         TypeError, "beta must be a number"),
    "bias width": (lambda: ck.bias_relu_forward_inplace(f32(4, 3), f32(4)),
                   ValueError, "b must have shape (3,), got (4,)"),
    "bias 2-D": (lambda: ck.bias_forward_inplace(f32(4, 3), f32(1, 3)), ValueError, "b must be 1-D"),
    "bias aliases Z": (lambda: ck.bias_forward_inplace(Z, Z[0]), ValueError, "Z must not share memory with b"),
    "relu shapes": (lambda: ck.relu_backward_inplace(f32(4, 3), f32(3, 4)), ValueError, "A must have shape (4, 3)"),
    "relu partial overlap": (lambda: ck.relu_backward_inplace(BUF[1:5], BUF[:4]),
                             ValueError, "dA must not share memory with A"),
    "db aliases dA": (lambda: ck.relu_backward_bias_grad_inplace(BUF[:4], f32(4, 3), BUF[3]), ValueError,
                      "db must not share memory with dA"),
    "softmax no classes": (lambda: ck.softmax_inplace(np.empty((3, 0), np.float32)),
                           ValueError, "Z must have at least one column"),
    "xent empty batch": (lambda: ck.softmax_xent_backward_inplace(np.empty((0, 3), np.float32), np.empty(0, np.int64)),
                         ValueError, "Z is empty"),
    "rows of a smaller batch": (lambda: ck.softmax_xent_backward_rows_inplace(f32(4, 3), np.zeros(4, np.int64), 3),
                                ValueError, "batch_n must be at least the 4 rows of Z"),
    "batch_n zero": (lambda: ck.softmax_xent_backward_rows_inplace(f32(4, 3), np.zeros(4, np.int64), 0),
                     ValueError, "batch_n"),
    "labels out of range": (lambda: ck.softmax_xent_backward_inplace(f32(4, 3), np.array([0, 1, 3, 2])),
                            ValueError, r"y must hold class indices in [0, 3), got values in [0, 3]"),
    "negative labels": (lambda: ck.softmax_xent_backward_inplace(f32(4, 3), np.array([0, -1, 2, 2])),
                        ValueError, "y must hold class indices in [0, 3)"),
    "float labels": (lambda: ck.softmax_xent_backward_inplace(f32(4, 3), np.zeros(4)), TypeError,
                     "y must be an integer numpy array"),
    "2-D labels": (lambda: ck.softmax_xent_backward_inplace(f32(4, 3), np.zeros((4, 1), np.int64)),
                   ValueError, "y must be 1-D"),
    "label count": (lambda: ck.softmax_xent_backward_inplace(f32(4, 3), np.zeros(3, np.int64)), ValueError,
                    "y must have shape (4,)"),
    "bias_grad out width": (lambda: ck.bias_grad(f32(4, 3), np.empty(4, np.float32)),
                            ValueError, "out must have shape (3,)"),
    "sgd shapes": (lambda: ck.sgd_update_inplace(f32(4, 3), f32(3, 4), 0.1), ValueError, "dW must have shape (4, 3)"),
    "sgd lr bool": (lambda: ck.sgd_update_inplace(f32(4, 3), f32(4, 3), True), TypeError, "lr must be a number"),
    "sgd lr negative": (lambda: ck.sgd_update_inplace(f32(4, 3), f32(4, 3), -0.1),
                        ValueError, "lr must be finite and > 0"),
    "sgd lr overflows float32": (lambda: ck.sgd_update_inplace(f32(4, 3), f32(4, 3), 1e300),
                                 ValueError, "lr must be finite and > 0"),
    "sgd partial overlap": (lambda: ck.sgd_update_inplace(BUF[1:5], BUF[:4], 0.1),
                            ValueError, "W must not share memory with dW"),
    "gather row out of range": (lambda: ck.gather_rows(np.empty((2, 3), np.float32), f32(5, 3), np.array([1, 5])),
                                ValueError, "rows must hold row indices of X in [0, 5), got values in [1, 5]"),
    "gather negative row": (lambda: ck.gather_rows(np.empty((2, 3), np.float32), f32(5, 3), np.array([-1, 0])),
                            ValueError, "rows must hold row indices of X in [0, 5)"),
    "gather float rows": (lambda: ck.gather_rows(np.empty((2, 3), np.float32), f32(5, 3), np.array([0.0, 1.0])),
                          TypeError, "rows must be an integer numpy array"),
    "gather bool rows": (lambda: ck.gather_rows(np.empty((2, 3), np.float32), f32(5, 3), np.array([True, False])),
                         TypeError, "rows must be an integer numpy array"),
    "gather width": (lambda: ck.gather_rows(np.empty((2, 4), np.float32), f32(5, 3), np.array([0, 1])),
                     ValueError, "out must have X's 3 columns"),
    "gather row count": (lambda: ck.gather_rows(np.empty((2, 3), np.float32), f32(5, 3), np.array([0, 1, 2])),
                         ValueError, "rows must have shape (2,)"),
    "gather out aliases X": (lambda: ck.gather_rows(BUF[:2], BUF, np.array([5, 6])),
                             ValueError, "out must not share memory with X"),
    "gather pixels int16": (lambda: ck.gather_rows_scaled(np.empty((1, 3), np.float32), np.zeros((2, 3), np.int16),
                                                          np.array([0]), 1.0),
                            TypeError, "pixels_u8 must be a uint8 or float32 numpy array"),
    "gather scale zero": (lambda: ck.gather_rows_scaled(np.empty((1, 3), np.float32), np.zeros((2, 3), np.uint8),
                                                        np.array([0]), 0),
                          ValueError, "scale must be finite and > 0"),
    "labels gather lossy dtype": (lambda: ck.gather_labels(np.empty(2, np.int8), np.arange(5), np.array([0, 1])),
                                  TypeError, "out must hold y's dtype int64 without loss"),
    "labels gather out of range": (lambda: ck.gather_labels(np.empty(2, np.int64), np.arange(5), np.array([0, 9])),
                                   ValueError, "rows must hold indices of y in [0, 5)"),
}


@pytest.mark.parametrize("kind", CASES)
def test_bad_kernel_arguments_are_refused_naming_the_argument(kind):
    call, error, words = CASES[kind]
    with pytest.raises(error) as info:
        call()
    assert words in str(info.value)


def test_checked_momentum_kernels_give_the_kernels_results_and_refuse_bad_calls():
    V, A, dZ = f32(4, 5), f32(6, 4), f32(6, 5)
    expected = np.float32(0.9) * V - np.float32(0.1) * (A.T @ dZ)
    ck.momentum_gemm_update_inplace(V, A, dZ, 0.1, 0.9)
    np.testing.assert_allclose(V, expected, rtol=1e-5, atol=1e-6)
    W, V = f32(4, 5, seed=1), f32(4, 5, seed=2)
    expected_v = V - np.float32(0.01) * W
    ck.momentum_apply_inplace(W, V, 0.01)
    np.testing.assert_allclose(V, expected_v, rtol=1e-6)
    W, V, G = f32(7, seed=3), f32(7, seed=4), f32(7, seed=5)
    W0, V0 = W.copy(), V.copy()
    kernels.momentum_update_inplace(W0, V0, G, np.float32(0.1), np.float32(0.9), np.float32(0.0), True)
    ck.momentum_update_inplace(W, V, G, 0.1, 0.9, 0.0, True)
    np.testing.assert_array_equal(W, W0)
    np.testing.assert_array_equal(V, V0)

    with pytest.raises(ValueError, match=r"momentum must be in \[0, 1\)"):
        ck.momentum_gemm_update_inplace(f32(4, 5), A, dZ, 0.1, 1.0)
    with pytest.raises(ValueError, match="V must have shape"):
        ck.momentum_apply_inplace(f32(4, 5), f32(5, 4), 0.0)
    with pytest.raises(ValueError, match="W must not share memory with V"):
        ck.momentum_apply_inplace(BUF[:4], BUF[2:6], 0.0)
    with pytest.raises(TypeError, match="G must be a float32 numpy array"):
        ck.momentum_update_inplace(f32(3), f32(3), np.zeros(3), 0.1, 0.9, 0.0, False)
    with pytest.raises(TypeError, match="nesterov must be a bool"):
        ck.momentum_update_inplace(f32(3), f32(3), f32(3), 0.1, 0.9, 0.0, 1)
    with pytest.raises(ValueError, match="weight_decay must be >= 0"):
        ck.momentum_update_inplace(f32(3), f32(3), f32(3), 0.1, 0.9, -1.0, False)


def test_checked_argmax_gives_the_kernels_result_and_refuses_bad_calls():
    Z = f32(7, 4)
    out = np.empty(7, np.int64)
    ck.argmax_rows_into(out, Z)
    np.testing.assert_array_equal(out, Z.argmax(axis=1))
    with pytest.raises(ValueError, match=r"out must have shape \(7,\)"):
        ck.argmax_rows_into(np.empty(6, np.int64), Z)
    with pytest.raises(TypeError, match="out must be an integer numpy array"):
        ck.argmax_rows_into(np.empty(7, np.float32), Z)
    with pytest.raises(TypeError, match="Z must be a float32 numpy array"):
        ck.argmax_rows_into(out, Z.astype(np.float64))
    with pytest.raises(ValueError, match="Z must have at least one column"):
        ck.argmax_rows_into(out, np.empty((7, 0), np.float32))
    with pytest.raises(TypeError, match="column indices up to 299"):
        ck.argmax_rows_into(np.empty(2, np.int8), f32(2, 300))
