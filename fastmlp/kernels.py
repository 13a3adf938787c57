"""Public @njit kernels of one MLP training step, callable from other @njit code.

Every kernel works on float32 C-contiguous arrays (row slices `buf[:n]` of one are fine),
assumes valid input and writes only the argument its name says it overwrites. Matrices are
row-major: activations (batch, features), weights (fan_in, fan_out).

The gemm kernels call the BLAS `sgemm` of `scipy.linalg.cython_blas` (the one Numba's own
`np.dot` uses) by a symbol name registered at import, so that `cache=True` stays valid in a
new process: a raw function address compiled into cached code would be stale there.
"""

import llvmlite.binding as llvm
import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import get_cython_function_address, intrinsic

__all__ = [
    "gemm_inplace", "matmul_into", "matmul_bt_into", "matmul_at_into", "sgd_gemm_update_inplace",
    "bias_forward_inplace", "bias_relu_forward_inplace", "relu_backward_inplace",
    "relu_backward_bias_grad_inplace", "softmax_inplace", "softmax_xent_backward_inplace",
    "softmax_xent_backward_rows_inplace",
    "bias_grad", "sgd_update_inplace", "gather_rows", "gather_rows_scaled", "gather_labels",
    "momentum_gemm_update_inplace", "momentum_apply_inplace", "momentum_update_inplace",
]

SGEMM_SYMBOL = "fastmlp_sgemm"
llvm.add_symbol(SGEMM_SYMBOL, get_cython_function_address("scipy.linalg.cython_blas", "sgemm"))

_N, _T = ord("N"), ord("T")
# Rows ahead that the gathers prefetch: shuffled rows are latency-bound reads (a 784-byte uint8
# row is 13 cache lines, too short for the hardware prefetcher); 4 rows ahead was fastest.
_PREFETCH_ROWS = 4
# Of each such row, the first 832 bytes (13 cache lines: a whole 784-byte uint8 MNIST row); the
# hardware prefetcher follows longer rows by itself. Prefetching all 49 lines of a float32 row
# overflowed the miss queue: 2.6M rows/s, against 3.4M with the head only (8.6M from uint8).
_PREFETCH_ROW_BYTES = 832
# Smallest normal float32. Probabilities below it only produce subnormal gradients, which
# make every later gemm and elementwise pass up to 100x slower on x86 (see softmax kernels).
_TINY = np.float32(np.finfo(np.float32).tiny)


@intrinsic
def _sgemm(typingctx, transa, transb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc):
    """Fortran sgemm(transa, transb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc) by reference."""
    sig = types.void(transa, transb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)

    def codegen(context, builder, signature, args):
        i8, i32, f32 = ir.IntType(8), ir.IntType(32), ir.FloatType()
        fnty = ir.FunctionType(ir.VoidType(), [i8.as_pointer()] * 2 + [i32.as_pointer()] * 3 + [
            f32.as_pointer(), f32.as_pointer(), i32.as_pointer(), f32.as_pointer(), i32.as_pointer(),
            f32.as_pointer(), f32.as_pointer(), i32.as_pointer()])
        fn = cgutils.get_or_insert_function(builder.module, fnty, SGEMM_SYMBOL)

        def by_ref(value, ty, llty):
            cast = context.cast(builder, value, ty, types.int8 if llty is i8 else
                                types.int32 if llty is i32 else types.float32)
            return cgutils.alloca_once_value(builder, cast)

        def data(value, ty):
            return context.make_array(ty)(context, builder, value).data

        tys = signature.args
        call_args = [by_ref(args[i], tys[i], i8) for i in (0, 1)]
        call_args += [by_ref(args[i], tys[i], i32) for i in (2, 3, 4)]
        call_args += [by_ref(args[5], tys[5], f32), data(args[6], tys[6]), by_ref(args[7], tys[7], i32),
                      data(args[8], tys[8]), by_ref(args[9], tys[9], i32), by_ref(args[10], tys[10], f32),
                      data(args[11], tys[11]), by_ref(args[12], tys[12], i32)]
        builder.call(fn, call_args)
        return context.get_dummy_value()

    return sig, codegen


@intrinsic
def _prefetch(typingctx, flat, index):
    """Hint the CPU to fetch the cache line holding flat[index] (1-D array); no effect on results."""

    def codegen(context, builder, signature, args):
        ary = context.make_array(signature.args[0])(context, builder, args[0])
        ptr = builder.bitcast(builder.gep(ary.data, [args[1]]), ir.IntType(8).as_pointer())
        i32 = ir.IntType(32)
        fnty = ir.FunctionType(ir.VoidType(), [ptr.type, i32, i32, i32])
        fn = cgutils.get_or_insert_function(builder.module, fnty, "llvm.prefetch.p0")
        builder.call(fn, [ptr, ir.Constant(i32, 0), ir.Constant(i32, 3), ir.Constant(i32, 1)])
        return context.get_dummy_value()

    return types.void(flat, types.intp), codegen


@njit(cache=True)
def _prefetch_row(flat, row, n_cols):
    step = max(64 // flat.itemsize, 1)
    base = row * n_cols
    head = min(n_cols, _PREFETCH_ROW_BYTES // flat.itemsize)
    for j in range(0, head, step):
        _prefetch(flat, base + j)
    _prefetch(flat, base + head - 1)


@njit(cache=True)
def gemm_inplace(C, A, B, alpha, beta, trans_a, trans_b):
    """C = alpha * op(A) @ op(B) + beta * C, float32 row-major, op(X) = X.T if trans_x; overwrites C."""
    m, n = C.shape
    k = A.shape[0] if trans_a else A.shape[1]
    if m == 0 or n == 0:
        return
    # Row-major C = op(A) op(B) is column-major C^T = op(B)^T op(A)^T: the same flags, operands swapped.
    # Leading dimensions are row strides, so row slices of a larger buffer work unchanged.
    _sgemm(_T if trans_b else _N, _T if trans_a else _N, n, m, k, alpha, B, B.strides[0] // 4,
           A, A.strides[0] // 4, beta, C, C.strides[0] // 4)


@njit(cache=True)
def matmul_into(C, A, B):
    """C = A @ B with A (m, k), B (k, n), C (m, n) float32; overwrites C."""
    gemm_inplace(C, A, B, np.float32(1.0), np.float32(0.0), False, False)


@njit(cache=True)
def matmul_bt_into(C, A, B):
    """C = A @ B.T with A (m, k), B (n, k), C (m, n) float32; overwrites C."""
    gemm_inplace(C, A, B, np.float32(1.0), np.float32(0.0), False, True)


@njit(cache=True)
def matmul_at_into(C, A, B):
    """C = A.T @ B with A (k, m), B (k, n), C (m, n) float32; overwrites C."""
    gemm_inplace(C, A, B, np.float32(1.0), np.float32(0.0), True, False)


@njit(cache=True)
def sgd_gemm_update_inplace(W, A, dZ, lr):
    """W -= lr * A.T @ dZ in one sgemm (alpha=-lr, beta=1, no dW buffer); W (k, n), A (b, k), dZ (b, n); overwrites W."""
    gemm_inplace(W, A, dZ, np.float32(-lr), np.float32(1.0), True, False)


@njit(cache=True)
def bias_forward_inplace(Z, b):
    """Z += b row-wise, Z (n, k), b (k,) float32; overwrites Z."""
    n, k = Z.shape
    for i in range(n):
        for j in range(k):
            Z[i, j] += b[j]


@njit(cache=True)
def bias_relu_forward_inplace(Z, b):
    """Z = max(Z + b, 0) row-wise, Z (n, k), b (k,) float32; overwrites Z."""
    n, k = Z.shape
    for i in range(n):
        for j in range(k):
            Z[i, j] = max(Z[i, j] + b[j], np.float32(0.0))


@njit(cache=True)
def relu_backward_inplace(dA, A):
    """dA = dA * (A > 0), the ReLU-mask backprop, dA and A (n, k) float32; overwrites dA."""
    n, k = dA.shape
    for i in range(n):
        for j in range(k):
            if A[i, j] <= 0:
                dA[i, j] = 0


@njit(cache=True)
def relu_backward_bias_grad_inplace(dA, A, db):
    """dA = dA * (A > 0) and db = column sums of the result, dA, A (n, k), db (k,) float32; overwrites dA and db."""
    n, k = dA.shape
    db[:] = 0
    for i in range(n):
        for j in range(k):
            if A[i, j] <= 0:
                dA[i, j] = 0
            else:
                db[j] += dA[i, j]


@njit(cache=True)
def softmax_inplace(Z):
    """Row-wise numerically stable softmax of logits Z (n, k) float32; overwrites Z with the probabilities."""
    n, k = Z.shape
    for i in range(n):
        m = Z[i, 0]
        for j in range(1, k):
            m = max(m, Z[i, j])
        s = np.float32(0.0)
        for j in range(k):
            e = np.exp(Z[i, j] - m)
            Z[i, j] = e
            s += e
        inv = np.float32(1.0) / s
        for j in range(k):
            Z[i, j] *= inv


@njit(cache=True)
def softmax_xent_backward_inplace(Z, y):
    """Mean cross-entropy of logits Z (n, k) float32 vs labels y (n,); overwrites Z with (softmax(Z) - onehot(y)) / n.

    Gradient entries below the smallest normal float32 (~1.2e-38) are flushed to zero, as
    they only slow down the later passes.
    """
    n = Z.shape[0]
    return softmax_xent_backward_rows_inplace(Z, y, n) / n


@njit(cache=True)
def softmax_xent_backward_rows_inplace(Z, y, batch_n):
    """Summed cross-entropy of the rows of Z (n, k) float32 vs labels y (n,), part of a batch of batch_n rows; overwrites Z with (softmax(Z) - onehot(y)) / batch_n.

    The kernel of `softmax_xent_backward_inplace` for a batch split across threads.
    """
    n, k = Z.shape
    total = 0.0
    inv_n = np.float32(1.0) / np.float32(batch_n)
    for i in range(n):
        m = Z[i, 0]
        for j in range(1, k):
            m = max(m, Z[i, j])
        label = y[i]
        shifted_label = Z[i, label] - m
        s = np.float32(0.0)
        for j in range(k):
            e = np.exp(Z[i, j] - m)
            Z[i, j] = e
            s += e
        total += np.log(s) - shifted_label
        scale = inv_n / s
        for j in range(k):
            g = Z[i, j] * scale
            if g < _TINY:
                g = np.float32(0.0)
            if j == label:
                g -= inv_n
            Z[i, j] = g
    return total


@njit(cache=True)
def bias_grad(dZ, out):
    """out = column sums of dZ (n, k) float32, out (k,); overwrites out."""
    n, k = dZ.shape
    out[:] = 0
    for i in range(n):
        for j in range(k):
            out[j] += dZ[i, j]


@njit(cache=True)
def sgd_update_inplace(W, dW, lr):
    """W -= lr * dW elementwise, W and dW the same shape (any ndim) float32; overwrites W."""
    w = W.reshape(W.size)
    g = dW.reshape(dW.size)
    step = np.float32(lr)
    for i in range(w.size):
        w[i] -= step * g[i]


@njit(cache=True)
def momentum_gemm_update_inplace(V, A, dZ, lr, momentum):
    """V = momentum * V - lr * A.T @ dZ in one sgemm (alpha=-lr, beta=momentum); V (k, n), A (b, k), dZ (b, n) float32; overwrites V."""
    gemm_inplace(V, A, dZ, np.float32(-lr), np.float32(momentum), True, False)


@njit(cache=True)
def momentum_apply_inplace(W, V, decay_step):
    """V -= decay_step * W, then W += V, in one pass (decay_step = lr * weight_decay); W, V the same shape float32; overwrites V and W."""
    w = W.reshape(W.size)
    v = V.reshape(V.size)
    d = np.float32(decay_step)
    for i in range(w.size):
        vi = v[i] - d * w[i]
        v[i] = vi
        w[i] += vi


@njit(cache=True)
def momentum_update_inplace(W, V, G, lr, momentum, weight_decay, nesterov):
    """g = G + weight_decay * W; V = momentum * V - lr * g; W += momentum * V - lr * g if nesterov else V; one pass, W, V, G the same shape float32; overwrites V and W."""
    w = W.reshape(W.size)
    v = V.reshape(V.size)
    grad = G.reshape(G.size)
    lr32, mu, wd = np.float32(lr), np.float32(momentum), np.float32(weight_decay)
    for i in range(w.size):
        step = lr32 * (grad[i] + wd * w[i])
        vi = mu * v[i] - step
        v[i] = vi
        if nesterov:
            w[i] += mu * vi - step
        else:
            w[i] += vi


@njit(cache=True)
def gather_rows(out, X, rows):
    """out[i] = X[rows[i]] for a float32 C-contiguous X (N, f), integer rows (n,), out (n, f); overwrites out."""
    gather_rows_scaled(out, X, rows, np.float32(1.0))  # x * 1.0f is exact


@njit(cache=True)
def gather_rows_scaled(out, pixels_u8, rows, scale):
    """out[i] = float32(pixels_u8[rows[i]]) * scale, C-contiguous uint8 (or float32) pixels (N, f), rows (n,), out (n, f) float32; overwrites out."""
    n, f = out.shape
    s = np.float32(scale)
    flat = pixels_u8.reshape(pixels_u8.size)
    for i in range(min(_PREFETCH_ROWS, n)):
        _prefetch_row(flat, rows[i], f)
    for i in range(n):
        if i + _PREFETCH_ROWS < n:
            _prefetch_row(flat, rows[i + _PREFETCH_ROWS], f)
        r = rows[i]
        for j in range(f):
            out[i, j] = np.float32(pixels_u8[r, j]) * s


@njit(cache=True)
def gather_labels(out, y, rows):
    """out[i] = y[rows[i]] for integer labels y (N,), rows (n,), out (n,); overwrites out."""
    for i in range(out.shape[0]):
        out[i] = y[rows[i]]
