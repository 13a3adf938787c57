"""Public @njit kernels of one MLP training step, callable from other @njit code.

Every kernel works on float32 C-contiguous arrays (row slices `buf[:n]` of one are fine),
assumes valid input and writes only the argument its name says it overwrites. Matrices are
row-major: activations (batch, features), weights (fan_in, fan_out).

Argument order: the array a kernel writes comes first, then what it reads, then scalars:
`matmul_into(C, A, B)`, `gather_rows(out, X, rows)`, `argmax_rows_into(out, Z)`; an in-place
kernel (`*_inplace`) first names the array it updates, `bias_relu_forward_inplace(Z, b)`. Two
kernels predate the rule and put a column-sum output last, `bias_grad(dZ, out)` and
`relu_backward_bias_grad_inplace(dA, A, db)`; they keep that order so that callers keep working.
New kernels follow the rule.

Order of a backward step: dA_{l-1} = dZ_l W_l^T (`matmul_bt_into`) reads W_l, so it must be
computed before the update that overwrites W_l (`sgd_gemm_update_inplace`,
`momentum_gemm_update_inplace`, `momentum_*_inplace`); the other order backpropagates through
the already-updated weights, silently (fastmlp/backends/numba_fused.py does it so).
A call with an array that is not C-contiguous fails when it is compiled.

The modules of this package, one concept each:
    blas_gemm    the gemm kernels that call BLAS sgemm (through SciPy)
    elementwise  bias, ReLU, softmax + cross-entropy, SGD and momentum updates, argmax (prediction)
    softmax_ir   the LLVM IR of the softmax + cross-entropy gradient, 16 rows at a time (elementwise's)
    gather       a batch's rows gathered (and uint8 pixels scaled) into a float32 buffer
    packed       weights packed into column panels, and the SIMD kernels that read and update them
    simd_ir      the LLVM IR of those kernels' microkernels (update_ir: the update tiles')
    nonzero_ir   the LLVM IR listing where an input is not zero, for the tiles that skip its zeros
    tile_calls   the calls from Numba code into those tiles, and their scratch buffers
    tiles        the tile shape per instruction set, and the one chosen for this CPU
    rowmajor     inference off the model's row-major weights, and off packed copies kept between calls
    rowmajor_ir  the LLVM IR of rowmajor's tiles
    serving      inference on several threads at once: one call's parts, and the serving threads' loop
    reference    what each public kernel computes, in NumPy
    checked      the public kernels for Python callers, arguments checked
    contiguity   the compile-time check that refuses non-C-contiguous arrays

`blas_threads_limited()` (from fastmlp.blas_threads, not a kernel) runs the gemm kernels' BLAS on
one thread within a `with` block: wrap your own loop in it on a machine busy with other work.
"""

from ..runtime.blas_threads import blas_threads_limited  # noqa: E402,F401  a context manager, kept out of __all__
from .blas_gemm import (
    gemm_inplace,
    matmul_at_into,
    matmul_bt_into,
    matmul_into,
    momentum_gemm_update_inplace,
    sgd_gemm_update_inplace,
)
from .elementwise import (
    argmax_rows_into,
    bias_forward_inplace,
    bias_grad,
    bias_relu_forward_inplace,
    momentum_apply_inplace,
    momentum_update_inplace,
    relu_backward_bias_grad_inplace,
    relu_backward_inplace,
    sgd_update_inplace,
    softmax_inplace,
    softmax_xent_backward_inplace,
    softmax_xent_backward_rows_inplace,
)
from .gather import gather_labels, gather_rows, gather_rows_scaled
from .packed import (  # noqa: F401  PANEL_WIDTH, TILE_ROWS, packed_shape, panel_count: public, not kernels
    PANEL_WIDTH,
    TILE_ROWS,
    pack_weights_into,
    packed_adam_update_inplace,
    packed_matmul_bias_into,
    packed_matmul_bias_relu_into,
    packed_matmul_into,
    packed_matmul_relu_mask_into,
    packed_momentum_update_inplace,
    packed_sgd_update_inplace,
    packed_shape,
    panel_count,
    unpack_weights_into,
)

__all__ = [
    "gemm_inplace", "matmul_into", "matmul_bt_into", "matmul_at_into", "sgd_gemm_update_inplace",
    "bias_forward_inplace", "bias_relu_forward_inplace", "relu_backward_inplace",
    "relu_backward_bias_grad_inplace", "softmax_inplace", "softmax_xent_backward_inplace",
    "softmax_xent_backward_rows_inplace",
    "bias_grad", "sgd_update_inplace", "gather_rows", "gather_rows_scaled", "gather_labels",
    "momentum_gemm_update_inplace", "momentum_apply_inplace", "momentum_update_inplace",
    "pack_weights_into", "unpack_weights_into", "packed_matmul_into", "packed_matmul_bias_into",
    "packed_matmul_bias_relu_into", "packed_matmul_relu_mask_into", "packed_sgd_update_inplace",
    "packed_momentum_update_inplace", "packed_adam_update_inplace",
    "argmax_rows_into",
]
# Also public, but not kernels: PANEL_WIDTH and TILE_ROWS (the tile of this CPU), and
# packed_shape(K, N) / panel_count(N), the shape of a packed (K, N) weight matrix.
