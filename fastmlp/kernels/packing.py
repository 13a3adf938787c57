"""Conversions into and out of the packed layout of `fastmlp.kernels.packed` (defined there): a weight
matrix packed and unpacked, one panel packed or compared, W.T packed from W packed, and a batch's rows
(dZ) copied into the same column panels.

    pack_weights_into(P, W)            P = W packed            unpack_weights_into(W, P)   the reverse
    transpose_packed_into(PT, P, k0, k1)   rows k0:k1 of W (packed in P) into PT = W.T packed
    panels_from_rows_into(DP, D, r0, r1)   rows r0:r1 of D into its column panels DP

`fastmlp.kernels.packed` imports every name here, so `packed.pack_weights_into` and the others keep
their documented path.
"""

import numpy as np
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

from ..runtime.jit import cached_njit
from . import simd_ir
from .contiguity import require_c_contiguous
from .tiles import TILE

PANEL_WIDTH = TILE.nr  # NR: the floats of a packed row (fastmlp.kernels.packed)
VECTOR_WIDTH = TILE.vw  # floats in one SIMD vector


def _data(context, builder, array_type, array, offset):
    """Pointer to element `offset` (in floats) of the array's flat data."""
    return builder.gep(context.make_array(array_type)(context, builder, array).data, [offset])


@intrinsic
def _copy_panel_row(typingctx, dst, d_off, src, s_off):
    """PANEL_WIDTH floats of src from offset s_off copied to dst from d_off (offsets in floats; the two must
    not overlap). An llvm.memcpy of constant length: a few vector loads and stores, where a loop of
    element copies stayed scalar (the compiler cannot tell two arrays apart)."""
    sig = types.void(dst, types.intp, src, types.intp)

    def codegen(context, builder, signature, args):
        dst_, d_off_, src_, s_off_ = args
        ty = signature.args
        cgutils.raw_memcpy(builder, _data(context, builder, ty[0], dst_, d_off_),
                           _data(context, builder, ty[2], src_, s_off_), ir.Constant(ir.IntType(64), PANEL_WIDTH), 4)
        return context.get_dummy_value()

    return sig, codegen


@intrinsic
def _transpose_block(typingctx, src, s_off, dst, d_off, count):
    """The VECTOR_WIDTH x VECTOR_WIDTH block of packed rows at src's offset s_off written transposed at dst's
    offset d_off, its first `count` columns (simd_ir.transpose_block; rows PANEL_WIDTH floats apart in both;
    offsets in floats)."""
    sig = types.void(src, types.intp, dst, types.intp, types.intp)

    def codegen(context, builder, signature, args):
        src_, s_off_, dst_, d_off_, count_ = args
        ty = signature.args
        fn = simd_ir.transpose_block(builder.module, TILE.vw, TILE.nr)
        builder.call(fn, [_data(context, builder, ty[0], src_, s_off_), _data(context, builder, ty[2], dst_, d_off_),
                          count_])
        return context.get_dummy_value()

    return sig, codegen


@cached_njit
def panel_count(n_columns):
    """Panels of PANEL_WIDTH columns that hold n_columns (the first dimension of a packed matrix)."""
    return (n_columns + PANEL_WIDTH - 1) // PANEL_WIDTH


def packed_shape(n_rows, n_columns):
    """Shape of the packed form of a (n_rows, n_columns) weight matrix: (panels, n_rows, PANEL_WIDTH)."""
    return (panel_count(n_columns), n_rows, PANEL_WIDTH)


@cached_njit
def pack_weights_into(P, W):
    """P = W (K, N) float32 in the packed layout (panels, K, PANEL_WIDTH), zero padding; overwrites P."""
    require_c_contiguous(P, W)
    for p in range(P.shape[0]):
        pack_panel_into(P[p], W, p)


@cached_njit
def pack_panel_into(panel, W, p):
    """panel (K, PANEL_WIDTH) = panel p of W (K, N) packed: W[:, p * PANEL_WIDTH:][:, :PANEL_WIDTH], zero padding;
    overwrites panel."""
    K, N = W.shape
    col = p * PANEL_WIDTH
    for k in range(K):
        for j in range(PANEL_WIDTH):
            panel[k, j] = W[k, col + j] if col + j < N else np.float32(0.0)


@cached_njit
def panel_differs(panel, W, p):
    """Whether panel (K, PANEL_WIDTH) differs in any bit from panel p of W (K, N) as pack_panel_into packs it
    (-0.0 and 0.0 differ; so do two NaNs of other bits)."""
    K, N = W.shape
    col = p * PANEL_WIDTH
    P_bits, W_bits = panel.view(np.uint32), W.view(np.uint32)
    for k in range(K):
        for j in range(PANEL_WIDTH):
            if P_bits[k, j] != (W_bits[k, col + j] if col + j < N else np.uint32(0)):
                return True
    return False


@cached_njit
def transpose_packed_into(PT, P, k0, k1):
    """Rows k0:k1 of the packed W in P (panels, K, NR) written into PT, W.T packed; overwrites those entries of PT
    (and PT's zero padding when k1 = K)."""
    require_c_contiguous(PT, P)
    K = P.shape[1]
    N = PT.shape[1]
    end = k1 if k1 < K else PT.shape[0] * PANEL_WIDTH
    # Blocks of VECTOR_WIDTH rows and columns are transposed in vector registers (_transpose_block): the
    # rows b0:b1 of W (aligned to the vector width) and all its columns, the last block of a width that is not
    # a multiple of VECTOR_WIDTH (W_2's 10 columns) read whole (P's padding) and stored for its columns only;
    # the other rows element by element. (W_2.T element by element was 0.8 % of a two-worker step at batch 64
    # on an Intel Xeon.)
    V = VECTOR_WIDTH
    b0 = min(-(-k0 // V) * V, k1)
    b1 = max(b0, k1 // V * V)
    for kb in range(b0, b1, V):
        for nb in range(0, N, V):
            _transpose_block(P, (nb // PANEL_WIDTH * K + kb) * PANEL_WIDTH + nb % PANEL_WIDTH,
                             PT, (kb // PANEL_WIDTH * N + nb) * PANEL_WIDTH + kb % PANEL_WIDTH, min(V, N - nb))
    for k in range(k0, end):
        p, j = k // PANEL_WIDTH, k % PANEL_WIDTH
        n0 = N if b0 <= k < b1 else 0  # the blocks' columns are done
        if k < K:
            for n in range(n0, N):
                PT[p, n, j] = P[n // PANEL_WIDTH, k, n % PANEL_WIDTH]
        else:
            for n in range(n0, N):
                PT[p, n, j] = np.float32(0.0)


@cached_njit
def unpack_weights_into(W, P):
    """W (K, N) = the packed P (panels, K, PANEL_WIDTH), padding dropped; overwrites W."""
    require_c_contiguous(W, P)
    K, N = W.shape
    for k in range(K):
        for col in range(N):
            W[k, col] = P[col // PANEL_WIDTH, k, col % PANEL_WIDTH]


@cached_njit
def panels_from_rows_into(DP, D, r0, r1):
    """Rows r0:r1 of D (n, N) copied into DP (panel_count(N), >= n, PANEL_WIDTH), D in column panels:
        DP[p, r, j] = D[r, p * PANEL_WIDTH + j]
    the packed layout, with the batch's rows in place of W's. Overwrites those rows of DP; the columns past
    N (the last panel's padding) are left as they are: keep them zero, update_part reads them.
    """
    require_c_contiguous(DP, D)
    N = D.shape[1]
    ldd, panel_size = D.strides[0] // 4, DP.shape[1] * PANEL_WIDTH
    whole = N // PANEL_WIDTH  # panels of PANEL_WIDTH columns of D: one vector copy a row
    for r in range(r0, r1):
        for p in range(whole):
            _copy_panel_row(DP, p * panel_size + r * PANEL_WIDTH, D, r * ldd + p * PANEL_WIDTH)
        for j in range(N - whole * PANEL_WIDTH):
            DP[whole, r, j] = D[r, whole * PANEL_WIDTH + j]
