"""Weights packed into column panels, and the SIMD kernels that read and update them in place.

The packed layout (the only place it is defined): a weight matrix W (K, N) float32 is kept as
    P[p, k, j] = W[k, p * NR + j]       P of shape (ceil(N / NR), K, NR), C-contiguous,
with zeros in the columns past N of the last panel. NR is `PANEL_WIDTH`, the width of the SIMD
tile of the CPU Numba compiles for (32 with AVX-512, 16 with AVX2 or less; fastmlp.kernels.tiles).
One packed row P[p, k] is the NR floats that the microkernel loads as B vectors at step k, so a
panel is read front to back with no stride, and stays in cache across the rows of a batch.

Products, with A row-major (M, K) (rows of A may be a row slice of a larger buffer):
    packed_matmul_into(C, A, P)                  C = A @ W
    packed_matmul_bias_into(Z, A, P, b)          Z = A @ W + b
    packed_matmul_bias_relu_into(Z, A, P, b)     Z = max(A @ W + b, 0)
    packed_matmul_relu_mask_into(dA, dZ, PT, A)  dA = (dZ @ W.T) * (A > 0), with PT = W.T packed
    packed_sgd_update_inplace(P, A, dZ, lr, wd)  W -= lr * (A.T @ dZ + wd * W)
    packed_momentum_update_inplace(P, V, A, dZ, lr, mu, wd, nesterov)   the momentum rules of
                                                 fastmlp/optim.py, V the velocity packed like W
    packed_adam_update_inplace(P, M, S, A, dZ, lr, beta1, beta2, eps, wd, step, decoupled)
                                                 Adam (AdamW when decoupled) at step t = step,
                                                 M and S its moments packed like W
kind | SKIP_ZERO_INPUTS and rule | SKIP_ZERO_INPUTS: the same results, the sums skipping the inputs
that are zero (an input with many zeros, such as MNIST's pixels; fastmlp.kernels.nonzero_ir).
The weight-gradient product never exists as an array: each tile of A.T @ dZ is applied to its
rows of P (and V) while still in registers. The input gradient dA = dZ W.T reads W, so compute
it before the update overwrites W.

The `_part` functions do the same for a range of rows (or weight rows) and panels: they are the
pieces the numba backend's worker threads split a step into. Packing, unpacking, W.T and dZ's
column panels: fastmlp.kernels.packing (imported here); the calls into the IR tiles and their
scratch buffers: fastmlp.kernels.tile_calls.
"""

import numpy as np
from numba import njit

from ..runtime import jit
from ..runtime.cpu_caches import l2_bytes
from ..runtime.jit import cached_njit
from . import simd_ir, update_ir
from .contiguity import require_c_contiguous

# The layout's conversions (packing, unpacking, W.T, dZ's panels) live in fastmlp.kernels.packing; their
# documented path is this module's.
from .packing import (  # noqa: F401
    PANEL_WIDTH,
    VECTOR_WIDTH,
    _data,
    pack_panel_into,
    pack_weights_into,
    packed_shape,
    panel_count,
    panel_differs,
    panels_from_rows_into,
    transpose_packed_into,
    unpack_weights_into,
)
from .tile_calls import (  # noqa: F401  SUM_CHUNK_ROWS and CARRY_PANELS: update_part's, documented here
    CARRY_PANELS,
    COLUMN_LIST_CAPACITY,
    SUM_CHUNK_ROWS,
    _adam_tile,
    _carry_buffer,
    _column_list_buffer,
    _flush_subnormals_on,
    _forward_tile,
    _forward_tile_unlisted,
    _list_nonzero_rows,
    _nonzero_columns,
    _restore_mxcsr,
    _row_list_buffer,
    _tile_buffer,
    _wgrad_tile,
)
from .tiles import TILE

TILE_ROWS = TILE.mr
VECTORS_PER_ROW = TILE.nv  # SIMD vectors in one packed row

STORE, BIAS, BIAS_RELU, RELU_MASK = simd_ir.STORE, simd_ir.BIAS, simd_ir.BIAS_RELU, simd_ir.RELU_MASK
# A flag of forward_part's kind and update_part's rule (kind | SKIP_ZERO_INPUTS, rule | SKIP_ZERO_INPUTS): their
# sums skip the inputs that are zero (the columns of A where a tile's rows are all zero; the rows of A where a
# weight-gradient tile's columns are). The training step's layer 0 runs so.
SKIP_ZERO_INPUTS = 8
RESUME_SUM, KEEP_SUM = update_ir.RESUME_SUM, update_ir.KEEP_SUM
PLAIN_SGD, MOMENTUM, NESTEROV = simd_ir.PLAIN_SGD, simd_ir.MOMENTUM, simd_ir.NESTEROV
ADAM, ADAMW = simd_ir.ADAM, simd_ir.ADAMW


# This module's small helpers (_panel_offset, _zigzag, _first_column, _chunked_wgrad_tiles) are inlined into the
# kernels that call them: each a compiled function of its own was one more module that its caller linked and
# optimised again (with gather's _prefetch_row, 0.5 s of a cold start; tests/test_compile_cost.py).
@cached_njit(inline="always")
def _panel_offset(dZ, p):
    """Offset in floats of panel p's first column of dZ: (n, N) row-major, or in column panels (3-d)."""
    return p * dZ.shape[1] * PANEL_WIDTH if dZ.ndim == 3 else p * PANEL_WIDTH


@cached_njit
def forward_part(C, A, P, bias, mask, kind, r0, r1, p0, p1, k0=0, k1=-1):
    """Rows r0:r1 and panels p0:p1 of C = epilogue(A @ W), W packed in P; overwrites that part of C.

    kind: STORE (C = A @ W), BIAS (+ bias), BIAS_RELU (max(A @ W + bias, 0)), RELU_MASK
    (C = A @ W where mask > 0, else 0; mask shaped like C). bias and mask are read only by the
    kinds that use them (pass any float32 array otherwise). kind | SKIP_ZERO_INPUTS: the same
    result, for an A with many zeros (a batch of MNIST's pixels, 81 % zeros): each tile of TILE_ROWS
    rows first lists the columns where its rows of A are not all zero, and its sums run over those
    alone, in the same order (a skipped term is an exact zero: the same bits, up to the sign of a zero,
    for a finite W); a tile with more than 7/8 of its columns listed runs over all of them, and so do
    the next UNLISTED_AFTER_DENSE tiles, unlisted.
    A's first K columns are read, K the rows of W (A may be wider: the numba backend pads some
    activations' rows, see its buffers).
    k0:k1 (k1 = -1: K), if given, cut the sum over k to A's columns and W's rows k0:k1: a part of
    the product (the numba backend's training sums layer 1 in two such parts).
    """
    _forward_tiles(C, C.strides[0] // 4, PANEL_WIDTH, C.shape[1], A, P, bias, mask, kind, r0, r1, p0, p1, k0,
                   P.shape[1] if k1 < 0 else k1)


@cached_njit
def forward_part_into_panels(CP, n_cols, A, P, bias, mask, kind, r0, r1, p0, p1):
    """forward_part with C (n, n_cols) kept in column panels, as panels_from_rows_into lays it out:
    CP[p, r, j] = C[r, p * PANEL_WIDTH + j], CP of shape (panel_count(n_cols), >= n, PANEL_WIDTH).
    Overwrites rows r0:r1 of panels p0:p1 of CP, not the columns past n_cols (the last panel's padding).

    The training step's backward pass writes dZ_0 so: the layer-0 update reads it in panels only."""
    require_c_contiguous(CP)
    _forward_tiles_unlisted(CP, PANEL_WIDTH, CP.shape[1] * PANEL_WIDTH, n_cols, A, P, bias, mask, kind, r0, r1, p0,
                            p1, 0, P.shape[1])


# The packed weights a forward pass keeps in L2 while it runs every row of its input past them: the default
# net's W_0 (4 or 8 panels, 400 KB) in one group, wider layers in groups of panels.
_FORWARD_GROUP_BYTES = 512 * 1024


def _forward_tiles_of(may_skip):
    """_forward_tiles (below), with the listing of SKIP_ZERO_INPUTS (may_skip True: forward_part) or without
    (False: forward_part_into_panels, whose kind never holds it). may_skip is the closure's constant, so that
    Numba prunes the branches it decides before it compiles them: the indexed tile, in forward_part_into_panels
    for nothing, was 0.4 s of a cold start."""

    # Inlined into each caller before typing (not a compiled function of its own, which each caller would
    # re-optimise, tiles and all, at a cold start's cost). Never compiled alone: no cache of its own.
    @njit(inline="always")
    def _forward_tiles(C, ldc, panel_stride, N, A, P, bias, mask, kind, r0, r1, p0, p1, k0, k1):
        """forward_part's tiles, C's element (r, p * PANEL_WIDTH + j) at r * ldc + p * panel_stride + j floats
        from its start (row-major: ldc its row stride, panel_stride PANEL_WIDTH; in column panels: PANEL_WIDTH
        and a panel's floats); N the columns of C; the sum over k for k0:k1 (packed rows k0:k1, A's columns)."""
        K = k1 - k0
        lda, ldm = A.strides[0] // 4, mask.strides[0] // 4
        panel_size = P.shape[1] * PANEL_WIDTH
        epilogue = np.int32(kind & ~SKIP_ZERO_INPUTS)
        lists = (kind & SKIP_ZERO_INPUTS) != 0 and K <= COLUMN_LIST_CAPACITY
        columns = _column_list_buffer()
        unlisted = 0  # tiles to run over all columns unlisted, after a listing found a tile dense (_unlisted_after)
        # Rows outer, panels inner: the tile's TILE_ROWS rows of A (25 KB at K = 784) stay in L1
        # while every panel streams past them; the panels (100 KB each at K = 784) stay in L2. In
        # groups of panels that fit _FORWARD_GROUP_BYTES: a wide layer's panels (3.2 MB for 784 x 1024)
        # do not fit L2, and streamed from L3 for every TILE_ROWS rows (784-1024-1024-10's forward
        # at 49 % of an Intel core's FMA peak); A's rows are read once a group instead.
        group = max(1, _FORWARD_GROUP_BYTES // (max(K, 1) * PANEL_WIDTH * 4))
        # The first panel's tile of a row block fetches the next block's rows of A into L2 as it goes (spread
        # evenly over its iterations, ahead_step floats apart): a large batch's A comes from L3 (training epochs
        # at batch 1024 1.02-1.07x on an Intel Xeon, docs/results.md); the other tiles fetch their own first line.
        for g0 in range(p0, p1, group):
            for i0 in range(r0, r1, TILE_ROWS):
                rows = min(TILE_ROWS, r1 - i0)
                # SKIP_ZERO_INPUTS: the row block's nonzero columns, listed once for all its panels (for the
                # default net's 8 MNIST rows 360 ns on a Zen 4, against 1.7-3.3 us a panel's tile).
                listed = K
                if may_skip:
                    if lists and unlisted == 0:
                        listed = _nonzero_columns(A, i0 * lda + k0, lda, rows, K, columns)
                        unlisted = _unlisted_after(listed, K)
                    elif unlisted > 0:
                        unlisted -= 1
                indexed = 8 * listed <= 7 * K
                count = listed if indexed else K
                ahead_step = TILE_ROWS * lda // max(count, 1)
                for p in range(g0, min(g0 + group, p1)):
                    col = p * PANEL_WIDTH
                    fetches = p == g0 and i0 + TILE_ROWS < r1
                    ahead_off = (i0 + TILE_ROWS) * lda + k0 if fetches else i0 * lda
                    step = ahead_step if fetches else 0
                    ncols = min(PANEL_WIDTH, N - col)
                    if may_skip:
                        _forward_tile(A, i0 * lda + k0, lda, P, p * panel_size + k0 * PANEL_WIDTH, count, C,
                                      i0 * ldc + p * panel_stride, ldc, rows, ncols, bias, col, mask, i0 * ldm + col,
                                      ldm, epilogue, ahead_off, step, columns, indexed)
                    else:
                        _forward_tile_unlisted(A, i0 * lda + k0, lda, P, p * panel_size + k0 * PANEL_WIDTH, K, C,
                                               i0 * ldc + p * panel_stride, ldc, rows, ncols, bias, col, mask,
                                               i0 * ldm + col, ldm, epilogue, ahead_off, step)

    return _forward_tiles


_forward_tiles = _forward_tiles_of(True)
_forward_tiles_unlisted = _forward_tiles_of(False)


@cached_njit(inline="always")
def adam_corrections(beta1, beta2, step):
    """(1 / (1 - beta1^t), 1 / sqrt(1 - beta2^t)) for step t = step >= 1, in float64: Adam's bias corrections."""
    return 1.0 / (1.0 - beta1**step), 1.0 / np.sqrt(1.0 - beta2**step)


# Bytes of D's panel columns that update_part keeps in L2 across W's row blocks: half of this machine's L2
# (runtime/cpu_caches.py; 256 KB where it is unreadable). Fixed at 256 KB (half of a Zen 3's L2), the update
# of 784-1024-1024-10's upper layers at batch 1024 read their input 8 times a step where a 2 MB L2 (an Intel
# Xeon's) lets it be read twice: its epoch 1.05-1.08x faster with 1 MB groups there. The compiled kernels hold
# the value: Numba's cache is keyed by it.
_PANEL_GROUP_BYTES = l2_bytes() // 2
jit.CODE_CHOICES["panel_group_bytes"] = str(_PANEL_GROUP_BYTES)


@cached_njit(inline="always")
def _zigzag(g0, g1, i):
    """The i-th panel of g0:g1 in the order update_part's tiles visit them: g0, g1 - 1, g0 + 1, g1 - 2, ...

    In order g0, g0 + 1, ..., the tiles' loads step through memory by one panel (K x PANEL_WIDTH
    floats) again and again, and a stride prefetcher (Zen 3's, at least) goes on to the panels
    after g1 - 1: with W_0's panels cut between workers, the next worker's, which it is updating at
    the same time, so that its stores must take those lines back. Zigzag, no two steps are the same
    length. Two threads each updating half of W_0 at batch 64 (one Zen 3 core each, blocks of 20
    calls alternating in one process): the slower thread 1.10-1.12x faster in three runs (the upper
    half had run 10-50 % slower than the lower); at batch 1024 alike. Each panel's arithmetic is
    the same in any order.
    """
    return g0 + i // 2 if i % 2 == 0 else g1 - 1 - i // 2


@cached_njit(inline="always")
def _first_column(k, K):
    """The first of the TILE_ROWS columns of A (rows of W) that the update tile of W's rows k.. reads.

    k itself where a whole tile's columns follow; else K - TILE_ROWS, the tile then updating only
    its last rows (its lo > 0): the tile at the end of W (or of a worker's share of it) runs the
    fast loop of a whole tile (update_ir._wgrad_product) rather than the one for fewer rows. k where
    W has fewer than TILE_ROWS rows.
    """
    return min(k, K - TILE_ROWS) if K >= TILE_ROWS else k


@cached_njit
def update_part(P, V, A, dZ, n, k0, k1, p0, p1, lr, momentum, weight_decay, rule, S, beta2, eps, c1, c2):
    """Rows k0:k1 of panels p0:p1 of the packed W (and V, S) updated by rule from G = A[:n].T @ dZ[:n];
    overwrites that part of P (and V, S).

    A (n, K) holds the layer's inputs, dZ (n, N) its output gradient, or dZ in column panels
    (panels_from_rows_into), whose panel the tiles then read front to back (the layer-0 update of
    training: with dZ row-major, each of the n rows of a panel is another cache line). rule PLAIN_SGD,
    MOMENTUM or NESTEROV as in fastmlp/optim.py, weight decay included; V is read only by
    MOMENTUM and NESTEROV (pass P otherwise). ADAM and ADAMW (update_ir.adam_tile): V is the
    first moment, S the second, momentum is beta1, (c1, c2) = adam_corrections(beta1, beta2, t);
    S, beta2, eps, c1 and c2 are read only by these (pass P and zeros otherwise).
    rule | SKIP_ZERO_INPUTS (the SGD rules; Adam ignores it): the same result, for an A with many zeros
    (a batch of MNIST's pixels): each tile's sum runs over the rows of A where its TILE_ROWS columns are
    not all zero, listed first, in the same order (the same bits, up to the sign of a zero, for a finite
    dZ); where more than 7/8 of the rows are listed, over all of them, and so do the next
    UNLISTED_AFTER_DENSE tiles, unlisted.
    """
    K = P.shape[1]
    lda = A.strides[0] // 4
    # dZ row-major, or in column panels (3-d, panels_from_rows_into: zero padding for the columns past N).
    N, ldd = (dZ.shape[0] * PANEL_WIDTH, PANEL_WIDTH) if dZ.ndim == 3 else (dZ.shape[1], dZ.strides[0] // 4)
    panel_size = K * PANEL_WIDTH
    lr32, mu32, wd32 = np.float32(lr), np.float32(momentum), np.float32(weight_decay)
    beta2_32, eps32, c1_32, c2_32 = np.float32(beta2), np.float32(eps), np.float32(c1), np.float32(c2)
    # Weight rows outer, panels inner: the TILE_ROWS columns of A that a tile reads (n cache
    # lines, 64 KB at batch 1024) are read from L3 once and from L1/L2 for the other panels. The
    # other order streamed all of A (3.2 MB at batch 1024) from L3 once per panel. But every
    # row block reads D's columns of all the panels again (n * NR floats each): in groups of
    # panels whose D fits half an L2 (_PANEL_GROUP_BYTES), it stays there; A is read once a group.
    group = max(1, _PANEL_GROUP_BYTES // (max(n, 1) * PANEL_WIDTH * 4))
    # Adam's tile is software-pipelined: each call accumulates one tile's gradient while it applies the
    # previous tile's (left in G) to that tile's W, M and S; a last call, with no rows of A (n = 0),
    # applies the last tile's. With the MXCSR's flush-to-zero on, Adam's subnormal moments become 0
    # (fastmlp/optim.py), at no cost.
    # rule | SKIP_ZERO_INPUTS (the SGD rules): each tile's sum runs over the rows where its columns of A are not all
    # zero, listed once for all the panels of its group (a batch of MNIST's pixels: 40 % of the rows of 8 columns).
    lists = (rule & SKIP_ZERO_INPUTS) != 0
    rule = rule & ~SKIP_ZERO_INPUTS
    listed_rows = _row_list_buffer()
    adam = rule == ADAM or rule == ADAMW
    lists = lists and not adam
    unlisted = 0  # tiles still to run over all rows unlisted, after a listing found a tile dense (_unlisted_after)
    G = _tile_buffer()
    csr = _flush_subnormals_on() if adam else np.int32(0)
    pending_off = pending = 0
    # The SGD rules over more than SUM_CHUNK_ROWS rows: a tile's sum is cut into ranges of that many rows
    # (update_ir.wgrad_tile's carry), ranges outer and the group's panels inner, so that a range's columns of
    # A (one cache line a row) stay in L1 while every panel's tile reads them; whole, n lines of A do not fit,
    # and each panel's tile read them from L2 again. A group's accumulators wait in `carry` between ranges.
    chunked = not adam and n > SUM_CHUNK_ROWS
    if chunked:
        group = min(group, CARRY_PANELS)
    carry = _carry_buffer()
    for g0 in range(p0, p1, group):
        for k in range(k0, k1, TILE_ROWS):
            rows = min(TILE_ROWS, k1 - k)
            kr = _first_column(k, K)
            if chunked and k - kr + rows == TILE_ROWS:
                unlisted = _chunked_wgrad_tiles(P, V, A, lda, dZ, N, ldd, n, kr, k - kr, g0, min(g0 + group, p1), lr32,
                                                mu32, wd32, rule, carry, lists, listed_rows, unlisted)
                continue
            g1 = min(g0 + group, p1)
            # The rows where the tile's columns kr:kr + TILE_ROWS are not all zero: a row zero in its updated columns
            # k:k + rows but not in the others is listed too (a term of 0, summed).
            listed = n
            if lists and n <= SUM_CHUNK_ROWS and K >= TILE_ROWS and unlisted == 0:
                listed = _list_nonzero_rows(listed_rows, A, kr, lda, n)
                unlisted = _unlisted_after(listed, n)
            elif unlisted > 0:
                unlisted -= 1
            whole = k - kr + rows == TILE_ROWS  # (and a whole panel, below): the tiles that run over a list
            for i in range(g1 - g0):
                p = _zigzag(g0, g1, i)
                ncols = min(PANEL_WIDTH, N - p * PANEL_WIDTH)
                d_off = _panel_offset(dZ, p)
                indexed = whole and ncols == PANEL_WIDTH and 8 * listed <= 7 * n
                if adam:
                    _adam_tile(A, kr, lda, dZ, d_off, ldd, n, k - kr, k - kr + rows, ncols, G, P, pending_off, V, S,
                               pending, lr32, mu32, wd32, np.int32(rule), beta2_32, eps32, c1_32, c2_32)
                    pending_off, pending = p * panel_size + k * PANEL_WIDTH, rows * VECTORS_PER_ROW
                else:
                    _wgrad_tile(A, kr, lda, dZ, d_off, ldd, listed if indexed else n, k - kr, k - kr + rows, ncols, P,
                                p * panel_size + kr * PANEL_WIDTH, V, lr32, mu32, wd32, np.int32(rule), carry, 0,
                                np.int32(0), listed_rows, indexed)
    if adam:
        _adam_tile(A, 0, lda, dZ, 0, ldd, 0, 0, 1, 1, G, P, pending_off, V, S, pending, lr32, mu32, wd32,
                   np.int32(rule), beta2_32, eps32, c1_32, c2_32)
        _restore_mxcsr(csr)




# Where a listing finds a tile dense (more than 7/8 of its columns, or rows, listed), the next this many tiles
# run over all of theirs without listing: data with few zeros pays for one listing in eight (listing every tile
# cost dense epochs 1.05-1.20x on a Zen 4), while data with many zeros, listed tile after tile, keeps its lists.
UNLISTED_AFTER_DENSE = 7


@cached_njit(inline="always")
def _unlisted_after(listed, total):
    """The tiles to run unlisted after one whose listing found `listed` of `total` columns (or rows) not all zero."""
    return UNLISTED_AFTER_DENSE if 8 * listed > 7 * total else 0


@cached_njit(inline="always")
def _chunked_wgrad_tiles(P, V, A, lda, dZ, N, ldd, n, kr, lo, g0, g1, lr32, mu32, wd32, rule, carry, lists,
                         listed_rows, unlisted):
    """Packed rows kr+lo:kr+TILE_ROWS (a whole tile's columns of A, kr:kr+TILE_ROWS) of panels g0:g1 (at most
    CARRY_PANELS) updated by an SGD rule from A[:n].T @ dZ[:n], the sums in ranges of SUM_CHUNK_ROWS rows
    (update_part). A partial panel's tile (the last panel of a layer narrower than its panels) sums all n rows
    in one call. lda, N and ldd as update_part derives them. lists (SKIP_ZERO_INPUTS): each range's rows where
    those columns of A are not all zero listed in listed_rows (a _row_list_buffer), the whole panels' sums run over
    them; unlisted: the ranges still to run unlisted (_unlisted_after), counted down and returned."""
    K = P.shape[1]
    for r0 in range(0, n, SUM_CHUNK_ROWS):
        r1 = min(n, r0 + SUM_CHUNK_ROWS)
        chunk = (RESUME_SUM if r0 > 0 else 0) | (KEEP_SUM if r1 < n else 0)
        listed = r1 - r0
        if lists and unlisted == 0:
            listed = _list_nonzero_rows(listed_rows, A, kr + r0 * lda, lda, r1 - r0)
            unlisted = _unlisted_after(listed, r1 - r0)
        elif unlisted > 0:
            unlisted -= 1
        indexed = 8 * listed <= 7 * (r1 - r0)
        for i in range(g1 - g0):
            p = _zigzag(g0, g1, i)
            ncols = min(PANEL_WIDTH, N - p * PANEL_WIDTH)
            w_off = p * K * PANEL_WIDTH + kr * PANEL_WIDTH
            d_off = _panel_offset(dZ, p)
            if ncols == PANEL_WIDTH:
                _wgrad_tile(A, kr + r0 * lda, lda, dZ, d_off + r0 * ldd, ldd, listed if indexed else r1 - r0, lo,
                            TILE_ROWS, ncols, P, w_off, V, lr32, mu32, wd32, np.int32(rule), carry,
                            (p - g0) * TILE_ROWS * PANEL_WIDTH, np.int32(chunk), listed_rows, indexed)
            elif r0 == 0:
                _wgrad_tile(A, kr, lda, dZ, d_off, ldd, n, lo, TILE_ROWS, ncols, P, w_off, V, lr32, mu32, wd32,
                            np.int32(rule), carry, 0, np.int32(0), listed_rows, False)
    return unlisted


@cached_njit
def packed_matmul_into(C, A, P):
    """C = A @ W with A (M, K), W packed in P (panels, K, PANEL_WIDTH), C (M, N) float32; overwrites C."""
    require_c_contiguous(C, A, P)
    forward_part(C, A, P, C.reshape(C.size), C, STORE, 0, A.shape[0], 0, panel_count(C.shape[1]))


@cached_njit
def packed_matmul_bias_into(Z, A, P, b):
    """Z = A @ W + b with A (M, K), W packed in P, b (N,), Z (M, N) float32; overwrites Z."""
    require_c_contiguous(Z, A, P, b)
    forward_part(Z, A, P, b, Z, BIAS, 0, A.shape[0], 0, panel_count(Z.shape[1]))


@cached_njit
def packed_matmul_bias_relu_into(Z, A, P, b):
    """Z = max(A @ W + b, 0) with A (M, K), W packed in P, b (N,), Z (M, N) float32; overwrites Z."""
    require_c_contiguous(Z, A, P, b)
    forward_part(Z, A, P, b, Z, BIAS_RELU, 0, A.shape[0], 0, panel_count(Z.shape[1]))


@cached_njit
def packed_matmul_relu_mask_into(dA, dZ, PT, A):
    """dA = (dZ @ W.T) * (A > 0) with dZ (M, N), PT = W.T (N, K) packed, A and dA (M, K) float32; overwrites dA.

    The input gradient of a ReLU layer whose output was A: call it before W is updated.
    """
    require_c_contiguous(dA, dZ, PT, A)
    forward_part(dA, dZ, PT, dA.reshape(dA.size), A, RELU_MASK, 0, dZ.shape[0], 0, panel_count(dA.shape[1]))


@cached_njit
def packed_sgd_update_inplace(P, A, dZ, lr, weight_decay):
    """W -= lr * (A.T @ dZ + weight_decay * W), W packed in P (panels, K, NR), A (n, K), dZ (n, N) float32;
    overwrites P."""
    require_c_contiguous(P, A, dZ)
    update_part(P, P, A, dZ, A.shape[0], 0, P.shape[1], 0, P.shape[0], lr, 0.0, weight_decay, PLAIN_SGD, P, 0.0, 0.0,
                0.0, 0.0)


@cached_njit
def packed_momentum_update_inplace(P, V, A, dZ, lr, momentum, weight_decay, nesterov):
    """g = A.T @ dZ + wd W; V = mu V - lr g; W += V (Nesterov: mu V - lr g); W, V packed alike in P, V,
    A (n, K), dZ (n, N) float32; overwrites P and V."""
    require_c_contiguous(P, V, A, dZ)
    update_part(P, V, A, dZ, A.shape[0], 0, P.shape[1], 0, P.shape[0], lr, momentum, weight_decay,
                NESTEROV if nesterov else MOMENTUM, P, 0.0, 0.0, 0.0, 0.0)


@cached_njit
def packed_adam_update_inplace(P, M, S, A, dZ, lr, beta1, beta2, eps, weight_decay, step, decoupled):
    """Adam step t = step on W with g = A.T @ dZ (+ wd W, or AdamW's decoupled W -= lr wd W):
    M = b1 M + (1 - b1) g, S = b2 S + (1 - b2) g^2, W -= lr M^ / (sqrt(S^) + eps);
    W, M, S packed alike, A (n, K), dZ (n, N) float32; overwrites P, M and S.

    M^ = M / (1 - b1^t), S^ = S / (1 - b2^t) (Kingma & Ba's bias correction): step counts from 1.
    """
    require_c_contiguous(P, M, S, A, dZ)
    c1, c2 = adam_corrections(beta1, beta2, step)
    update_part(P, M, A, dZ, A.shape[0], 0, P.shape[1], 0, P.shape[0], lr, beta1, weight_decay,
                ADAMW if decoupled else ADAM, S, beta2, eps, c1, c2)
