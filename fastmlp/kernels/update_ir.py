"""The LLVM IR of the update microkernels: the weight-gradient product of a packed weight panel with its
update rule fused in the epilogue (`wgrad_tile`: SGD, momentum, Nesterov), and the software-pipelined
Adam tile (`adam_tile`), with the MXCSR access the Adam tiles run under on x86.

The vector helpers, the tile loop and the forward tile they share are in `fastmlp.kernels.simd_ir`,
whose module docstring describes the tiles and the packed layout they read.
"""

from llvmlite import ir

from ..runtime.aligned import CACHE_LINE
from ..runtime.jit import X86
from .simd_ir import (
    ADAMW,
    F32,
    I32,
    I64,
    NESTEROV,
    PLAIN_SGD,
    PTR,
    _clamp_row,
    _for_rows,
    _intrinsic,
    _lane_mask,
    _splat,
    _tile_loop,
    _Vectors,
    prefetch,
)


def wgrad_tile(module, tile, indexed=False):
    """The LLVM function updating a tile's packed weight rows from their gradient by an SGD rule;
    declared once per module.

    void (float* a, i64 lda, float* d, i64 ldd, i64 n, i64 lo, i64 hi, i64 ncols, float* w,
          float* vel, float lr, float momentum, float weight_decay, i32 rule, float* carry, i32 chunk[, i32* rows])
    a: A[0, k0] (row stride lda); d: D[0, panel's first column] (row stride ldd); n rows of A
    and D are summed over; w, vel: P[p, k0, 0] and V[p, k0, 0], the tile's first packed row
    (rows of NR floats). The tile updates its rows lo..hi-1 (0 <= lo < hi <= MR), packed rows
    k0 + lo.. of W; it reads A's columns k0.. up to k0 + MR - 1 (k0 + hi - 1 if hi < MR), so a
    caller near the end of W gives it a whole tile's columns with lo > 0 rather than fewer rows.
    With G = A[:, k0+lo:k0+hi].T @ D[:, panel] and g = G + weight_decay * W:
    PLAIN_SGD W -= lr * g; MOMENTUM V = momentum * V - lr * g, W += V; NESTEROV the same V,
    W += momentum * V - lr * g; an entry of V below the smallest normal float becomes 0 before W
    uses it. vel is read only by MOMENTUM and NESTEROV. Padding columns (past ncols) get G = 0, so
    zero padding stays zero. (Adam: adam_tile.)

    The sum over the n rows may be cut into consecutive ranges of rows, a call each (a whole tile
    only: ncols = NR, hi = MR), so that a range's MR columns of A stay in L1 while the tiles of
    other panels read them: chunk RESUME_SUM starts from the MR x NV accumulators left in carry
    (MR rows of NR floats) instead of zeros, KEEP_SUM leaves them there instead of applying the
    rule. The sums are the same FMAs in the same order: the same bits as one call over all rows.
    carry is read or written only with these bits (chunk 0: one call over all n rows).

    indexed (for a whole tile only: ncols = NR, hi = MR): the function takes one more argument, i32* rows,
    the n rows of A and D that its sum runs over, i = rows[0..n-1] rather than 0..n-1: the rows where the
    tile's columns of A are not all zero (nonzero_ir), the others adding nothing to G. In the same order:
    the same bits (up to a zero's sign). A function of its own, as forward_tile's indexed one.
    """
    name = f"fastmlp_wgrad_tile_{tile.name}" + ("_indexed" if indexed else "")
    if name in module.globals:
        return module.globals[name]
    args = [PTR, I64, PTR, I64, I64, I64, I64, I64, PTR, PTR, F32, F32, F32, I32, PTR, I32]
    fn = ir.Function(module, ir.FunctionType(ir.VoidType(), args + ([I32.as_pointer()] if indexed else [])), name)
    fn.linkage = "internal"
    a, lda, d, ldd, n, lo, hi, ncols, w, vel, lr, momentum, weight_decay, rule, carry, chunk = fn.args[:16]
    listed = fn.args[16] if indexed else None
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
                    # A velocity below the smallest normal float is flushed to zero (fastmlp/optim.py): that
                    # of a weight whose input is nearly always 0 decays by `momentum` every step, and would
                    # spend ~150 steps as a subnormal, each operation on which costs ~100 cycles on Intel.
                    velocity = _flushed(builder, vec, velocity, builder.call(vec.fabs, [velocity]))
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

    # The rule's packed rows of W (and V) fetched into L1 now, so that the epilogue after the n-row loop
    # does not wait for them; only in a call that applies the rule (no KEEP_SUM).
    applies_rule = builder.icmp_unsigned("==", builder.and_(chunk, ir.Constant(I32, KEEP_SUM)), ir.Constant(I32, 0))
    with builder.if_then(applies_rule):
        _prefetch_rows(builder, w, tile)
        with builder.if_then(uses_velocity):
            _prefetch_rows(builder, vel, tile)
    _wgrad_product(builder, fn, vec, tile, a, lda, d, ldd, n, lo, hi, ncols, update_rows, carry=(carry, chunk, listed))
    builder.ret_void()
    return fn


def _prefetch_rows(builder, first_row, tile):
    """Emit prefetches (for writing, into L1) of the cache lines of the MR packed rows from first_row (NR floats each).
    A prefetch never faults, so rows past an array's end (a W of fewer than MR rows) are harmless."""
    for offset in range(0, tile.mr * tile.nr, CACHE_LINE // 4):  # one prefetch a cache line of floats
        prefetch(builder, builder.gep(first_row, [ir.Constant(I64, offset)]), for_write=True)


# wgrad_tile's `chunk` bits: start from the accumulators in `carry`; leave them there (the rule not applied).
RESUME_SUM, KEEP_SUM = 1, 2


def _wgrad_product(builder, fn, vec, tile, a, lda, d, ldd, n, lo, hi, ncols, finish, also=None, before_partial=None,
                   carry=None):
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
    carry, if given, is (pointer, chunk bits, rows): the full loop's RESUME_SUM and KEEP_SUM (wgrad_tile); with any
    chunk bit set (a sum over many rows, cut in ranges) the full loop also prefetches A A_PREFETCH_ROWS rows ahead;
    rows, if not None, the int32 list of rows the full loop sums over (wgrad_tile, indexed).
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
    if carry is None:
        accs = _tile_loop(builder, fn, n, mr, nv, vec, d_loader(None), a_loader(columns), also)
        finish(builder, accs, ir.Constant(I64, 0), True)
    else:
        pointer, chunk, listed = carry
        resume, keep = (builder.icmp_unsigned("!=", builder.and_(chunk, ir.Constant(I32, bit)), ir.Constant(I32, 0))
                        for bit in (RESUME_SUM, KEEP_SUM))
        slots = [[builder.gep(pointer, [ir.Constant(I64, m * nr + v * vw)]) for v in range(nv)] for m in range(mr)]
        with builder.if_then(resume):  # the loads only where asked: carry may point anywhere otherwise
            resumed_block = builder.block
            resumed = [[vec.load(builder, slot) for slot in row] for row in slots]
        start = _merged(builder, vec, [(resumed, resumed_block), ([[vec.zero] * nv] * mr, full_block)])
        # Two copies of the loop: a sum cut in ranges (any chunk bit) is one of many rows (more than
        # packed.SUM_CHUNK_ROWS), whose A lines come from L3, and prefetches them; a sum in one call
        # is of a small batch, whose A stays in L2, where the prefetch is a load slot lost a row.
        cut = builder.icmp_unsigned("!=", chunk, ir.Constant(I32, 0))
        with builder.if_else(cut) as (in_ranges, whole):
            with in_ranges:
                fetched = _tile_loop(builder, fn, n, mr, nv, vec, d_loader(None), a_loader(columns),
                                     _with_a_prefetch(builder, a, lda, also), start, listed=listed)
                fetched_block = builder.block
            with whole:
                plain = _tile_loop(builder, fn, n, mr, nv, vec, d_loader(None), a_loader(columns), also, start,
                                   listed=listed)
                plain_block = builder.block
        accs = _merged(builder, vec, [(fetched, fetched_block), (plain, plain_block)])
        with builder.if_else(keep) as (kept, finished):
            with kept:
                for m in range(mr):
                    for v in range(nv):
                        vec.store(builder, accs[m][v], slots[m][v])
            with finished:
                finish(builder, accs, ir.Constant(I64, 0), True)
    builder.branch(done)

    builder.position_at_end(partial_block)
    if carry is not None and carry[2] is not None:  # an indexed tile is a whole one: no partial loop to compile
        builder.branch(done)
        builder.position_at_end(done)
        return
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


# How many rows ahead a weight-gradient loop over many rows prefetches A: the tile's columns of A are one
# cache line a row (rows 784 floats apart in layer 0), a new 4 KB page nearly every row, which no hardware
# prefetcher follows; its L1 and L2 misses to L3 stalled the layer-0 update at batch 1024 (56 % of an Intel
# Xeon core's FMA peak, against 68-71 % at batch 64-128, whose A stays in L2). 8 to 24 rows ahead measured
# alike (1.13-1.21x on that phase); 16 rows of an AVX-512 tile's loop are ~130 cycles, about an L3 hit's latency.
A_PREFETCH_ROWS = 16


def _with_a_prefetch(builder, a, lda, also):
    """also(builder, i) for _tile_loop that runs the caller's `also` (if any), then prefetches (for reading, into
    L1) row i + A_PREFETCH_ROWS of the tile's columns of A (a, row stride lda). Past A's last row it fetches what
    follows A in memory, never faulting."""
    ahead = builder.gep(a, [builder.mul(ir.Constant(I64, A_PREFETCH_ROWS), lda)])

    def also_and_prefetch(builder, i):
        if also is not None:
            also(builder, i)
        prefetch(builder, builder.gep(ahead, [builder.mul(i, lda)]))

    return also_and_prefetch


def _merged(builder, vec, incoming):
    """The MR x NV accumulator vectors where control flow joins: a phi each, from the (vectors, block) pairs
    of `incoming` (each vectors[m][v] the value on the way from its block)."""
    first = incoming[0][0]
    merged = [[builder.phi(vec.vt) for _ in row] for row in first]
    for vectors, block in incoming:
        for phis, values in zip(merged, vectors):
            for phi, value in zip(phis, values):
                phi.add_incoming(value, block)
    return merged


# The smallest normal float32: velocities and Adam's moments below it are flushed to zero (fastmlp/optim.py).
SMALLEST_NORMAL = 1.1754943508222875e-38


def _flushed(builder, vec, x, magnitude):
    """Emit: x, with 0 in the lanes where magnitude (|x|, or x itself where x >= 0) < SMALLEST_NORMAL."""
    smallest = ir.Constant(vec.vt, [SMALLEST_NORMAL] * vec.vw)
    return builder.select(builder.fcmp_ordered("<", magnitude, smallest), vec.zero, x)


# On x86 the caller runs adam_tile with the MXCSR's flush-to-zero and denormals-are-zero modes
# on (`flush_to_zero_mode`), which flush for free; elsewhere the tile compares and selects.

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
    def update_vector(builder, i):
        """The pending tile's vector i (i * VW floats into each of its arrays) updated from its G in g_buf."""
        offset = builder.mul(i, ir.Constant(I64, vw))
        g_ptr, w_ptr, m_ptr, s_ptr = (builder.gep(p, [offset]) for p in (g_buf, w, first_moment, second_moment))
        weight, old_m, old_s = vec.load(builder, w_ptr), vec.load(builder, m_ptr), vec.load(builder, s_ptr)
        g = builder.call(vec.exact_fma, [l2, weight, vec.load(builder, g_ptr)])
        base = builder.call(vec.exact_fma, [decay, weight, weight])
        new_m = builder.call(vec.exact_fma, [b1c, builder.fsub(g, old_m), old_m])
        new_s = builder.call(vec.exact_fma, [b2c, builder.fsub(builder.fmul(g, g), old_s), old_s])
        if not X86:  # on x86 the MXCSR's modes flush them
            new_m = _flushed(builder, vec, new_m, builder.call(vec.fabs, [new_m]))
            new_s = _flushed(builder, vec, new_s, new_s)  # S >= 0
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
