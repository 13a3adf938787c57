"""Inference on several threads at once, in nopython code: one call's parts, and the loop in which a
serving thread waits for the next call without the GIL.

    forward_probs_part_into(hidden, out, X, weights, biases, packed, part, parts, barrier, finite)
        part `part` of `parts` of out = the probabilities of X; the parts run at once on threads of
        their own and meet at `barrier` after each layer.
    serve_parts(control, hidden, weights, biases, packed, part, barrier, finite, seen)
        a serving thread's loop: runs its part of every call posted on `control`, until idle.
    call_parts(control, hidden, out, X, weights, biases, packed, parts, barrier, finite, posted)
        the calling thread's side: post a call, then run its part 0.

Why a loop in nopython code: a Python thread that sleeps (on a queue, or waiting for the GIL) takes tens
of microseconds to wake in a virtual machine, as long as a thread's whole share of a batch of 64 rows. A
serving thread instead spins here, without the GIL, for a moment after each call; it sees the next call's
ticket move and starts at once, reading the call's X and out through their addresses in `control`. Once
idle for longer, it returns to Python and sleeps until `call_parts` reports it asleep and it is woken.

The layout of `control` (int64, fields written by different threads on separate cache lines):
    control[TICKET]                 calls posted so far
    control[STOP]                   1: the serving threads return at once
    control[ROWS .. PARTS]          the posted call: rows of X, X's and out's addresses, parts taking part
    control[AWAKE + 8 * part]       1 while serving thread `part` is in serve_parts (0: it sleeps in Python)
"""

import numpy as np
from numba import carray, types
from numba.extending import intrinsic

from ..runtime.aligned import aligned_zeros
from ..runtime.barrier import atomic_add, atomic_load, atomic_store, barrier_wait, cpu_relax
from ..runtime.jit import cached_njit
from .elementwise import softmax_inplace
from .packed import panel_count
from .rowmajor import layer_part_into, rows_finite

TICKET, STOP, ROWS, X_ADDRESS, OUT_ADDRESS, PARTS, AWAKE = 0, 8, 16, 17, 18, 19, 24
# A layer is cut between the parts by its panels (each part reading only its share of W) where W has
# this many bytes at least, more than a core's L1 and L2 keep beside the rows; a smaller one by rows
# (each part reading all of W, its own rows only: no barrier after it, and none between two such layers).
PANEL_SPLIT_MIN_BYTES = 128 * 1024
# A serving thread spins this many `pause`s for the next call (about 50-100 microseconds, on a core that
# would otherwise idle) before it goes to sleep: a server's calls come that close together.
SPINS_BEFORE_SLEEP = 4000


def control_state(threads: int) -> np.ndarray:
    """A fresh `control` array for `threads` threads (the caller's and the serving ones): nothing posted."""
    # On cache lines of its own: no other array's data shares the lines its threads spin on and write.
    return aligned_zeros(AWAKE + 8 * threads, np.int64)


@intrinsic
def _float32_pointer(typingctx, address):
    """The float32* at an integer address (inttoptr): for carray to see an array posted by its address."""
    sig = types.CPointer(types.float32)(types.int64)

    def codegen(context, builder, signature, args):
        return builder.inttoptr(args[0], context.get_value_type(signature.return_type))

    return sig, codegen


@cached_njit
def _share(count, part, parts):
    """Part `part` of `parts` of range(count) in contiguous pieces: (start, stop)."""
    return count * part // parts, count * (part + 1) // parts


@cached_njit(nogil=True)
def forward_probs_part_into(hidden, out, X, weights, biases, packed, part, parts, barrier, finite):
    """Part `part` of `parts` of one inference call, out = the probabilities of X (n rows): every part runs at
    once on a thread of its own, meeting at `barrier` (fastmlp.runtime.barrier) between layers.

    hidden[l] (>= n, N_l) holds hidden layer l's activations in its first n rows, shared by the parts (for a
    net without hidden layers, any one float32 2-d array); packed[l] is the running thread's own packed copy
    of weights[l], read where W's rows do not start on cache lines (rowmajor.layer_part_into: W read straight
    where they do, else the copy, checked against W as it is read and repacked where stale).
    Each layer is cut by W's panels where it has one for every part, so that a part reads (and keeps in its
    core's cache) only its share of W, if W is large (PANEL_SPLIT_MIN_BYTES); else by rows, an even share. Then
    each part turns its share of the rows into probabilities. The parts meet at the barrier before a layer
    that reads rows other parts wrote, and at the end. Overwrites hidden, out, finite[part] (1 if X was
    finite in this part's share of the rows, else 0) and the thread's packed copies. Returns False once the
    barrier is aborted. Every part passes every barrier, even after finding NaN or inf, so
    that none waits forever.
    """
    n = X.shape[0]
    L = len(weights)
    finite[part] = 1
    # This part's rows, where split by rows: an even share (a short last tile of rows goes through the
    # single-row tile, where W is small: rowmajor_layer_part_into).
    my_r0, my_r1 = _share(n, part, parts)
    rows_ready = True  # every row of the previous layer's output this part reads is written
    for l in range(L):
        panels = panel_count(weights[l].shape[1])
        by_panels = panels >= parts and weights[l].size * 4 >= PANEL_SPLIT_MIN_BYTES
        if by_panels:
            r0, r1 = 0, n
            p0, p1 = _share(panels, part, parts)
        else:
            r0, r1, p0, p1 = my_r0, my_r1, 0, panels
        if (by_panels or not rows_ready) and l > 0:  # this layer reads rows other parts wrote
            if not barrier_wait(barrier, parts):
                return False
        if finite[part] == 1 and r0 < r1 and p0 < p1:
            W, P, b, relu = weights[l], packed[l], biases[l], l < L - 1
            # X's rows are checked for NaN and inf once, each by the part they belong to: cut by panels, every
            # part reads every row, and checks only its own share, in one pass before the layer (at most
            # a few hundred rows a part at most: in L2 for the tiles next); cut by rows, as its tiles read them.
            check = l == 0 and not by_panels
            if l == 0 and by_panels and not rows_finite(X, my_r0, my_r1):
                ok = False
            # One call per pairing of source and destination: Numba types X, out and hidden[l][:n] apart.
            elif l == 0 and L == 1:
                ok = layer_part_into(out, X, W, P, b, relu, r0, r1, p0, p1, check)
            elif l == 0:
                ok = layer_part_into(hidden[0][:n], X, W, P, b, relu, r0, r1, p0, p1, check)
            elif l == L - 1:
                ok = layer_part_into(out, hidden[l - 1][:n], W, P, b, relu, r0, r1, p0, p1, False)
            else:
                ok = layer_part_into(hidden[l][:n], hidden[l - 1][:n], W, P, b, relu, r0, r1, p0, p1, False)
            if not ok:
                finite[part] = 0
        rows_ready = not by_panels
    if not rows_ready:
        if not barrier_wait(barrier, parts):
            return False
    if finite[part] == 1 and my_r0 < my_r1:
        softmax_inplace(out[my_r0:my_r1])
    return barrier_wait(barrier, parts)


@cached_njit(nogil=True)
def call_parts(control, hidden, out, X, weights, biases, packed, parts, barrier, finite, posted):
    """The calling thread's side of a call on serving threads: post it (unless `posted`), then run part 0 of
    forward_probs_part_into with its own packed copies (those of the caller's thread). Returns
    (serving threads found asleep, 1 if X was finite in every part else 0, 0 if the barrier was aborted else 1).

    Posting moves control[TICKET] by an atomic add, a full fence: a serving thread either sees the ticket
    move before it goes to sleep, or has already said so in control[AWAKE + 8 * part] by the time it is
    read here. If any of threads 1..parts-1 is asleep, nothing is run and the first value is their bit mask
    (a thread past 63 counts as asleep): the caller wakes them and calls again with `posted` true.
    """
    if not posted:
        atomic_store(control, ROWS, X.shape[0])
        atomic_store(control, X_ADDRESS, X.ctypes.data)
        atomic_store(control, OUT_ADDRESS, out.ctypes.data)
        atomic_store(control, PARTS, parts)
        atomic_add(control, TICKET, 1)
        asleep = 0
        for part in range(1, parts):
            if part >= 63 or atomic_load(control, AWAKE + 8 * part) == 0:
                asleep |= 1 << min(part, 63)
        if asleep != 0:
            return asleep, 0, 1
    if not forward_probs_part_into(hidden, out, X, weights, biases, packed, 0, parts, barrier, finite):
        return 0, 0, 0
    for part in range(parts):
        if finite[part] == 0:
            return 0, 0, 1
    return 0, 1, 1


@cached_njit(nogil=True)
def serve_parts(control, hidden, weights, biases, packed, part, barrier, finite, seen):
    """Serving thread `part`'s loop: for each call posted after ticket `seen`, run its part (if the call has
    that many parts) with this thread's packed copies; return the last ticket served once no call came for
    SPINS_BEFORE_SLEEP spins (the thread then sleeps in Python until woken) or control[STOP] is set.
    """
    awake = AWAKE + 8 * part
    atomic_store(control, awake, 1)
    while True:
        spins = 0
        while atomic_load(control, TICKET) == seen:
            if atomic_load(control, STOP) != 0:
                atomic_add(control, awake, -1)
                return seen
            if spins == SPINS_BEFORE_SLEEP:
                atomic_add(control, awake, -1)  # a full fence before the ticket is read again
                if atomic_load(control, TICKET) == seen:
                    return seen
                atomic_store(control, awake, 1)
                spins = 0
            cpu_relax()
            spins += 1
        seen = atomic_load(control, TICKET)
        parts = atomic_load(control, PARTS)
        if part < parts:
            rows = atomic_load(control, ROWS)
            X = carray(_float32_pointer(atomic_load(control, X_ADDRESS)), (rows, weights[0].shape[0]))
            out = carray(_float32_pointer(atomic_load(control, OUT_ADDRESS)), (rows, weights[-1].shape[1]))
            forward_probs_part_into(hidden, out, X, weights, biases, packed, part, parts, barrier, finite)
