"""The fused backend: Numba drives `fastmlp.kernels`; a whole epoch runs in nopython code.

Buffers, per (layer sizes, batch size, threads), made once and kept on the backend:
    acts[l]    (batch, sizes[l])    A_l; acts[0] the gathered batch, acts[L] the logits
    deltas[l]  (batch, sizes[l+1])  dZ of layer l; deltas[L-1] is acts[L] (the softmax kernel
                                    overwrites the logits with their gradient)
A step reads the old W_l for dZ_{l-1} = dZ_l W_l^T before the sgemm that folds the SGD
update into the weight gradient (W_l -= lr A_{l-1}^T dZ_l), so no dW buffer exists.
Weights, biases and buffers travel as homogeneous tuples, so one compiled function serves
every depth-L net and its layers are indexed in a runtime loop.

An epoch runs on one thread per core (`train_batches_worker`), each calling single-threaded
BLAS: worker t gathers, forwards and backprops its own rows of every batch, then updates its
own rows of every W_l. A batch written by one core and multiplied by BLAS threads on both
cost 10-20 % of a step; here each core mostly reads what it wrote, and no BLAS thread spins
between calls while the other core does elementwise work. Threads meet at a spinning barrier
(fastmlp/spin_barrier.py) twice per batch.
"""

import threading
import time
from collections import OrderedDict

import numpy as np
from numba import njit

from ..blas_threads import blas_thread_count, one_blas_thread_here, single_threaded_blas, usable_cpus
from ..inputs import Pixels, check_positive_int
from ..kernels import (
    bias_forward_inplace,
    bias_grad,
    bias_relu_forward_inplace,
    gather_labels,
    gather_rows_scaled,
    matmul_at_into,
    matmul_bt_into,
    matmul_into,
    momentum_apply_inplace,
    momentum_gemm_update_inplace,
    momentum_update_inplace,
    relu_backward_bias_grad_inplace,
    relu_backward_inplace,
    sgd_gemm_update_inplace,
    sgd_update_inplace,
    softmax_inplace,
    softmax_xent_backward_inplace,
    softmax_xent_backward_rows_inplace,
)
from ..spin_barrier import abort_barrier, barrier_aborted, barrier_state, barrier_wait
from .base import BackendBase, epoch_chunks

_MAX_WORKSPACES = 4


@njit(cache=True)
def forward_logits_inplace(weights, biases, acts, r0, r1):
    """Forward pass of the rows r0:r1 of acts[0] through the net; overwrites those rows of acts[1:] (acts[L]: logits)."""
    L = len(weights)
    for l in range(L):
        Z = acts[l + 1][r0:r1]
        matmul_into(Z, acts[l][r0:r1], weights[l])
        if l < L - 1:
            bias_relu_forward_inplace(Z, biases[l])
        else:
            bias_forward_inplace(Z, biases[l])


@njit(cache=True)
def forward_probs_inplace(weights, biases, acts):
    """Class probabilities of acts[0] in acts[L]; overwrites acts[1:]."""
    n = acts[0].shape[0]
    forward_logits_inplace(weights, biases, acts, 0, n)
    softmax_inplace(acts[len(weights)])


@njit(cache=True)
def loss_and_grads_into(weights, biases, acts, deltas, labels, dWs, dbs):
    """Mean loss of the batch acts[0] with labels; overwrites acts[1:], deltas, dWs and dbs with the gradients."""
    n = labels.shape[0]
    L = len(weights)
    forward_logits_inplace(weights, biases, acts, 0, n)
    loss = softmax_xent_backward_inplace(acts[L][:n], labels)
    for l in range(L - 1, -1, -1):
        dZ = deltas[l][:n]
        matmul_at_into(dWs[l], acts[l][:n], dZ)
        bias_grad(dZ, dbs[l])
        if l > 0:
            matmul_bt_into(deltas[l - 1][:n], dZ, weights[l])
            relu_backward_inplace(deltas[l - 1][:n], acts[l][:n])
    return loss


# How a worker's part of an epoch updates the parameters (see `update_part`).
PLAIN_SGD, MOMENTUM, NESTEROV = 0, 1, 2


@njit(cache=True)
def part_of(t, n, parts):
    """(start, stop) of part t when range(n) is cut into `parts` near-equal contiguous parts."""
    return t * n // parts, (t + 1) * n // parts


@njit(cache=True)
def backprop_rows(weights, biases, acts, deltas, db_part, labels, r0, r1, nb):
    """Forward and backward of the rows r0:r1 of a batch of nb in acts[0]; returns their summed loss.

    Overwrites those rows of acts[1:] and deltas (dZ of every layer, the gradient scaled by 1/nb)
    and db_part[l] with the bias gradient of the rows. Reads W_l, never writes it.
    """
    L = len(weights)
    forward_logits_inplace(weights, biases, acts, r0, r1)
    loss = softmax_xent_backward_rows_inplace(acts[L][r0:r1], labels[r0:r1], nb)
    bias_grad(acts[L][r0:r1], db_part[L - 1, : acts[L].shape[1]])
    for l in range(L - 1, 0, -1):
        matmul_bt_into(deltas[l - 1][r0:r1], deltas[l][r0:r1], weights[l])
        relu_backward_bias_grad_inplace(deltas[l - 1][r0:r1], acts[l][r0:r1], db_part[l - 1, : acts[l].shape[1]])
    return loss


@njit(cache=True)
def update_part(t, workers, weights, biases, velocity_w, velocity_b, acts, deltas, db_parts, db, grads, nb, lr,
                momentum, weight_decay, rule):
    """Worker t's share of the update after a batch of nb: rows part_of(t) of every W_l, entries of every b_l.

    rule PLAIN_SGD folds W -= lr A^T dZ into one sgemm; MOMENTUM folds the velocity update into
    it (also weight decay without momentum, on a zero velocity); NESTEROV writes the weight
    gradient to grads first (fastmlp/optim.py). Sums the workers' db_parts into db.
    Overwrites those parts of weights, biases, velocities, grads and db.
    """
    for l in range(len(weights)):
        W = weights[l]
        k0, k1 = part_of(t, W.shape[0], workers)
        A = acts[l][:nb, k0:k1]
        dZ = deltas[l][:nb]
        if rule == PLAIN_SGD:
            sgd_gemm_update_inplace(W[k0:k1], A, dZ, lr)
        elif rule == MOMENTUM:
            momentum_gemm_update_inplace(velocity_w[l][k0:k1], A, dZ, lr, momentum)
            momentum_apply_inplace(W[k0:k1], velocity_w[l][k0:k1], lr * weight_decay)
        else:
            matmul_at_into(grads[l][k0:k1], A, dZ)
            momentum_update_inplace(W[k0:k1], velocity_w[l][k0:k1], grads[l][k0:k1], lr, momentum, weight_decay, True)
        b = biases[l]
        j0, j1 = part_of(t, b.shape[0], workers)
        for j in range(j0, j1):
            g = db_parts[0, l, j]
            for w in range(1, workers):
                g += db_parts[w, l, j]
            db[l, j] = g
        if rule == PLAIN_SGD:
            sgd_update_inplace(b[j0:j1], db[l, j0:j1], lr)
        else:
            momentum_update_inplace(b[j0:j1], velocity_b[l][j0:j1], db[l, j0:j1], lr, momentum, 0.0, rule == NESTEROV)


@njit(cache=True)
def train_step_inplace(weights, biases, velocity_w, velocity_b, acts, deltas, db_parts, db, grads, labels, lr,
                       momentum, weight_decay, rule):
    """One step on the batch acts[0][:n], n = len(labels), as one worker of `train_batches_worker` takes it; returns the mean loss.

    Overwrites the parameters (and, with momentum, the velocities), acts[1:], deltas, db_parts, db, grads.
    """
    n = labels.shape[0]
    loss = backprop_rows(weights, biases, acts, deltas, db_parts[0], labels, 0, n, n)
    update_part(0, 1, weights, biases, velocity_w, velocity_b, acts, deltas, db_parts, db, grads, n, lr, momentum,
                weight_decay, rule)
    return loss / n


@njit(nogil=True, cache=True)
def train_batches_worker(t, workers, barrier, weights, biases, velocity_w, velocity_b, X, scale, y, order, batch_size,
                         lr, momentum, weight_decay, rule, acts, deltas, db_parts, db, grads, labels):
    """Worker t of `workers` training on the rows of X (float32, or uint8 times scale) in `order`, batch by batch.

    Every worker calls it with the same arguments but t, each on its own thread with single-
    threaded BLAS. Per batch: worker t gathers, forwards and backprops its rows (part_of(t, nb));
    all meet at the barrier; each updates its part of the parameters (`update_part`); all meet
    again. Returns the summed loss of worker t's rows; stops early if the barrier is aborted.
    """
    n = order.shape[0]
    total = 0.0
    for start in range(0, n, batch_size):
        nb = min(batch_size, n - start)
        r0, r1 = part_of(t, nb, workers)
        rows = order[start + r0 : start + r1]
        gather_rows_scaled(acts[0][r0:r1], X, rows, scale)
        gather_labels(labels[r0:r1], y, rows)
        total += backprop_rows(weights, biases, acts, deltas, db_parts[t], labels, r0, r1, nb)
        if not barrier_wait(barrier, workers):
            break
        update_part(t, workers, weights, biases, velocity_w, velocity_b, acts, deltas, db_parts, db, grads, nb, lr,
                    momentum, weight_decay, rule)
        if not barrier_wait(barrier, workers):
            break
    return total


class _Workspace:
    """Scratch buffers for batches of up to `rows` samples through a net of `layer_sizes`, for `workers` threads."""

    def __init__(self, layer_sizes, rows, workers=1):
        self.layer_sizes = tuple(layer_sizes)
        self.acts = tuple(np.empty((rows, size), dtype=np.float32) for size in layer_sizes)
        # deltas[l] is the gradient of layer l's output, shaped like acts[l + 1]; the hidden
        # ones need their own buffers because the ReLU mask still reads acts[l + 1].
        self.deltas = tuple(np.empty((rows, size), dtype=np.float32) for size in layer_sizes[1:-1])
        self.deltas += (self.acts[-1],)
        width, depth = max(layer_sizes[1:]), len(layer_sizes) - 1
        self.db_layers = np.empty((depth, width), dtype=np.float32)  # per layer, summed over workers
        self.db_parts = np.empty((workers, depth, width), dtype=np.float32)  # per worker's rows
        self.labels = np.empty(rows, dtype=np.int64)
        self._momentum = None

    def momentum_buffers(self, velocity):
        """(velocity_w, velocity_b, grads) for a momentum `update_part`, made on first use only.

        grads are weight gradients (Nesterov's step reads them). Without a velocity (weight decay
        alone) the step runs with momentum 0 on zeroed scratch velocities of the workspace.
        """
        if self._momentum is None:
            weight_shapes = list(zip(self.layer_sizes[:-1], self.layer_sizes[1:]))
            bias_shapes = [(fan_out,) for fan_out in self.layer_sizes[1:]]
            zeros = lambda shapes: tuple(np.zeros(shape, dtype=np.float32) for shape in shapes)
            self._momentum = (zeros(weight_shapes), zeros(bias_shapes), zeros(weight_shapes))
        scratch_w, scratch_b, grads = self._momentum
        if velocity is None:
            return scratch_w, scratch_b, grads
        return tuple(velocity.weights), tuple(velocity.biases), grads


def training_threads():
    """Threads `train_epoch` uses: the BLAS thread count, at most the usable CPUs.

    So OPENBLAS_NUM_THREADS, threadpoolctl's limits and the CLI's --blas-threads set it.
    """
    return max(1, min(blas_thread_count(), usable_cpus()))


class Backend(BackendBase):
    """The fused backend. `train_epoch` runs on `threads` threads (default `training_threads()`).

    With more than one, each thread trains its share of every batch's rows with single-threaded
    BLAS (limited for the epoch through threadpoolctl) and updates its share of the parameters;
    the threads meet at a spinning barrier twice per batch. One thread runs the same code alone,
    leaving BLAS's own threads as they are. Results depend on the thread count (the order of
    float32 sums), never on timing: the same count gives bit-identical runs.
    """

    name = "numba"

    def __init__(self, threads=None):
        if threads is not None:
            threads = check_positive_int(threads, "threads")
        self.threads = threads
        self._workspaces = OrderedDict()
        self._epoch_lock = threading.Lock()  # one epoch at a time: the workers share the workspace

    def _workspace(self, layer_sizes, rows, workers=1):
        key = (tuple(layer_sizes), rows, workers)
        ws = self._workspaces.get(key)
        if ws is None:
            ws = self._workspaces[key] = _Workspace(layer_sizes, rows, workers)
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
        weights, biases = tuple(model.weights), tuple(model.biases)
        rule, (velocity_w, velocity_b, grads) = self._update_rule(ws, weights, biases, momentum, nesterov, velocity)
        loss = train_step_inplace(weights, biases, velocity_w, velocity_b, (X,) + ws.acts[1:], ws.deltas, ws.db_parts,
                                  ws.db_layers, grads, y, np.float32(lr), np.float32(momentum or 0.0),
                                  np.float32(weight_decay), rule)
        return float(loss)

    @staticmethod
    def _update_rule(ws, weights, biases, momentum, nesterov, velocity):
        """(rule, (velocity_w, velocity_b, grads)) for `update_part`; plain SGD never touches the
        velocity slots, so the parameters stand in for them."""
        if momentum is None:
            return PLAIN_SGD, (weights, biases, weights)
        return NESTEROV if nesterov else MOMENTUM, ws.momentum_buffers(velocity)

    def _train_epoch(self, model, X, y, batch_size, lr, rng, progress=None, momentum=None, nesterov=False,
                     weight_decay=0.0, velocity=None):
        if isinstance(X, Pixels):
            data, scale = X.data, np.float32(X.scale)
        else:
            data, scale = X, np.float32(1.0)  # x * 1.0f is exact: one gather kernel serves both
        rows = min(batch_size, len(data))
        workers = min(self.threads or training_threads(), rows)
        order = rng.permutation(len(data))
        with self._epoch_lock:
            ws = self._workspace(model.layer_sizes, rows, workers)
            weights, biases = tuple(model.weights), tuple(model.biases)
            rule, (velocity_w, velocity_b, grads) = self._update_rule(ws, weights, biases, momentum, nesterov, velocity)

            def run(t, part_of_order):
                return train_batches_worker(
                    t, workers, barrier, weights, biases, velocity_w, velocity_b, data, scale, y, part_of_order,
                    batch_size, np.float32(lr), np.float32(momentum or 0.0), np.float32(weight_decay), rule,
                    ws.acts, ws.deltas, ws.db_parts, ws.db_layers, grads, ws.labels)

            barrier = barrier_state()
            if workers == 1:
                return self._run_chunks(run, order, batch_size, progress, barrier) / len(data)
            with single_threaded_blas():
                return self._run_workers(run, workers, order, batch_size, progress, barrier) / len(data)

    def between_epochs(self):
        """Run BLAS single-threaded for the caller's work between epochs (a Trainer's evaluation).

        After a multi-threaded call an OpenBLAS thread spins for ~0.1 s, and would take a core
        from the start of the next epoch, whose workers need both.
        """
        return single_threaded_blas()

    @staticmethod
    def _run_chunks(run, order, batch_size, progress, barrier):
        """Worker 0's part of the epoch on this thread: one nopython call, or ~50 with progress."""
        total = 0.0
        for chunk in epoch_chunks(order, batch_size, progress):
            total += run(0, chunk)
            if barrier_aborted(barrier):
                break
            if progress is not None:
                progress(len(chunk))
        return total

    def _run_workers(self, run, workers, order, batch_size, progress, barrier):
        """Workers 1.. on threads of their own over the whole order, worker 0 here; returns the summed loss.

        If any of them fails (or progress raises, or Ctrl-C arrives between chunks), the barrier
        is aborted so the others stop at their next meeting, and the first error is raised.
        """
        totals, errors = [0.0] * workers, []

        def helper(t):
            try:
                one_blas_thread_here()  # in case the count is per thread; undone when the epoch ends
                totals[t] = run(t, order)
            except BaseException as exc:  # handed to the caller's thread below
                errors.append(exc)
                abort_barrier(barrier)

        threads = [threading.Thread(target=helper, args=(t,), name=f"fastmlp-worker-{t}", daemon=True)
                   for t in range(1, workers)]
        try:
            for thread in threads:
                thread.start()
            totals[0] = self._run_chunks(run, order, batch_size, progress, barrier)
        except BaseException:
            abort_barrier(barrier)
            raise
        finally:
            for thread in threads:
                if thread.ident is not None:  # started
                    thread.join()
        if errors:
            raise errors[0]
        return sum(totals)

    def warm_up(self, model, *, pixels=False, momentum=False):
        """Compile (or load from Numba's cache) the epoch function for nets of model's depth; returns seconds.

        Compiled code depends only on the depth and the input dtype, so a tiny net of the same depth does.
        One compiled function serves plain SGD, momentum, Nesterov and weight decay, so momentum is
        accepted for compatibility and changes nothing.
        """
        from ..model import MLP

        tiny = MLP((2,) * len(model.layer_sizes), seed=0)
        X = Pixels(np.zeros((2, 2), dtype=np.uint8)) if pixels else np.zeros((2, 2), dtype=np.float32)
        start = time.perf_counter()
        Backend(threads=1).train_epoch(tiny, X, np.zeros(2, dtype=np.int64), batch_size=1, lr=0.01,
                                       rng=np.random.default_rng(0))
        return time.perf_counter() - start
