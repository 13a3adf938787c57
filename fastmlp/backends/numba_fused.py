"""The fused backend: Numba drives `fastmlp.kernels`; a whole epoch runs in one nopython call.

Buffers, per (layer sizes, batch size), made once and kept on the backend:
    acts[l]    (batch, sizes[l])    A_l; acts[0] the gathered batch, acts[L] the logits
    deltas[l]  (batch, sizes[l+1])  dZ of layer l; deltas[L-1] is acts[L] (the softmax kernel
                                    overwrites the logits with their gradient)
A step reads the old W_l for dZ_{l-1} = dZ_l W_l^T before the sgemm that folds the SGD
update into the weight gradient (W_l -= lr A_{l-1}^T dZ_l), so no dW buffer exists.
Weights, biases and buffers travel as homogeneous tuples, so one compiled function serves
every depth-L net and its layers are indexed in a runtime loop.
"""

import time
from collections import OrderedDict

import numpy as np
from numba import njit

from ..inputs import Pixels
from ..kernels import (
    bias_forward_inplace, bias_grad, bias_relu_forward_inplace, gather_labels, gather_rows_scaled,
    matmul_at_into, matmul_bt_into, matmul_into, momentum_apply_inplace, momentum_gemm_update_inplace,
    momentum_update_inplace, relu_backward_bias_grad_inplace, relu_backward_inplace, sgd_gemm_update_inplace,
    sgd_update_inplace, softmax_inplace, softmax_xent_backward_inplace,
)
from .base import BackendBase, epoch_chunks

_MAX_WORKSPACES = 4


@njit(cache=True)
def forward_logits_inplace(weights, biases, acts, n):
    """Forward pass of acts[0][:n] through the net; overwrites acts[1:] (acts[L] holds the logits)."""
    L = len(weights)
    for l in range(L):
        Z = acts[l + 1][:n]
        matmul_into(Z, acts[l][:n], weights[l])
        if l < L - 1:
            bias_relu_forward_inplace(Z, biases[l])
        else:
            bias_forward_inplace(Z, biases[l])


@njit(cache=True)
def forward_probs_inplace(weights, biases, acts):
    """Class probabilities of acts[0] in acts[L]; overwrites acts[1:]."""
    n = acts[0].shape[0]
    forward_logits_inplace(weights, biases, acts, n)
    softmax_inplace(acts[len(weights)])


@njit(cache=True)
def loss_and_grads_into(weights, biases, acts, deltas, labels, dWs, dbs):
    """Mean loss of the batch acts[0] with labels; overwrites acts[1:], deltas, dWs and dbs with the gradients."""
    n = labels.shape[0]
    L = len(weights)
    forward_logits_inplace(weights, biases, acts, n)
    loss = softmax_xent_backward_inplace(acts[L][:n], labels)
    for l in range(L - 1, -1, -1):
        dZ = deltas[l][:n]
        matmul_at_into(dWs[l], acts[l][:n], dZ)
        bias_grad(dZ, dbs[l])
        if l > 0:
            matmul_bt_into(deltas[l - 1][:n], dZ, weights[l])
            relu_backward_inplace(deltas[l - 1][:n], acts[l][:n])
    return loss


@njit(cache=True)
def sgd_step_inplace(weights, biases, acts, deltas, db, labels, lr):
    """One SGD step on the batch acts[0][:n], n = len(labels); overwrites weights, biases, acts[1:], deltas, db; returns the loss."""
    n = labels.shape[0]
    L = len(weights)
    forward_logits_inplace(weights, biases, acts, n)
    loss = softmax_xent_backward_inplace(acts[L][:n], labels)
    bias_grad(acts[L][:n], db[: acts[L].shape[1]])
    for l in range(L - 1, -1, -1):
        dZ = deltas[l][:n]
        A = acts[l][:n]
        sgd_update_inplace(biases[l], db[: dZ.shape[1]], lr)
        if l > 0:
            matmul_bt_into(deltas[l - 1][:n], dZ, weights[l])  # with W_l before its update
        sgd_gemm_update_inplace(weights[l], A, dZ, lr)
        if l > 0:  # the next layer down's dZ and its bias gradient, in one sweep
            relu_backward_bias_grad_inplace(deltas[l - 1][:n], A, db[: A.shape[1]])
    return loss


@njit(cache=True)
def momentum_step_inplace(weights, biases, velocity_w, velocity_b, acts, deltas, db, grads, labels, lr, momentum,
                          weight_decay, nesterov):
    """One step of momentum SGD (fastmlp/optim.py) on the batch acts[0][:n]; overwrites weights, biases, velocities, acts[1:], deltas, db, grads; returns the loss."""
    n = labels.shape[0]
    L = len(weights)
    forward_logits_inplace(weights, biases, acts, n)
    loss = softmax_xent_backward_inplace(acts[L][:n], labels)
    bias_grad(acts[L][:n], db[: acts[L].shape[1]])
    for l in range(L - 1, -1, -1):
        dZ = deltas[l][:n]
        A = acts[l][:n]
        momentum_update_inplace(biases[l], velocity_b[l], db[: dZ.shape[1]], lr, momentum, 0.0, nesterov)
        if l > 0:
            matmul_bt_into(deltas[l - 1][:n], dZ, weights[l])  # with W_l before its update
        if nesterov:  # W's step needs the gradient itself, beside the new velocity
            matmul_at_into(grads[l], A, dZ)
            momentum_update_inplace(weights[l], velocity_w[l], grads[l], lr, momentum, weight_decay, True)
        else:  # the velocity update folded into the weight-gradient gemm: no gradient buffer is read
            momentum_gemm_update_inplace(velocity_w[l], A, dZ, lr, momentum)
            momentum_apply_inplace(weights[l], velocity_w[l], lr * weight_decay)
        if l > 0:
            relu_backward_bias_grad_inplace(deltas[l - 1][:n], A, db[: A.shape[1]])
    return loss


@njit(cache=True)
def train_batches_momentum_inplace(weights, biases, velocity_w, velocity_b, X, scale, y, order, batch_size, lr,
                                   momentum, weight_decay, nesterov, acts, deltas, db, grads, labels):
    """`train_batches_inplace` with `momentum_step_inplace` steps; overwrites the velocities too; returns the summed loss."""
    n = order.shape[0]
    total = 0.0
    for start in range(0, n, batch_size):
        nb = min(batch_size, n - start)
        rows = order[start : start + nb]
        gather_rows_scaled(acts[0][:nb], X, rows, scale)
        gather_labels(labels[:nb], y, rows)
        total += momentum_step_inplace(weights, biases, velocity_w, velocity_b, acts, deltas, db, grads, labels[:nb],
                                       lr, momentum, weight_decay, nesterov) * nb
    return total


@njit(cache=True)
def train_batches_inplace(weights, biases, X, scale, y, order, batch_size, lr, acts, deltas, db, labels):
    """SGD over the rows of X (float32, or uint8 times scale) in `order`, batch by batch; returns the summed loss."""
    n = order.shape[0]
    total = 0.0
    for start in range(0, n, batch_size):
        nb = min(batch_size, n - start)
        rows = order[start : start + nb]
        gather_rows_scaled(acts[0][:nb], X, rows, scale)
        gather_labels(labels[:nb], y, rows)
        total += sgd_step_inplace(weights, biases, acts, deltas, db, labels[:nb], lr) * nb
    return total


class _Workspace:
    """Scratch buffers for batches of up to `rows` samples through a net of `layer_sizes`."""

    def __init__(self, layer_sizes, rows):
        self.layer_sizes = tuple(layer_sizes)
        self.acts = tuple(np.empty((rows, size), dtype=np.float32) for size in layer_sizes)
        # deltas[l] is the gradient of layer l's output, shaped like acts[l + 1]; the hidden
        # ones need their own buffers because the ReLU mask still reads acts[l + 1].
        self.deltas = tuple(np.empty((rows, size), dtype=np.float32) for size in layer_sizes[1:-1])
        self.deltas += (self.acts[-1],)
        self.db = np.empty(max(layer_sizes[1:]), dtype=np.float32)
        self.labels = np.empty(rows, dtype=np.int64)
        self._momentum = None

    def momentum_buffers(self, velocity):
        """(velocity_w, velocity_b, grads) for `momentum_step_inplace`, made on first use only.

        grads are weight gradients (Nesterov's step reads them). Without a velocity (weight decay
        alone) the step runs with momentum 0 on zeroed scratch velocities of the workspace.
        """
        if self._momentum is None:
            weight_shapes = list(zip(self.layer_sizes[:-1], self.layer_sizes[1:]))
            bias_shapes = [(fan_out,) for fan_out in self.layer_sizes[1:]]
            zeros = lambda shapes: tuple(np.zeros(shape, dtype=np.float32) for shape in shapes)  # noqa: E731
            self._momentum = (zeros(weight_shapes), zeros(bias_shapes), zeros(weight_shapes))
        scratch_w, scratch_b, grads = self._momentum
        if velocity is None:
            return scratch_w, scratch_b, grads
        return tuple(velocity.weights), tuple(velocity.biases), grads


class Backend(BackendBase):
    name = "numba"

    def __init__(self):
        self._workspaces = OrderedDict()

    def _workspace(self, layer_sizes, rows):
        key = (tuple(layer_sizes), rows)
        ws = self._workspaces.get(key)
        if ws is None:
            ws = self._workspaces[key] = _Workspace(layer_sizes, rows)
            while len(self._workspaces) > _MAX_WORKSPACES:
                self._workspaces.popitem(last=False)
        else:
            self._workspaces.move_to_end(key)
        return ws

    def _forward(self, model, X):
        acts = (X,) + tuple(np.empty((len(X), size), dtype=np.float32) for size in model.layer_sizes[1:])
        forward_probs_inplace(tuple(model.weights), tuple(model.biases), acts)
        return acts[-1]

    def _loss_and_grads(self, model, X, y):
        ws = self._workspace(model.layer_sizes, len(X))
        dW = [np.empty_like(W) for W in model.weights]
        db = [np.empty_like(b) for b in model.biases]
        loss = loss_and_grads_into(tuple(model.weights), tuple(model.biases), (X,) + ws.acts[1:], ws.deltas,
                                   y, tuple(dW), tuple(db))
        return float(loss), dW, db

    def _sgd_step(self, model, X, y, lr, momentum=None, nesterov=False, weight_decay=0.0, velocity=None):
        ws = self._workspace(model.layer_sizes, len(X))
        params = tuple(model.weights), tuple(model.biases)
        if momentum is None:  # plain SGD
            loss = sgd_step_inplace(*params, (X,) + ws.acts[1:], ws.deltas, ws.db, y, np.float32(lr))
        else:
            velocity_w, velocity_b, grads = ws.momentum_buffers(velocity)
            loss = momentum_step_inplace(*params, velocity_w, velocity_b, (X,) + ws.acts[1:], ws.deltas, ws.db,
                                         grads, y, np.float32(lr), np.float32(momentum), np.float32(weight_decay),
                                         nesterov)
        return float(loss)

    def _train_epoch(self, model, X, y, batch_size, lr, rng, progress=None, momentum=None, nesterov=False,
                     weight_decay=0.0, velocity=None):
        if isinstance(X, Pixels):
            data, scale = X.data, np.float32(X.scale)
        else:
            data, scale = X, np.float32(1.0)  # x * 1.0f is exact: one gather kernel serves both
        ws = self._workspace(model.layer_sizes, min(batch_size, len(data)))
        params = tuple(model.weights), tuple(model.biases)
        total = 0.0
        # One nopython call per chunk: the whole epoch without progress, ~50 calls with it.
        for chunk in epoch_chunks(rng.permutation(len(data)), batch_size, progress):
            if momentum is None:  # plain SGD
                total += train_batches_inplace(*params, data, scale, y, chunk, batch_size, np.float32(lr),
                                               ws.acts, ws.deltas, ws.db, ws.labels)
            else:
                velocity_w, velocity_b, grads = ws.momentum_buffers(velocity)
                total += train_batches_momentum_inplace(
                    *params, velocity_w, velocity_b, data, scale, y, chunk, batch_size, np.float32(lr),
                    np.float32(momentum), np.float32(weight_decay), nesterov, ws.acts, ws.deltas, ws.db, grads,
                    ws.labels)
            if progress is not None:
                progress(len(chunk))
        return total / len(data)

    def warm_up(self, model, *, pixels=False, momentum=False):
        """Compile (or load from Numba's cache) the epoch function for nets of model's depth; returns seconds.

        Compiled code depends only on the depth and the input dtype, so a tiny net of the same depth does.
        momentum=True compiles the momentum epoch function (which also serves Nesterov and weight decay).
        """
        from ..model import MLP
        from ..optim import Velocity

        tiny = MLP((2,) * len(model.layer_sizes), seed=0)
        X = Pixels(np.zeros((2, 2), dtype=np.uint8)) if pixels else np.zeros((2, 2), dtype=np.float32)
        sgd = {"momentum": 0.5, "velocity": Velocity(tiny)} if momentum else {}
        start = time.perf_counter()
        Backend().train_epoch(tiny, X, np.zeros(2, dtype=np.int64), batch_size=1, lr=0.01, rng=np.random.default_rng(0),
                              **sgd)
        return time.perf_counter() - start
