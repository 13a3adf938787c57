"""Public @njit kernels of one MLP training step, callable from other @njit code.

Every kernel works on float32 C-contiguous arrays (row slices `buf[:n]` of one are fine),
assumes valid input and writes only the argument its name says it overwrites. Matrices are
row-major: activations (batch, features), weights (fan_in, fan_out).

The modules of this package, one concept each:
    blas_gemm    the gemm kernels that call BLAS sgemm (through SciPy)
    elementwise  bias, ReLU, softmax + cross-entropy, SGD and momentum updates
    gather       a batch's rows gathered (and uint8 pixels scaled) into a float32 buffer

`blas_threads_limited()` (from fastmlp.blas_threads, not a kernel) runs the gemm kernels' BLAS on
one thread within a `with` block: wrap your own loop in it on a machine busy with other work.
"""

from .blas_gemm import (
    gemm_inplace,
    matmul_at_into,
    matmul_bt_into,
    matmul_into,
    momentum_gemm_update_inplace,
    sgd_gemm_update_inplace,
)
from .elementwise import (
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
from ..blas_threads import blas_threads_limited  # noqa: E402,F401  a context manager, kept out of __all__

__all__ = [
    "gemm_inplace", "matmul_into", "matmul_bt_into", "matmul_at_into", "sgd_gemm_update_inplace",
    "bias_forward_inplace", "bias_relu_forward_inplace", "relu_backward_inplace",
    "relu_backward_bias_grad_inplace", "softmax_inplace", "softmax_xent_backward_inplace",
    "softmax_xent_backward_rows_inplace",
    "bias_grad", "sgd_update_inplace", "gather_rows", "gather_rows_scaled", "gather_labels",
    "momentum_gemm_update_inplace", "momentum_apply_inplace", "momentum_update_inplace",
]
