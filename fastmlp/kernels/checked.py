"""`fastmlp.kernels` for Python callers: the same functions, arguments checked before the kernel runs.

The @njit kernels assume valid input, because they are called from nopython code where checks
would cost time on every step; called from Python with a float64 array, a column slice, a short
buffer or an out-of-range row index they would compute garbage or read out of bounds. Each
function here has its kernel's name and signature, checks dtypes (float32 data, integer indices),
C-contiguity, writability of what it overwrites, shapes, index ranges, and refuses an output
that shares memory with an input it still reads, then calls the kernel. Errors are TypeError
(wrong type or dtype) or ValueError (anything else), naming the argument.
"""

import numbers
from collections.abc import Sequence
from typing import Any, TypeAlias

import numpy as np
import numpy.typing as npt

from .. import kernels
from ..inputs import _describe, check_positive_float, check_positive_int

__all__ = kernels.__all__

F32: TypeAlias = npt.NDArray[np.float32]
Ints: TypeAlias = npt.NDArray[np.integer[Any]]

_BLAS_INT_MAX = 2**31 - 1  # sgemm takes 32-bit dimensions and leading dimensions


def _float32(name: str, a: Any, ndim: int | None = None, *, written: bool = False,
             dtypes: Sequence[type] = (np.float32,)) -> np.ndarray:
    if not isinstance(a, np.ndarray) or a.dtype not in dtypes:
        expected = " or ".join(np.dtype(d).name for d in dtypes)
        raise TypeError(f"{name} must be a {expected} numpy array, got {_describe(a)}")
    if ndim is not None and a.ndim != ndim:
        raise ValueError(f"{name} must be {ndim}-D, got shape {a.shape}")
    if not a.flags.c_contiguous:
        raise ValueError(f"{name} must be C-contiguous (np.ascontiguousarray makes a copy that is)")
    if written and not a.flags.writeable:
        raise ValueError(f"{name} must be writable: the kernel overwrites it")
    return a


def _integers(name: str, a: Any, *, written: bool = False) -> np.ndarray:
    if not isinstance(a, np.ndarray) or a.dtype == np.bool_ or not np.issubdtype(a.dtype, np.integer):
        raise TypeError(f"{name} must be an integer numpy array, got {_describe(a)}")
    if a.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {a.shape}")
    if written and not a.flags.writeable:
        raise ValueError(f"{name} must be writable: the kernel overwrites it")
    return a


def _in_range(name: str, index: np.ndarray, upper: int, what: str) -> None:
    if len(index) and (index.min() < 0 or index.max() >= upper):
        raise ValueError(f"{name} must hold {what} in [0, {upper}), got values in [{index.min()}, {index.max()}]")


def _shape(name: str, a: np.ndarray, shape: tuple[int, ...]) -> None:
    if a.shape != shape:
        raise ValueError(f"{name} must have shape {shape}, got {a.shape}")


def _apart(out_name: str, out: np.ndarray, in_name: str, a: np.ndarray, *, identical_ok: bool = False) -> None:
    """Refuse out sharing memory with a, unless it is the very same array and the kernel is elementwise."""
    same = (identical_ok and out.shape == a.shape and out.strides == a.strides
            and out.__array_interface__["data"][0] == a.__array_interface__["data"][0])
    if not same and np.shares_memory(out, a):
        raise ValueError(f"{out_name} must not share memory with {in_name}: the kernel reads {in_name} "
                         f"while it writes {out_name}")


def _finite(name: str, value: object) -> np.float32:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a number, got {type(value).__name__}")
    with np.errstate(over="ignore"):
        single = np.float32(value)
    if not np.isfinite(single):
        raise ValueError(f"{name} must be finite in float32, got {value!r}")
    return single


def _check_gemm(names: tuple[str, str, str], C: Any, A: Any, B: Any, trans_a: bool, trans_b: bool) -> None:
    c_name, a_name, b_name = names
    _float32(c_name, C, 2, written=True)
    _float32(a_name, A, 2)
    _float32(b_name, B, 2)
    op_a = A.shape[::-1] if trans_a else A.shape
    op_b = B.shape[::-1] if trans_b else B.shape
    a_op = f"{a_name}.T" if trans_a else a_name
    b_op = f"{b_name}.T" if trans_b else b_name
    if op_a[1] != op_b[0] or (op_a[0], op_b[1]) != C.shape:
        raise ValueError(f"{c_name} {C.shape} must be {a_op} {op_a} @ {b_op} {op_b}: shapes do not fit")
    if op_a[1] == 0:
        raise ValueError(f"{a_op} and {b_op} must not be empty along the summed dimension, got {op_a} and {op_b}")
    if max(*C.shape, *A.shape, *B.shape) > _BLAS_INT_MAX:
        raise ValueError(f"{c_name}, {a_name} and {b_name} must have dimensions below 2**31 (BLAS integers)")
    _apart(c_name, C, a_name, A)
    _apart(c_name, C, b_name, B)


def gemm_inplace(C: F32, A: F32, B: F32, alpha: float, beta: float, trans_a: bool, trans_b: bool) -> None:
    """Checked `kernels.gemm_inplace`: C = alpha * op(A) @ op(B) + beta * C; overwrites C."""
    for name, flag in (("trans_a", trans_a), ("trans_b", trans_b)):
        if not isinstance(flag, (bool, np.bool_)):
            raise TypeError(f"{name} must be a bool, got {type(flag).__name__}")
    _check_gemm(("C", "A", "B"), C, A, B, trans_a, trans_b)
    kernels.gemm_inplace(C, A, B, _finite("alpha", alpha), _finite("beta", beta), bool(trans_a), bool(trans_b))


def matmul_into(C: F32, A: F32, B: F32) -> None:
    """Checked `kernels.matmul_into`: C = A @ B; overwrites C."""
    _check_gemm(("C", "A", "B"), C, A, B, False, False)
    kernels.matmul_into(C, A, B)


def matmul_bt_into(C: F32, A: F32, B: F32) -> None:
    """Checked `kernels.matmul_bt_into`: C = A @ B.T; overwrites C."""
    _check_gemm(("C", "A", "B"), C, A, B, False, True)
    kernels.matmul_bt_into(C, A, B)


def matmul_at_into(C: F32, A: F32, B: F32) -> None:
    """Checked `kernels.matmul_at_into`: C = A.T @ B; overwrites C."""
    _check_gemm(("C", "A", "B"), C, A, B, True, False)
    kernels.matmul_at_into(C, A, B)


def sgd_gemm_update_inplace(W: F32, A: F32, dZ: F32, lr: float) -> None:
    """Checked `kernels.sgd_gemm_update_inplace`: W -= lr * A.T @ dZ; overwrites W."""
    _check_gemm(("W", "A", "dZ"), W, A, dZ, True, False)
    kernels.sgd_gemm_update_inplace(W, A, dZ, np.float32(check_positive_float(lr, "lr")))


def _check_bias(Z: Any, b: Any) -> None:
    _float32("Z", Z, 2, written=True)
    _float32("b", b, 1)
    _shape("b", b, Z.shape[1:])
    _apart("Z", Z, "b", b)


def bias_forward_inplace(Z: F32, b: F32) -> None:
    """Checked `kernels.bias_forward_inplace`: Z += b row-wise; overwrites Z."""
    _check_bias(Z, b)
    kernels.bias_forward_inplace(Z, b)


def bias_relu_forward_inplace(Z: F32, b: F32) -> None:
    """Checked `kernels.bias_relu_forward_inplace`: Z = max(Z + b, 0); overwrites Z."""
    _check_bias(Z, b)
    kernels.bias_relu_forward_inplace(Z, b)


def _check_relu_backward(dA: Any, A: Any) -> None:
    _float32("dA", dA, 2, written=True)
    _float32("A", A, 2)
    _shape("A", A, dA.shape)
    _apart("dA", dA, "A", A, identical_ok=True)  # elementwise: dA is A is well defined


def relu_backward_inplace(dA: F32, A: F32) -> None:
    """Checked `kernels.relu_backward_inplace`: dA = dA * (A > 0); overwrites dA."""
    _check_relu_backward(dA, A)
    kernels.relu_backward_inplace(dA, A)


def relu_backward_bias_grad_inplace(dA: F32, A: F32, db: F32) -> None:
    """Checked `kernels.relu_backward_bias_grad_inplace`: dA = dA * (A > 0), db = its column sums; overwrites both."""
    _check_relu_backward(dA, A)
    _float32("db", db, 1, written=True)
    _shape("db", db, dA.shape[1:])
    _apart("db", db, "dA", dA)
    _apart("db", db, "A", A)
    kernels.relu_backward_bias_grad_inplace(dA, A, db)


def _check_logits(Z: Any) -> None:
    _float32("Z", Z, 2, written=True)
    if Z.shape[1] == 0:
        raise ValueError(f"Z must have at least one column (class), got shape {Z.shape}")


def softmax_inplace(Z: F32) -> None:
    """Checked `kernels.softmax_inplace`: row-wise softmax; overwrites Z."""
    _check_logits(Z)
    kernels.softmax_inplace(Z)


def softmax_xent_backward_inplace(Z: F32, y: Ints) -> float:
    """Checked `kernels.softmax_xent_backward_inplace`: mean cross-entropy; overwrites Z with its gradient."""
    _check_logits(Z)
    if Z.shape[0] == 0:
        raise ValueError("Z is empty: the mean loss needs at least one row")
    _integers("y", y)
    _shape("y", y, Z.shape[:1])
    _in_range("y", y, Z.shape[1], "class indices")
    _apart("Z", Z, "y", y)
    return float(kernels.softmax_xent_backward_inplace(Z, y))


def softmax_xent_backward_rows_inplace(Z: F32, y: Ints, batch_n: int) -> float:
    """Checked `kernels.softmax_xent_backward_rows_inplace`: summed cross-entropy of Z's rows,
    part of a batch of batch_n; overwrites Z with its gradient."""
    _check_logits(Z)
    batch_n = check_positive_int(batch_n, "batch_n")
    if batch_n < Z.shape[0]:
        raise ValueError(f"batch_n must be at least the {Z.shape[0]} rows of Z, got {batch_n}")
    _integers("y", y)
    _shape("y", y, Z.shape[:1])
    _in_range("y", y, Z.shape[1], "class indices")
    _apart("Z", Z, "y", y)
    return float(kernels.softmax_xent_backward_rows_inplace(Z, y, batch_n))


def bias_grad(dZ: F32, out: F32) -> None:
    """Checked `kernels.bias_grad`: out = column sums of dZ; overwrites out."""
    _float32("dZ", dZ, 2)
    _float32("out", out, 1, written=True)
    _shape("out", out, dZ.shape[1:])
    _apart("out", out, "dZ", dZ)
    kernels.bias_grad(dZ, out)


def sgd_update_inplace(W: F32, dW: F32, lr: float) -> None:
    """Checked `kernels.sgd_update_inplace`: W -= lr * dW; overwrites W."""
    _float32("W", W, written=True)
    _float32("dW", dW)
    _shape("dW", dW, W.shape)
    _apart("W", W, "dW", dW, identical_ok=True)  # elementwise
    kernels.sgd_update_inplace(W, dW, np.float32(check_positive_float(lr, "lr")))


def _check_gather(out: Any, X: Any, rows: Any, x_name: str, x_dtypes: Sequence[type]) -> None:
    _float32("out", out, 2, written=True)
    _float32(x_name, X, 2, dtypes=x_dtypes)
    _integers("rows", rows)
    _shape("rows", rows, out.shape[:1])
    if X.shape[1] != out.shape[1]:
        raise ValueError(f"out must have {x_name}'s {X.shape[1]} columns, got shape {out.shape}")
    _in_range("rows", rows, X.shape[0], f"row indices of {x_name}")
    _apart("out", out, x_name, X)
    _apart("out", out, "rows", rows)


def gather_rows(out: F32, X: F32, rows: Ints) -> None:
    """Checked `kernels.gather_rows`: out[i] = X[rows[i]]; overwrites out."""
    _check_gather(out, X, rows, "X", (np.float32,))
    kernels.gather_rows(out, X, rows)


def gather_rows_scaled(out: F32, pixels_u8: npt.NDArray[np.uint8] | F32, rows: Ints, scale: float) -> None:
    """Checked `kernels.gather_rows_scaled`: out[i] = pixels_u8[rows[i]] * scale; overwrites out."""
    _check_gather(out, pixels_u8, rows, "pixels_u8", (np.uint8, np.float32))
    kernels.gather_rows_scaled(out, pixels_u8, rows, np.float32(check_positive_float(scale, "scale")))


def gather_labels(out: Ints, y: Ints, rows: Ints) -> None:
    """Checked `kernels.gather_labels`: out[i] = y[rows[i]]; overwrites out."""
    _integers("out", out, written=True)
    _integers("y", y)
    _integers("rows", rows)
    if not np.can_cast(y.dtype, out.dtype, "safe"):
        raise TypeError(f"out must hold y's dtype {y.dtype} without loss, got dtype {out.dtype}")
    _shape("rows", rows, out.shape)
    _in_range("rows", rows, len(y), "indices of y")
    _apart("out", out, "y", y)
    _apart("out", out, "rows", rows)
    kernels.gather_labels(out, y, rows)


def _momentum_factor(momentum: object) -> np.float32:
    momentum = _finite("momentum", momentum)
    if not 0 <= momentum < 1:
        raise ValueError(f"momentum must be in [0, 1), got {float(momentum)!r}")
    return momentum


def momentum_gemm_update_inplace(V: F32, A: F32, dZ: F32, lr: float, momentum: float) -> None:
    """Checked `kernels.momentum_gemm_update_inplace`: V = momentum * V - lr * A.T @ dZ; overwrites V."""
    _check_gemm(("V", "A", "dZ"), V, A, dZ, True, False)
    kernels.momentum_gemm_update_inplace(V, A, dZ, np.float32(check_positive_float(lr, "lr")),
                                         _momentum_factor(momentum))


def _check_same_shape_params(names: Sequence[str], *arrays: Any, written: int = 2) -> None:
    for i, (name, a) in enumerate(zip(names, arrays)):
        _float32(name, a, written=i < written)
        _shape(name, a, arrays[0].shape)
    for i, (name, a) in enumerate(zip(names, arrays)):
        for other_name, other in list(zip(names, arrays))[i + 1:]:
            _apart(name, a, other_name, other)


def momentum_apply_inplace(W: F32, V: F32, decay_step: float) -> None:
    """Checked `kernels.momentum_apply_inplace`: V -= decay_step * W, then W += V; overwrites V and W."""
    _check_same_shape_params(("W", "V"), W, V)
    step = _finite("decay_step", decay_step)
    if step < 0:
        raise ValueError(f"decay_step must be >= 0, got {float(step)!r}")
    kernels.momentum_apply_inplace(W, V, step)


def momentum_update_inplace(W: F32, V: F32, G: F32, lr: float, momentum: float, weight_decay: float,
                            nesterov: bool) -> None:
    """Checked `kernels.momentum_update_inplace`: V = momentum * V - lr * g, W += V (or Nesterov's step);
    overwrites V and W."""
    _check_same_shape_params(("W", "V", "G"), W, V, G)
    decay = _finite("weight_decay", weight_decay)
    if decay < 0:
        raise ValueError(f"weight_decay must be >= 0, got {float(decay)!r}")
    if not isinstance(nesterov, (bool, np.bool_)):
        raise TypeError(f"nesterov must be a bool, got {type(nesterov).__name__}")
    kernels.momentum_update_inplace(W, V, G, np.float32(check_positive_float(lr, "lr")), _momentum_factor(momentum),
                                    decay, bool(nesterov))


def _check_packed(name: str, P: F32, n_rows: int, n_columns: int, *, written: bool = False) -> None:
    _float32(name, P, 3, written=written)
    expected = kernels.packed_shape(n_rows, n_columns)
    if P.shape != expected:
        raise ValueError(f"{name} must have the packed shape {expected} of a ({n_rows}, {n_columns}) matrix "
                         f"(kernels.packed_shape), got {P.shape}")


def pack_weights_into(P: F32, W: F32) -> None:
    """Checked `kernels.pack_weights_into`: P = W in the packed layout; overwrites P."""
    _float32("W", W, 2)
    _check_packed("P", P, *W.shape, written=True)
    _apart("P", P, "W", W)
    kernels.pack_weights_into(P, W)


def unpack_weights_into(W: F32, P: F32) -> None:
    """Checked `kernels.unpack_weights_into`: W = the packed P, padding dropped; overwrites W."""
    _float32("W", W, 2, written=True)
    _check_packed("P", P, *W.shape)
    _apart("W", W, "P", P)
    kernels.unpack_weights_into(W, P)


def _check_packed_product(out_name: str, C: F32, a_name: str, A: F32, p_name: str, P: F32,
                          transposed: bool = False) -> None:
    _float32(out_name, C, 2, written=True)
    _float32(a_name, A, 2)
    if A.shape[0] != C.shape[0]:
        raise ValueError(f"{out_name} {C.shape} and {a_name} {A.shape} must have the same number of rows")
    if A.shape[1] == 0:
        raise ValueError(f"{a_name} must not be empty along the summed dimension, got shape {A.shape}")
    what = "W.T" if transposed else "W"
    _float32(p_name, P, 3)
    expected = kernels.packed_shape(A.shape[1], C.shape[1])
    if P.shape != expected:
        raise ValueError(f"{p_name} must be {what} packed for {a_name} {A.shape} @ {what} = {out_name} {C.shape}, "
                         f"shape {expected} (kernels.packed_shape), got {P.shape}")
    _apart(out_name, C, a_name, A)
    _apart(out_name, C, p_name, P)


def packed_matmul_into(C: F32, A: F32, P: F32) -> None:
    """Checked `kernels.packed_matmul_into`: C = A @ W, W packed in P; overwrites C."""
    _check_packed_product("C", C, "A", A, "P", P)
    kernels.packed_matmul_into(C, A, P)


def packed_matmul_bias_into(Z: F32, A: F32, P: F32, b: F32) -> None:
    """Checked `kernels.packed_matmul_bias_into`: Z = A @ W + b, W packed in P; overwrites Z."""
    _check_packed_product("Z", Z, "A", A, "P", P)
    _check_bias(Z, b)
    kernels.packed_matmul_bias_into(Z, A, P, b)


def packed_matmul_bias_relu_into(Z: F32, A: F32, P: F32, b: F32) -> None:
    """Checked `kernels.packed_matmul_bias_relu_into`: Z = max(A @ W + b, 0), W packed in P; overwrites Z."""
    _check_packed_product("Z", Z, "A", A, "P", P)
    _check_bias(Z, b)
    kernels.packed_matmul_bias_relu_into(Z, A, P, b)


def packed_matmul_relu_mask_into(dA: F32, dZ: F32, PT: F32, A: F32) -> None:
    """Checked `kernels.packed_matmul_relu_mask_into`: dA = (dZ @ W.T) * (A > 0), PT = W.T packed; overwrites dA."""
    _check_packed_product("dA", dA, "dZ", dZ, "PT", PT, transposed=True)
    _float32("A", A, 2)
    _shape("A", A, dA.shape)
    _apart("dA", dA, "A", A)
    kernels.packed_matmul_relu_mask_into(dA, dZ, PT, A)


def _check_packed_update(P: F32, A: F32, dZ: F32, weight_decay: float) -> np.float32:
    _float32("A", A, 2)
    _float32("dZ", dZ, 2)
    if A.shape[0] != dZ.shape[0]:
        raise ValueError(f"A {A.shape} and dZ {dZ.shape} must have the same number of rows (samples)")
    _check_packed("P", P, A.shape[1], dZ.shape[1], written=True)
    _apart("P", P, "A", A)
    _apart("P", P, "dZ", dZ)
    decay = _finite("weight_decay", weight_decay)
    if decay < 0:
        raise ValueError(f"weight_decay must be >= 0, got {float(decay)!r}")
    return decay


def packed_sgd_update_inplace(P: F32, A: F32, dZ: F32, lr: float, weight_decay: float) -> None:
    """Checked `kernels.packed_sgd_update_inplace`: W -= lr * (A.T @ dZ + weight_decay * W), W packed in P;
    overwrites P."""
    decay = _check_packed_update(P, A, dZ, weight_decay)
    kernels.packed_sgd_update_inplace(P, A, dZ, np.float32(check_positive_float(lr, "lr")), decay)


def packed_momentum_update_inplace(P: F32, V: F32, A: F32, dZ: F32, lr: float, momentum: float, weight_decay: float,
                                   nesterov: bool) -> None:
    """Checked `kernels.packed_momentum_update_inplace`: the momentum step on W and V, both packed;
    overwrites P and V."""
    decay = _check_packed_update(P, A, dZ, weight_decay)
    _check_packed("V", V, A.shape[1], dZ.shape[1], written=True)
    for name, a in (("P", P), ("A", A), ("dZ", dZ)):
        _apart("V", V, name, a)
    if not isinstance(nesterov, (bool, np.bool_)):
        raise TypeError(f"nesterov must be a bool, got {type(nesterov).__name__}")
    kernels.packed_momentum_update_inplace(P, V, A, dZ, np.float32(check_positive_float(lr, "lr")),
                                           _momentum_factor(momentum), decay, bool(nesterov))


def argmax_rows_into(out: Ints, Z: F32) -> None:
    """Checked `kernels.argmax_rows_into`: out[i] = Z[i].argmax(); overwrites out."""
    _integers("out", out, written=True)
    _float32("Z", Z, 2)
    _shape("out", out, Z.shape[:1])
    if Z.shape[1] == 0:
        raise ValueError(f"Z must have at least one column, got shape {Z.shape}")
    if Z.shape[1] - 1 > np.iinfo(out.dtype).max:
        raise TypeError(f"out must hold column indices up to {Z.shape[1] - 1}, got dtype {out.dtype}")
    kernels.argmax_rows_into(out, Z)


def packed_adam_update_inplace(P: F32, M: F32, S: F32, A: F32, dZ: F32, lr: float, beta1: float, beta2: float,
                               eps: float, weight_decay: float, step: int, decoupled: bool) -> None:
    """Checked `kernels.packed_adam_update_inplace`: Adam's (AdamW's) step t = step on W and its moments M, S,
    all packed; overwrites P, M and S."""
    decay = _check_packed_update(P, A, dZ, weight_decay)
    for name, state in (("M", M), ("S", S)):
        _check_packed(name, state, A.shape[1], dZ.shape[1], written=True)
        for other, a in (("P", P), ("A", A), ("dZ", dZ)):
            _apart(name, state, other, a)
    _apart("S", S, "M", M)
    betas = []
    for name, beta in (("beta1", beta1), ("beta2", beta2)):
        value = _finite(name, beta)
        if not 0 <= value < 1:
            raise ValueError(f"{name} must be in [0, 1), got {float(value)!r}")
        betas.append(value)
    eps32 = _finite("eps", eps)
    if not eps32 > 0:
        raise ValueError(f"eps must be > 0 in float32, got {float(eps32)!r}")
    if isinstance(step, bool) or not isinstance(step, numbers.Integral) or step < 1:
        raise ValueError(f"step must be an integer >= 1 (Adam's t, counted from 1), got {step!r}")
    if not isinstance(decoupled, (bool, np.bool_)):
        raise TypeError(f"decoupled must be a bool, got {type(decoupled).__name__}")
    kernels.packed_adam_update_inplace(P, M, S, A, dZ, np.float32(check_positive_float(lr, "lr")), *betas, eps32,
                                       decay, int(step), bool(decoupled))
