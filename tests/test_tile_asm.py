"""The SIMD tiles' machine code: each tile's main loop keeps its accumulators in registers, on every instruction set.

A tile's loop is fast only if LLVM keeps the MR x NV accumulators, the B vectors and the broadcast
in vector registers: one spill (a store of an accumulator to the stack and its reload in every
iteration) or a mask rebuilt in the loop cost the update tile half its speed on AVX2 once, and
nothing but the machine code shows it (results stay right). So this test compiles each
microkernel of fastmlp/kernels/simd_ir.py and update_ir.py (forward_tile, wgrad_tile, adam_tile) for each
instruction set's tile, with LLVM's -O3 pipeline as Numba runs it, for a CPU of that set
(haswell: AVX2, skylake-avx512: AVX-512, x86-64: SSE; any machine can compile for all three),
finds the loop of a whole tile's k iterations (the one that does MR x NV FMAs, MR broadcasts and
no masked load per iteration, perhaps unrolled) and fails if it touches the stack. The same for the
inference tiles of fastmlp/kernels/rowmajor.py: the MR x NV and 1 x 4NV tiles on row-major W, and the
tile that checks a kept packed copy against W as it reads it (its three loops: before, in and after
the checked rows).
"""

import re

import llvmlite.binding as llvm
import numba  # noqa: F401  initialises LLVM's targets
import pytest
from llvmlite import ir

from fastmlp.kernels import rowmajor, simd_ir, update_ir
from fastmlp.kernels.tiles import TILES, Tile

CPUS = {"avx2": "haswell", "avx512": "skylake-avx512", "sse": "x86-64"}
# "_indexed": the tile that runs over a list of its k (or rows), skipping zero inputs (packed's SKIP_ZERO_INPUTS).
KERNELS = ("forward", "wgrad", "adam", "forward_indexed", "wgrad_indexed")


def tile_assembly(kernel, tile, cpu):
    """x86 assembly of one microkernel (simd_ir.<kernel>_tile, or its indexed variant for "<kernel>_indexed") for
    `tile`, compiled -O3 for `cpu` and its own features."""
    base, indexed = kernel.removesuffix("_indexed"), kernel.endswith("_indexed")
    source = simd_ir if base == "forward" else update_ir
    options = {"indexed": True} if indexed else {}
    return assembly(lambda module: getattr(source, f"{base}_tile")(module, tile, **options), f"{kernel}_{tile.name}",
                    cpu)


def assembly(declare, name, cpu):
    """x86 assembly of the LLVM function that declare(module) adds, compiled -O3 for `cpu` and its own features."""
    module = ir.Module(name)
    declare(module).linkage = "external"  # kept, not inlined away
    machine = llvm.Target.from_triple("x86_64-unknown-linux-gnu").create_target_machine(cpu=cpu, features="", opt=3)
    compiled = llvm.parse_assembly(str(module))
    compiled.verify()
    passes = llvm.create_pass_builder(machine, llvm.create_pipeline_tuning_options(speed_level=3))
    passes.getModulePassManager().run(compiled, passes)
    return machine.emit_assembly(compiled)


def instructions(asm):
    """([instruction], {label: index of the instruction after it}) of the function's body."""
    body, labels = [], {}
    for line in asm.splitlines():
        line = line.split("#")[0].strip()
        label = re.match(r"^([\w$.]+):$", line)
        if label:
            labels[label.group(1)] = len(body)
        elif line and not line.startswith("."):
            body.append(line)
    return body, labels


def loops(asm):
    """[instructions] of each loop: from a backward jump's target to the jump."""
    body, labels = instructions(asm)
    found = []
    for i, line in enumerate(body):
        jump = re.match(r"^j\w+\s+([\w$.]+)$", line)
        if jump and labels.get(jump.group(1), i + 1) <= i:
            found.append(body[labels[jump.group(1)] : i + 1])
    return found


def is_fma(line):
    return line.startswith(("vfmadd", "mulps"))  # SSE has no FMA: a mulps and an addps


def is_broadcast(line):
    return line.startswith(("vbroadcastss", "shufps\t$0,"))


def is_masked_load(line):
    return bool(re.match(r"vmaskmovps\t[^%]", line)) or "{%k" in line  # AVX2: a memory first operand loads


def touches_stack(line, frame_pointer):
    """A memory operand addressed from the stack pointer (or the frame pointer, where the function keeps one)."""
    return bool(re.search(r"\(%rsp" + (r"|\(%rbp" if frame_pointer else ""), line))


def tile_loops(asm, tile):
    """The loops that run whole k iterations of the tile: MR broadcasts and MR x NV FMAs each, D (or B) read whole."""
    found = []
    for loop in loops(asm):
        broadcasts, fmas = sum(map(is_broadcast, loop)), sum(map(is_fma, loop))
        if (broadcasts and broadcasts % tile.mr == 0 and fmas == tile.nv * broadcasts
                and not any(map(is_masked_load, loop))):
            found.append(loop)
    return found


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("isa", sorted(CPUS))
def test_the_tile_loop_keeps_everything_in_registers(kernel, isa):
    tile = TILES[isa]
    asm = tile_assembly(kernel, tile, CPUS[isa])
    found = tile_loops(asm, tile)
    assert found, (f"no loop of {tile.mr} broadcasts, {tile.mr * tile.nv} FMAs and no masked load "
                   f"in {kernel}_tile ({isa})")
    frame_pointer = "movq\t%rsp, %rbp" in asm
    for loop in found:
        spills = [line for line in loop if touches_stack(line, frame_pointer)]
        assert not spills, f"{kernel}_tile ({isa}) reads or writes the stack in its loop: {spills}"
    if isa != "sse":  # the FMAs read their operands from registers, none from memory
        assert all(re.match(r"^vfmadd\w+\s+%[xyz]mm\d+, %[xyz]mm\d+, %[xyz]mm\d+$", line)
                   for loop in found for line in loop if is_fma(line))


@pytest.mark.parametrize("kernel", ["wgrad", "wgrad_indexed"])
@pytest.mark.parametrize("isa", sorted(CPUS))
def test_the_update_tile_prefetches_A_only_in_its_loop_over_many_rows(isa, kernel):
    # wgrad_tile's whole-tile loop comes twice: with one prefetch of A an iteration (a sum cut in ranges of rows,
    # whose A lines come from L3) and with none (a small batch's, where a prefetch is a load slot lost).
    tile = TILES[isa]
    prefetches = sorted(sum(line.startswith("prefetch") for line in loop)
                        for loop in tile_loops(tile_assembly(kernel, tile, CPUS[isa]), tile))
    assert prefetches == [0, 1], f"prefetches in each whole-tile loop of {kernel}_tile ({isa}): {prefetches}"


ROWMAJOR_KERNELS = ("rows", "wide", "checked")


def rowmajor_shape(kernel, tile):
    """(MR, NV) of the inference tile `kernel` for the training tile `tile`'s instruction set."""
    return (1, 4 * tile.nv) if kernel == "wide" else (tile.mr, tile.nv)


@pytest.mark.parametrize("kernel", ROWMAJOR_KERNELS)
@pytest.mark.parametrize("isa", sorted(CPUS))
def test_the_inference_tile_loops_keep_everything_in_registers(kernel, isa):
    tile = TILES[isa]
    mr, nv = rowmajor_shape(kernel, tile)
    build = rowmajor.checked_panel_tile if kernel == "checked" else rowmajor.rowmajor_tile
    asm = assembly(lambda module: build(module, tile.vw, mr, nv, False), f"{kernel}_{isa}", CPUS[isa])
    shape = Tile(name=f"{kernel}_{isa}", vw=tile.vw, mr=mr, nv=nv, registers=tile.registers)
    found = tile_loops(asm, shape)
    assert len(found) >= (3 if kernel == "checked" else 1), f"the k loops of the {kernel} tile ({isa}): {found}"
    frame_pointer = "movq\t%rsp, %rbp" in asm
    for loop in found:
        spills = [line for line in loop if touches_stack(line, frame_pointer)]
        # SSE has no three-operand instructions: the check (W's row XORed with the packed one, ORed into a
        # carried vector) needs a 17th register beside the 12 accumulators, and one vector goes to the stack
        # and back per iteration of the checked rows only.
        allowed = 2 if isa == "sse" and any(line.startswith(("xorps", "pxor")) for line in loop) else 0
        assert len(spills) <= allowed, f"the {kernel} tile ({isa}) reads or writes the stack in a k loop: {spills}"


def test_the_finder_sees_a_spill():
    # The check itself: a loop with an accumulator spilled to the stack is caught.
    tile = TILES["avx2"]
    loop = ["vbroadcastss\t(%rax), %ymm0"] * tile.mr + ["vfmadd231ps\t%ymm1, %ymm0, %ymm2"] * (tile.mr * tile.nv)
    asm = "\n".join([".LBB0_1:", *loop, "vmovups\t%ymm2, -64(%rsp)", "jne\t.LBB0_1"])
    assert any(touches_stack(line, False) for found in tile_loops(asm, tile) for line in found)
