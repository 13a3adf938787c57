"""Inference straight off the model's own row-major weights: no packing, nothing cached, so an
edit of `model.weights` in place is seen by the next call, and nothing is shared between callers.

    rowmajor_forward_probs_into(out, X, weights, biases, r0, r1) -> whether X[r0:r1] was finite
        out[r0:r1] = softmax(the net's logits of X[r0:r1]), weights[l] (K_l, N_l) and biases[l]
        float32 C-contiguous, as `fastmlp.MLP` keeps them; ReLU between the layers.

One output element is always the same float32 operations in the same order, whatever the row's
position, the batch, the tile or the thread that computes it:
    acc = 0;  for k in 0..K-1:  acc = fma(a[k], W[k, j], acc);  z = acc + b[j];  z = max(z, 0) (hidden)
which is also what the packed forward of training computes (`simd_ir.forward_tile`): a row's
probabilities are bit-identical to the numba backend's forward, at any batch size and position.

The tiles (LLVM IR, in `rowmajor_ir`): C[rows, cols] = epilogue(A[rows, :] @ W[:, cols]) with the B
vectors of step k loaded from W's row k (row stride ldw floats) instead of a packed panel. Two
shapes: MR x NR (the training tile of this CPU: `tiles.TILE`) for whole groups of MR rows, and
1 x 4NR for single rows, whose 4 NV accumulators hide the FMA latency that 1 x NR's NV could not
(at batch 1 an MR-row tile would do MR times the work, its missing rows reading a real one again).
A tile's columns past the layer's width (the last block of columns) are loaded masked: W has no
zero padding.
"""

import numpy as np
from numba import types
from numba.extending import intrinsic

from ..runtime.aligned import CACHE_LINE
from ..runtime.jit import cached_njit
from .contiguity import require_c_contiguous
from .elementwise import softmax_inplace
from .packed import (
    BIAS,
    BIAS_RELU,
    PANEL_WIDTH,
    TILE_ROWS,
    _data,  # an intrinsic's pointer to an array's element, as packed's tiles take it
    forward_part,
    pack_panel_into,
    pack_weights_into,
    panel_count,
    panel_differs,
)
from .rowmajor_ir import checked_panel_tile, rowmajor_tile
from .tiles import TILE

ROW_TILE = TILE.mr  # rows of the many-row tile
ROW_TILE_COLUMNS = TILE.nr  # and its columns
WIDE_VECTORS = 4 * TILE.nv  # vectors of the single-row tile
WIDE_COLUMNS = WIDE_VECTORS * TILE.vw
# A W this small is read straight even off cache lines: it stays in L1 across a call's tiles, where a split load
# costs little (L1 is 32 KB and more on the x86-64 cores of the last decade).
STRAIGHT_MAX_BYTES = 32 * 1024
# Rows per block: every layer runs on a block before the next block starts, so a block's
# activations (BLOCK_ROWS x the widest hidden layer) stay in L1/L2 between layers.
BLOCK_ROWS = 8 * ROW_TILE


def _tile_intrinsic(mr, nv, masked):
    """A Numba intrinsic calling `rowmajor_tile` of this shape:
    (A, a_off, lda, W, w_off, ldw, K, C, c_off, ldc, rows, ncols, bias, b_off, relu), offsets in floats."""

    @intrinsic
    def tile(typingctx, A, a_off, lda, W, w_off, ldw, K, C, c_off, ldc, rows, ncols, bias, b_off, relu):
        sig = types.void(A, types.intp, types.intp, W, types.intp, types.intp, types.intp, C, types.intp, types.intp,
                         types.intp, types.intp, bias, types.intp, types.int32)

        def codegen(context, builder, signature, args):
            A_, a_off_, lda_, W_, w_off_, ldw_, K_, C_, c_off_, ldc_, rows_, ncols_, bias_, b_off_, relu_ = args
            ty = signature.args
            fn = rowmajor_tile(builder.module, TILE.vw, mr, nv, masked)
            builder.call(fn, [_data(context, builder, ty[0], A_, a_off_), lda_,
                              _data(context, builder, ty[3], W_, w_off_),
                              ldw_, K_, _data(context, builder, ty[7], C_, c_off_), ldc_, rows_, ncols_,
                              _data(context, builder, ty[12], bias_, b_off_), relu_])
            return context.get_dummy_value()

        return sig, codegen

    return tile


def _checked_tile_intrinsic(masked):
    """A Numba intrinsic calling `checked_panel_tile` (the training tile's shape), returning its int32:
    (A, a_off, lda, P, p_off, W, w_off, ldw, K, C, c_off, ldc, rows, ncols, bias, b_off, relu, k_lo, k_hi),
    offsets in floats."""

    @intrinsic
    def tile(typingctx, A, a_off, lda, P, p_off, W, w_off, ldw, K, C, c_off, ldc, rows, ncols, bias, b_off, relu,
             k_lo, k_hi):
        sig = types.int32(A, types.intp, types.intp, P, types.intp, W, types.intp, types.intp, types.intp, C,
                          types.intp, types.intp, types.intp, types.intp, bias, types.intp, types.int32, types.intp,
                          types.intp)

        def codegen(context, builder, signature, args):
            (A_, a_off_, lda_, P_, p_off_, W_, w_off_, ldw_, K_, C_, c_off_, ldc_, rows_, ncols_, bias_, b_off_,
             relu_, k_lo_, k_hi_) = args
            ty = signature.args
            fn = checked_panel_tile(builder.module, TILE.vw, TILE.mr, TILE.nv, masked)
            return builder.call(fn, [_data(context, builder, ty[0], A_, a_off_), lda_,
                                     _data(context, builder, ty[3], P_, p_off_), K_,
                                     _data(context, builder, ty[5], W_, w_off_), ldw_,
                                     _data(context, builder, ty[9], C_, c_off_), ldc_, rows_, ncols_,
                                     _data(context, builder, ty[14], bias_, b_off_), relu_, k_lo_, k_hi_])

        return sig, codegen

    return tile


_checked_tile = _checked_tile_intrinsic(False)
_checked_tile_masked = _checked_tile_intrinsic(True)
_rows_tile = _tile_intrinsic(ROW_TILE, TILE.nv, False)
_rows_tile_masked = _tile_intrinsic(ROW_TILE, TILE.nv, True)
_wide_tile = _tile_intrinsic(1, WIDE_VECTORS, False)
_wide_tile_masked = _tile_intrinsic(1, WIDE_VECTORS, True)


@cached_njit
def rowmajor_layer_rows(C, c_row, A, a_row, rows, W, b, relu):
    """C[c_row:c_row+rows, :N] = epilogue(A[a_row:a_row+rows, :K] @ W + b), W (K, N) row-major; overwrites
    those entries of C.

    A and C may be wider than K and N (scratch buffers): their row strides are their own.
    """
    K, N = W.shape
    lda, ldc = A.strides[0] // 4, C.strides[0] // 4
    flag = np.int32(1 if relu else 0)
    i = 0
    while rows - i >= ROW_TILE:  # whole MR-row tiles, columns in NR blocks
        a_off, c_off = (a_row + i) * lda, (c_row + i) * ldc
        for col in range(0, N, ROW_TILE_COLUMNS):
            ncols = min(ROW_TILE_COLUMNS, N - col)
            if ncols == ROW_TILE_COLUMNS:
                _rows_tile(A, a_off, lda, W, col, N, K, C, c_off + col, ldc, ROW_TILE, ncols, b, col, flag)
            else:
                _rows_tile_masked(A, a_off, lda, W, col, N, K, C, c_off + col, ldc, ROW_TILE, ncols, b, col, flag)
        i += ROW_TILE
    for r in range(i, rows):  # the rest one by one, columns in 4NR blocks
        a_off, c_off = (a_row + r) * lda, (c_row + r) * ldc
        for col in range(0, N, WIDE_COLUMNS):
            ncols = min(WIDE_COLUMNS, N - col)
            if ncols == WIDE_COLUMNS:
                _wide_tile(A, a_off, lda, W, col, N, K, C, c_off + col, ldc, 1, ncols, b, col, flag)
            else:
                _wide_tile_masked(A, a_off, lda, W, col, N, K, C, c_off + col, ldc, 1, ncols, b, col, flag)


@cached_njit(fastmath={"reassoc"})
def rows_finite(X, r0, r1):
    """Whether the rows r0:r1 of X hold only finite numbers (one pass, vectorised)."""
    zero = np.float32(0.0)
    s = zero
    for i in range(r0, r1):
        for k in range(X.shape[1]):
            # x * 0 is 0 for a finite x and NaN for NaN or +-inf. Reassociation lets LLVM sum in
            # SIMD lanes; without "nnan" / "ninf" it may not fold x * 0 away.
            s += X[i, k] * zero
    return s == zero


@cached_njit(nogil=True)
def rowmajor_forward_probs_into(out, X, weights, biases, r0, r1):
    """out[r0:r1] = class probabilities of X[r0:r1] through the net (weights[l] (K_l, N_l), biases[l]); overwrites them.

    Returns False, at once, if a row of X holds NaN or inf (out is then partly written).
    Runs the rows in blocks of BLOCK_ROWS, every layer on a block before the next, with two
    scratch buffers of its own (BLOCK_ROWS x the widest hidden layer): callers share nothing.
    Releases the GIL: threads may run disjoint row ranges of one call at once.
    """
    require_c_contiguous(out, X)
    L = len(weights)
    widest = 1
    for l in range(L - 1):
        widest = max(widest, weights[l].shape[1])
    block = min(BLOCK_ROWS, max(r1 - r0, 1))  # one row needs one row of scratch
    scratch = (np.empty((block, widest), dtype=np.float32), np.empty((block, widest), dtype=np.float32))
    for start in range(r0, r1, block):
        rows = min(block, r1 - start)
        if not rows_finite(X, start, start + rows):  # the block is in cache for layer 0 next
            return False
        for l in range(L):
            src, src_row = (X, start) if l == 0 else (scratch[(l - 1) % 2], 0)
            dst, dst_row = (out, start) if l == L - 1 else (scratch[l % 2], 0)
            rowmajor_layer_rows(dst, dst_row, src, src_row, rows, weights[l], biases[l], l < L - 1)
        softmax_inplace(out[start : start + rows])
    return True


@cached_njit
def checked_panel_rows(C, A, W, P, b, relu, r0, r1, p, k_lo, k_hi):
    """C[r0:r1, panel p] = epilogue(A[r0:r1] @ P[p] + b) (one tile: at most TILE_ROWS rows), checking as it reads
    P[p] that its rows k_lo:k_hi hold W's, bit for bit, in panel p's columns (checked_panel_tile). Returns whether
    they do; if not, C's entries came from the stale panel. Overwrites those entries of C."""
    K, N = W.shape
    lda, ldc = A.strides[0] // 4, C.strides[0] // 4
    flag = np.int32(1 if relu else 0)
    col = p * PANEL_WIDTH
    ncols = min(PANEL_WIDTH, N - col)
    if ncols == PANEL_WIDTH:
        same = _checked_tile(A, r0 * lda, lda, P, p * K * PANEL_WIDTH, W, col, N, K, C, r0 * ldc + col, ldc,
                             r1 - r0, ncols, b, col, flag, k_lo, k_hi)
    else:
        same = _checked_tile_masked(A, r0 * lda, lda, P, p * K * PANEL_WIDTH, W, col, N, K, C, r0 * ldc + col, ldc,
                                    r1 - r0, ncols, b, col, flag, k_lo, k_hi)
    return same != 0


@cached_njit
def on_cache_lines(W):
    """Whether every row of W (K, N) float32 C-contiguous starts on a cache line: W's data does, and a row is a
    whole number of them (N a multiple of 16). The NR columns a tile loads from a row (64 bytes with AVX2, 128
    with AVX-512) are then whole cache lines; W 16 bytes off (NumPy's own alignment of large arrays) spreads
    each over one line more, and a tile reading W straight measured 1.2x slower so (64 rows, 784 x 64 on a
    Zen 3, on one thread and on two at once) than off the packed copy checked against W."""
    return W.ctypes.data % CACHE_LINE == 0 and (W.shape[1] * 4) % CACHE_LINE == 0


@cached_njit(nogil=True)
def rowmajor_layer_part_into(C, A, W, b, relu, r0, r1, p0, p1, check_finite):
    """C[r0:r1, panels p0:p1] = epilogue(A[r0:r1] @ W + b), epilogue ReLU if relu, read straight off W (K, N)
    row-major; overwrites those entries of C. `panels` as in the packed layout: columns p * PANEL_WIDTH up to
    (p + 1) * PANEL_WIDTH. The MR x NR row-major tile, rows outer and columns inner (a tile's rows of A stay
    in L1 while W's columns stream from L2). Rows short of a whole tile at the end: one by one through the
    single-row tile where W fits in L1 (STRAIGHT_MAX_BYTES) and that takes fewer vector FMAs (a short MR x NR
    tile does MR rows' work), else in one short MR x NR tile (which reads W's columns once for all of them,
    and wastes fewer lanes on a narrow layer). The same bits as
    packed_layer_part_into. Returns False, at once, if check_finite and a row of A[r0:r1] holds NaN or inf
    (each tile's rows checked just before)."""
    require_c_contiguous(C, A, W, b)
    K, N = W.shape
    lda, ldc = A.strides[0] // 4, C.strides[0] // 4
    flag = np.int32(1 if relu else 0)
    c0, c1 = p0 * ROW_TILE_COLUMNS, min(N, p1 * ROW_TILE_COLUMNS)
    short = (r1 - r0) % ROW_TILE
    single_row_fmas = short * ((c1 - c0 + WIDE_COLUMNS - 1) // WIDE_COLUMNS) * WIDE_VECTORS
    short_tile_fmas = ((c1 - c0 + ROW_TILE_COLUMNS - 1) // ROW_TILE_COLUMNS) * ROW_TILE * TILE.nv
    whole = r1 - short if W.size * 4 <= STRAIGHT_MAX_BYTES and single_row_fmas < short_tile_fmas else r1
    for i0 in range(r0, whole, ROW_TILE):
        rows = min(ROW_TILE, whole - i0)
        if check_finite and not rows_finite(A, i0, i0 + rows):
            return False
        a_off, c_off = i0 * lda, i0 * ldc
        for col in range(c0, c1, ROW_TILE_COLUMNS):
            ncols = min(ROW_TILE_COLUMNS, N - col)
            if ncols == ROW_TILE_COLUMNS:
                _rows_tile(A, a_off, lda, W, col, N, K, C, c_off + col, ldc, rows, ncols, b, col, flag)
            else:
                _rows_tile_masked(A, a_off, lda, W, col, N, K, C, c_off + col, ldc, rows, ncols, b, col, flag)
    for r in range(whole, r1):
        if check_finite and not rows_finite(A, r, r + 1):
            return False
        a_off, c_off = r * lda, r * ldc
        for col in range(c0, c1, WIDE_COLUMNS):
            ncols = min(WIDE_COLUMNS, c1 - col)
            if ncols == WIDE_COLUMNS:
                _wide_tile(A, a_off, lda, W, col, N, K, C, c_off + col, ldc, 1, ncols, b, col, flag)
            else:
                _wide_tile_masked(A, a_off, lda, W, col, N, K, C, c_off + col, ldc, 1, ncols, b, col, flag)
    return True


@cached_njit
def reads_straight(W):
    """Whether layer_part_into reads W straight (rowmajor_layer_part_into) rather than a packed copy of it: W's
    rows start on cache lines, or W fits in L1."""
    return on_cache_lines(W) or W.size * 4 <= STRAIGHT_MAX_BYTES


@cached_njit(nogil=True)
def layer_part_into(C, A, W, P, b, relu, r0, r1, p0, p1, check_finite):
    """C[r0:r1, panels p0:p1] = epilogue(A[r0:r1] @ W + b): rowmajor_layer_part_into where reads_straight(W)
    (W's rows on cache lines, as fastmlp.MLP allocates its weights, or W small), which reads only W; else
    packed_layer_part_into, off the packed copy P checked against W. The same bits either way; the same
    return value (False if check_finite found NaN or inf in A's rows)."""
    if reads_straight(W):
        return rowmajor_layer_part_into(C, A, W, b, relu, r0, r1, p0, p1, check_finite)
    return packed_layer_part_into(C, A, W, P, b, relu, r0, r1, p0, p1, check_finite)


@cached_njit(nogil=True)
def packed_layer_part_into(C, A, W, P, b, relu, r0, r1, p0, p1, check_finite):
    """C[r0:r1, panels p0:p1] = epilogue(A[r0:r1] @ W + b), epilogue ReLU if relu; overwrites those entries of C.

    One part of one layer of a larger inference call. W (K, N) row-major, as the model keeps it; P
    (panels, K, PANEL_WIDTH) a packed copy of it that the caller keeps between calls (zeros at first). The
    training forward tiles read P, rows outer and panels inner, and check it against W as they read it
    (checked_panel_rows), so that an edit of W in place, whatever it changed, is seen: the t-th of the T
    tiles of rows checks W's rows K t / T to K (t + 1) / T of every panel, so that W's reads (from L3: W, P
    and A do not all fit a core's L2) are spread over all the tiles' FMAs. A panel found stale is repacked
    from W (overwriting it in P) and all its rows computed again. (Checking all of W in the first tile of rows
    measured 4-8 % slower on half of layer 0 at batch 64, a panel a tile slower still: each checked tile then
    waited for W.) The same operations per output element as `rowmajor_forward_probs_into`: the same bits.
    Returns False, at once, if check_finite and a row of A[r0:r1] holds NaN or inf (each tile's rows are
    checked just before its tiles read them).
    """
    require_c_contiguous(C, A, W, P, b)
    K = W.shape[0]
    tiles = (r1 - r0 + TILE_ROWS - 1) // TILE_ROWS
    stale = False
    for t in range(tiles):
        i0 = r0 + t * TILE_ROWS
        i1 = min(i0 + TILE_ROWS, r1)
        if check_finite and not rows_finite(A, i0, i1):
            return False
        k_lo, k_hi = K * t // tiles, K * (t + 1) // tiles
        for p in range(p0, p1):
            if not checked_panel_rows(C, A, W, P, b, relu, i0, i1, p, k_lo, k_hi):
                stale = True
    if stale:  # after an edit of W: find the panels that differ, repack them and compute their rows again
        kind = BIAS_RELU if relu else BIAS
        for p in range(p0, p1):
            if panel_differs(P[p], W, p):
                pack_panel_into(P[p], W, p)
                forward_part(C, A, P, b, C, kind, r0, r1, p, p + 1)
    return True


@cached_njit(nogil=True)
def packing_forward_probs_into(out, X, weights, biases, r0, r1):
    """rowmajor_forward_probs_into for many rows: all of the net's weights packed first (buffers of this call's
    own), then the rows in blocks through every layer with the training forward tiles (rows outer, panels
    inner: a tile's rows of A stay in L1 while the panels stream from L2). The same bits.
    Returns False, at once, if a row of X[r0:r1] holds NaN or inf. Releases the GIL.
    """
    require_c_contiguous(out, X)
    L = len(weights)
    packed = []
    widest = 1
    for l in range(L):
        K, N = weights[l].shape
        P = np.empty((panel_count(N), K, PANEL_WIDTH), dtype=np.float32)
        pack_weights_into(P, weights[l])
        packed.append(P)
        if l < L - 1:
            widest = max(widest, N)
    block = min(BLOCK_ROWS, max(r1 - r0, 1))
    scratch = (np.empty(block * widest, dtype=np.float32), np.empty(block * widest, dtype=np.float32))
    for start in range(r0, r1, block):
        rows = min(block, r1 - start)
        src = X[start : start + rows]
        for l in range(L):
            N = weights[l].shape[1]
            if l == 0 and L > 1:  # each tile's rows checked just before its tiles read them: X's block is not
                dst = scratch[0][: rows * N].reshape((rows, N))  # pulled into L2 ahead of them (W's panels are)
                for i0 in range(0, rows, TILE_ROWS):
                    i1 = min(i0 + TILE_ROWS, rows)
                    if not rows_finite(src, i0, i1):
                        return False
                    forward_part(dst, src, packed[0], biases[0], dst, BIAS_RELU, i0, i1, 0, panel_count(N))
                src = dst
            elif l < L - 1:
                dst = scratch[l % 2][: rows * N].reshape((rows, N))
                forward_part(dst, src, packed[l], biases[l], dst, BIAS_RELU, 0, rows, 0, panel_count(N))
                src = dst
            else:
                dst = out[start : start + rows]
                if L == 1 and not rows_finite(src, 0, rows):
                    return False
                forward_part(dst, src, packed[l], biases[l], dst, BIAS, 0, rows, 0, panel_count(N))
        softmax_inplace(out[start : start + rows])
    return True
