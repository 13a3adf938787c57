"""The SIMD microkernels, written as LLVM IR: one MR x NR tile of a product, its epilogue fused.

Numba's auto-vectoriser does not keep a plain-loop tile in registers (a prototype of it ran at
a fraction of this IR's speed; the figures are in docs/results.md); these kernels say exactly what
the core should do instead. Each one is an LLVM
function, added once to the module that calls it, whose loop carries the MR x NV accumulator
vectors of the tile as `phi` values, so that they live in registers for the whole loop:

    for k in range(K):                  # one iteration of the loop below
        b[v] = load <VW x float>        # NV vectors: one row of the tile's B panel
        for m in range(MR):
            a = splat(A[m, k])          # one scalar broadcast to all VW lanes (insertelement +
                                        # shufflevector: one vbroadcastss from memory on x86)
            acc[m][v] = fma(a, b[v], acc[m][v])   # llvm.fma.vNf32

The tile's shape comes from `fastmlp.kernels.tiles` (VW floats a vector, NV vectors a panel row,
so NR = VW * NV columns, and MR rows): MR * NV accumulators, NV loaded B vectors and a broadcast
must fit the 32 (AVX-512) or 16 (AVX2, SSE) vector registers. A tile of fewer rows (the edge of
the batch) runs the same loop on MR rows, the missing ones reading a real row again, and stores
only its real rows: one copy of the loop per kernel, where a copy per row count (a `switch`)
doubled the cold compile time of the training epoch.

Three kernels, in the packed layout of `fastmlp.kernels.packed` (P[panel, k, 0:NR]):
- `forward_tile`: C[rows, panel] = epilogue(A[rows, :] @ P[panel]). The B vectors are one
  packed row, always NR wide (padding columns hold zeros); only a partial panel's epilogue masks
  its loads and stores to the panel's real columns (a whole panel's stores are plain: a masked
  store is slow on some cores).
The two update kernels live in `fastmlp.kernels.update_ir`:
- `wgrad_tile`: the weight-gradient product of MR rows of a packed weight panel,
  G = A[:, k0:k0+MR].T @ D[:, panel], applied at once to P (and the velocity V) by an SGD rule
  in the epilogue, so the gradient never leaves registers. Here A's scalars come from MR
  consecutive columns of one row of A (constant offsets from one pointer), and D's rows are
  loaded whole: no mask in the loop, which holds nothing but the tile (a partial panel or a tile
  of fewer rows takes a second, masked loop on half the rows: `_wgrad_product`).
- `adam_tile`: the same product for Adam, software-pipelined: its loop also applies the
  previous tile's gradient to that tile's W and two moments, one vector per iteration, so that
  Adam's loads, stores, sqrt and divide run beside the FMAs rather than after them.
"""


from llvmlite import ir

F32 = ir.FloatType()
I1, I32, I64 = ir.IntType(1), ir.IntType(32), ir.IntType(64)
PTR = F32.as_pointer()

# Epilogues of forward_tile (the `kind` argument).
STORE, BIAS, BIAS_RELU, RELU_MASK = 0, 1, 2, 3
# Update rules of wgrad_tile (the `rule` argument), the formulas of fastmlp/optim.py.
PLAIN_SGD, MOMENTUM, NESTEROV, ADAM, ADAMW = 0, 1, 2, 3, 4


def _vec(vw):
    return ir.VectorType(F32, vw)


def _intrinsic(module, name, ret, args):
    fn = module.globals.get(name)
    if fn is None:
        fn = ir.Function(module, ir.FunctionType(ret, args), name)
    return fn


def prefetch(builder, pointer, for_write=False, into_l1=True):
    """Emit llvm.prefetch of pointer's cache line into every cache level (L1 included; into_l1 False: L2
    and L3 only), for reading or for writing; a hint, never a fault (a line past an array's end is harmless)."""
    i8p = ir.IntType(8).as_pointer()
    fn = _intrinsic(builder.module, "llvm.prefetch.p0", ir.VoidType(), [i8p, I32, I32, I32])
    locality = 3 if into_l1 else 2  # x86: prefetcht0, prefetcht1
    builder.call(fn, [builder.bitcast(pointer, i8p), ir.Constant(I32, int(for_write)), ir.Constant(I32, locality),
                      ir.Constant(I32, 1)])


def _splat(builder, scalar, vw):
    """A vector of vw lanes, each = scalar (insertelement into lane 0, shufflevector lane 0 out)."""
    vt = ir.VectorType(scalar.type, vw)
    one = builder.insert_element(ir.Constant(vt, ir.Undefined), scalar, ir.Constant(I32, 0))
    return builder.shuffle_vector(one, ir.Constant(vt, ir.Undefined), ir.Constant(ir.VectorType(I32, vw), [0] * vw))


def _lane_mask(builder, first_col, ncols, vw):
    """<vw x i1>: lane j is on when first_col + j < ncols (the panel's real columns).

    Compared as i32 lanes: one vpcmpgtd gives AVX2's vmaskmovps its mask, where i64 lanes took
    two compares and four shuffles, which LLVM then repeated inside loops rather than keep.
    """
    lanes = ir.Constant(ir.VectorType(I32, vw), list(range(vw)))
    cols = builder.add(lanes, _splat(builder, builder.trunc(first_col, I32), vw))
    return builder.icmp_signed("<", cols, _splat(builder, builder.trunc(ncols, I32), vw))


class _Vectors:
    """The LLVM intrinsics a tile uses, at one vector width, declared in one module."""

    def __init__(self, module, vw):
        vt, vp = _vec(vw), _vec(vw).as_pointer()
        mask = ir.VectorType(I1, vw)
        self.vw, self.vt = vw, vt
        # llvm.fmuladd: one fused FMA instruction where the target has one; a multiply and an add
        # where it has none (SSE), where llvm.fma would call the C library's fmaf once per lane.
        self.fma = _intrinsic(module, f"llvm.fmuladd.v{vw}f32", vt, [vt, vt, vt])
        # Fused everywhere (fmaf without FMA): Adam's moments, whose flush of subnormals relies on
        # one rounding (with the MXCSR's flush-to-zero on, an unfused (1 - beta1) (g - M) is
        # flushed to 0 before it is added to M, which then never reaches 0).
        self.exact_fma = _intrinsic(module, f"llvm.fma.v{vw}f32", vt, [vt, vt, vt])
        self.maxnum = _intrinsic(module, f"llvm.maxnum.v{vw}f32", vt, [vt, vt])
        self.sqrt = _intrinsic(module, f"llvm.sqrt.v{vw}f32", vt, [vt])
        self.fabs = _intrinsic(module, f"llvm.fabs.v{vw}f32", vt, [vt])
        self._load = _intrinsic(module, f"llvm.masked.load.v{vw}f32.p0", vt, [vp, I32, mask, vt])
        self._store = _intrinsic(module, f"llvm.masked.store.v{vw}f32.p0", ir.VoidType(), [vt, vp, I32, mask])
        self.zero = ir.Constant(vt, [0.0] * vw)

    def load(self, builder, ptr):
        return builder.load(builder.bitcast(ptr, self.vt.as_pointer()), align=4)

    def store(self, builder, value, ptr):
        builder.store(value, builder.bitcast(ptr, self.vt.as_pointer()), align=4)

    def masked_load(self, builder, ptr, mask):
        return builder.call(self._load,
                            [builder.bitcast(ptr, self.vt.as_pointer()), ir.Constant(I32, 4), mask, self.zero])

    def masked_store(self, builder, value, ptr, mask):
        builder.call(self._store, [value, builder.bitcast(ptr, self.vt.as_pointer()), ir.Constant(I32, 4), mask])


def _counted_loop(builder, fn, count, initial, body, name):
    """for i in range(count): values = body(builder, i, values), from values = initial (a list of LLVM
    values, carried as phi values: registers); returns them after the loop, the builder after it."""
    entry = builder.block
    header, block, done = (fn.append_basic_block(f"{name}_{part}") for part in ("loop", "body", "done"))
    builder.branch(header)
    builder.position_at_end(header)
    i = builder.phi(I64, name)
    i.add_incoming(ir.Constant(I64, 0), entry)
    carried = [builder.phi(value.type) for value in initial]
    for phi, value in zip(carried, initial):
        phi.add_incoming(value, entry)
    builder.cbranch(builder.icmp_signed("<", i, count), block, done)
    builder.position_at_end(block)
    new = body(builder, i, carried)
    for phi, value in zip(carried, new):
        phi.add_incoming(value, builder.block)
    i.add_incoming(builder.add(i, ir.Constant(I64, 1)), builder.block)
    builder.branch(header)
    builder.position_at_end(done)
    return carried


def _tile_loop(builder, fn, trip_count, rows, nv, vec, load_b, load_a, also=None, initial=None, listed=None):
    """The k loop of a tile: returns the rows x nv accumulators after `trip_count` iterations.

    load_b(builder, k) gives the nv B vectors of iteration k; load_a(builder, k, m) the scalar of
    row m. The accumulators are phi values of the loop header: registers, never memory.
    also(builder, i), if given, emits more work into iteration i (it may add blocks, and leaves
    the builder in the block where the iteration goes on). initial[m][v], if given, are the
    accumulators' values before the first iteration (zeros otherwise). listed, if given, is an
    int32 list: iteration i reads k = listed[i] (load_b and load_a get it), else k = i.
    """
    start = [vec.zero if initial is None else initial[m][v] for m in range(rows) for v in range(nv)]

    def fmas(builder, i, accs):  # accs: row m's vector v at m * nv + v
        if also is not None:
            also(builder, i)
        k = i if listed is None else _listed(builder, listed, i)
        b = load_b(builder, k)
        new = []
        for m in range(rows):
            a = _splat(builder, load_a(builder, k, m), vec.vw)
            new += [builder.call(vec.fma, [a, b[v], accs[m * nv + v]]) for v in range(nv)]
        return new

    accs = _counted_loop(builder, fn, trip_count, start, fmas, "k")
    return [accs[m * nv:(m + 1) * nv] for m in range(rows)]


def _listed(builder, listed, i):
    """The i-th entry of the int32 list `listed`, as i64."""
    return builder.sext(builder.load(builder.gep(listed, [i])), I64)


def forward_tile(module, tile, indexed=False):
    """The LLVM function computing one tile of C = epilogue(A @ W), W packed; declared once per module.

    void (float* a, i64 lda, float* panel, i64 K, float* c, i64 ldc, i64 rows, i64 ncols,
          float* bias, float* mask, i64 ldmask, i32 kind, float* ahead, i64 ahead_step[, i32* columns])
    a: the tile's first row of A (row stride lda floats); panel: P[p, 0, 0] (K rows of NR
    floats); c: the tile's top-left element of C (row stride ldc); rows (1..MR) and ncols
    (1..NR) the tile's real size; kind STORE (C = acc), BIAS (C = acc + bias), BIAS_RELU
    (C = max(acc + bias, 0)) or RELU_MASK (C = acc where mask > 0, else 0; mask shaped like C,
    row stride ldmask). bias points at the panel's first bias, read only by BIAS and BIAS_RELU.
    Iteration k of the loop also prefetches into L2 the cache line at ahead + k * ahead_step
    (floats): the caller spreads the A rows of its next tile over the loop (ahead_step 0: one line
    over and over, for a tile that has nothing to fetch), so that they come from L3 while this
    tile computes rather than stall the next; one more load-port operation an iteration.

    indexed: the function takes one more argument, i32* columns, the K columns of A (rows of the
    panel) that its loop runs over, k = columns[0..K-1] / NR rather than 0..K-1: the columns where a
    tile's rows of A are not all zero (nonzero_ir), the others adding nothing to the sums. The sums
    over the listed k run in the same order as over all k, and a term skipped is an exact zero: the
    same bits as the whole loop (up to the sign of a zero sum). Each entry is k * NR, the offset of the
    panel's row k, so that the B loads need no arithmetic after the entry's load: with k itself, LLVM
    issued all MR broadcasts first and spilled accumulators to the stack (AVX2, SSE). A function of
    its own: with both loops in one, their accumulators merged, it spilled some of them in both.
    """
    name = f"fastmlp_forward_tile_{tile.name}" + ("_indexed" if indexed else "")
    if name in module.globals:
        return module.globals[name]
    args = [PTR, I64, PTR, I64, PTR, I64, I64, I64, PTR, PTR, I64, I32, PTR, I64]
    fn = ir.Function(module, ir.FunctionType(ir.VoidType(), args + ([I32.as_pointer()] if indexed else [])), name)
    fn.linkage = "internal"
    a, lda, panel, K, c, ldc, rows, ncols, bias, mask, ldmask, kind, ahead, ahead_step = fn.args[:14]
    vec = _Vectors(module, tile.vw)
    nv, nr, vw, mr = tile.nv, tile.nr, tile.vw, tile.mr
    builder = ir.IRBuilder(fn.append_basic_block("entry"))
    # A tile of fewer rows (the batch's edge) runs the same loop: its missing rows read the last
    # real row again and are never stored. One copy of the loop keeps the compile time down.
    a_rows = [builder.gep(a, [builder.mul(_clamp_row(builder, m, rows), lda)]) for m in range(mr)]

    # indexed: each listed entry is k * NR, the offset of the panel's row k (nonzero_columns writes them so), so
    # that the B loads need no arithmetic on the loaded entry and issue first; A's k is entry / NR.
    def load_b(builder, k):
        row = builder.gep(panel, [k if indexed else builder.mul(k, ir.Constant(I64, nr))])
        return [vec.load(builder, builder.gep(row, [ir.Constant(I64, v * vw)])) for v in range(nv)]

    def load_a(builder, k, m):
        column = builder.lshr(k, ir.Constant(I64, nr.bit_length() - 1)) if indexed else k
        return builder.load(builder.gep(a_rows[m], [column]))

    def prefetch_ahead(builder, k):
        prefetch(builder, builder.gep(ahead, [builder.mul(k, ahead_step)]), into_l1=False)

    accs = _tile_loop(builder, fn, K, mr, nv, vec, load_b, load_a, also=prefetch_ahead,
                      listed=fn.args[14] if indexed else None)
    masks = [_lane_mask(builder, ir.Constant(I64, v * vw), ncols, vw) for v in range(nv)]
    with_bias = builder.or_(builder.icmp_unsigned("==", kind, ir.Constant(I32, BIAS)),
                            builder.icmp_unsigned("==", kind, ir.Constant(I32, BIAS_RELU)))
    relu = builder.icmp_unsigned("==", kind, ir.Constant(I32, BIAS_RELU))
    masked = builder.icmp_unsigned("==", kind, ir.Constant(I32, RELU_MASK))
    bias_lanes = _splat(builder, with_bias, vw)
    masked_lanes = _splat(builder, masked, vw)

    def epilogue(builder, whole):
        """The stores of the tile's real rows: `whole` where all NR columns are real (plain loads and stores: a
        masked store is slow on some cores, AVX2's vmaskmovps among them), else masked to the real columns."""
        def load(ptr, v, lanes):
            on = masks[v] if not whole else ir.Constant(ir.VectorType(I1, vw), [1] * vw)
            return vec.masked_load(builder, ptr, builder.and_(on, lanes))

        # The bias is read only by BIAS and BIAS_RELU (lanes off otherwise: zeros, and `bias` may point anywhere).
        b = [load(builder.gep(bias, [ir.Constant(I64, v * vw)]), v, bias_lanes) for v in range(nv)]

        def store_row(builder, m):
            c_row = builder.gep(c, [builder.mul(ir.Constant(I64, m), ldc)])
            mask_row = builder.gep(mask, [builder.mul(ir.Constant(I64, m), ldmask)])
            for v in range(nv):
                z = builder.fadd(accs[m][v], b[v])
                z = builder.select(relu, builder.call(vec.maxnum, [z, vec.zero]), z)
                # RELU_MASK reads the mask (lanes off for other kinds, so `mask` may point anywhere)
                # and drops the lanes whose mask is not > 0.
                keep = load(builder.gep(mask_row, [ir.Constant(I64, v * vw)]), v, masked_lanes)
                drop = builder.and_(masked_lanes, builder.not_(builder.fcmp_ordered(">", keep, vec.zero)))
                z = builder.select(drop, vec.zero, z)
                ptr = builder.gep(c_row, [ir.Constant(I64, v * vw)])
                if whole:
                    vec.store(builder, z, ptr)
                else:
                    vec.masked_store(builder, z, ptr, masks[v])

        _for_real_rows(builder, fn, rows, mr, store_row)

    whole_block, part_block = fn.append_basic_block("whole_panel"), fn.append_basic_block("part_panel")
    builder.cbranch(builder.icmp_signed("==", ncols, ir.Constant(I64, nr)), whole_block, part_block)
    for block, whole in ((whole_block, True), (part_block, False)):
        builder.position_at_end(block)
        epilogue(builder, whole)
    return fn


def _for_real_rows(builder, fn, rows, mr, emit_row):
    """emit_row(builder, m) for m = 0..mr-1 while m < rows (a tile's real rows), then return from fn."""
    zero = ir.Constant(I64, 0)
    _for_rows(builder, fn, zero, mr, zero, rows, lambda builder, m, row: emit_row(builder, m))
    builder.ret_void()


def _for_rows(builder, fn, first, count, lo, hi, emit_row):
    """emit_row(builder, m, row) for row = first + m, m = 0..count-1, where lo <= row < hi;
    the builder ends after them."""
    end = fn.append_basic_block("rows_end")
    for m in range(count):
        row = builder.add(first, ir.Constant(I64, m))
        below_hi, emit, after = (fn.append_basic_block(f"{part}{m}") for part in ("below_hi", "row", "after"))
        builder.cbranch(builder.icmp_signed("<", row, hi), below_hi, end)  # rows ascend: none past hi follows
        builder.position_at_end(below_hi)
        builder.cbranch(builder.icmp_signed(">=", row, lo), emit, after)
        builder.position_at_end(emit)
        emit_row(builder, m, row)
        builder.branch(after)
        builder.position_at_end(after)
    builder.branch(end)
    builder.position_at_end(end)


def _clamp_row(builder, m, rows):
    """min(m, rows - 1) as i64 (m an int or an i64 value): the row a tile's m-th row reads."""
    m = ir.Constant(I64, m) if isinstance(m, int) else m
    last = builder.sub(rows, ir.Constant(I64, 1))
    return builder.select(builder.icmp_signed("<", m, rows), m, last)


def column_sums(module, vw, nv):
    """The LLVM function summing the columns of a panel of nv * vw floats a row (a panel of dZ in the layout of
    packed.panels_from_rows_into), and copying some of the sums out.

    void (float* d, i64 rows, float* out, i64 first, i64 count)
    d: the panel's first row; the sums of its `rows` rows are nv vector registers, each lane summing its
    column from row 0 down in float32 adds (the order of a scalar loop: the same bits), written to the
    stack; out[0:count] = sums[first:first + count]. Declared once per module and shape.
    """
    name = f"fastmlp_column_sums_{vw}x{nv}"
    if name in module.globals:
        return module.globals[name]
    fn = ir.Function(module, ir.FunctionType(ir.VoidType(), [PTR, I64, PTR, I64, I64]), name)
    fn.linkage = "internal"
    d, rows, out, first, count = fn.args
    vec = _Vectors(module, vw)
    builder = ir.IRBuilder(fn.append_basic_block("entry"))
    sums = builder.bitcast(builder.alloca(ir.ArrayType(F32, nv * vw)), PTR)

    def add_row(builder, i, accs):  # one add per vector per row
        row = builder.gep(d, [builder.mul(i, ir.Constant(I64, nv * vw))])
        return [builder.fadd(acc, vec.load(builder, builder.gep(row, [ir.Constant(I64, v * vw)])))
                for v, acc in enumerate(accs)]

    accs = _counted_loop(builder, fn, rows, [vec.zero] * nv, add_row, "row")
    for v, acc in enumerate(accs):
        vec.store(builder, acc, builder.gep(sums, [ir.Constant(I64, v * vw)]))

    def copy_one(builder, j, _):  # out[j] = sums[first + j]
        builder.store(builder.load(builder.gep(sums, [builder.add(first, j)])), builder.gep(out, [j]))
        return []

    _counted_loop(builder, fn, count, [], copy_one, "copy")
    builder.ret_void()
    return fn


def sum_row_parts(module, vw):
    """The LLVM function adding a row's two parts and its bias, ReLU'd or not: layer 1's output from the two parts of
    its sum (fastmlp/backends/numba/layer1.py), in explicit vectors: as a loop in glue code, LLVM's vectoriser took
    0.4 s of the training epoch's cold compile for it.

    void (float* a, float* b, float* bias, float* out, i64 n, i32 relu)
    out[j] = (a[j] + b[j]) + bias[j] for j < n, then 0 where relu and it is below 0 (a NaN stays NaN): whole
    vectors of vw floats, then the rest masked. Declared once per module and width.
    """
    name = f"fastmlp_sum_row_parts_{vw}"
    if name in module.globals:
        return module.globals[name]
    fn = ir.Function(module, ir.FunctionType(ir.VoidType(), [PTR, PTR, PTR, PTR, I64, I32]), name)
    fn.linkage = "internal"
    a, b, bias, out, n, relu = fn.args
    vec = _Vectors(module, vw)
    builder = ir.IRBuilder(fn.append_basic_block("entry"))
    # One scalar condition for the whole row: a vector of i1 lanes ANDed with the compare took AVX2 six more
    # instructions a vector to rebuild the mask (vpackssdw, vpmovzxwd, shifts); LLVM hoists this select instead.
    relu_on = builder.icmp_unsigned("!=", relu, ir.Constant(I32, 0))

    def row_part(builder, j, load, store):
        x = [load(builder.gep(array, [j])) for array in (a, b, bias)]
        z = builder.fadd(builder.fadd(x[0], x[1]), x[2])
        rectified = builder.select(builder.fcmp_ordered("<", z, vec.zero), vec.zero, z)
        store(builder.select(relu_on, rectified, z), builder.gep(out, [j]))

    def whole_vector(builder, i, _):
        j = builder.mul(i, ir.Constant(I64, vw))
        row_part(builder, j, lambda ptr: vec.load(builder, ptr), lambda value, ptr: vec.store(builder, value, ptr))
        return []

    whole = builder.sdiv(n, ir.Constant(I64, vw))
    _counted_loop(builder, fn, whole, [], whole_vector, "vector")
    first = builder.mul(whole, ir.Constant(I64, vw))
    with builder.if_then(builder.icmp_signed("<", first, n)):
        mask = _lane_mask(builder, ir.Constant(I64, 0), builder.sub(n, first), vw)
        row_part(builder, first, lambda ptr: vec.masked_load(builder, ptr, mask),
                 lambda value, ptr: vec.masked_store(builder, value, ptr, mask))
    builder.ret_void()
    return fn


def transpose_block(module, vw, stride):
    """The LLVM function transposing a vw x vw block of floats between two arrays of rows `stride` floats apart
    (two packed panels: transpose_packed_into).

    void (float* src, float* dst, i64 count)
    dst[j * stride + i] = src[i * stride + j] for i < vw and j < count (<= vw): the vw rows of src loaded
    as vectors, transposed in registers by log2(vw) rounds of interleaving (round after round, rows i and
    i + vw/2 are zipped into rows 2i and 2i + 1: after log2(vw) rounds row j holds column j), the first
    `count` stored as vectors. With count < vw it transposes a block of fewer columns (the last of a narrow
    layer: W_2's 10 of 16) without writing past them; src's vw columns must still be readable (a packed
    panel's padding is). The two blocks must not overlap. Declared once per module and shape.
    """
    name = f"fastmlp_transpose_block_{vw}x{stride}"
    if name in module.globals:
        return module.globals[name]
    fn = ir.Function(module, ir.FunctionType(ir.VoidType(), [PTR, PTR, I64]), name)
    fn.linkage = "internal"
    src, dst, count = fn.args
    vec = _Vectors(module, vw)
    builder = ir.IRBuilder(fn.append_basic_block("entry"))
    rows = [vec.load(builder, builder.gep(src, [ir.Constant(I64, i * stride)])) for i in range(vw)]
    low = ir.Constant(ir.VectorType(I32, vw), [lane // 2 + (vw if lane % 2 else 0) for lane in range(vw)])
    high = ir.Constant(ir.VectorType(I32, vw), [vw // 2 + lane // 2 + (vw if lane % 2 else 0) for lane in range(vw)])
    for _ in range(vw.bit_length() - 1):  # log2(vw) rounds
        zipped = []
        for i in range(vw // 2):
            a, b = rows[i], rows[i + vw // 2]
            zipped += [builder.shuffle_vector(a, b, low), builder.shuffle_vector(a, b, high)]
        rows = zipped
    for j, row in enumerate(rows):
        with builder.if_then(builder.icmp_signed("<", ir.Constant(I64, j), count), likely=True):
            vec.store(builder, row, builder.gep(dst, [ir.Constant(I64, j * stride)]))
    builder.ret_void()
    return fn
