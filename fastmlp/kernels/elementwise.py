"""Elementwise and row-wise kernels: bias, ReLU, softmax + cross-entropy, SGD and momentum updates, argmax."""

import numpy as np
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

from ..runtime.jit import cached_njit
from . import simd_ir, softmax_ir
from .contiguity import require_c_contiguous
from .packing import VECTOR_WIDTH, _data

# Smallest normal float32. Probabilities below it only produce subnormal gradients, which
# make every later gemm and elementwise pass up to 100x slower on x86 (see softmax kernels);
# velocities below it are flushed to zero (fastmlp/optim.py).
_TINY = np.float32(np.finfo(np.float32).tiny)


@intrinsic
def _sum_row_parts(typingctx, a, a_off, b, b_off, bias, out, o_off, n, relu):
    """One row of simd_ir.sum_row_parts: out[o_off:][:n] = (a[a_off:] + b[b_off:]) + bias, ReLU'd if relu (offsets in
    floats of each array's data)."""
    sig = types.void(a, types.intp, b, types.intp, bias, out, types.intp, types.intp, types.int32)

    def codegen(context, builder, signature, args):
        a_, a_off_, b_, b_off_, bias_, out_, o_off_, n_, relu_ = args
        ty = signature.args
        zero = context.get_constant(types.intp, 0)
        fn = simd_ir.sum_row_parts(builder.module, VECTOR_WIDTH)
        builder.call(fn, [_data(context, builder, ty[0], a_, a_off_), _data(context, builder, ty[2], b_, b_off_),
                          _data(context, builder, ty[4], bias_, zero), _data(context, builder, ty[5], out_, o_off_),
                          n_, relu_])
        return context.get_dummy_value()

    return sig, codegen


@cached_njit(inline="always")
def sum_parts_bias_rows_into(out, part0, part1, bias, relu, r0, r1):
    """Rows r0:r1 of out = (part0 + part1) + bias, ReLU'd if relu (below 0 -> 0; a NaN stays), all float32 with
    C-contiguous rows of at least bias.shape[0] floats; overwrites those rows of out's first bias.shape[0]
    columns. Explicit SIMD (simd_ir.sum_row_parts), inlined into its caller."""
    n, on = bias.shape[0], np.int32(relu)
    for i in range(r0, r1):
        _sum_row_parts(part0, i * (part0.strides[0] // 4), part1, i * (part1.strides[0] // 4), bias, out,
                       i * (out.strides[0] // 4), n, on)


@cached_njit
def bias_forward_inplace(Z, b):
    """Z += b row-wise, Z (n, k), b (k,) float32; overwrites Z."""
    require_c_contiguous(Z, b)
    n, k = Z.shape
    for i in range(n):
        for j in range(k):
            Z[i, j] += b[j]


@cached_njit
def bias_relu_forward_inplace(Z, b):
    """Z = max(Z + b, 0) row-wise, Z (n, k), b (k,) float32; overwrites Z."""
    require_c_contiguous(Z, b)
    n, k = Z.shape
    for i in range(n):
        for j in range(k):
            Z[i, j] = max(Z[i, j] + b[j], np.float32(0.0))


@cached_njit
def relu_backward_inplace(dA, A):
    """dA = dA * (A > 0), the ReLU-mask backprop, dA and A (n, k) float32; overwrites dA."""
    require_c_contiguous(dA, A)
    n, k = dA.shape
    for i in range(n):
        for j in range(k):
            if A[i, j] <= 0:
                dA[i, j] = 0


@cached_njit
def relu_backward_bias_grad_inplace(dA, A, db):
    """dA = dA * (A > 0) and db = column sums of the result, dA, A (n, k), db (k,) float32; overwrites dA and db."""
    require_c_contiguous(dA, A, db)
    n, k = dA.shape
    db[:] = 0
    for i in range(n):
        for j in range(k):
            if A[i, j] <= 0:
                dA[i, j] = 0
            else:
                db[j] += dA[i, j]


@cached_njit
def softmax_inplace(Z):
    """Row-wise numerically stable softmax of logits Z (n, k) float32; overwrites Z with the probabilities."""
    require_c_contiguous(Z)
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


@cached_njit
def softmax_xent_backward_inplace(Z, y):
    """Mean cross-entropy of logits Z (n, k) float32 vs labels y (n,); overwrites Z with (softmax(Z) - onehot(y)) / n.

    Gradient entries below the smallest normal float32 (~1.2e-38) are flushed to zero, as
    they only slow down the later passes.
    """
    n = Z.shape[0]
    return softmax_xent_backward_rows_inplace(Z, y, n) / n


@intrinsic
def _xent_rows(typingctx, Z, y, inv_n):
    """softmax_ir.xent_rows on the rows of Z (C-contiguous, at most ROW_LANES columns) with labels y (integers of
    any width): their summed cross-entropy (float64), Z overwritten with the gradient."""
    if not isinstance(y.dtype, types.Integer):
        return None
    sig = types.float64(Z, y, types.float32)

    def codegen(context, builder, signature, args):
        Z_, y_, inv_n_ = args
        z_array = context.make_array(signature.args[0])(context, builder, Z_)
        n, k = cgutils.unpack_tuple(builder, z_array.shape, 2)
        labels = context.make_array(signature.args[1])(context, builder, y_).data
        label_type = signature.args[1].dtype
        fn = softmax_ir.xent_rows(builder.module, label_type.bitwidth, label_type.signed)
        return builder.call(fn, [z_array.data, n, k, labels, inv_n_])

    return sig, codegen


@cached_njit
def softmax_xent_backward_rows_inplace(Z, y, batch_n):
    """Summed cross-entropy of the rows of Z (n, k) float32 vs labels y (n,), part of a batch of batch_n rows;
    overwrites Z with (softmax(Z) - onehot(y)) / batch_n.

    The kernel of `softmax_xent_backward_inplace` for a batch split across threads. Rows of up to
    softmax_ir.ROW_LANES classes run 16 rows at a time in vector registers (softmax_ir.xent_rows: its own exp
    and log); wider ones in the scalar loop below, with the C library's exp and log.
    """
    require_c_contiguous(Z, y)
    n, k = Z.shape
    inv_n = np.float32(1.0) / np.float32(batch_n)
    if k <= softmax_ir.ROW_LANES:
        return _xent_rows(Z, y, inv_n)
    total = 0.0
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


@cached_njit
def bias_grad(dZ, out):
    """out = column sums of dZ (n, k) float32, out (k,); overwrites out."""
    require_c_contiguous(dZ, out)
    n, k = dZ.shape
    out[:] = 0
    for i in range(n):
        for j in range(k):
            out[j] += dZ[i, j]


@cached_njit
def sgd_update_inplace(W, dW, lr):
    """W -= lr * dW elementwise, W and dW the same shape (any ndim) float32; overwrites W."""
    require_c_contiguous(W, dW)
    w = W.reshape(W.size)
    g = dW.reshape(dW.size)
    step = np.float32(lr)
    for i in range(w.size):
        w[i] -= step * g[i]


@cached_njit
def momentum_apply_inplace(W, V, decay_step):
    """V -= decay_step * W, then W += V, in one pass (decay_step = lr * weight_decay); W, V the same shape float32;
    overwrites V and W."""
    require_c_contiguous(W, V)
    w = W.reshape(W.size)
    v = V.reshape(V.size)
    d = np.float32(decay_step)
    for i in range(w.size):
        vi = v[i] - d * w[i]
        v[i] = vi
        w[i] += vi


@cached_njit
def momentum_update_inplace(W, V, G, lr, momentum, weight_decay, nesterov):
    """g = G + weight_decay * W; V = momentum * V - lr * g (0 where below the smallest normal float);
    W += momentum * V - lr * g if nesterov else V; one pass, W, V, G the same shape float32; overwrites V and W."""
    require_c_contiguous(W, V, G)
    w = W.reshape(W.size)
    v = V.reshape(V.size)
    grad = G.reshape(G.size)
    lr32, mu, wd = np.float32(lr), np.float32(momentum), np.float32(weight_decay)
    for i in range(w.size):
        step = lr32 * (grad[i] + wd * w[i])
        vi = mu * v[i] - step
        if abs(vi) < _TINY:  # subnormal velocities flushed to zero (fastmlp/optim.py)
            vi = np.float32(0.0)
        v[i] = vi
        if nesterov:
            w[i] += mu * vi - step
        else:
            w[i] += vi




@cached_njit
def argmax_rows_into(out, Z):
    """out[i] = index of the largest entry of row i of Z (n, k) float32 (the first on ties, as np.argmax),
    out (n,) integer; overwrites out."""
    n, k = Z.shape
    for i in range(n):
        best, best_j = Z[i, 0], 0
        for j in range(1, k):
            if Z[i, j] > best:
                best, best_j = Z[i, j], j
        out[i] = best_j
