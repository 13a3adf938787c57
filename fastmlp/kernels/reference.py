"""What each public kernel computes, written in NumPy: the one home of the kernels' reference maths.

The numpy backend is built from these functions, the tests compare every kernel with them, and the
benchmarks time them beside the kernels. Float32 in, float32 out; matrices row-major as the kernels
take them: activations (batch, features), weights (fan_in, fan_out).

Forward (A_0 = X):  Z_l = A_{l-1} W_l + b_l,  A_l = relu(Z_l) for l < L,  P = softmax(Z_L)
Backward, with dZ_L = (P - onehot(y)) / n:
    dW_l = A_{l-1}^T dZ_l,  db_l = sum_i dZ_l[i],  dZ_{l-1} = (dZ_l W_l^T) * [A_{l-1} > 0]
The update rules (SGD, momentum, Nesterov, weight decay, Adam, AdamW) are fastmlp/optim.py's; the two
that keep state are here as in-place functions of NumPy arrays.

Imports only NumPy and the packed layout's panel width, so that any layer may use it.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from .tiles import TILE

FloatArray = npt.NDArray[np.float32]

# The smallest normal float32: Adam's moments below it are flushed to zero (see fastmlp/optim.py).
SMALLEST_NORMAL = np.float32(1.1754943508222875e-38)


def relu(Z: FloatArray) -> FloatArray:
    """max(Z, 0): `bias_relu_forward_inplace` after the bias."""
    return np.maximum(Z, np.float32(0))


def log_softmax(Z: FloatArray) -> FloatArray:
    """Row-wise log softmax of float32 logits (n, k), stable for any finite logits."""
    shifted = Z - Z.max(axis=1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


def softmax(Z: FloatArray) -> FloatArray:
    """Row-wise softmax: `softmax_inplace`."""
    return np.exp(log_softmax(Z))


def softmax_xent_grad(Z: FloatArray, y: npt.NDArray[np.integer]) -> FloatArray:
    """(softmax(Z) - onehot(y)) / n, the gradient of the mean cross-entropy: `softmax_xent_backward_inplace`."""
    dZ = softmax(Z)
    dZ[np.arange(len(y)), y] -= 1
    return dZ / np.float32(len(y))


def hidden_and_logits(weights: Sequence[FloatArray], biases: Sequence[FloatArray],
                      X: FloatArray) -> tuple[list[FloatArray], FloatArray]:
    """[X, A_1, ..., A_{L-1}] and the logits Z_L of the batch X through the layers (weights, biases)."""
    activations = [X]
    for W, b in zip(weights[:-1], biases[:-1]):
        activations.append(relu(activations[-1] @ W + b))
    return activations, activations[-1] @ weights[-1] + biases[-1]


def forward_probs(weights: Sequence[FloatArray], biases: Sequence[FloatArray], X: FloatArray) -> FloatArray:
    """Class probabilities of the batch X: softmax of the logits. Each row's last bits depend on the BLAS
    kernel that runs the products (OpenBLAS picks edge kernels by the batch's shape)."""
    return softmax(hidden_and_logits(weights, biases, X)[1])


def packed(W: FloatArray, panel_width: int | None = None) -> FloatArray:
    """W (K, N) in the packed layout of fastmlp/kernels/packed.py: panels of `panel_width` columns (this
    CPU's PANEL_WIDTH by default), each K rows deep, the last one padded with zeros; `pack_weights_into`."""
    K, N = W.shape
    width = TILE.nr if panel_width is None else panel_width
    panels = -(-N // width)
    padded = np.zeros((K, panels * width), np.float32)
    padded[:, :N] = W
    return np.ascontiguousarray(padded.reshape(K, panels, width).transpose(1, 0, 2))


def momentum_update(param: FloatArray, v: FloatArray, g: FloatArray, lr: float, momentum: float,
                    nesterov: bool) -> None:
    """v = momentum * v - lr * g, then param += momentum * v - lr * g (Nesterov) or v; both in place."""
    mu = np.float32(momentum)
    step = lr * g
    v *= mu
    v -= step
    v[np.abs(v) < SMALLEST_NORMAL] = 0  # subnormal velocities flushed to zero (fastmlp/optim.py)
    param += mu * v - step if nesterov else v


def momentum_update_decayed(W: FloatArray, V: FloatArray, G: FloatArray, lr: float, momentum: float,
                            weight_decay: float, nesterov: bool) -> FloatArray:
    """The momentum step on W with velocity V and gradient G + weight_decay * W; in place, W returned:
    `momentum_update_inplace`, and the packed momentum kernels after their weight gradient."""
    momentum_update(W, V, G + np.float32(weight_decay) * W, lr, momentum, nesterov)
    return W


def momentum_apply(W: FloatArray, V: FloatArray, decay_step: float) -> FloatArray:
    """V -= decay_step * W, then W += V; both in place, W returned: `momentum_apply_inplace`."""
    V -= decay_step * W
    W += V
    return W


def adam_update(param: FloatArray, m: FloatArray, s: FloatArray, g: FloatArray, lr: float,
                betas: tuple[float, float], eps: float, t: int) -> None:
    """Step t (from 1) of Kingma & Ba's Algorithm 1 on param with gradient g and moments m, s; all three in place."""
    beta1, beta2 = np.float32(betas[0]), np.float32(betas[1])
    m *= beta1
    m += (1 - beta1) * g                       # m_t = b1 m_{t-1} + (1 - b1) g_t
    s *= beta2
    s += (1 - beta2) * (g * g)                 # v_t = b2 v_{t-1} + (1 - b2) g_t^2
    m[np.abs(m) < SMALLEST_NORMAL] = 0         # subnormal moments flushed to zero (fastmlp/optim.py)
    s[s < SMALLEST_NORMAL] = 0
    m_hat = m / np.float32(1 - betas[0] ** t)  # bias-corrected first moment
    s_hat = s / np.float32(1 - betas[1] ** t)  # bias-corrected second moment
    param -= lr * m_hat / (np.sqrt(s_hat) + np.float32(eps))


def adamw_update(W: FloatArray, M: FloatArray, S: FloatArray, G: FloatArray, lr: float, beta1: float,
                 beta2: float, eps: float, weight_decay: float, t: int) -> FloatArray:
    """AdamW's step t: the decoupled decay W -= lr * wd * W, then Adam's step; in place, W returned."""
    W -= lr * weight_decay * W
    adam_update(W, M, S, G, lr, (beta1, beta2), eps, t)
    return W


def assert_close(actual: npt.ArrayLike, expected: npt.ArrayLike, rtol: float = 1e-5,
                 terms: npt.ArrayLike | None = None) -> None:
    """Raise AssertionError unless a kernel's result is within rtol of its reference, at the scale of the
    reference's largest entry, or of `terms`' when given: the magnitudes summed into it (|A| @ |W| for a
    product), since float32 rounds a sum at that scale and a sum that cancels is far smaller than its terms."""
    expected = np.asarray(expected)
    scale = max(float(np.abs(expected).max(initial=0.0)),
                0.0 if terms is None else float(np.abs(np.asarray(terms)).max(initial=0.0)), 1e-30)
    np.testing.assert_allclose(np.asarray(actual), expected, rtol=rtol, atol=rtol * scale)
