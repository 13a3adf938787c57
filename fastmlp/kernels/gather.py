"""Row gathers: the batch's rows copied (and uint8 pixels scaled) into a float32 buffer."""

import numpy as np
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

from ..runtime.jit import cached_njit
from .contiguity import require_c_contiguous

# Rows ahead that the gathers prefetch: shuffled rows are latency-bound reads (a 784-byte uint8
# row is 13 cache lines, too short for the hardware prefetcher); 4 rows ahead was fastest.
_PREFETCH_ROWS = 4
# Of each such row, the first 832 bytes (13 cache lines: a whole 784-byte uint8 MNIST row) into every
# level; the rest of a longer row into L2 only. Prefetching all 49 lines of a float32 row into L1
# overflowed the miss queue: 2.6M rows/s, against 3.4M with the head only (8.6M from uint8). The rest
# into L2 changes nothing for a gather on its own (3.30-3.45M rows/s against 3.27-3.32M, an AMD EPYC
# Zen 4), but in the training step, whose L2 already holds the heads (prefetch_rows_to_l2), the float32
# gather of batch 32 to 256 took 25-30 % less time and the median step 2-3 % (docs/results.md).
PREFETCH_ROW_BYTES = 832


def _prefetch_intrinsic(locality, doc):
    """An intrinsic (flat, index) hinting the CPU to fetch the cache line of flat[index] (1-D array)
    into the caches of llvm.prefetch's `locality` (3: all levels, L1 included; 2: L2 and L3)."""

    def prefetch(typingctx, flat, index):
        def codegen(context, builder, signature, args):
            ary = context.make_array(signature.args[0])(context, builder, args[0])
            ptr = builder.bitcast(builder.gep(ary.data, [args[1]]), ir.IntType(8).as_pointer())
            i32 = ir.IntType(32)
            fnty = ir.FunctionType(ir.VoidType(), [ptr.type, i32, i32, i32])
            fn = cgutils.get_or_insert_function(builder.module, fnty, "llvm.prefetch.p0")
            builder.call(fn, [ptr, ir.Constant(i32, 0), ir.Constant(i32, locality), ir.Constant(i32, 1)])
            return context.get_dummy_value()

        return types.void(flat, types.intp), codegen

    prefetch.__doc__ = doc
    return intrinsic(prefetch)


_prefetch = _prefetch_intrinsic(3, "Fetch flat[index]'s cache line into every level (L1 too); no effect on results.")
_prefetch_l2 = _prefetch_intrinsic(2, "Fetch flat[index]'s cache line into L2 and L3, not L1; no effect on results.")


@cached_njit(inline="always")
def _prefetch_row(flat, row, n_cols):
    """Fetch row `row` of a (rows, n_cols) array, flat its 1-D view: its first PREFETCH_ROW_BYTES into every
    cache level, the rest (none for a uint8 MNIST row) into L2; no effect on results."""
    step = max(64 // flat.itemsize, 1)
    base = row * n_cols
    head = min(n_cols, PREFETCH_ROW_BYTES // flat.itemsize)
    for j in range(0, head, step):
        _prefetch(flat, base + j)
    _prefetch(flat, base + head - 1)
    for j in range(head, n_cols, step):
        _prefetch_l2(flat, base + j)
    if n_cols > head:
        _prefetch_l2(flat, base + n_cols - 1)


@cached_njit(inline="always")
def prefetch_rows_to_l2(X, rows):
    """Hint the CPU to bring the first 832 bytes of each row X[rows[i]] into L2; no effect on results.

    The numba backend calls it for the next batch's rows before it computes a step, so that the
    gather that follows finds them there instead of in DRAM (13 cache lines a uint8 MNIST row,
    each a ~100 ns miss). Into L2 only: the step's tiles need all of L1.
    """
    flat = X.reshape(X.size)
    n_cols = X.shape[1]
    step = max(64 // flat.itemsize, 1)
    head = min(n_cols, PREFETCH_ROW_BYTES // flat.itemsize)
    for row in rows:
        base = row * n_cols
        for j in range(0, head, step):
            _prefetch_l2(flat, base + j)


@cached_njit
def gather_rows(out, X, rows):
    """out[i] = X[rows[i]] for a float32 C-contiguous X (N, f), integer rows (n,), out (n, f); overwrites out."""
    gather_rows_scaled(out, X, rows, np.float32(1.0))  # x * 1.0f is exact


@cached_njit
def gather_rows_scaled(out, pixels_u8, rows, scale):
    """out[i] = float32(pixels_u8[rows[i]]) * scale, C-contiguous uint8 (or float32) pixels (N, f), rows (n,),
    out (n, f) float32; overwrites out."""
    require_c_contiguous(out, pixels_u8, rows)
    n, f = out.shape
    s = np.float32(scale)
    flat = pixels_u8.reshape(pixels_u8.size)
    for i in range(min(_PREFETCH_ROWS, n)):
        _prefetch_row(flat, rows[i], f)
    for i in range(n):
        if i + _PREFETCH_ROWS < n:
            _prefetch_row(flat, rows[i + _PREFETCH_ROWS], f)
        r = rows[i]
        for j in range(f):
            out[i, j] = np.float32(pixels_u8[r, j]) * s


@cached_njit
def gather_labels(out, y, rows):
    """out[i] = y[rows[i]] for integer labels y (N,), rows (n,), out (n,); overwrites out."""
    require_c_contiguous(out, y, rows)
    for i in range(out.shape[0]):
        out[i] = y[rows[i]]
