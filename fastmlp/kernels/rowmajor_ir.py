"""The LLVM IR of the row-major inference tiles (fastmlp/kernels/rowmajor.py calls them through Numba intrinsics).

    rowmajor_tile(module, vw, mr, nv, masked)        C[rows, :ncols] = epilogue(A[rows, :] @ W[:, :ncols]),
                                                      the B vectors of step k loaded from W's row k
    checked_panel_tile(module, vw, mr, nv, masked)   the same off a packed panel kept between calls, checking
                                                      rows k_lo:k_hi of it against W, bit for bit, as it reads them

Both build on `simd_ir`'s vectors and tile loop, so that an output element is the same FMAs in the same
order as the training forward tile's (`simd_ir.forward_tile`): the same bits.
"""

from llvmlite import ir

from . import simd_ir

F32, I32, I64, PTR = simd_ir.F32, simd_ir.I32, simd_ir.I64, simd_ir.PTR

# checked_panel_tile prefetches W's row this many rows ahead of the one it checks (8-32 measured alike, 2-3 %
# off a layer-0 part at batch 64 on a Zen 3).
CHECK_PREFETCH_ROWS = 16


def rowmajor_tile(module, vw, mr, nv, masked):
    """The LLVM function of one tile C[rows, :ncols] = epilogue(A[rows, :] @ W[:, :ncols]), W row-major.

    void (float* a, i64 lda, float* w, i64 ldw, i64 K, float* c, i64 ldc, i64 rows, i64 ncols,
          float* bias, i32 relu)
    a: the tile's first row of A (row stride lda); w: W[0, first column] (row stride ldw); c: the
    tile's top-left element of C (row stride ldc); rows 1..mr real rows (the others read the last
    real row again and are not stored); ncols 1..nv*vw real columns (all of them unless masked:
    a `masked` tile loads only the real columns of W and the bias and stores only C's real columns; the
    other loads and stores whole vectors); bias at the first column; relu != 0 for
    max(z, 0). Declared once per module and shape.
    """
    name = f"fastmlp_rowmajor_tile_{vw}x{mr}x{nv}{'_masked' if masked else ''}"
    if name in module.globals:
        return module.globals[name]
    fnty = ir.FunctionType(ir.VoidType(), [PTR, I64, PTR, I64, I64, PTR, I64, I64, I64, PTR, I32])
    fn = ir.Function(module, fnty, name)
    fn.linkage = "internal"
    a, lda, w, ldw, K, c, ldc, rows, ncols, bias, relu = fn.args
    vec = simd_ir._Vectors(module, vw)
    builder = ir.IRBuilder(fn.append_basic_block("entry"))
    a_rows = [builder.gep(a, [builder.mul(simd_ir._clamp_row(builder, m, rows), lda)]) for m in range(mr)]
    masks = [simd_ir._lane_mask(builder, ir.Constant(I64, v * vw), ncols, vw) for v in range(nv)]

    def load_b(builder, k):
        row = builder.gep(w, [builder.mul(k, ldw)])
        ptrs = [builder.gep(row, [ir.Constant(I64, v * vw)]) for v in range(nv)]
        if masked:
            return [vec.masked_load(builder, p, masks[v]) for v, p in enumerate(ptrs)]
        return [vec.load(builder, p) for p in ptrs]

    def load_a(builder, k, m):
        return builder.load(builder.gep(a_rows[m], [k]))

    accs = simd_ir._tile_loop(builder, fn, K, mr, nv, vec, load_b, load_a)
    _store_bias_relu(builder, fn, vec, accs, c, ldc, rows, bias, relu, masks, not masked)
    builder.ret_void()
    return fn


def _store_bias_relu(builder, fn, vec, accs, c, ldc, rows, bias, relu, masks, whole):
    """The epilogue of a tile: C[m, :] = accs[m] + bias, max(., 0) if relu != 0, for its real rows and the
    lanes on in masks (all of them where `whole`: plain loads and stores, a masked store being slow on some
    cores, AVX2's vmaskmovps among them); the builder ends after the stores."""
    vw, nv = vec.vw, len(masks)

    def load(ptr, v):
        return vec.load(builder, ptr) if whole else vec.masked_load(builder, ptr, masks[v])

    b = [load(builder.gep(bias, [ir.Constant(I64, v * vw)]), v) for v in range(nv)]
    with_relu = builder.icmp_unsigned("!=", relu, ir.Constant(I32, 0))

    def store_row(builder, m, row):
        c_row = builder.gep(c, [builder.mul(ir.Constant(I64, m), ldc)])
        for v in range(nv):
            z = builder.fadd(accs[m][v], b[v])  # the epilogue of simd_ir.forward_tile, in its order
            z = builder.select(with_relu, builder.call(vec.maxnum, [z, vec.zero]), z)
            ptr = builder.gep(c_row, [ir.Constant(I64, v * vw)])
            if whole:
                vec.store(builder, z, ptr)
            else:
                vec.masked_store(builder, z, ptr, masks[v])

    zero = ir.Constant(I64, 0)
    simd_ir._for_rows(builder, fn, zero, len(accs), zero, rows, store_row)


def checked_panel_tile(module, vw, mr, nv, masked):
    """The LLVM function of one tile C[rows, :ncols] = epilogue(A[rows, :] @ panel), the panel a packed copy of
    W's columns (kept between calls) whose rows k_lo:k_hi the tile checks against W, bit for bit, as it reads them.

    i32 (float* a, i64 lda, float* panel, i64 K, float* w, i64 ldw, float* c, i64 ldc, i64 rows, i64 ncols,
         float* bias, i32 relu, i64 k_lo, i64 k_hi)
    The arguments of `rowmajor_tile`, panel: P[p, 0, 0] (K rows of NR floats, packed.py's layout), and the
    rows of W to check, 0 <= k_lo <= k_hi <= K. Returns 1 if each of those packed rows equals W's row in every
    bit of its ncols real columns (the padding lanes are zeros; a `masked` tile loads only the real columns of
    W, as zeros elsewhere); else 0, and C then holds the product with a stale copy: the caller repacks the
    panel and computes its rows again.

    The k loop runs in three pieces (the same FMAs in the same order: the same bits): 0:k_lo and k_hi:K as
    simd_ir.forward_tile's, and k_lo:k_hi where the NV vectors of packed row k feed the FMAs and are also
    XORed, as integers, with W's row k; the XORs are ORed into one vector that the loop carries (in memory
    here: LLVM's mem2reg makes it a register). So checking a row costs two loads, a prefetch of W's row
    CHECK_PREFETCH_ROWS ahead and 2 NV integer operations beside MR x NV FMAs, where a separate pass read W
    and a row-major copy of it from L2 or beyond.
    """
    name = f"fastmlp_checked_panel_tile_{vw}x{mr}x{nv}{'_masked' if masked else ''}"
    if name in module.globals:
        return module.globals[name]
    fnty = ir.FunctionType(I32, [PTR, I64, PTR, I64, PTR, I64, PTR, I64, I64, I64, PTR, I32, I64, I64])
    fn = ir.Function(module, fnty, name)
    fn.linkage = "internal"
    a, lda, panel, K, w, ldw, c, ldc, rows, ncols, bias, relu, k_lo, k_hi = fn.args
    vec = simd_ir._Vectors(module, vw)
    bits = ir.VectorType(I32, vw)
    builder = ir.IRBuilder(fn.append_basic_block("entry"))
    a_rows = [builder.gep(a, [builder.mul(simd_ir._clamp_row(builder, m, rows), lda)]) for m in range(mr)]
    masks = [simd_ir._lane_mask(builder, ir.Constant(I64, v * vw), ncols, vw) for v in range(nv)]
    differ = builder.alloca(bits)
    builder.store(ir.Constant(bits, [0] * vw), differ)
    nr = vw * nv

    def packed_row(builder, k):
        row = builder.gep(panel, [builder.mul(k, ir.Constant(I64, nr))])
        return [vec.load(builder, builder.gep(row, [ir.Constant(I64, v * vw)])) for v in range(nv)]

    def checked_row(builder, k):
        packed = packed_row(builder, k)
        w_row = builder.gep(w, [builder.mul(k, ldw)])
        w_ptrs = [builder.gep(w_row, [ir.Constant(I64, v * vw)]) for v in range(nv)]
        if masked:
            original = [vec.masked_load(builder, ptr, masks[v]) for v, ptr in enumerate(w_ptrs)]
        else:
            original = [vec.load(builder, ptr) for ptr in w_ptrs]
        # W's rows are ldw floats apart, read once a call: fetch the one CHECK_PREFETCH_ROWS ahead (a hint,
        # past W's end too: a prefetch never faults).
        ahead = builder.gep(w_row, [builder.mul(ir.Constant(I64, CHECK_PREFETCH_ROWS), ldw)])
        simd_ir.prefetch(builder, ahead)
        seen = builder.load(differ)
        for p, o in zip(packed, original):
            seen = builder.or_(seen, builder.xor(builder.bitcast(p, bits), builder.bitcast(o, bits)))
        builder.store(seen, differ)
        return packed

    def from_row(first, load_b):
        """load_b and load_a of a loop whose iteration k is the tile's row first + k."""
        def load_b_at(builder, k):
            return load_b(builder, builder.add(k, first))

        def load_a_at(builder, k, m):
            return builder.load(builder.gep(a_rows[m], [builder.add(k, first)]))

        return load_b_at, load_a_at

    zero = ir.Constant(I64, 0)
    accs = simd_ir._tile_loop(builder, fn, k_lo, mr, nv, vec, *from_row(zero, packed_row))
    accs = simd_ir._tile_loop(builder, fn, builder.sub(k_hi, k_lo), mr, nv, vec, *from_row(k_lo, checked_row),
                              initial=accs)
    accs = simd_ir._tile_loop(builder, fn, builder.sub(K, k_hi), mr, nv, vec, *from_row(k_hi, packed_row),
                              initial=accs)
    seen = builder.load(differ)
    any_bit = builder.extract_element(seen, ir.Constant(I32, 0))
    for lane in range(1, vw):
        any_bit = builder.or_(any_bit, builder.extract_element(seen, ir.Constant(I32, lane)))
    same = builder.zext(builder.icmp_unsigned("==", any_bit, ir.Constant(I32, 0)), I32)
    _store_bias_relu(builder, fn, vec, accs, c, ldc, rows, bias, relu, masks, not masked)
    builder.ret(same)
    return fn
