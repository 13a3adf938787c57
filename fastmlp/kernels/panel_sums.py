"""Column sums of dZ held in column panels (packed.panels_from_rows_into): the bias gradients of the numba
backend's step, read from the panels that the weight update reads too."""

from numba import types
from numba.extending import intrinsic

from ..runtime.jit import cached_njit
from . import simd_ir
from .contiguity import require_c_contiguous
from .packed import PANEL_WIDTH, _data
from .tiles import TILE


@intrinsic
def _column_sums(typingctx, DP, d_off, rows, out, o_off, first, count):
    """out[o_off:o_off + count] = column sums first:first + count of the `rows` rows of the panel at DP's
    offset d_off (simd_ir.column_sums); offsets in floats."""
    sig = types.void(DP, types.intp, types.intp, out, types.intp, types.intp, types.intp)

    def codegen(context, builder, signature, args):
        DP_, d_off_, rows_, out_, o_off_, first_, count_ = args
        fn = simd_ir.column_sums(builder.module, TILE.vw, TILE.nv)
        builder.call(fn, [_data(context, builder, signature.args[0], DP_, d_off_), rows_,
                          _data(context, builder, signature.args[3], out_, o_off_), first_, count_])
        return context.get_dummy_value()

    return sig, codegen


@cached_njit
def panel_column_sums_into(out, DP, n, c0, c1):
    """out[c0:c1] = column sums of rows 0:n of D, DP holding D in column panels (panels_from_rows_into);
    overwrites out[c0:c1]. Each column is summed from row 0 down (a scalar loop's order and bits), but in
    vector registers: a loop adding into out[j] row by row ran 5-10x slower, each row's adds waiting on the
    stores of the row before (the compiler cannot tell that out and DP do not overlap)."""
    require_c_contiguous(out, DP)
    for p in range(c0 // PANEL_WIDTH, -(-c1 // PANEL_WIDTH)):
        j0, j1 = max(c0, p * PANEL_WIDTH), min(c1, (p + 1) * PANEL_WIDTH)
        _column_sums(DP, p * DP.shape[1] * PANEL_WIDTH, n, out, j0, j0 - p * PANEL_WIDTH, j1 - j0)
