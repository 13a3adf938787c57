"""The LLVM IR of the softmax + cross-entropy gradient of a batch's rows of logits, in vector registers.

`xent_rows` takes ROW_LANES rows at a time, one row a lane, for rows of up to ROW_LANES classes (the default
net's 10). Column j of the block's rows is gathered into one vector z_j, and every step is lane-wise:
    m = max_j z_j                 per row: a vector maximum across the columns
    e_j = exp(z_j - m)            a vector exp (below) a column
    s = sum_j e_j
    loss = log(s) - (z[label] - m)        a vector log; the losses added to the total row by row
    g_j = e_j * (inv_n / s)       then 0 where below the smallest normal float, and - inv_n at the label
    z_j = g_j                     scattered back
The scalar kernel (fastmlp.kernels.elementwise, for wider rows) runs the C library's exp ten times and three
serial loops a row: 41-52 ns a row on an Intel Xeon, 1.1-2.6 % of a training step; this one 11 ns.

The exp is Cephes' expf for x <= 0 (the row's maximum subtracted, every lane is): x clamped to -87.3
(below, e^x is under the smallest normal float, and the gradient flushes it to 0 anyway), n = floor(x log2(e)
+ 1/2), r = x - n ln 2 (ln 2 in two parts), e^r by a degree-5 polynomial, times 2^n built in the exponent
bits. The log is Cephes' logf. Each within a few ulp of the C library's; the sums run in another order than
the scalar loop's, so the bits differ from it in the last places (never with the worker count: each row is
computed alone).

ROW_LANES is 16 whatever the CPU: LLVM splits the vectors into two AVX2 registers, or four SSE ones, and
where a CPU has no gather or scatter instruction (AVX2 has no scatter), does them element by element.
"""

from llvmlite import ir

from .simd_ir import F32, I32, I64, PTR, _counted_loop, _intrinsic, _splat
from .update_ir import SMALLEST_NORMAL

ROW_LANES = 16

_LOG2E = 1.44269504088896341
_LN2_HI, _LN2_LO = 0.693359375, -2.12194440e-4
_EXP_POLY = (1.9875691500e-4, 1.3981999507e-3, 8.3334519073e-3, 4.1665795894e-2, 1.6666665459e-1, 5.0000001201e-1)


def _vector_exp(builder, x, lanes):
    """Emit e^x for a <lanes x float> x <= 0 (Cephes' expf; 0-ish below -87.3, see the module doc); NaN for NaN."""
    vt = x.type
    module = builder.module

    def const(value):
        return ir.Constant(vt, [value] * lanes)

    fmuladd = _intrinsic(module, f"llvm.fmuladd.v{lanes}f32", vt, [vt, vt, vt])
    maxnum = _intrinsic(module, f"llvm.maxnum.v{lanes}f32", vt, [vt, vt])
    floor = _intrinsic(module, f"llvm.floor.v{lanes}f32", vt, [vt])
    original = x
    x = builder.call(maxnum, [x, const(-87.3)])  # (maxnum drops a NaN: put back at the end)
    n = builder.call(floor, [builder.call(fmuladd, [x, const(_LOG2E), const(0.5)])])
    r = builder.fsub(builder.fsub(x, builder.fmul(n, const(_LN2_HI))), builder.fmul(n, const(_LN2_LO)))
    p = const(_EXP_POLY[0])
    for c in _EXP_POLY[1:]:
        p = builder.call(fmuladd, [p, r, const(c)])
    p = builder.fadd(builder.call(fmuladd, [p, builder.fmul(r, r), r]), const(1.0))
    # 2^n: n + 127 in the exponent bits (n >= -126 after the clamp, so a normal float)
    it = ir.VectorType(I32, lanes)
    exponent = builder.shl(builder.add(builder.fptosi(n, it), ir.Constant(it, [127] * lanes)),
                           ir.Constant(it, [23] * lanes))
    e = builder.fmul(p, builder.bitcast(exponent, vt))
    return builder.select(builder.fcmp_unordered("uno", original, original), original, e)  # NaN stays NaN


_LOG_POLY = (7.0376836292e-2, -1.1514610310e-1, 1.1676998740e-1, -1.2420140846e-1, 1.4249322787e-1,
             -1.6668057665e-1, 2.0000714765e-1, -2.4999993993e-1, 3.3333331174e-1)


def _vector_log(builder, x, lanes):
    """Emit log(x) for a <lanes x float> x > 0, normal (Cephes' logf: x = 2^e f, f in [sqrt(1/2), sqrt(2)), a
    degree-9 polynomial in f - 1); NaN for NaN."""
    vt, it = x.type, ir.VectorType(I32, lanes)

    def const(value, ty=vt):
        return ir.Constant(ty, [value] * lanes)

    fmuladd = _intrinsic(builder.module, f"llvm.fmuladd.v{lanes}f32", vt, [vt, vt, vt])
    bits = builder.bitcast(x, it)
    e = builder.sub(builder.ashr(bits, const(23, it)), const(126, it))
    f = builder.bitcast(builder.or_(builder.and_(bits, const(0x807FFFFF, it)), const(0x3F000000, it)), vt)
    small = builder.fcmp_ordered("<", f, const(0.707106781186547524))
    e = builder.sitofp(builder.select(small, builder.sub(e, const(1, it)), e), vt)
    f = builder.fsub(builder.select(small, builder.fadd(f, f), f), const(1.0))
    z = builder.fmul(f, f)
    y = const(_LOG_POLY[0])
    for c in _LOG_POLY[1:]:
        y = builder.call(fmuladd, [y, f, const(c)])
    y = builder.fmul(builder.fmul(y, f), z)
    y = builder.call(fmuladd, [e, const(_LN2_LO), y])
    y = builder.call(fmuladd, [z, const(-0.5), y])
    result = builder.call(fmuladd, [e, const(_LN2_HI), builder.fadd(f, y)])
    return builder.select(builder.fcmp_unordered("uno", x, x), x, result)  # NaN stays NaN


def xent_rows(module, label_bits=64, signed=True):
    """The LLVM function of the softmax + cross-entropy gradient of n rows; declared once per module.

    double (float* z, i64 n, i64 k, iB* labels, float inv_n)     B = label_bits, the labels signed or not
    z: n rows of k (<= ROW_LANES) logits, contiguous, each overwritten with (softmax - onehot(label)) * inv_n
    (entries below the smallest normal float flushed to 0 first); returns the rows' summed cross-entropy,
    log(sum e^z) - z[label] a row.

    ROW_LANES rows at a time, a row a lane: column j of the block's rows gathered into one vector (at most
    ROW_LANES columns, each in registers until the block's gradient is scattered back), so that the row's
    maximum and sum are lane-wise operations across columns and the exp and log run on ROW_LANES rows at once.
    (One row a vector, its maximum and sum reduced across lanes, ran 29 ns a row on an Intel Xeon: each row a
    chain of dependent reductions, a polynomial and a log, few of them in flight at once.)
    """
    name = f"fastmlp_xent_rows_{'i' if signed else 'u'}{label_bits}"
    if name in module.globals:
        return module.globals[name]
    lanes = ROW_LANES
    vt, mt = ir.VectorType(F32, lanes), ir.VectorType(ir.IntType(1), lanes)
    i64v = ir.VectorType(I64, lanes)
    f64 = ir.DoubleType()
    label_type = ir.IntType(label_bits)
    fn = ir.Function(module, ir.FunctionType(f64, [PTR, I64, I64, label_type.as_pointer(), F32]), name)
    fn.linkage = "internal"
    z_rows, n, k, labels, inv_n = fn.args
    builder = ir.IRBuilder(fn.append_basic_block("entry"))
    fptrs = ir.VectorType(PTR, lanes)
    lptrs = ir.VectorType(label_type.as_pointer(), lanes)
    gather = _intrinsic(module, f"llvm.masked.gather.v{lanes}f32.v{lanes}p0", vt, [fptrs, I32, mt, vt])
    scatter = _intrinsic(module, f"llvm.masked.scatter.v{lanes}f32.v{lanes}p0", ir.VoidType(), [vt, fptrs, I32, mt])
    gather_labels = _intrinsic(module, f"llvm.masked.gather.v{lanes}i{label_bits}.v{lanes}p0",
                               ir.VectorType(label_type, lanes), [lptrs, I32, mt, ir.VectorType(label_type, lanes)])
    maxnum = _intrinsic(module, f"llvm.maxnum.v{lanes}f32", vt, [vt, vt])
    zeros, minus_inf = ir.Constant(vt, [0.0] * lanes), ir.Constant(vt, [float("-inf")] * lanes)
    lane_ids = ir.Constant(i64v, list(range(lanes)))
    z_address = _splat(builder, builder.ptrtoint(z_rows, I64), lanes)
    label_address = _splat(builder, builder.ptrtoint(labels, I64), lanes)
    row_bytes = _splat(builder, builder.mul(k, ir.Constant(I64, 4)), lanes)
    n_lanes, inv_n_lanes = _splat(builder, n, lanes), _splat(builder, inv_n, lanes)
    columns = [builder.icmp_signed("<", ir.Constant(I64, j), k) for j in range(lanes)]  # column j is real
    blocks = builder.udiv(builder.add(n, ir.Constant(I64, lanes - 1)), ir.Constant(I64, lanes))

    def for_columns(builder, emit, default):
        """[emit(builder, j) for each real column j, default for the others]: a branch a column."""
        values = []
        for j in range(lanes):
            before = builder.block
            with builder.if_then(columns[j], likely=True):
                value = emit(builder, j)
                inside = builder.block
            merged = builder.phi(value.type)
            merged.add_incoming(value, inside)
            merged.add_incoming(default, before)
            values.append(merged)
        return values

    def one_block(builder, b, carried):
        (total,) = carried
        rows = builder.add(_splat(builder, builder.mul(b, ir.Constant(I64, lanes)), lanes), lane_ids)
        live = builder.icmp_signed("<", rows, n_lanes)
        row_start = builder.add(z_address, builder.mul(rows, row_bytes))

        def column_pointers(builder, j):
            return builder.inttoptr(builder.add(row_start, ir.Constant(i64v, [4 * j] * lanes)), fptrs)

        def load_column(builder, j):
            return builder.call(gather, [column_pointers(builder, j), ir.Constant(I32, 4), live, minus_inf])

        z = for_columns(builder, load_column, minus_inf)
        m = z[0]
        for z_j in z[1:]:
            m = builder.call(maxnum, [m, z_j])
        e = for_columns(builder, lambda bld, j: _vector_exp(bld, bld.fsub(z[j], m), lanes), zeros)
        s = e[0]
        for e_j in e[1:]:
            s = builder.fadd(s, e_j)
        label_pointers = builder.inttoptr(
            builder.add(label_address, builder.mul(rows, ir.Constant(i64v, [label_bits // 8] * lanes))), lptrs)
        label = builder.call(gather_labels, [label_pointers, ir.Constant(I32, label_bits // 8), live,
                                             ir.Constant(ir.VectorType(label_type, lanes), [0] * lanes)])
        if label_bits < 64:
            label = builder.sext(label, i64v) if signed else builder.zext(label, i64v)
        z_label = zeros  # each row's logit at its label, picked from the columns in registers
        for j, z_j in enumerate(z):
            z_label = builder.select(builder.icmp_signed("==", label, ir.Constant(i64v, [j] * lanes)), z_j, z_label)
        loss = builder.fsub(_vector_log(builder, builder.select(live, s, ir.Constant(vt, [1.0] * lanes)), lanes),
                            builder.fsub(z_label, m))
        loss = builder.select(live, loss, zeros)
        for lane in range(lanes):  # in row order, as the scalar loop adds them
            total = builder.fadd(total, builder.fpext(builder.extract_element(loss, ir.Constant(I32, lane)), f64))
        scale = builder.fdiv(inv_n_lanes, s)
        tiny = ir.Constant(vt, [SMALLEST_NORMAL] * lanes)

        for j in range(lanes):  # each real column's gradient scattered back
            with builder.if_then(columns[j], likely=True):
                g = builder.fmul(e[j], scale)
                g = builder.select(builder.fcmp_ordered("<", g, tiny), zeros, g)
                g = builder.select(builder.icmp_signed("==", label, ir.Constant(i64v, [j] * lanes)),
                                   builder.fsub(g, inv_n_lanes), g)
                builder.call(scatter, [g, column_pointers(builder, j), ir.Constant(I32, 4), live])
        return [total]

    (total,) = _counted_loop(builder, fn, blocks, [ir.Constant(f64, 0.0)], one_block, "block")
    builder.ret(total)
    return fn
