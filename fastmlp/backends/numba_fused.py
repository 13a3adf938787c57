"""The fused backend: fastmlp's own SIMD kernels (fastmlp.kernels.packed) run whole epochs in nopython code.

Weight-stationary training. For an epoch (or one `sgd_step`) each W_l is packed once into
column panels (fastmlp/kernels/packed.py), and so are W_l.T for l >= 1 (read by the input
gradient) and the velocities (or Adam's two moments); they are unpacked into the model's own
arrays (and the Velocity's or AdamMoments') when the epoch ends, so a caller never sees them.
Biases and their velocities or moments stay in their own arrays throughout. Adam's step count t
advances per batch inside the epoch: the epoch starts from the moments' t, batch s of it is step
t + s + 1, and its bias corrections are computed in nopython code.

Buffers, per (layer sizes, batch size, workers), made once and kept on the backend:
    inputs[0|1]  (batch, sizes[0])    the gathered batch, two of them: batch s uses inputs[s % 2]
    acts[l]      (batch, sizes[l+1])  the output of layer l; acts[L-1] the logits
    deltas[l]    (batch, sizes[l+1])  dZ_l; deltas[L-1] is acts[L-1] (the softmax kernel overwrites
                                      the logits with their gradient)

A step on `workers` threads (`step_worker`), worker t of them, three phases between barriers:
  1. layer 0 forward for every row of the batch, on worker t's panels of W_0 (its columns);
  2. for worker t's rows of the batch: the other layers' forward, softmax + cross-entropy, and
     the backward pass down to dZ_0, dZ_{l-1} = (dZ_l W_l^T) * (A_{l-1} > 0) reading W_l.T packed;
  3. the updates, the weight-gradient product fused with the SGD / momentum / Adam rule: worker t's
     panels of W_0 (the same panels as in phase 1, so they stay in that core's cache: 200 KB of
     the 400 KB W_0 of 784-128-64-10 per core, 1 MB of L2), its share of the rows of each
     other W_l (then of W_l.T), and its share of each bias.
Before phase 1 each worker gathers its rows of the next batch; a barrier ends each phase, and
the gather's barrier also ends phase 3 (two input buffers let a worker gather batch s + 1 while
another still reads batch s in phase 3). A barrier spins briefly, then yields (spin_barrier.py).
"""

import threading
import time
from collections import OrderedDict

import numpy as np

from .._jit import cached_njit
from ..blas_threads import blas_thread_count, single_threaded_blas, usable_cpus
from ..inputs import Pixels, check_positive_int
from ..kernels.elementwise import (
    momentum_update_inplace,
    sgd_update_inplace,
    softmax_inplace,
    softmax_xent_backward_rows_inplace,
)
from ..kernels.gather import gather_labels, gather_rows_scaled, prefetch_rows_to_l2
from ..kernels.packed import (
    ADAM,
    ADAMW,
    BIAS,
    BIAS_RELU,
    MOMENTUM,
    NESTEROV,
    PANEL_WIDTH,
    PLAIN_SGD,
    RELU_MASK,
    adam_corrections,
    forward_part,
    pack_weights_into,
    packed_shape,
    transpose_packed_into,
    unpack_weights_into,
    update_part,
)
from ..optim import SMALLEST_NORMAL
from ..spin_barrier import abort_barrier, barrier_aborted, barrier_state, barrier_wait
from ..thread_policy import CpuLoad, free_cores, others_running
from .base import BackendBase, epoch_ranges

_MAX_WORKSPACES = 4
# A worker takes at least this many rows of a batch: below it, the two barriers of each step cost
# more than the rows' share of the work saves (so batch 32 runs on at most 2 workers).
MIN_ROWS_PER_WORKER = 16
# How long the CPU load is watched before the worker count follows it (see Backend._free_threads).
LOAD_WINDOW_SECONDS = 1.0


@cached_njit
def part_of(t, n, parts):
    """(start, stop) of part t when range(n) is cut into `parts` near-equal contiguous parts."""
    return t * n // parts, (t + 1) * n // parts


@cached_njit
def layer_input(x, acts, l):
    """The input of layer l: the batch x for l = 0, else the output of layer l - 1."""
    return x if l == 0 else acts[l - 1]


@cached_njit
def forward_rows(packed, biases, x, acts, first, r0, r1):
    """Layers first.. forward of rows r0:r1 (bias + ReLU, bias alone for the logits); overwrites those rows of acts[first:]."""
    L = len(packed)
    for l in range(first, L):
        out = acts[l]
        forward_part(out, layer_input(x, acts, l), packed[l], biases[l], out, BIAS_RELU if l < L - 1 else BIAS, r0, r1,
                     0, packed[l].shape[0])


@cached_njit
def backward_rows(transposed, acts, deltas, r0, r1):
    """dZ_{l-1} = (dZ_l @ W_l.T) * (A_{l-1} > 0) for rows r0:r1, from the top layer down; overwrites those rows of deltas[:-1]."""
    for l in range(len(transposed) - 1, 0, -1):
        forward_part(deltas[l - 1], deltas[l], transposed[l], acts[l - 1][0], acts[l - 1], RELU_MASK, r0, r1, 0,
                     transposed[l].shape[0])


@cached_njit
def adam_bias_update(b, mb, sb, g, lr, beta1, beta2, eps, bc1, bc2):
    """The Adam step of simd_ir.adam_tile on a bias (never decayed), in that kernel's arrangement of the formulas
    (subnormal moments flushed to zero): mb, sb its moments, g its gradient, (bc1, bc2) adam_corrections of the
    step; all float32; overwrites b, mb and sb."""
    one = np.float32(1.0)
    neg_step = -(lr * bc1 / bc2)
    eps_over_bc2 = eps / bc2
    for j in range(b.shape[0]):
        m = mb[j] + (one - beta1) * (g[j] - mb[j])
        v = sb[j] + (one - beta2) * (g[j] * g[j] - sb[j])
        if abs(m) < SMALLEST_NORMAL:
            m = np.float32(0.0)
        if v < SMALLEST_NORMAL:
            v = np.float32(0.0)
        mb[j] = m
        sb[j] = v
        b[j] += neg_step * (m / (np.sqrt(v) + eps_over_bc2))


@cached_njit
def bias_step(b, vb, sb, dZ, db, nb, c0, c1, lr, momentum, rule, beta2, eps, bc1, bc2):
    """db[c0:c1] = column sums of dZ[:nb, c0:c1]; then entries c0:c1 of b (and vb, sb) updated by rule; overwrites them and db."""
    for j in range(c0, c1):
        db[j] = 0.0
    for i in range(nb):
        for j in range(c0, c1):
            db[j] += dZ[i, j]
    if rule == PLAIN_SGD:
        sgd_update_inplace(b[c0:c1], db[c0:c1], lr)
    elif rule == ADAM or rule == ADAMW:
        adam_bias_update(b[c0:c1], vb[c0:c1], sb[c0:c1], db[c0:c1], lr, momentum, beta2, eps, bc1, bc2)
    else:
        momentum_update_inplace(b[c0:c1], vb[c0:c1], db[c0:c1], lr, momentum, 0.0, rule == NESTEROV)


@cached_njit
def update_worker_part(t, workers, packed, transposed, velocity_w, biases, velocity_b, x, acts, deltas, db, nb, lr,
                       momentum, weight_decay, rule, second_w, second_b, beta2, eps, bc1, bc2):
    """Phase 3 of a step, worker t's share: its panels of W_0, its rows of each other W_l (and W_l.T), its bias entries.

    Overwrites those parts of packed, transposed, the velocities (Adam: first moments, and
    second_w / second_b the second moments), the biases and db.
    """
    L = len(packed)
    for l in range(L):
        P = packed[l]
        A = layer_input(x, acts, l)
        if l == 0:  # weight-stationary: the panels this worker's phase 1 read
            p0, p1 = part_of(t, P.shape[0], workers)
            update_part(P, velocity_w[l], A, deltas[l], nb, 0, P.shape[1], p0, p1, lr, momentum, weight_decay, rule,
                        second_w[l], beta2, eps, bc1, bc2)
            c0, c1 = min(p0 * PANEL_WIDTH, biases[l].shape[0]), min(p1 * PANEL_WIDTH, biases[l].shape[0])
        else:
            k0, k1 = part_of(t, P.shape[1], workers)
            update_part(P, velocity_w[l], A, deltas[l], nb, k0, k1, 0, P.shape[0], lr, momentum, weight_decay, rule,
                        second_w[l], beta2, eps, bc1, bc2)
            transpose_packed_into(transposed[l], P, k0, k1)
            c0, c1 = part_of(t, biases[l].shape[0], workers)
        bias_step(biases[l], velocity_b[l], second_b[l], deltas[l], db[l], nb, c0, c1, lr, momentum, rule, beta2, eps,
                  bc1, bc2)


@cached_njit(nogil=True)
def step_worker(t, workers, barrier, packed, transposed, velocity_w, biases, velocity_b, x, labels, nb, lr, momentum,
                weight_decay, rule, acts, deltas, db, second_w, second_b, beta2, eps, step):
    """Worker t's part of one step on the batch x[:nb], labels[:nb] (gathered, every worker past its barrier).

    step: Adam's step count t of this step (from 1), for its bias corrections; unused by SGD.

    Returns (the summed loss of the worker's rows, False if the barrier was aborted).
    Overwrites acts, deltas, db and worker t's parts of the parameters (see the module doc).
    """
    L = len(packed)
    p0, p1 = part_of(t, packed[0].shape[0], workers)
    forward_part(acts[0], x, packed[0], biases[0], acts[0], BIAS_RELU if L > 1 else BIAS, 0, nb, p0, p1)
    if not barrier_wait(barrier, workers):
        return 0.0, False
    r0, r1 = part_of(t, nb, workers)
    forward_rows(packed, biases, x, acts, 1, r0, r1)
    loss = softmax_xent_backward_rows_inplace(acts[L - 1][r0:r1], labels[r0:r1], nb)
    backward_rows(transposed, acts, deltas, r0, r1)
    if not barrier_wait(barrier, workers):
        return 0.0, False
    bc1 = bc2 = 0.0
    if rule == ADAM or rule == ADAMW:
        bc1, bc2 = adam_corrections(momentum, beta2, step)
    update_worker_part(t, workers, packed, transposed, velocity_w, biases, velocity_b, x, acts, deltas, db, nb, lr,
                       momentum, weight_decay, rule, second_w, second_b, beta2, eps, np.float32(bc1), np.float32(bc2))
    return loss, True


@cached_njit(nogil=True)
def train_batches_worker(t, workers, barrier, packed, transposed, velocity_w, biases, velocity_b, X, scale, y, order,
                         begin, end, batch_size, lr, momentum, weight_decay, rule, inputs, acts, deltas, db, labels,
                         second_w, second_b, beta2, eps, first_step):
    """Worker t of `workers` training on the batches of order[begin:end] (begin a multiple of batch_size).

    Batch s of the epoch (order[s * batch_size:]) is Adam's step first_step + s.

    X is float32, or uint8 pixels times scale. Every worker calls it with the same batches, each
    on its own thread. Returns the summed loss of worker t's rows; stops early if the barrier is
    aborted.
    """
    total = 0.0
    for start in range(begin, end, batch_size):
        nb = min(batch_size, end - start)
        x = inputs[(start // batch_size) % 2]
        r0, r1 = part_of(t, nb, workers)
        rows = order[start + r0 : start + r1]
        gather_rows_scaled(x[r0:r1], X, rows, scale)
        gather_labels(labels[r0:r1], y, rows)
        following = start + batch_size
        if following < end:  # the next batch's rows, fetched while this step computes
            n0, n1 = part_of(t, min(batch_size, end - following), workers)
            prefetch_rows_to_l2(X, order[following + n0 : following + n1])
        if not barrier_wait(barrier, workers):
            break
        loss, ok = step_worker(t, workers, barrier, packed, transposed, velocity_w, biases, velocity_b, x, labels, nb,
                               lr, momentum, weight_decay, rule, acts, deltas, db, second_w, second_b, beta2, eps,
                               first_step + start // batch_size)
        if not ok:
            break
        total += loss
    return total


@cached_njit
def forward_probs_inplace(packed, biases, x, acts):
    """Class probabilities of the rows of x in acts[-1]; overwrites acts."""
    forward_rows(packed, biases, x, acts, 0, 0, x.shape[0])
    softmax_inplace(acts[len(packed) - 1])


@cached_njit
def loss_and_grads_into(packed, transposed, biases, x, labels, acts, deltas, grads_packed, dbs):
    """Mean loss of the batch x with labels; overwrites acts, deltas, grads_packed (dW_l packed) and dbs with the gradients.

    grads_packed must hold zeros: the update kernel with lr = -1 turns a zero W into
    0 + 1 * (A^T dZ), the gradient itself (both steps exact in float32).
    """
    n = x.shape[0]
    L = len(packed)
    forward_rows(packed, biases, x, acts, 0, 0, n)
    loss = softmax_xent_backward_rows_inplace(acts[L - 1], labels, n) / n
    backward_rows(transposed, acts, deltas, 0, n)
    for l in range(L):
        G = grads_packed[l]
        update_part(G, G, layer_input(x, acts, l), deltas[l], n, 0, G.shape[1], 0, G.shape[0], -1.0, 0.0, 0.0,
                    PLAIN_SGD, G, 0.0, 0.0, 0.0, 0.0)
        for j in range(dbs[l].shape[0]):
            dbs[l][j] = 0.0
        for i in range(n):
            for j in range(dbs[l].shape[0]):
                dbs[l][j] += deltas[l][i, j]
    return loss


class _Packed:
    """One net's parameters in the packed layout: W_l, W_l.T (for l >= 1), the velocities and Adam's moments."""

    def __init__(self, layer_sizes):
        shapes = list(zip(layer_sizes[:-1], layer_sizes[1:]))
        self.weights = tuple(np.zeros(packed_shape(k, n), dtype=np.float32) for k, n in shapes)
        # W_0.T is never read (no input gradient for the data): a one-panel stand-in keeps the tuple uniform.
        self.transposed = (np.zeros((1, 1, PANEL_WIDTH), dtype=np.float32),) + tuple(
            np.zeros(packed_shape(n, k), dtype=np.float32) for k, n in shapes[1:])
        self._velocity = self._second = None

    def velocity(self):
        """The packed velocities (Adam: the first moments)."""
        if self._velocity is None:
            self._velocity = tuple(np.zeros_like(P) for P in self.weights)
        return self._velocity

    def second_moments(self):
        """The packed second moments of Adam."""
        if self._second is None:
            self._second = tuple(np.zeros_like(P) for P in self.weights)
        return self._second

    def _states(self, velocity, moments):
        """(packed buffers, the caller's arrays) pairs of the optimiser state in use."""
        if moments is not None:
            return [(self.velocity(), moments.first.weights), (self.second_moments(), moments.second.weights)]
        return [] if velocity is None else [(self.velocity(), velocity.weights)]

    def load(self, model, velocity, moments=None):
        """Pack the model's weights (and the velocity's, or Adam's moments) into these buffers."""
        for l, W in enumerate(model.weights):
            pack_weights_into(self.weights[l], W)
            if l > 0:
                transpose_packed_into(self.transposed[l], self.weights[l], 0, W.shape[0])
        for packed, arrays in self._states(velocity, moments):
            for P, W in zip(packed, arrays):
                pack_weights_into(P, W)

    def store(self, model, velocity, moments=None):
        """Unpack into the model's own weight arrays (and the velocity's, or Adam's moments)."""
        for W, P in zip(model.weights, self.weights):
            unpack_weights_into(W, P)
        for packed, arrays in self._states(velocity, moments):
            for W, P in zip(arrays, packed):
                unpack_weights_into(W, P)


class _Workspace:
    """Scratch buffers for batches of up to `rows` samples through a net of `layer_sizes`."""

    def __init__(self, layer_sizes, rows):
        self.layer_sizes = tuple(layer_sizes)
        self.inputs = tuple(np.zeros((rows, layer_sizes[0]), dtype=np.float32) for _ in range(2))
        self.acts = tuple(np.zeros((rows, size), dtype=np.float32) for size in layer_sizes[1:])
        # The hidden deltas need their own buffers because the ReLU mask still reads acts.
        self.deltas = tuple(np.zeros((rows, size), dtype=np.float32) for size in layer_sizes[1:-1]) + (self.acts[-1],)
        self.db = tuple(np.zeros(size, dtype=np.float32) for size in layer_sizes[1:])
        self.labels = np.zeros(rows, dtype=np.int64)


def training_threads():
    """Threads `train_epoch` uses by default: the BLAS thread count, at most the usable CPUs.

    So OPENBLAS_NUM_THREADS, threadpoolctl's limits and the CLI's --blas-threads set it.
    """
    return max(1, min(blas_thread_count(), usable_cpus()))


def epoch_workers(threads, batch_rows, layer_sizes):
    """Workers an epoch runs on: `threads`, but no more than a batch gives MIN_ROWS_PER_WORKER rows
    each, nor than the first layer has panels (each worker owns whole panels of W_0)."""
    panels = packed_shape(layer_sizes[0], layer_sizes[1])[0]
    return max(1, min(threads, batch_rows // MIN_ROWS_PER_WORKER, panels))


class Backend(BackendBase):
    """The fused backend. `train_epoch` runs on up to `threads` worker threads (default `training_threads()`).

    The workers are fastmlp's own threads: no BLAS runs in a step. Without `threads`, an epoch
    also uses no more workers than the cores that other processes left free during the last one
    (`_free_threads`). Their number is also capped by `epoch_workers` (MIN_ROWS_PER_WORKER rows
    of a batch each, whole panels of the first layer each), so more cores than a batch can use
    leave the extra ones idle rather than slowing every step. Results depend on the worker count
    (the order of float32 sums), never on timing: the same count gives bit-identical runs, and a
    fixed `threads` gives the same bits under any load.
    """

    name = "numba"

    def __init__(self, threads=None):
        if threads is not None:
            threads = check_positive_int(threads, "threads")
        self.threads = threads
        self._workspaces = OrderedDict()
        self._packed = OrderedDict()
        self._epoch_lock = threading.Lock()  # one epoch at a time: the workers share the workspace
        self._load = None  # the CPU load (CpuLoad) watched by `_free_threads` when threads is None

    @staticmethod
    def _cached(cache, key, make):
        value = cache.get(key)
        if value is None:
            value = cache[key] = make()
            while len(cache) > _MAX_WORKSPACES:
                cache.popitem(last=False)
        else:
            cache.move_to_end(key)
        return value

    def _workspace(self, layer_sizes, rows):
        return self._cached(self._workspaces, (tuple(layer_sizes), rows), lambda: _Workspace(layer_sizes, rows))

    def _packed_params(self, model, velocity=None, moments=None):
        """The model's parameters packed (see `_Packed`), loaded from the model now."""
        packed = self._cached(self._packed, tuple(model.layer_sizes), lambda: _Packed(model.layer_sizes))
        packed.load(model, velocity, moments)
        return packed

    def _forward(self, model, X):
        packed = self._packed_params(model)
        acts = tuple(np.empty((len(X), size), dtype=np.float32) for size in model.layer_sizes[1:])
        forward_probs_inplace(packed.weights, tuple(model.biases), X, acts)
        return acts[-1]

    def _loss_and_grads(self, model, X, y):
        packed = self._packed_params(model)
        ws = _Workspace(model.layer_sizes, len(X))
        grads = tuple(np.zeros_like(P) for P in packed.weights)
        db = [np.empty_like(b) for b in model.biases]
        loss = loss_and_grads_into(packed.weights, packed.transposed, tuple(model.biases), X, y, ws.acts, ws.deltas,
                                   grads, tuple(db))
        dW = [np.empty_like(W) for W in model.weights]
        for W, G in zip(dW, grads):
            unpack_weights_into(W, G)
        return float(loss), dW, db

    @staticmethod
    def _update_rule(model, packed, momentum, nesterov, velocity, optimizer="sgd", betas=None, eps=None,
                     moments=None):
        """The rule and its state for the step: (rule, velocity_w, velocity_b, second_w, second_b, momentum
        or beta1, beta2, eps, Adam's step count so far). Slots a rule never reads hold the parameters."""
        weights, biases = packed.weights, tuple(model.biases)
        if optimizer in ("adam", "adamw"):
            return (ADAMW if optimizer == "adamw" else ADAM, packed.velocity(), tuple(moments.first.biases),
                    packed.second_moments(), tuple(moments.second.biases), np.float32(betas[0]), np.float32(betas[1]),
                    np.float32(eps), moments.step)
        zero = np.float32(0.0)
        if not momentum:
            return PLAIN_SGD, weights, biases, weights, biases, zero, zero, zero, 0
        return (NESTEROV if nesterov else MOMENTUM, packed.velocity(), tuple(velocity.biases), weights, biases,
                np.float32(momentum), zero, zero, 0)

    def _sgd_step(self, model, X, y, lr, momentum=None, nesterov=False, weight_decay=0.0, velocity=None,
                  optimizer="sgd", betas=None, eps=None, moments=None):
        with self._epoch_lock:
            ws = self._workspace(model.layer_sizes, len(X))
            packed = self._packed_params(model, velocity, moments)
            (rule, velocity_w, velocity_b, second_w, second_b, mu, beta2, eps32,
             steps) = self._update_rule(model, packed, momentum, nesterov, velocity, optimizer, betas, eps, moments)
            ws.labels[:] = y
            try:
                loss, _ = step_worker(0, 1, barrier_state(), packed.weights, packed.transposed, velocity_w,
                                      tuple(model.biases), velocity_b, X, ws.labels, len(X), np.float32(lr), mu,
                                      np.float32(weight_decay), rule, ws.acts, ws.deltas, ws.db, second_w, second_b,
                                      beta2, eps32, steps + 1)
            finally:
                packed.store(model, velocity if rule in (MOMENTUM, NESTEROV) else None, moments)
                if moments is not None:
                    moments.step += 1
        return float(loss) / len(X)

    def _train_epoch(self, model, X, y, batch_size, lr, rng, progress=None, momentum=None, nesterov=False,
                     weight_decay=0.0, velocity=None, optimizer="sgd", betas=None, eps=None, moments=None):
        if isinstance(X, Pixels):
            data, scale = X.data, np.float32(X.scale)
        else:
            data, scale = X, np.float32(1.0)  # x * 1.0f is exact: one gather kernel serves both
        rows = min(batch_size, len(data))
        workers = epoch_workers(self.threads or self._free_threads(), rows, model.layer_sizes)
        order = rng.permutation(len(data))
        with self._epoch_lock:
            ws = self._workspace(model.layer_sizes, rows)
            packed = self._packed_params(model, velocity, moments)
            (rule, velocity_w, velocity_b, second_w, second_b, mu, beta2, eps32,
             steps) = self._update_rule(model, packed, momentum, nesterov, velocity, optimizer, betas, eps, moments)
            biases = tuple(model.biases)

            def run(t, begin, end):
                return train_batches_worker(
                    t, workers, barrier, packed.weights, packed.transposed, velocity_w, biases, velocity_b, data,
                    scale, y, order, begin, end, batch_size, np.float32(lr), mu, np.float32(weight_decay), rule,
                    ws.inputs, ws.acts, ws.deltas, ws.db, ws.labels, second_w, second_b, beta2, eps32, steps + 1)

            barrier = barrier_state()
            try:
                if workers == 1:
                    total = self._run_chunks(run, len(order), batch_size, progress, barrier)
                else:
                    total = self._run_workers(run, workers, len(order), batch_size, progress, barrier)
            finally:
                packed.store(model, velocity if rule in (MOMENTUM, NESTEROV) else None, moments)
                if moments is not None:  # an interrupted epoch counts whole: its moments moved anyway
                    moments.step += -(-len(order) // batch_size)
            return total / len(data)

    def _free_threads(self):
        """`training_threads()`, but no more than the cores other work leaves free.

        Two workers that meet at a barrier three times a step wait for each other's time slice
        when another process holds one of the two cores (3 epochs of the default recipe beside a
        CPU-bound process: 5x as long as alone); one worker per free core shares fairly. Two
        readings: until a first window has passed, the threads of other processes runnable as
        the epoch starts (a short training sees the job beside it at once); then the cores they
        kept busy over the last LOAD_WINDOW_SECONDS (which also sees one that runs now and then). The window's reading is renewed at most
        once a window: /proc/stat counts in 10 ms ticks, and over one 0.1 s epoch it misjudged an
        idle machine as a third busy.
        """
        now = time.monotonic()
        if self._load is None:
            self._load, self._load_read_at, self._free_cores = CpuLoad(), now, None
        if now - self._load_read_at >= LOAD_WINDOW_SECONDS:
            # A core counts as taken once others keep it busy half the time: on this idle VM,
            # interrupts and steal time read as 0.1-0.15 of a core, and numpy's stricter
            # threshold (a quarter) took a worker away from a whole training now and then.
            self._free_cores = free_cores(self._load.others_busy(), self._load.cpus, free_share=0.5)
            self._load_read_at = now
        threads = training_threads()
        if self._free_cores is not None:
            return min(threads, self._free_cores)
        # Until the first window is read: the ~1 ms of readings, just before the workers start,
        # cost an idle machine's epochs ~10 % when they were taken before every epoch.
        running = others_running()
        return threads if running is None else min(threads, max(1, self._load.cpus - running))

    def between_epochs(self):
        """Run BLAS single-threaded for the caller's work between epochs (a Trainer's evaluation).

        After a multi-threaded call an OpenBLAS thread spins for ~0.1 s, and would take a core
        from the start of the next epoch, whose workers need both.
        """
        return single_threaded_blas()

    @staticmethod
    def _run_chunks(run, n, batch_size, progress, barrier):
        """Worker 0's part of the epoch on this thread: one nopython call, or ~50 with progress."""
        total = 0.0
        for begin, end in epoch_ranges(n, batch_size, progress):
            total += run(0, begin, end)
            if barrier_aborted(barrier):
                break
            if progress is not None:
                progress(end - begin)
        return total

    def _run_workers(self, run, workers, n, batch_size, progress, barrier):
        """Workers 1.. on threads of their own over the whole epoch, worker 0 here; returns the summed loss.

        If any of them fails (or progress raises, or Ctrl-C arrives between chunks), the barrier
        is aborted so the others stop at their next meeting, and the first error is raised.
        """
        totals, errors = [0.0] * workers, []

        def helper(t):
            try:
                totals[t] = run(t, 0, n)
            except BaseException as exc:  # handed to the caller's thread below
                errors.append(exc)
                abort_barrier(barrier)

        threads = [threading.Thread(target=helper, args=(t,), name=f"fastmlp-worker-{t}", daemon=True)
                   for t in range(1, workers)]
        try:
            for thread in threads:
                thread.start()
            totals[0] = self._run_chunks(run, n, batch_size, progress, barrier)
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
        One compiled function serves plain SGD, momentum, Nesterov, weight decay, Adam and AdamW, so
        momentum is accepted for compatibility and changes nothing.
        """
        from ..model import MLP

        tiny = MLP((2,) * len(model.layer_sizes), seed=0)
        X = Pixels(np.zeros((2, 2), dtype=np.uint8)) if pixels else np.zeros((2, 2), dtype=np.float32)
        start = time.perf_counter()
        Backend(threads=1).train_epoch(tiny, X, np.zeros(2, dtype=np.int64), batch_size=1, lr=0.01,
                                       rng=np.random.default_rng(0))
        return time.perf_counter() - start
