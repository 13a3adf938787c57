"""The numba backend's step in nopython code: fastmlp's own SIMD kernels (fastmlp.kernels.packed)
run whole epochs in nopython code.

Weight-stationary training. For an epoch (or one `sgd_step`) each W_l is packed once into
column panels (fastmlp/kernels/packed.py), and so are W_l.T for l >= 1 (read by the input
gradient) and the velocities (or Adam's two moments); they are unpacked into the model's own
arrays (and the Velocity's or AdamMoments') when the epoch ends, so a caller never sees them.
Biases and their velocities or moments stay in their own arrays throughout. Adam's step count t
advances per batch inside the epoch: the epoch starts from the moments' t, batch s of it is step
t + s + 1, and its bias corrections are computed in nopython code.

Buffers, per (layer sizes, batch size, workers), made once and kept on the backend:
    inputs       (2, batch, sizes[0]) the gathered batch, two of them: batch s uses inputs[s % 2];
                                      or two a worker (2 workers, ...: threads.StepSplit), worker
                                      t's batch s in inputs[2 t + s % 2], each gathering every row
    acts[l]      (batch, sizes[l+1])  the output of layer l; acts[L-1] the logits
    deltas[l]    (batch, sizes[l+1])  dZ_l; deltas[L-1] is acts[L-1] (the softmax kernel overwrites
                                      the logits with their gradient)
    delta_panels[l] (panels of W_l, batch, NR)  dZ_l again, in column panels (packed.panels_from_rows_into,
                                      by phase B): the update's tiles read a panel of it front to back,
                                      where in dZ_l each row of the batch is another cache line. A
                                      training step writes dZ_0 only here (straight from the backward
                                      tile: nothing else reads it) and leaves deltas[0] alone

A step on `workers` threads, worker t of them. Layer 0 holds most of the work (784 x 128 of the
default net's 110 thousand weights), so how it is split decides how many workers a step can use;
the rest of the step is split by rows of the batch (forward, softmax, backward) or of the weights
(updates). Three ways: by panels or by rows (`layer0_by_rows(workers, panels)` choosing), two barriers
a step each, and by panels with the upper layers replicated, one barrier a step:

By panels (no more workers than W_0 has panels: weight-stationary, each worker keeps its panels
of W_0 in its own core's cache from step to step):
  A. layer 0 forward for every row of the batch, on worker t's panels of W_0 (its columns c0:c1
     of acts[0]);                                                                  -- barrier
  B. for worker t's rows of the batch: the other layers' forward, softmax + cross-entropy, and
     the backward pass down to dZ_0, dZ_{l-1} = (dZ_l W_l^T) * (A_{l-1} > 0), reading W_l.T
     packed; then worker t gathers its rows of the next batch into the other input buffer (or,
     with input buffers of its own, every row: A and C read every row of the batch, and half of
     a shared one would come from the other core's cache, 10-20 % of a step on an Intel Xeon at
     batch 64; at a large batch, or on long data rows, the epochs time both: threads.step_splits);
                                                                                   -- barrier
  C. the updates, the weight-gradient product fused with the SGD / momentum / Adam rule: worker
     t's panels of W_0 and bias entries c0:c1 of layer 0 (the parts phase A read), rows c0:c1 of
     W_1 (and of W_1.T), its share of the rows of each other W_l (and W_l.T) and of each other
     bias; then its rows of the next batch's labels.
  No barrier between C and the next step's A: A reads only what the same worker wrote in C (its
  panels of W_0, its entries of b_0) and the next input, complete since B's barrier, and it
  overwrites only columns c0:c1 of acts[0], which C read alone, for W_1's rows c0:c1.
Replicated (by panels, where threads.may_replicate_upper allows and threads.SplitChooser has measured
it faster on this machine: the upper layers a small share of the net, each worker gathering the whole
batch): each worker keeps its own copy of the layers above the first (W_l, W_l.T, their velocities or
moments, b_l for l >= 1; worker 0's are the model's) and runs them for every row:
  A. as above, into acts[0] of the step's parity (two of them: `acts`, `acts_odd`);      -- barrier
  B. for every row: the other layers' forward, softmax + cross-entropy, the backward pass, and dZ_0
     for the worker's panels only; the gather of every row of the next batch;
  C. its panels of W_0 and entries of b_0, all of its own W_l and b_l for l >= 1; then every label
     of the next batch, into labels of its own.
  One barrier a step, and no line of the upper weights goes between the cores: each worker repeats
  the others' share of the upper layers' arithmetic instead. The next step's A writes the other
  acts[0], and the one after it this one, which only a worker past this step's barrier (so done
  with the step before's C) may do. Each worker's loss covers every row: worker 0's counts.
  On two workers, layer 1 is split by k instead (`layer1_by_k`; its sum is always in two parts, below):
  in A, after its panels of layer 0, worker t computes part t for every row (its columns of acts[0] by
  the matching rows of W_1, into layer1_halves of the step's parity); in B each adds the two parts for
  every row and runs the layers above replicated; in C it updates only those rows of W_1 and W_1.T
  (shared; b_1 and the layers above are each worker's copies). A part of the sum goes between the cores
  instead of half of acts[0], and W_1's product and update are not done twice: epochs at batch 32 and 64
  1.02-1.10x the replicated step before on a 2-core Intel Xeon (docs/results.md).
By rows (more workers than panels: every core gets work, each reads all of W_0):
  B. for worker t's rows of the batch: every layer's forward, softmax, the backward pass, and the
     gather of its rows of the next batch, as above;                               -- barrier
  C. the updates as above, but W_0 by weight rows: rows k0:k1 of every panel (the update reads
     A[:, k0:k1] and all of dZ_0, and writes no weight another worker writes), b_0 and W_1 in
     even shares like the other layers; then the labels;                           -- barrier
  (the next step's forward reads all of W_0, which every worker updated).
The first batch of an epoch is gathered before its first step, behind one barrier more. The
input buffer that B fills held the batch before, last read by the updates of the step before,
which a barrier ends first; the labels wait for C because B of this step reads them. Each W_l.T
(read in B) is rewritten in C, after B's barrier. Every worker meets the barriers in the same
sequence whatever range of batches it is called for, so worker 0 may run the epoch in chunks
(for progress) while the others run it whole. A barrier spins briefly, then yields
(fastmlp/runtime/barrier.py).

The split decides which worker computes each part, never how: every product and sum runs over
the same rows in the same order, so the weights come out bit-identical whatever the worker
count; only the loss, summed per worker, may differ in its last bits. Never on timing: the same
count gives bit-identical runs. For that, every training step computes layer 1's sum over k in the
same two parts, whatever the split (fastmlp/backends/numba/layer1.py).

Compiling. Numba compiles every `cached_njit` function into an LLVM module of its own, links into
it the code of each function it calls, and optimises and generates machine code for the whole
again: each layer of calls between `train_batches_worker` and the tiles cost seconds of a cold
start (it re-optimised every tile below it). So this module's glue (the phases, the splits of the
work, the bias step) is `inline="always"`: Numba inlines it into its caller before typing, and
only the kernels that hold tiles (forward_part, update_part, ...) are modules of their own. The step
calls its kernels `unlinked` (step_kernels.py): by the address of their own machine code, so that no
step function's module holds a copy of their code to optimise and compile again (the kernels were two
thirds of train_batches_worker's module). update_part has one call site. forward_part has four (layer
0 and layer 1's parts in phase A, the layers and parts of training_forward_rows, the backward pass),
compiled for one signature: every argument an int64 (np.int64 where a literal 0 or kind would make
another signature). The backward pass's literal RELU_MASK once had a copy of its own, specialised:
batch 64 2 % faster on a Zen 3, 0-1 % on an Intel Xeon, for 0.3 s of a cold start there, which layer
1's parts needed (1.48-1.50x 0.1.0's).
Cold compile of the training CLI, on a Zen 3: 20 s before, 12-13 s after. The kernels themselves
are not inlined: one LLVM function of the whole step took longer to optimise (15 s). Nor is inlining
free: at each call site Numba derives the callee's IR again and copies it, and every argument that
is a tuple of arrays is copied with it (a reference count taken and dropped per array), so a layer
of glue that only forwards its arguments costs compile time too: phase C is one function, `updates`
(two before, their Adam corrections and the loop over the layers: 0.3 s more of train_batches_worker's
4.8 s on an Intel Xeon, and 1,400 lines more of its unoptimised IR). And the functions compiled here
(step_worker, train_batches_worker; batch.py's too) are compiled without Numba's reference counting
(`_nrt=False`): they allocate nothing (a training step makes no allocation: tested), so every array they
touch is one their caller keeps alive, and an allocation added to them fails to compile. The increfs and
decrefs of every array of every tuple, at every level of inlined glue, were 45 % of train_batches_worker's
unoptimised IR (29,900 lines; 16,400 without them) and 0.45 s of its 4.5 s (an Intel Xeon, four rounds
alternating). Nor are they given Numba's C-callable wrapper (`no_cfunc_wrapper`): only Python calls them,
through the CPython one.
"""

import numpy as np

from ...kernels.gather import prefetch_rows_to_l2
from ...kernels.packed import (
    ADAM,
    ADAMW,
    BIAS,
    BIAS_RELU,
    NESTEROV,
    PANEL_WIDTH,
    PLAIN_SGD,
    RELU_MASK,
    SKIP_ZERO_INPUTS,
    STORE,
    adam_corrections,
)
from ...optim import SMALLEST_NORMAL
from ...runtime.barrier import barrier_wait
from ...runtime.cycles import stamp_cycles
from ...runtime.jit import cached_njit
from .layer1 import layer1_cut, training_forward_rows
from .step_kernels import (
    forward_part,
    forward_part_into_panels,
    gather_labels,
    gather_rows_scaled,
    momentum_update_inplace,
    panel_column_sums_into,
    panels_from_rows_into,
    sgd_update_inplace,
    softmax_xent_backward_rows_inplace,
    transpose_packed_into,
    update_part,
)

# The step's timeline (fastmlp/backends/numba/timeline.py): the points of a step at which worker t, given a stamps
# array (workers, steps, STAMP_POINTS) int64 with room for step s, writes the cycle counter into stamps[t, s, point]
# (runtime.cycles.stamp_cycles; given None, no timeline, it compiles to nothing: an empty array instead, checked
# at every point, cost epochs at batch 64 1-2 %, 0.971-0.990x in six rounds on an Intel Xeon).
# In order: the step begins; layer 0's forward is done (phase A; split by rows, there is none: the same moment as
# the begin); A's barrier passed; the upper layers' forward (layer 0's too, split by rows), the softmax and the
# backward pass done (phase B); the next batch gathered; the batch after it prefetched; B's barrier passed; layer 0
# updated (W_0 and b_0); every layer updated (phase C); the step ends (the next labels gathered, and split by rows
# its last barrier passed). A point whose work a step skips (no next batch) is stamped all the same.
(STEP_BEGIN, LAYER0_FORWARD_DONE, FIRST_BARRIER_PASSED, UPPER_FORWARD_DONE, SOFTMAX_DONE, BACKWARD_DONE,
 NEXT_GATHERED, AFTER_PREFETCHED, SECOND_BARRIER_PASSED, LAYER0_UPDATED, LAYERS_UPDATED, STEP_END) = range(12)
STAMP_POINTS = 12


@cached_njit(inline="always")
def part_of(t, n, parts):
    """(start, stop) of part t when range(n) is cut into `parts` near-equal contiguous parts."""
    return t * n // parts, (t + 1) * n // parts


@cached_njit(inline="always")
def layer_input(x, acts, l):
    """The input of layer l: the batch x for l = 0, else the output of layer l - 1."""
    return x if l == 0 else acts[l - 1]


@cached_njit(inline="always")
def forward_rows(packed, biases, x, acts, first, r0, r1):
    """Layers first.. forward of rows r0:r1 (bias + ReLU, bias alone for the logits), each layer's sum over k in
    one chain (inference); overwrites those rows of acts[first:]."""
    L = len(packed)
    for l in range(first, L):
        out = acts[l]
        forward_part(out, layer_input(x, acts, l), packed[l], biases[l], out, BIAS_RELU if l < L - 1 else BIAS, r0, r1,
                     np.int64(0), packed[l].shape[0], np.int64(0), np.int64(-1))


@cached_njit(inline="always")
def backward_rows(transposed, acts, deltas, r0, r1, lowest):
    """dZ_{l-1} = (dZ_l @ W_l.T) * (A_{l-1} > 0) for rows r0:r1, for l from the top layer down to lowest (>= 1);
    overwrites those rows of deltas[lowest - 1:-1]."""
    for l in range(len(transposed) - 1, lowest - 1, -1):
        forward_part(deltas[l - 1], deltas[l], transposed[l], acts[l - 1][0], acts[l - 1], np.int64(RELU_MASK), r0, r1,
                     np.int64(0), transposed[l].shape[0], np.int64(0), np.int64(-1))


@cached_njit(inline="always")
def backward_rows_into_panels(transposed, acts, deltas, delta_panels, r0, r1, q0, q1):
    """backward_rows for rows r0:r1, each dZ_l also in column panels for the updates: dZ_0 (its panels q0:q1)
    written straight into delta_panels[0] (the training step reads it nowhere else), the others copied from
    deltas. Overwrites those rows of deltas[1:] and of delta_panels (of delta_panels[0]'s panels q0:q1)."""
    L = len(transposed)
    backward_rows(transposed, acts, deltas, r0, r1, 2)
    # dZ_0 from dZ_1 (no dZ_0 without a hidden layer): a loop of at most one pass, l = 1, rather than `if L > 1`,
    # because inlined into its caller, the branch is typed even where the tuples have no entry 1.
    for l in range(1, min(L, 2)):
        forward_part_into_panels(delta_panels[0], deltas[0].shape[1], deltas[l], transposed[l], acts[0][0], acts[0],
                                 RELU_MASK, r0, r1, q0, q1)
    for l in range(1 if L > 1 else 0, L):
        panels_from_rows_into(delta_panels[l], deltas[l], r0, r1)


@cached_njit(inline="always")
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


@cached_njit(inline="always")
def bias_step(b, vb, sb, dZ_panels, db, nb, c0, c1, lr, momentum, rule, beta2, eps, bc1, bc2):
    """db[c0:c1] = column sums of dZ[:nb, c0:c1], read from dZ in column panels (dZ_panels); then entries
    c0:c1 of b (and vb, sb) updated by rule; overwrites them and db."""
    panel_column_sums_into(db, dZ_panels, nb, c0, c1)
    if rule == PLAIN_SGD:
        sgd_update_inplace(b[c0:c1], db[c0:c1], lr)
    elif rule == ADAM or rule == ADAMW:
        adam_bias_update(b[c0:c1], vb[c0:c1], sb[c0:c1], db[c0:c1], lr, momentum, beta2, eps, bc1, bc2)
    else:
        momentum_update_inplace(b[c0:c1], vb[c0:c1], db[c0:c1], lr, momentum, 0.0, rule == NESTEROV)


@cached_njit(inline="always")
def layer0_by_rows(workers, panels):
    """True when a step splits layer 0 by rows of the batch (forward) and of W_0 (update), False when
    by panels of W_0: by rows once there are more workers than panels, so that none is left idle."""
    return workers > panels


@cached_njit(inline="always")
def layer0_columns(t, workers, panels, n):
    """(c0, c1): the columns of layer 0's n outputs (of acts[0] and b_0; the rows of W_1)
    in worker t's panels of W_0."""
    p0, p1 = part_of(t, panels, workers)
    return min(p0 * PANEL_WIDTH, n), min(p1 * PANEL_WIDTH, n)


@cached_njit(inline="always")
def updates(t, workers, by_rows, upper_part, layer1_by_k, packed, transposed, velocity_w, biases, velocity_b, x, acts,
            db, nb, lr, momentum, weight_decay, rule, second_w, second_b, beta2, eps, step, delta_panels, stamps, s):
    """Phase C of a step, worker t's share (see the module doc): parts of each W_l (and W_l.T), of each bias.

    Split by panels (by_rows False): its panels of W_0 and entries of b_0, then for l >= 1 part
    upper_part = (part, parts): (t, workers) the rows of W_1 that match its panels of W_0 and even
    shares of the rest; (0, 1) all of them (replicated: the worker's own copies), but with layer1_by_k the rows
    of W_1 (shared) that match its panels of W_0, and all of its own b_1.
    By rows: even shares of the rows of every W_l and of every bias (upper_part (t, workers)).
    step: Adam's step count of this step (its bias corrections; unused by SGD). stamps, s: the timeline's
    buffer and the step's index in it (LAYER0_UPDATED stamped).
    Overwrites those parts of packed, transposed, the velocities (Adam: first moments, and
    second_w / second_b the second moments), the biases and db.
    """
    correction1 = correction2 = 0.0
    if rule == ADAM or rule == ADAMW:
        correction1, correction2 = adam_corrections(momentum, beta2, step)
    bc1, bc2 = np.float32(correction1), np.float32(correction2)
    L = len(packed)
    for l in range(L):
        P = packed[l]
        A = layer_input(x, acts, l)
        part, parts = (t, workers) if l == 0 else upper_part
        c0, c1 = part_of(part, biases[l].shape[0], parts)
        # Rows k0:k1 of panels p0:p1 of W_l, in one call of update_part for every layer (one signature to
        # compile). dZ_l read in column panels (filled by the backward pass), front to back: row-major, each
        # of the batch's rows of a panel would be another cache line (4 KB apart in a 1024-wide layer).
        k0, k1 = part_of(part, P.shape[1], parts)
        p0, p1 = 0, P.shape[0]
        if l == 0 and not by_rows:  # weight-stationary: the panels this worker's phase A read
            k0, k1 = 0, P.shape[1]
            p0, p1 = part_of(t, P.shape[0], workers)
            c0, c1 = layer0_columns(t, workers, P.shape[0], biases[0].shape[0])
        elif l == 1 and not by_rows:
            # W_1's rows are layer 0's columns: split by panels, a worker updates the rows of W_1 that
            # read the columns of acts[0] it alone overwrites in the next step's phase A (all of them, replicated).
            k0, k1 = layer0_columns(t if layer1_by_k else part, workers if layer1_by_k else parts, packed[0].shape[0],
                                    P.shape[1])
        # Layer 0's input, a data batch, often has many zeros (MNIST's pixels): its sums skip them (SGD rules).
        update_part(P, velocity_w[l], A, delta_panels[l], nb, k0, k1, p0, p1, lr, momentum, weight_decay,
                    rule | (SKIP_ZERO_INPUTS if l == 0 else 0), second_w[l], beta2, eps, bc1, bc2)
        if l > 0:
            transpose_packed_into(transposed[l], P, k0, k1)
        bias_step(biases[l], velocity_b[l], second_b[l], delta_panels[l], db[l], nb, c0, c1, lr, momentum, rule, beta2,
                  eps, bc1, bc2)
        if l == 0:
            stamp_cycles(stamps, t, s, LAYER0_UPDATED)


@cached_njit(nogil=True, inline="always")
def forward_backward(t, workers, by_rows, rows_part, panels_part, barrier, packed, transposed, biases, x, labels, nb,
                     acts, deltas, delta_panels, stamps, s, halves, layer1_by_k, parity):
    """Phases A (split by panels only) and B of a step (see the module doc), B's barrier not included.
    B runs the batch's rows of part rows_part = (part, parts), and of dZ_0 the panels of part panels_part:
    ((t, workers), (0, 1)) splits B by rows, ((0, 1), (t, workers)) replicates it (dZ_0's panels the worker's).
    halves (2, 2, rows, N_1): the two parts of layer 1's sum, halves[parity] this step's; layer1_by_k (two
    workers, replicated): worker t computes part t in A for every row, B adds the two.

    stamps, s: the timeline's buffer and the step's index in it (LAYER0_FORWARD_DONE to BACKWARD_DONE stamped).

    Returns (the summed loss of worker t's rows, False if the barrier was aborted).
    Overwrites acts, deltas and delta_panels (each dZ_l in column panels, for the updates; worker t's
    rows).
    """
    L = len(packed)
    cut = layer1_cut(packed[0], biases[0].shape[0])
    if not by_rows:
        p0, p1 = part_of(t, packed[0].shape[0], workers)
        # Layer 0 on the worker's panels; then, layer 1 split by k, part t of layer 1's sum (its columns of acts[0]
        # just computed by the matching rows of W_1), for every row (a loop of at most one pass: see
        # backward_rows_into_panels).
        forward_part(acts[0], x, packed[0], biases[0], acts[0],
                     np.int64((BIAS_RELU if L > 1 else BIAS) | SKIP_ZERO_INPUTS), np.int64(0), nb, p0, p1, np.int64(0),
                     np.int64(-1))
        for l in range(1, min(L, 2) if layer1_by_k else 1):
            part = halves[parity, t]
            forward_part(part, acts[0], packed[l], biases[l], part, np.int64(STORE), np.int64(0), nb, np.int64(0),
                         packed[l].shape[0], np.int64(0) if t == 0 else cut, cut if t == 0 else np.int64(-1))
    stamp_cycles(stamps, t, s, LAYER0_FORWARD_DONE)
    if not by_rows and not barrier_wait(barrier, workers):
        return 0.0, False
    stamp_cycles(stamps, t, s, FIRST_BARRIER_PASSED)
    r0, r1 = part_of(rows_part[0], nb, rows_part[1])
    q0, q1 = part_of(panels_part[0], packed[0].shape[0], panels_part[1])
    training_forward_rows(packed, biases, x, acts, 1 if not by_rows else 0, r0, r1, halves[parity], cut, layer1_by_k)
    stamp_cycles(stamps, t, s, UPPER_FORWARD_DONE)
    loss = softmax_xent_backward_rows_inplace(acts[L - 1][r0:r1], labels[r0:r1], nb)
    stamp_cycles(stamps, t, s, SOFTMAX_DONE)
    backward_rows_into_panels(transposed, acts, deltas, delta_panels, r0, r1, q0, q1)
    stamp_cycles(stamps, t, s, BACKWARD_DONE)
    return loss, True


@cached_njit(nogil=True, _nrt=False, no_cfunc_wrapper=True)
def step_worker(t, workers, barrier, packed, transposed, velocity_w, biases, velocity_b, x, labels, nb, lr, momentum,
                weight_decay, rule, acts, deltas, db, second_w, second_b, beta2, eps, step, delta_panels, stamps,
                halves):
    """Worker t's part of one step on the batch x[:nb], labels[:nb], gathered and the parameters settled
    (no worker still updating them) before any worker calls it.

    step: Adam's step count t of this step (from 1), for its bias corrections; unused by SGD. stamps: the
    timeline's buffer (step_worker stamps the points of forward_backward and updates as step 0) or None.
    halves: scratch (2, 2, rows, N_1) for layer 1's sum in two parts.

    Returns (the summed loss of the worker's rows, False if the barrier was aborted).
    Overwrites acts, deltas, db, delta_panels (each dZ_l in column panels, for the updates) and worker
    t's parts of the parameters (see the module doc).
    """
    by_rows = layer0_by_rows(workers, packed[0].shape[0])
    loss, ok = forward_backward(t, workers, by_rows, (t, workers), (0, 1), barrier, packed, transposed, biases, x,
                                labels, nb, acts, deltas, delta_panels, stamps, 0, halves, False, 0)
    if not ok or not barrier_wait(barrier, workers):
        return 0.0, False
    updates(t, workers, by_rows, (t, workers), False, packed, transposed, velocity_w, biases, velocity_b, x, acts, db,
            nb, lr, momentum, weight_decay, rule, second_w, second_b, beta2, eps, step, delta_panels, stamps, 0)
    return loss, True


@cached_njit(inline="always")
def gather_part(t, workers, x, labels, X, scale, y, order, start, nb, with_rows, with_labels):
    """Worker t's rows of the batch order[start:start + nb]: pixels into x (if with_rows), labels into labels
    (if with_labels); overwrites those rows."""
    r0, r1 = part_of(t, nb, workers)
    rows = order[start + r0 : start + r1]
    if with_rows:
        gather_rows_scaled(x[r0:r1], X, rows, scale)
    if with_labels:
        gather_labels(labels[r0:r1], y, rows)


@cached_njit(nogil=True, _nrt=False, no_cfunc_wrapper=True)
def train_batches_worker(t, workers, barrier, packed, transposed, velocity_w, biases, velocity_b, X, scale, y, order,
                         begin, end, batch_size, lr, momentum, weight_decay, rule, inputs, acts, deltas, db, labels,
                         second_w, second_b, beta2, eps, first_step, delta_panels, acts_odd, replicated, stamps,
                         halves, layer1_by_k):
    """Worker t of `workers` training on the batches of order[begin:end] (begin a multiple of batch_size) of
    the epoch's order; called with begin = 0 first, and then for the batches that follow the last call's.

    Batch s of the epoch (order[s * batch_size:]) is Adam's step first_step + s.

    X is float32, or uint8 pixels times scale. Every worker calls it with the same batches, each
    on its own thread. `replicated`: the upper layers replicated (the module doc), each worker with
    its own upper parameters and scratch arrays, and acts_odd the acts of odd steps (acts itself
    otherwise). stamps: the timeline's buffer (workers, steps, STAMP_POINTS), batch s of the epoch its step s
    (the points above), or None. Returns the summed loss of worker t's rows (replicated: of every row on
    worker 0, 0 on the others); stops early if the barrier is aborted.
    """
    n = order.shape[0]
    by_rows = layer0_by_rows(workers, packed[0].shape[0])
    # The rows of a batch this worker gathers (part `part` of `parts`) and its first input buffer: with two
    # input buffers a worker (threads.private_inputs), every row into its own; else its share into shared ones.
    part, parts, slot = (0, 1, 2 * t) if inputs.shape[0] > 2 else (t, workers, 0)
    # Replicated (the module doc): phase B on every row, dZ_0 on the worker's panels, the labels of every row,
    # no barrier between B and C, and the loss counted on worker 0 alone.
    rows_part, panels_part = ((0, 1), (t, workers)) if replicated else ((t, workers), (0, 1))
    label_part, label_parts = rows_part
    b_parties = 1 if replicated else workers
    counts_loss = t == 0 or not replicated
    total = 0.0
    for start in range(begin, end, batch_size):
        nb = min(batch_size, n - start)
        s = start // batch_size
        x = inputs[slot + s % 2]
        step_acts = acts_odd if s % 2 == 1 else acts  # the same tuple unless replicated
        if start == 0:  # the epoch's first batch; each later one is gathered by the step before it
            gather_part(part, parts, x, labels, X, scale, y, order, 0, nb, True, False)
            gather_part(label_part, label_parts, x, labels, X, scale, y, order, 0, nb, False, True)
            if not barrier_wait(barrier, workers):
                break
        stamp_cycles(stamps, t, s, STEP_BEGIN)
        loss, ok = forward_backward(t, workers, by_rows, rows_part, panels_part, barrier, packed, transposed, biases, x,
                                    labels, nb, step_acts, deltas, delta_panels, stamps, s, halves, layer1_by_k,
                                    s % 2)
        if not ok:
            break
        following = start + batch_size
        if following < n:  # the next batch's inputs, into the buffer this step leaves alone
            gather_part(part, parts, inputs[slot + (s + 1) % 2], labels, X, scale, y, order, following,
                        min(batch_size, n - following), True, False)
            stamp_cycles(stamps, t, s, NEXT_GATHERED)
            after = following + batch_size
            if after < n:  # and the rows it gathers of the batch after, fetched into L2 while the next step runs
                # (every row with inputs of its own: a row another core fetched comes from that core's cache)
                a0, a1 = part_of(part, min(batch_size, n - after), parts)
                prefetch_rows_to_l2(X, order[after + a0 : after + a1])
        else:
            stamp_cycles(stamps, t, s, NEXT_GATHERED)
        stamp_cycles(stamps, t, s, AFTER_PREFETCHED)
        if not barrier_wait(barrier, b_parties):
            break
        stamp_cycles(stamps, t, s, SECOND_BARRIER_PASSED)
        updates(t, workers, by_rows, rows_part, layer1_by_k, packed, transposed, velocity_w, biases, velocity_b, x,
                step_acts, db, nb, lr, momentum, weight_decay, rule, second_w, second_b, beta2, eps, first_step + s,
                delta_panels, stamps, s)
        stamp_cycles(stamps, t, s, LAYERS_UPDATED)
        if following < n:  # phase B of this step has read the labels: the next batch's can replace them
            gather_part(label_part, label_parts, x, labels, X, scale, y, order, following,
                        min(batch_size, n - following), False, True)
        total += loss if counts_loss else 0.0
        if by_rows and not barrier_wait(barrier, workers):  # the next forward reads all of W_0
            break
        stamp_cycles(stamps, t, s, STEP_END)
    return total
