"""The calls from Numba code into the LLVM IR tiles of fastmlp.kernels.simd_ir, update_ir and nonzero_ir: one
`@intrinsic` each, which declares the tile's LLVM function in the calling module and calls it with pointers into
the arrays at the given offsets (in floats), and the scratch buffers those calls use, on the caller's stack.

fastmlp.kernels.packed's kernels are made of these; nothing else calls them.
"""

from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

from . import nonzero_ir, simd_ir, update_ir
from .packing import _data
from .tiles import TILE

# update_part's ranges of rows (see there): 128 rows of A's tile columns are 8 KB of L1 (128 cache lines).
SUM_CHUNK_ROWS = 128
CARRY_PANELS = 16  # at most this many panels a group when the sum is cut in ranges (carry: 6 KB with AVX2)


@intrinsic
def _forward_tile(typingctx, A, a_off, lda, P, p_off, K, C, c_off, ldc, rows, ncols, bias, b_off, mask, m_off, ldm,
                  kind, ahead_off, ahead_step, columns, listed):
    """One tile of C = epilogue(A @ W) (simd_ir.forward_tile), prefetching A from ahead_off on, ahead_step
    an iteration; offsets and strides in floats. listed: its loop over the K columns of A listed in `columns`
    (a _column_list_buffer, as _nonzero_columns wrote it), else over all (columns then unread)."""
    sig = types.void(A, types.intp, types.intp, P, types.intp, types.intp, C, types.intp, types.intp, types.intp,
                     types.intp, bias, types.intp, mask, types.intp, types.intp, types.int32, types.intp, types.intp,
                     columns, types.boolean)

    def codegen(context, builder, signature, args):
        columns_, listed_ = args[19:]
        _call_listed_or_not(builder, listed_, simd_ir.forward_tile, _forward_tile_arguments(context, builder,
                                                                                            signature, args), columns_)
        return context.get_dummy_value()

    return sig, codegen


def _forward_tile_arguments(context, builder, signature, args):
    """The LLVM arguments of simd_ir.forward_tile (but its list) from _forward_tile's (or _forward_tile_unlisted's)."""
    (A_, a_off_, lda_, P_, p_off_, K_, C_, c_off_, ldc_, rows_, ncols_, bias_, b_off_, mask_, m_off_, ldm_,
     kind_, ahead_off_, ahead_step_) = args[:19]
    ty = signature.args
    return [_data(context, builder, ty[0], A_, a_off_), lda_, _data(context, builder, ty[3], P_, p_off_), K_,
            _data(context, builder, ty[6], C_, c_off_), ldc_, rows_, ncols_,
            _data(context, builder, ty[11], bias_, b_off_), _data(context, builder, ty[13], mask_, m_off_), ldm_, kind_,
            _data(context, builder, ty[0], A_, ahead_off_), ahead_step_]


def _call_listed_or_not(builder, listed, declare_tile, arguments, the_list):
    """Emit: where `listed` (an i1), a call of the tile's indexed function over the_list, else of its plain one;
    declare_tile(module, TILE, indexed=...) declares either (simd_ir.forward_tile, update_ir.wgrad_tile)."""
    with builder.if_else(listed) as (over_list, over_all):
        with over_list:
            builder.call(declare_tile(builder.module, TILE, indexed=True), arguments + [the_list])
        with over_all:
            builder.call(declare_tile(builder.module, TILE), arguments)


@intrinsic
def _forward_tile_unlisted(typingctx, A, a_off, lda, P, p_off, K, C, c_off, ldc, rows, ncols, bias, b_off, mask,
                           m_off, ldm, kind, ahead_off, ahead_step):
    """_forward_tile over all K columns: the caller that never lists (forward_part_into_panels) compiles only the
    unlisted tile."""
    sig = types.void(A, types.intp, types.intp, P, types.intp, types.intp, C, types.intp, types.intp, types.intp,
                     types.intp, bias, types.intp, mask, types.intp, types.intp, types.int32, types.intp, types.intp)

    def codegen(context, builder, signature, args):
        builder.call(simd_ir.forward_tile(builder.module, TILE), _forward_tile_arguments(context, builder, signature,
                                                                                         args))
        return context.get_dummy_value()

    return sig, codegen


@intrinsic
def _nonzero_columns(typingctx, A, a_off, lda, rows, K, columns):
    """The count of columns k < K where A's rows a_off.. (rows of them, lda floats apart) are not all zero,
    those columns written to `columns` (simd_ir.nonzero_columns)."""
    sig = types.intp(A, types.intp, types.intp, types.intp, types.intp, columns)

    def codegen(context, builder, signature, args):
        A_, a_off_, lda_, rows_, K_, columns_ = args
        fn = nonzero_ir.nonzero_columns(builder.module, TILE.vw, TILE.mr, TILE.nr)
        return builder.call(fn, [_data(context, builder, signature.args[0], A_, a_off_), lda_, rows_, K_, columns_])

    return sig, codegen


# The columns an indexed forward tile can list: a tile with more columns than this (a layer of more than 4096
# inputs) runs over all of them.
COLUMN_LIST_CAPACITY = 4096


@intrinsic
def _column_list_buffer(typingctx):
    """A pointer to COLUMN_LIST_CAPACITY + VW int32 of scratch on the stack of the function that uses it (allocated
    once per call of that function, in its entry block): a row tile's list of nonzero columns."""
    sig = types.CPointer(types.int32)()

    def codegen(context, builder, signature, args):
        # An alloca of COLUMN_LIST_CAPACITY + VW int32, not of an array type: LLVM's InstCombine took 0.5 s of the
        # kernel's compile over a 16 KB array type's alloca.
        return cgutils.alloca_once(builder, ir.IntType(32), size=COLUMN_LIST_CAPACITY + TILE.vw)

    return sig, codegen


@intrinsic
def _wgrad_tile(typingctx, A, a_off, lda, D, d_off, ldd, n, lo, hi, ncols, P, p_off, V, lr, momentum, weight_decay,
                rule, carry, carry_off, chunk, rows, listed):
    """Tile rows lo:hi of W (packed) updated by an SGD rule from A[:, k0+lo:k0+hi].T @ D[:, panel]
    (update_ir.wgrad_tile); V at P's offset; carry (a _carry_buffer, at carry_off floats) and chunk: the
    sum over a range of rows continued from, or left in, carry. listed (a whole tile only): the sum over the n
    rows listed in `rows` (a _row_list_buffer, as _list_nonzero_rows wrote it), else over rows 0..n-1."""
    sig = types.void(A, types.intp, types.intp, D, types.intp, types.intp, types.intp, types.intp, types.intp,
                     types.intp, P, types.intp, V, types.float32, types.float32, types.float32, types.int32, carry,
                     types.intp, types.int32, rows, types.boolean)

    def codegen(context, builder, signature, args):
        (A_, a_off_, lda_, D_, d_off_, ldd_, n_, lo_, hi_, ncols_, P_, p_off_, V_, lr_, mu_, wd_, rule_, carry_,
         carry_off_, chunk_, rows_, listed_) = args
        ty = signature.args
        arguments = [_data(context, builder, ty[0], A_, a_off_), lda_, _data(context, builder, ty[3], D_, d_off_),
                     ldd_, n_, lo_, hi_, ncols_, _data(context, builder, ty[10], P_, p_off_),
                     _data(context, builder, ty[12], V_, p_off_), lr_, mu_, wd_, rule_,
                     builder.gep(carry_, [carry_off_]), chunk_]
        _call_listed_or_not(builder, listed_, update_ir.wgrad_tile, arguments, rows_)
        return context.get_dummy_value()

    return sig, codegen


@intrinsic
def _list_nonzero_rows(typingctx, listed_rows, A, a_off, lda, n):
    """The count of rows i < n where A's TILE_ROWS floats from a_off + i * lda are not all zero, those i written to
    listed_rows (a _row_list_buffer, n <= SUM_CHUNK_ROWS; simd_ir.nonzero_rows)."""
    sig = types.intp(listed_rows, A, types.intp, types.intp, types.intp)

    def codegen(context, builder, signature, args):
        rows_, A_, a_off_, lda_, n_ = args
        fn = nonzero_ir.nonzero_rows(builder.module, TILE.mr)
        return builder.call(fn, [_data(context, builder, signature.args[1], A_, a_off_), lda_, n_, rows_])

    return sig, codegen


@intrinsic
def _row_list_buffer(typingctx):
    """A pointer to SUM_CHUNK_ROWS int32 of scratch on the stack of the function that uses it (allocated once per
    call of that function): the rows of a weight-gradient tile's sum where its columns of A are not all zero."""
    sig = types.CPointer(types.int32)()

    def codegen(context, builder, signature, args):
        return cgutils.alloca_once(builder, ir.IntType(32), size=SUM_CHUNK_ROWS)

    return sig, codegen


@intrinsic
def _adam_tile(typingctx, A, a_off, lda, D, d_off, ldd, n, lo, hi, ncols, G, P, pending_off, M, S, pending, lr,
               beta1, weight_decay, rule, beta2, eps, c1, c2):
    """One Adam tile (update_ir.adam_tile): this tile's gradient accumulated into G while the pending tile's, left in G,
    updates P, M and S at offset pending_off (its first `pending` vectors)."""
    sig = types.void(A, types.intp, types.intp, D, types.intp, types.intp, types.intp, types.intp, types.intp,
                     types.intp, G, P, types.intp, M, S, types.intp, types.float32, types.float32, types.float32,
                     types.int32, types.float32, types.float32, types.float32, types.float32)

    def codegen(context, builder, signature, args):
        (A_, a_off_, lda_, D_, d_off_, ldd_, n_, lo_, hi_, ncols_, G_, P_, pending_off_, M_, S_, pending_, lr_, b1_,
         wd_, rule_, b2_, eps_, c1_, c2_) = args
        ty = signature.args
        fn = update_ir.adam_tile(builder.module, TILE)
        builder.call(fn, [_data(context, builder, ty[0], A_, a_off_), lda_, _data(context, builder, ty[3], D_, d_off_),
                          ldd_, n_, lo_, hi_, ncols_, G_, _data(context, builder, ty[11], P_, pending_off_),
                          _data(context, builder, ty[13], M_, pending_off_),
                          _data(context, builder, ty[14], S_, pending_off_), pending_, lr_, b1_, wd_, rule_, b2_, eps_,
                          c1_, c2_])
        return context.get_dummy_value()

    return sig, codegen


@intrinsic
def _tile_buffer(typingctx):
    """A pointer to MR x NR floats of scratch on the stack of the function that uses it (allocated once per call of
    that function, in its entry block): where adam_tile leaves a tile's gradient for the next call."""
    sig = types.CPointer(types.float32)()

    def codegen(context, builder, signature, args):
        return cgutils.alloca_once(builder, ir.FloatType(), size=TILE.mr * TILE.nr)

    return sig, codegen


@intrinsic
def _carry_buffer(typingctx):
    """A pointer to CARRY_PANELS x MR x NR floats of scratch on the stack of the function that uses it (allocated
    once per call of that function): the accumulators of a group's tiles between two ranges of rows."""
    sig = types.CPointer(types.float32)()

    def codegen(context, builder, signature, args):
        return cgutils.alloca_once(builder, ir.FloatType(), size=CARRY_PANELS * TILE.mr * TILE.nr)

    return sig, codegen


@intrinsic
def _flush_subnormals_on(typingctx):
    """x86: turn on the MXCSR's flush-to-zero and denormals-are-zero modes for this thread; returns the
    MXCSR to restore (`_restore_mxcsr`). A no-op returning 0 elsewhere (update_ir.adam_tile flushes itself)."""
    sig = types.int32()

    def codegen(context, builder, signature, args):
        if not update_ir.X86:
            return ir.Constant(ir.IntType(32), 0)
        old = update_ir.read_mxcsr(builder)
        update_ir.write_mxcsr(builder, builder.or_(old, ir.Constant(ir.IntType(32), update_ir.FTZ_DAZ)))
        return old

    return sig, codegen


@intrinsic
def _restore_mxcsr(typingctx, csr):
    """x86: MXCSR = csr, as `_flush_subnormals_on` returned it; a no-op elsewhere."""
    sig = types.void(types.int32)

    def codegen(context, builder, signature, args):
        if update_ir.X86:
            update_ir.write_mxcsr(builder, args[0])
        return context.get_dummy_value()

    return sig, codegen
