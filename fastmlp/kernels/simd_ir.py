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
  packed row, always NR wide (padding columns hold zeros); only the epilogue's loads and stores
  are masked to the panel's real columns.
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


def _tile_loop(builder, fn, trip_count, rows, nv, vec, load_b, load_a, also=None):
    """The k loop of a tile: returns the rows x nv accumulators after `trip_count` iterations.

    load_b(builder, k) gives the nv B vectors of iteration k; load_a(builder, k, m) the scalar of
    row m. The accumulators are phi values of the loop header: registers, never memory.
    also(builder, k), if given, emits more work into iteration k (it may add blocks, and leaves
    the builder in the block where the iteration goes on).
    """
    entry = builder.block
    header = fn.append_basic_block("k_loop")
    body = fn.append_basic_block("k_body")
    done = fn.append_basic_block("k_done")
    builder.branch(header)

    builder.position_at_end(header)
    k = builder.phi(I64, "k")
    k.add_incoming(ir.Constant(I64, 0), entry)
    accs = [[builder.phi(vec.vt, f"acc{m}_{v}") for v in range(nv)] for m in range(rows)]
    for row in accs:
        for acc in row:
            acc.add_incoming(vec.zero, entry)
    builder.cbranch(builder.icmp_signed("<", k, trip_count), body, done)

    builder.position_at_end(body)
    if also is not None:
        also(builder, k)
    b = load_b(builder, k)
    new = []
    for m in range(rows):
        a = _splat(builder, load_a(builder, k, m), vec.vw)
        new.append([builder.call(vec.fma, [a, b[v], accs[m][v]]) for v in range(nv)])
    k_next = builder.add(k, ir.Constant(I64, 1))
    k.add_incoming(k_next, builder.block)
    for m in range(rows):
        for v in range(nv):
            accs[m][v].add_incoming(new[m][v], builder.block)
    builder.branch(header)

    builder.position_at_end(done)
    return accs


def forward_tile(module, tile):
    """The LLVM function computing one tile of C = epilogue(A @ W), W packed; declared once per module.

    void (float* a, i64 lda, float* panel, i64 K, float* c, i64 ldc, i64 rows, i64 ncols,
          float* bias, float* mask, i64 ldmask, i32 kind)
    a: the tile's first row of A (row stride lda floats); panel: P[p, 0, 0] (K rows of NR
    floats); c: the tile's top-left element of C (row stride ldc); rows (1..MR) and ncols
    (1..NR) the tile's real size; kind STORE (C = acc), BIAS (C = acc + bias), BIAS_RELU
    (C = max(acc + bias, 0)) or RELU_MASK (C = acc where mask > 0, else 0; mask shaped like C,
    row stride ldmask). bias points at the panel's first bias, read only by BIAS and BIAS_RELU.
    """
    name = f"fastmlp_forward_tile_{tile.name}"
    if name in module.globals:
        return module.globals[name]
    fnty = ir.FunctionType(ir.VoidType(), [PTR, I64, PTR, I64, PTR, I64, I64, I64, PTR, PTR, I64, I32])
    fn = ir.Function(module, fnty, name)
    fn.linkage = "internal"
    a, lda, panel, K, c, ldc, rows, ncols, bias, mask, ldmask, kind = fn.args
    vec = _Vectors(module, tile.vw)
    nv, nr, vw, mr = tile.nv, tile.nr, tile.vw, tile.mr
    builder = ir.IRBuilder(fn.append_basic_block("entry"))
    # A tile of fewer rows (the batch's edge) runs the same loop: its missing rows read the last
    # real row again and are never stored. One copy of the loop keeps the compile time down.
    a_rows = [builder.gep(a, [builder.mul(_clamp_row(builder, m, rows), lda)]) for m in range(mr)]

    def load_b(builder, k):
        row = builder.gep(panel, [builder.mul(k, ir.Constant(I64, nr))])
        return [vec.load(builder, builder.gep(row, [ir.Constant(I64, v * vw)])) for v in range(nv)]

    def load_a(builder, k, m):
        return builder.load(builder.gep(a_rows[m], [k]))

    accs = _tile_loop(builder, fn, K, mr, nv, vec, load_b, load_a)
    masks = [_lane_mask(builder, ir.Constant(I64, v * vw), ncols, vw) for v in range(nv)]
    with_bias = builder.or_(builder.icmp_unsigned("==", kind, ir.Constant(I32, BIAS)),
                            builder.icmp_unsigned("==", kind, ir.Constant(I32, BIAS_RELU)))
    relu = builder.icmp_unsigned("==", kind, ir.Constant(I32, BIAS_RELU))
    masked = builder.icmp_unsigned("==", kind, ir.Constant(I32, RELU_MASK))
    # The bias is read only by BIAS and BIAS_RELU (lanes off otherwise: zeros, and `bias` may point anywhere).
    bias_lanes = _splat(builder, with_bias, vw)
    b = [vec.masked_load(builder, builder.gep(bias, [ir.Constant(I64, v * vw)]), builder.and_(masks[v], bias_lanes))
         for v in range(nv)]
    masked_lanes = _splat(builder, masked, vw)

    def store_row(builder, m):
        c_row = builder.gep(c, [builder.mul(ir.Constant(I64, m), ldc)])
        mask_row = builder.gep(mask, [builder.mul(ir.Constant(I64, m), ldmask)])
        for v in range(nv):
            z = builder.fadd(accs[m][v], b[v])
            z = builder.select(relu, builder.call(vec.maxnum, [z, vec.zero]), z)
            # RELU_MASK reads the mask (lanes off for other kinds, so `mask` may point anywhere)
            # and drops the lanes whose mask is not > 0.
            gate = builder.and_(masks[v], masked_lanes)
            keep = vec.masked_load(builder, builder.gep(mask_row, [ir.Constant(I64, v * vw)]), gate)
            drop = builder.and_(masked_lanes, builder.not_(builder.fcmp_ordered(">", keep, vec.zero)))
            z = builder.select(drop, vec.zero, z)
            vec.masked_store(builder, z, builder.gep(c_row, [ir.Constant(I64, v * vw)]), masks[v])

    _for_real_rows(builder, fn, rows, mr, store_row)
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


def wgrad_tile(module, tile):
    """The LLVM function updating a tile's packed weight rows from their gradient by an SGD rule;
    declared once per module.

    void (float* a, i64 lda, float* d, i64 ldd, i64 n, i64 lo, i64 hi, i64 ncols, float* w,
          float* vel, float lr, float momentum, float weight_decay, i32 rule)
    a: A[0, k0] (row stride lda); d: D[0, panel's first column] (row stride ldd); n rows of A
    and D are summed over; w, vel: P[p, k0, 0] and V[p, k0, 0], the tile's first packed row
    (rows of NR floats). The tile updates its rows lo..hi-1 (0 <= lo < hi <= MR), packed rows
    k0 + lo.. of W; it reads A's columns k0.. up to k0 + MR - 1 (k0 + hi - 1 if hi < MR), so a
    caller near the end of W gives it a whole tile's columns with lo > 0 rather than fewer rows.
    With G = A[:, k0+lo:k0+hi].T @ D[:, panel] and g = G + weight_decay * W:
    PLAIN_SGD W -= lr * g; MOMENTUM V = momentum * V - lr * g, W += V; NESTEROV the same V,
    W += momentum * V - lr * g. vel is read only by MOMENTUM and NESTEROV. Padding columns
    (past ncols) get G = 0, so zero padding stays zero. (Adam: adam_tile.)
    """
    name = f"fastmlp_wgrad_tile_{tile.name}"
    if name in module.globals:
        return module.globals[name]
    fnty = ir.FunctionType(ir.VoidType(), [PTR, I64, PTR, I64, I64, I64, I64, I64, PTR, PTR, F32, F32, F32, I32])
    fn = ir.Function(module, fnty, name)
    fn.linkage = "internal"
    a, lda, d, ldd, n, lo, hi, ncols, w, vel, lr, momentum, weight_decay, rule = fn.args
    vec = _Vectors(module, tile.vw)
    nv, nr, vw = tile.nv, tile.nr, tile.vw
    builder = ir.IRBuilder(fn.append_basic_block("entry"))
    lr_v, mu_v, wd_v = (_splat(builder, s, vw) for s in (lr, momentum, weight_decay))
    uses_velocity = builder.icmp_unsigned("!=", rule, ir.Constant(I32, PLAIN_SGD))
    nesterov = builder.icmp_unsigned("==", rule, ir.Constant(I32, NESTEROV))

    def update_rows(builder, accs, first, full):
        """The SGD rule on packed rows first.. of W (and V), from their gradients in accs (one row of NV each).

        One copy for plain SGD and one for the rules with a velocity, chosen once a tile: plain
        SGD never touches V, where masked loads and stores of V with no lanes on cost it about
        as much as the rest of the epilogue (a masked store is slow on AMD cores, lanes or not).
        """

        def update_row(builder, m, row, with_velocity):
            for v in range(nv):
                offset = builder.add(builder.mul(row, ir.Constant(I64, nr)), ir.Constant(I64, v * vw))
                w_ptr = builder.gep(w, [offset])
                weight = vec.load(builder, w_ptr)
                step = builder.fmul(lr_v, builder.call(vec.fma, [wd_v, weight, accs[m][v]]))  # lr * g
                if with_velocity:
                    vel_ptr = builder.gep(vel, [offset])
                    velocity = builder.fsub(builder.fmul(mu_v, vec.load(builder, vel_ptr)), step)
                    vec.store(builder, velocity, vel_ptr)
                    nesterov_step = builder.fsub(builder.fmul(mu_v, velocity), step)
                    delta = builder.select(nesterov, nesterov_step, velocity)
                else:
                    delta = builder.fsub(vec.zero, step)
                vec.store(builder, builder.fadd(weight, delta), w_ptr)

        with builder.if_else(uses_velocity) as (momentum_rule, plain_rule):
            with momentum_rule:
                _for_rows(builder, fn, first, len(accs), lo, hi, lambda b, m, row: update_row(b, m, row, True))
            with plain_rule:
                _for_rows(builder, fn, first, len(accs), lo, hi, lambda b, m, row: update_row(b, m, row, False))

    _wgrad_product(builder, fn, vec, tile, a, lda, d, ldd, n, lo, hi, ncols, update_rows)
    builder.ret_void()
    return fn


def _wgrad_product(builder, fn, vec, tile, a, lda, d, ldd, n, lo, hi, ncols, finish, also=None, before_partial=None):
    """Emit a weight-gradient tile's product G = A[:, k0+lo:k0+hi].T @ D[:, panel]; the builder ends after it.

    Iteration i of a loop reads row i of D (NV vectors) and one scalar of each of the tile's
    columns of A (row i of A, MR consecutive floats). finish(builder, accs, first, full) consumes
    the gradient of the tile's rows first, first + 1, ... (accs: one list of NV vectors a row), of
    which it keeps those in lo..hi-1. Two loops:
    - a full panel (ncols = NR: every panel of a layer as wide as a multiple of NR) of a tile that
      may read MR columns of A (hi = MR) runs the
      MR-row loop with D's rows loaded whole, so the loop holds no mask: MR * NV accumulators, NV
      D vectors and one broadcast in registers (15 of AVX2's 16), and nothing else. also(builder, i),
      if given, emits more work into its iteration i.
    - a partial panel (the last one of a layer of, say, 10 columns) loads D's rows masked to its
      columns: zeros past them, so that padding gets G = 0 and nothing past a row's end is read.
      The masks take registers too (vmaskmovps reads its mask from a YMM register), so this loop
      runs on half the tile's rows, from row lo, once or twice, and before_partial(builder), if
      given, runs first. It also serves the tiles with hi < MR (a W of fewer than MR rows): as in
      forward_tile, they read column hi - 1 of A again for the missing ones, never stored.
    """
    nv, nr, vw, mr = tile.nv, tile.nr, tile.vw, tile.mr
    half = (mr + 1) // 2
    full_block, partial_block, done = (fn.append_basic_block(f"{part}_panel") for part in ("full", "partial", "done"))
    full = builder.and_(builder.icmp_signed(">=", ncols, ir.Constant(I64, nr)),
                        builder.icmp_signed(">=", hi, ir.Constant(I64, mr)))
    builder.cbranch(full, full_block, partial_block)

    def a_loader(columns):
        def load_a(builder, i, m):
            return builder.load(builder.gep(a, [builder.add(builder.mul(i, lda), columns[m])]))

        return load_a

    def d_loader(masks):
        def load_b(builder, i):
            row = builder.gep(d, [builder.mul(i, ldd)])
            ptrs = [builder.gep(row, [ir.Constant(I64, v * vw)]) for v in range(nv)]
            if masks is None:
                return [vec.load(builder, ptr) for ptr in ptrs]
            return [vec.masked_load(builder, ptr, mask) for ptr, mask in zip(ptrs, masks)]

        return load_b

    builder.position_at_end(full_block)
    columns = [ir.Constant(I64, m) for m in range(mr)]  # constant offsets from one pointer: one GPR
    accs = _tile_loop(builder, fn, n, mr, nv, vec, d_loader(None), a_loader(columns), also)
    finish(builder, accs, ir.Constant(I64, 0), True)
    builder.branch(done)

    builder.position_at_end(partial_block)
    if before_partial is not None:
        before_partial(builder)
    masks = [_lane_mask(builder, ir.Constant(I64, v * vw), ncols, vw) for v in range(nv)]
    before = builder.block
    header, body = fn.append_basic_block("half_loop"), fn.append_basic_block("half_body")
    builder.branch(header)
    builder.position_at_end(header)
    first = builder.phi(I64, "first")
    first.add_incoming(lo, before)
    builder.cbranch(builder.icmp_signed("<", first, hi), body, done)
    builder.position_at_end(body)
    columns = [_clamp_row(builder, builder.add(first, ir.Constant(I64, m)), hi) for m in range(half)]
    accs = _tile_loop(builder, fn, n, half, nv, vec, d_loader(masks), a_loader(columns))
    finish(builder, accs, first, False)
    first.add_incoming(builder.add(first, ir.Constant(I64, half)), builder.block)
    builder.branch(header)
    builder.position_at_end(done)


# The smallest normal float32: Adam's moments below it are flushed to zero (fastmlp/optim.py).
SMALLEST_NORMAL = 1.1754943508222875e-38
# On x86 the caller runs adam_tile with the MXCSR's flush-to-zero and denormals-are-zero modes
# on (`flush_to_zero_mode`), which flush for free; elsewhere the tile compares and selects.
from ..runtime.jit import X86  # noqa: E402  re-exported: packed.py reads simd_ir.X86

FTZ_DAZ = 0x8040  # MXCSR bits 15 (flush subnormal results to zero) and 6 (read subnormal inputs as zero)


def _mxcsr_access(builder, name):
    """(llvm.x86.sse.<name>, an i32 stack slot as i8*): stmxcsr stores the MXCSR there, ldmxcsr loads it from there."""
    slot = builder.alloca(I32)
    as_bytes = builder.bitcast(slot, ir.IntType(8).as_pointer())
    return _intrinsic(builder.module, f"llvm.x86.sse.{name}", ir.VoidType(), [as_bytes.type]), slot, as_bytes


def read_mxcsr(builder):
    """Emit: the thread's MXCSR (i32), x86 only."""
    fn, slot, as_bytes = _mxcsr_access(builder, "stmxcsr")
    builder.call(fn, [as_bytes])
    return builder.load(slot)


def write_mxcsr(builder, value):
    """Emit: the thread's MXCSR = value (i32), x86 only."""
    fn, slot, as_bytes = _mxcsr_access(builder, "ldmxcsr")
    builder.store(value, slot)
    builder.call(fn, [as_bytes])


def adam_tile(module, tile):
    """The LLVM function of one software-pipelined Adam tile; declared once per module.

    void (float* a, i64 lda, float* d, i64 ldd, i64 n, i64 lo, i64 hi, i64 ncols, float* g_buf,
          float* w, float* m, float* s, i64 pending,
          float lr, float beta1, float weight_decay, i32 rule, float beta2, float eps, float c1, float c2)
    Two things in one loop over the n rows of A and D:
    - this tile's G = A[:, k0+lo:k0+hi].T @ D[:, panel] (a, lda, d, ldd, lo, hi, ncols as in
      wgrad_tile), stored into g_buf (its hi - lo rows, from g_buf's first) when the loop ends;
    - the previous tile's update: g_buf holds its G on entry, and w, m, s point at its first
      packed row of W and of Adam's moments M and S. Its first `pending` vectors (its real rows
      times NV) are updated, vector i in iteration i, or after the loop when i >= n.
    The caller passes pending = 0 with its first tile, and applies its last one with n = 0.
    Each tile's update (3 loads, 3 stores, a sqrt, a divide and 8 more operations a vector, 16
    vectors a tile) so runs beside the next tile's FMAs, where at the end of its own loop it
    left the FMA pipes idle: this way the Adam step costs about what the plain SGD step's kernel
    does (measured in docs/results.md, "Adam").

    The update of one vector, rule ADAM or ADAMW (momentum is beta1; c1 = 1 / (1 - beta1^t) and
    c2 = 1 / sqrt(1 - beta2^t), the bias corrections of step t), arranged so that few of its
    operations land on the FMA pipes (an add or subtract goes to the FP adders):
        g  = G + l2 W                  l2 = weight_decay for ADAM, 0 for ADAMW (g = G exactly)
        W0 = W + decay W               decay = -lr weight_decay for ADAMW, 0 for ADAM (W0 = W exactly)
        M' = M + (1 - beta1) (g - M)   (= beta1 M + (1 - beta1) g)
        S' = S + (1 - beta2) (g^2 - S) (= beta2 S + (1 - beta2) g^2)
        M', S' = 0 where |M'|, S' < SMALLEST_NORMAL
        W' = W0 - (lr c1 / c2) M' / (sqrt(S') + eps / c2)
    the last being lr c1 M' / (sqrt(S') c2 + eps) divided through by c2. The flush keeps
    subnormal floats out of the divide (a divide of a subnormal runs several times slower on x86,
    and many of M's entries turn subnormal: those of weights whose pixel is nearly always 0; see
    docs/results.md), and changes W by less than 1e-30. On x86 it is the MXCSR's
    flush-to-zero and denormals-are-zero modes, which the caller turns on around its tiles
    (packed._flush_subnormals_on): free, where a compare and a select per moment cost the
    kernel measurably more. Elsewhere the tile compares and selects.
    Padding columns have G = 0, so their W, M and S stay zero.
    """
    name = f"fastmlp_adam_tile_{tile.name}"
    if name in module.globals:
        return module.globals[name]
    fnty = ir.FunctionType(ir.VoidType(), [PTR, I64, PTR, I64, I64, I64, I64, I64, PTR, PTR, PTR, PTR, I64,
                                           F32, F32, F32, I32, F32, F32, F32, F32])
    fn = ir.Function(module, fnty, name)
    fn.linkage = "internal"
    (a, lda, d, ldd, n, lo, hi, ncols, g_buf, w, first_moment, second_moment, pending, lr, beta1, weight_decay, rule,
     beta2, eps, c1, c2) = fn.args
    vec = _Vectors(module, tile.vw)
    nv, vw = tile.nv, tile.vw
    builder = ir.IRBuilder(fn.append_basic_block("entry"))
    one, zero = ir.Constant(F32, 1.0), ir.Constant(F32, 0.0)
    b1c, b2c = (_splat(builder, builder.fsub(one, s), vw) for s in (beta1, beta2))  # 1 - beta
    neg_step = _splat(builder, builder.fneg(builder.fdiv(builder.fmul(lr, c1), c2)), vw)  # -lr c1 / c2
    eps_v = _splat(builder, builder.fdiv(eps, c2), vw)  # eps / c2
    decoupled = builder.icmp_unsigned("==", rule, ir.Constant(I32, ADAMW))
    l2 = _splat(builder, builder.select(decoupled, zero, weight_decay), vw)
    decay = _splat(builder, builder.select(decoupled, builder.fneg(builder.fmul(lr, weight_decay)), zero), vw)
    smallest = ir.Constant(vec.vt, [SMALLEST_NORMAL] * vw)

    def flushed(builder, x, magnitude):  # 0 where magnitude < SMALLEST_NORMAL (x86: the MXCSR's modes do it)
        return builder.select(builder.fcmp_ordered("<", magnitude, smallest), vec.zero, x)

    def update_vector(builder, i):
        """The pending tile's vector i (i * VW floats into each of its arrays) updated from its G in g_buf."""
        offset = builder.mul(i, ir.Constant(I64, vw))
        g_ptr, w_ptr, m_ptr, s_ptr = (builder.gep(p, [offset]) for p in (g_buf, w, first_moment, second_moment))
        weight, old_m, old_s = vec.load(builder, w_ptr), vec.load(builder, m_ptr), vec.load(builder, s_ptr)
        g = builder.call(vec.exact_fma, [l2, weight, vec.load(builder, g_ptr)])
        base = builder.call(vec.exact_fma, [decay, weight, weight])
        new_m = builder.call(vec.exact_fma, [b1c, builder.fsub(g, old_m), old_m])
        new_s = builder.call(vec.exact_fma, [b2c, builder.fsub(builder.fmul(g, g), old_s), old_s])
        if not X86:
            new_m = flushed(builder, new_m, builder.call(vec.fabs, [new_m]))
            new_s = flushed(builder, new_s, new_s)  # S >= 0
        vec.store(builder, new_m, m_ptr)
        vec.store(builder, new_s, s_ptr)
        denom = builder.fadd(builder.call(vec.sqrt, [new_s]), eps_v)
        vec.store(builder, builder.call(vec.exact_fma, [neg_step, builder.fdiv(new_m, denom), base]), w_ptr)

    def update_pending_vector(builder, i):  # in iteration i of the loop: vector i, if pending
        now, then = fn.append_basic_block("update"), fn.append_basic_block("accumulate")
        builder.cbranch(builder.icmp_signed("<", i, pending), now, then)
        builder.position_at_end(now)
        update_vector(builder, i)
        builder.branch(then)
        builder.position_at_end(then)

    def apply_pending(builder, start):
        """The pending vectors from vector `start` on (those the loop did not reach; all of them when n = 0)."""
        before = builder.block
        header, body, done = (fn.append_basic_block(f"rest_{part}") for part in ("loop", "body", "done"))
        builder.branch(header)
        builder.position_at_end(header)
        i = builder.phi(I64, "i")
        i.add_incoming(start, before)
        builder.cbranch(builder.icmp_signed("<", i, pending), body, done)
        builder.position_at_end(body)
        update_vector(builder, i)
        i.add_incoming(builder.add(i, ir.Constant(I64, 1)), builder.block)
        builder.branch(header)
        builder.position_at_end(done)

    # The pending update runs inside the full panels' loop only where its dozen vectors fit in the
    # registers beside the tile's; with AVX2's 16 they would push the accumulators onto the stack.
    pipelined = tile.mr * tile.nv + tile.nv + 1 + 12 <= tile.registers

    def store_gradient(builder, accs, first, full):  # this tile's G, pending for the next call
        if full:  # partial panels applied the pending tile first (before_partial)
            apply_pending(builder, n if pipelined else ir.Constant(I64, 0))

        def store_row(builder, m, row):  # row lo first: the pending vectors start at the tile's first real row
            for v in range(nv):
                offset = builder.add(builder.mul(builder.sub(row, lo), ir.Constant(I64, nv * vw)),
                                     ir.Constant(I64, v * vw))
                vec.store(builder, accs[m][v], builder.gep(g_buf, [offset]))

        _for_rows(builder, fn, first, len(accs), lo, hi, store_row)

    _wgrad_product(builder, fn, vec, tile, a, lda, d, ldd, n, lo, hi, ncols, store_gradient,
                   also=update_pending_vector if pipelined else None,
                   before_partial=lambda builder: apply_pending(builder, ir.Constant(I64, 0)))
    builder.ret_void()
    return fn
