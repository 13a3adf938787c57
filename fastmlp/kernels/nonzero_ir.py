"""The LLVM IR that lists where an input is not zero, for the tiles that skip its zeros (packed's SKIP_ZERO_INPUTS):
`nonzero_columns` the columns of a forward tile's rows of A, `nonzero_rows` the rows of a weight-gradient tile's
columns of A. An input such as MNIST's pixels is 81 % zeros, and a zero input adds nothing to a sum: a tile that
runs over the listed columns (or rows) alone does about half of layer 0's FMAs, in the same order.
"""

from llvmlite import ir

from .simd_ir import I32, I64, PTR, _clamp_row, _counted_loop, _lane_mask, _vec, _Vectors, prefetch


def nonzero_columns(module, vw, mr, scale):
    """The LLVM function listing the columns where some of a tile's rows of A are not zero: the columns an
    indexed `forward_tile` reads (an input such as MNIST's pixels is 81 % zeros; a tile of 8 of its rows has
    no nonzero in about half of its 784 columns).

    i64 (float* a, i64 lda, i64 rows, i64 K, i32* out)
    a: the tile's first row of A (row stride lda floats), rows (1..mr) its real rows, K its columns. Writes
    k * scale for the columns k < K where some row has A[row, k] != 0 (a NaN counts, -0.0 does not) to
    out[0:count], in ascending order, and returns count; out must hold K + vw entries (each vector's lanes
    are written whatever they hold, the count advancing past the nonzero ones only: no branch per column).
    scale: the forward tile's NR, so that an entry is the offset of packed row k in its panel.
    """
    name = f"fastmlp_nonzero_columns_{vw}x{mr}x{scale}"
    if name in module.globals:
        return module.globals[name]
    fn = ir.Function(module, ir.FunctionType(I64, [PTR, I64, I64, I64, I32.as_pointer()]), name)
    fn.linkage = "internal"
    a, lda, rows, K, out = fn.args
    vec = _Vectors(module, vw)
    builder = ir.IRBuilder(fn.append_basic_block("entry"))
    a_rows = [builder.gep(a, [builder.mul(_clamp_row(builder, m, rows), lda)]) for m in range(mr)]

    def list_vector(builder, first, count, load):
        """Lanes first.. of every row (load(builder, ptr) a vector of them): the nonzero ones appended to out."""
        nonzero = None
        for row in a_rows:
            lane_nonzero = builder.fcmp_unordered("!=", load(builder, builder.gep(row, [first])), vec.zero)
            nonzero = lane_nonzero if nonzero is None else builder.or_(nonzero, lane_nonzero)
        # The lanes as the bits of one integer (a vpmovmskb / kmov), each lane's bit then shifted out: scalar
        # operations, where extracting each i1 lane from a vector took several vector instructions.
        bits = builder.zext(builder.bitcast(nonzero, ir.IntType(vw)), I64)
        first32 = builder.mul(builder.trunc(first, I32), ir.Constant(I32, scale))
        for j in range(vw):
            builder.store(builder.add(first32, ir.Constant(I32, j * scale)), builder.gep(out, [count]))
            bit = builder.and_(builder.lshr(bits, ir.Constant(I64, j)), ir.Constant(I64, 1))
            count = builder.add(count, bit)
        return count

    def whole_vector(builder, i, carried):
        first = builder.mul(i, ir.Constant(I64, vw))
        return [list_vector(builder, first, carried[0], vec.load)]

    whole = builder.sdiv(K, ir.Constant(I64, vw))
    (count,) = _counted_loop(builder, fn, whole, [ir.Constant(I64, 0)], whole_vector, "vector")
    first = builder.mul(whole, ir.Constant(I64, vw))
    entry_block = builder.block
    with builder.if_then(builder.icmp_signed("<", first, K)):
        # The last K % vw columns: masked loads (lanes past K read as zeros, so never listed).
        mask = _lane_mask(builder, ir.Constant(I64, 0), builder.sub(K, first), vw)
        tail_count = list_vector(builder, first, count, lambda builder, ptr: vec.masked_load(builder, ptr, mask))
        tail_block = builder.block
    result = builder.phi(I64)
    result.add_incoming(count, entry_block)
    result.add_incoming(tail_count, tail_block)
    builder.ret(result)
    return fn


def nonzero_rows(module, width):
    """The LLVM function listing the rows of A where a weight-gradient tile's `width` columns are not all zero: the
    rows an indexed `update_ir.wgrad_tile` sums over (in a batch of MNIST's pixels 40 % of the rows of 8 columns).

    i64 (float* a, i64 lda, i64 n, i32* out)
    a: A[0, k0] (row stride lda floats). Writes the rows i < n where some of A[i, k0:k0 + width] is not zero (a NaN
    counts, -0.0 does not) to out[0:count], ascending, and returns count; out must hold n entries. Each row is one
    vector load and compare, its index written whatever it holds and the count advanced past the nonzero ones
    only (no branch a row); the row 16 ahead is prefetched (a large batch's A comes from L3, and the tile that
    reads the listed rows next then finds them in L1).
    """
    name = f"fastmlp_nonzero_rows_{width}"
    if name in module.globals:
        return module.globals[name]
    fn = ir.Function(module, ir.FunctionType(I64, [PTR, I64, I64, I32.as_pointer()]), name)
    fn.linkage = "internal"
    a, lda, n, out = fn.args
    vt = _vec(width)
    builder = ir.IRBuilder(fn.append_basic_block("entry"))
    zero = ir.Constant(vt, [0.0] * width)
    ahead = builder.gep(a, [builder.mul(ir.Constant(I64, 16), lda)])

    def list_row(builder, i, carried):
        prefetch(builder, builder.gep(ahead, [builder.mul(i, lda)]))
        row = builder.load(builder.bitcast(builder.gep(a, [builder.mul(i, lda)]), vt.as_pointer()), align=4)
        lanes = builder.bitcast(builder.fcmp_unordered("!=", row, zero), ir.IntType(width))
        nonzero = builder.zext(builder.icmp_unsigned("!=", lanes, ir.Constant(ir.IntType(width), 0)), I64)
        builder.store(builder.trunc(i, I32), builder.gep(out, [carried[0]]))
        return [builder.add(carried[0], nonzero)]

    (count,) = _counted_loop(builder, fn, n, [ir.Constant(I64, 0)], list_row, "row")
    builder.ret(count)
    return fn
