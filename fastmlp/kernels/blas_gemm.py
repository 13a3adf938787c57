"""The gemm kernels that call BLAS: `sgemm` of `scipy.linalg.cython_blas` (the one Numba's own
`np.dot` uses), by a symbol name registered at import, so that `cache=True` stays valid in a new
process: a raw function address compiled into cached code would be stale there.
"""

import llvmlite.binding as llvm
import numpy as np
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import get_cython_function_address, intrinsic

from ..runtime.jit import cached_njit
from .contiguity import require_c_contiguous

SGEMM_SYMBOL = "fastmlp_sgemm"
llvm.add_symbol(SGEMM_SYMBOL, get_cython_function_address("scipy.linalg.cython_blas", "sgemm"))

_N, _T = ord("N"), ord("T")


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


@cached_njit
def gemm_inplace(C, A, B, alpha, beta, trans_a, trans_b):
    """C = alpha * op(A) @ op(B) + beta * C, float32 row-major, op(X) = X.T if trans_x; overwrites C."""
    require_c_contiguous(C, A, B)
    m, n = C.shape
    k = A.shape[0] if trans_a else A.shape[1]
    if m == 0 or n == 0:
        return
    # Row-major C = op(A) op(B) is column-major C^T = op(B)^T op(A)^T: the same flags, operands swapped.
    # Leading dimensions are row strides, so row slices of a larger buffer work unchanged.
    _sgemm(_T if trans_b else _N, _T if trans_a else _N, n, m, k, alpha, B, B.strides[0] // 4,
           A, A.strides[0] // 4, beta, C, C.strides[0] // 4)


@cached_njit
def matmul_into(C, A, B):
    """C = A @ B with A (m, k), B (k, n), C (m, n) float32; overwrites C."""
    gemm_inplace(C, A, B, np.float32(1.0), np.float32(0.0), False, False)


@cached_njit
def matmul_bt_into(C, A, B):
    """C = A @ B.T with A (m, k), B (n, k), C (m, n) float32; overwrites C."""
    gemm_inplace(C, A, B, np.float32(1.0), np.float32(0.0), False, True)


@cached_njit
def matmul_at_into(C, A, B):
    """C = A.T @ B with A (k, m), B (k, n), C (m, n) float32; overwrites C."""
    gemm_inplace(C, A, B, np.float32(1.0), np.float32(0.0), True, False)


@cached_njit
def sgd_gemm_update_inplace(W, A, dZ, lr):
    """W -= lr * A.T @ dZ in one sgemm (alpha=-lr, beta=1, no dW buffer); W (k, n), A (b, k), dZ (b, n);
    overwrites W."""
    gemm_inplace(W, A, dZ, np.float32(-lr), np.float32(1.0), True, False)


@cached_njit
def momentum_gemm_update_inplace(V, A, dZ, lr, momentum):
    """V = momentum * V - lr * A.T @ dZ in one sgemm (alpha=-lr, beta=momentum); V (k, n), A (b, k), dZ (b, n)
    float32; overwrites V."""
    gemm_inplace(V, A, dZ, np.float32(-lr), np.float32(momentum), True, False)


