"""The FMA peak: what one core, and all usable cores at once, compute at most in float32, in GFLOP/s.

A training step is almost all fused multiply-adds, so its speed is read against the FMA peak of
the machine it runs on: the FMA roofline is the all-core peak divided by a sample's FLOPs. Unlike
a large sgemm (the sgemm roofline), this yardstick does not depend on which BLAS kernels happen to
be loaded, nor on caches or memory: the loop below does nothing but FMAs on registers.

The loop, in LLVM IR built with fastmlp's own SIMD helpers (fastmlp.kernels.simd_ir):

    acc[c] = load <VW x float> from out[c * VW]          # before the loop, CHAINS vectors
    for i in range(iterations):
        for c in range(CHAINS):
            acc[c] = fma(acc[c], m, a)                   # llvm.fma.vNf32, m and a splat scalars
    store acc[c] to out[c * VW]                          # after the loop

Each chain depends on itself only, so the core can start a new FMA every cycle on every FMA port
while earlier ones are still in flight: it needs latency x ports independent chains (4-5 cycles
x 2 ports on current x86 cores, so 8-10) to run at its peak, and CHAINS is more than that. The
accumulators stay in registers (CHAINS + 2 vectors: under the 16 of AVX2/SSE, the 32 of
AVX-512), so there are no loads or stores in the loop. Each iteration does 2 * VW * CHAINS FLOPs.

VW is the vector width of the CPU Numba compiles for (16 floats with AVX-512, 8 with AVX2, 4
otherwise): that of the tile the built-in table gives it (fastmlp.kernels.tiles.select_tile),
whatever tile a tuning or FASTMLP_TILE chose, since the peak is the hardware's.
"""

from __future__ import annotations

import platform
import threading
import time
from typing import Any, TypedDict

import numpy as np
from llvmlite import ir
from numba import types
from numba.extending import intrinsic

from ..kernels import simd_ir
from ..kernels.tiles import select_tile, target_cpu
from ..runtime.blas_threads import usable_cpus
from ..runtime.jit import cached_njit

VECTOR_WIDTH = select_tile(*target_cpu()).vw
# Independent FMA chains: more than latency x FMA ports everywhere (see the module doc), and few
# enough that they and the two operand vectors fit the register file.
CHAINS = 24 if VECTOR_WIDTH >= 16 else 12
SECONDS = 0.2  # one timed run; long enough for the clock to ramp up, short enough to repeat
REPEATS = 3  # the best run counts: a run can only be slowed down by other work, never sped up


def fma_loop_ir(module: ir.Module, vw: int, chains: int) -> ir.Function:
    """The LLVM function `void (i64 iterations, float* out, float m, float a)` of the module doc, declared once
    per module."""
    name = f"fastmlp_fma_peak_{vw}x{chains}"
    if name in module.globals:
        return module.globals[name]
    fnty = ir.FunctionType(ir.VoidType(), [simd_ir.I64, simd_ir.PTR, simd_ir.F32, simd_ir.F32])
    fn = ir.Function(module, fnty, name)
    fn.linkage = "internal"
    iterations, out, m, a = fn.args
    vec = simd_ir._Vectors(module, vw)
    entry = fn.append_basic_block("entry")
    header, body, done = (fn.append_basic_block(part) for part in ("loop", "body", "done"))
    builder = ir.IRBuilder(entry)
    m_v, a_v = simd_ir._splat(builder, m, vw), simd_ir._splat(builder, a, vw)
    ptrs = [builder.gep(out, [ir.Constant(simd_ir.I64, c * vw)]) for c in range(chains)]
    first = [vec.load(builder, p) for p in ptrs]
    builder.branch(header)

    builder.position_at_end(header)  # the accumulators are phi values: registers, never memory
    i = builder.phi(simd_ir.I64, "i")
    i.add_incoming(ir.Constant(simd_ir.I64, 0), entry)
    accs = [builder.phi(vec.vt, f"acc{c}") for c in range(chains)]
    for acc, value in zip(accs, first):
        acc.add_incoming(value, entry)
    builder.cbranch(builder.icmp_signed("<", i, iterations), body, done)

    builder.position_at_end(body)
    for acc in accs:
        acc.add_incoming(builder.call(vec.fma, [acc, m_v, a_v]), body)
    i.add_incoming(builder.add(i, ir.Constant(simd_ir.I64, 1)), body)
    builder.branch(header)

    builder.position_at_end(done)
    for acc, p in zip(accs, ptrs):
        vec.store(builder, acc, p)
    builder.ret_void()
    return fn


@intrinsic
def _fma_loop(typingctx: Any, iterations: Any, out: Any, m: Any, a: Any) -> Any:
    """`iterations` rounds of CHAINS independent vector FMAs on out's CHAINS * VECTOR_WIDTH floats (fma_loop_ir)."""
    sig = types.void(types.int64, out, types.float32, types.float32)

    def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
        iterations_, out_, m_, a_ = args
        data = context.make_array(signature.args[1])(context, builder, out_).data
        builder.call(fma_loop_ir(builder.module, VECTOR_WIDTH, CHAINS), [iterations_, data, m_, a_])
        return context.get_dummy_value()

    return sig, codegen


@cached_njit(nogil=True)
def fma_loop(iterations, out, m, a):  # an @njit body: Numba types it
    """out[j] = fma(out[j], m, a), `iterations` times for every j: the FLOPs of `fma_flops(iterations)`.

    out: float32, C-contiguous, CHAINS * VECTOR_WIDTH elements (each lane of each chain).
    """
    _fma_loop(iterations, out, m, a)  # type: ignore[call-arg]  # mypy misreads Numba's intrinsics


def fma_lanes() -> int:
    """The floats one run of the loop computes: CHAINS vectors of VECTOR_WIDTH lanes."""
    return CHAINS * VECTOR_WIDTH


def fma_flops(iterations: int) -> int:
    """FLOPs of `fma_loop(iterations, ...)`: one multiply and one add per lane, chain and iteration."""
    return 2 * iterations * fma_lanes()


def _check_out(out: np.ndarray) -> None:
    if out.dtype != np.float32 or out.shape != (fma_lanes(),) or not out.flags.c_contiguous:
        raise ValueError(f"out must be a C-contiguous float32 array of {fma_lanes()} elements, "
                         f"got {out.dtype} {out.shape}")


def run_fma_loop(iterations: int, out: np.ndarray, m: float = 1.0, a: float = 0.0) -> None:
    """`fma_loop` with its arguments checked: out (CHAINS * VECTOR_WIDTH float32) updated in place."""
    _check_out(out)
    if iterations < 0:
        raise ValueError(f"iterations must be >= 0, got {iterations}")
    fma_loop(int(iterations), out, np.float32(m), np.float32(a))


def _operands() -> np.ndarray:
    # m = 1, a = 0: the values never change, so they never overflow nor turn subnormal (subnormal
    # operands would slow the FMAs down on some cores), whatever the run's length.
    return np.ones(fma_lanes(), dtype=np.float32)


def _timed_runs(threads: int, iterations: int) -> float:
    """Seconds from the first thread's start to the last one's end, `threads` threads each running the loop once."""
    start_line = threading.Barrier(threads)
    spans: list[tuple[float, float]] = []
    lock = threading.Lock()

    def one() -> None:
        out = _operands()
        start_line.wait()
        start = time.perf_counter()
        fma_loop(iterations, out, np.float32(1.0), np.float32(0.0))  # nogil: the threads run at once
        end = time.perf_counter()
        with lock:
            spans.append((start, end))

    workers = [threading.Thread(target=one) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return max(end for _, end in spans) - min(start for start, _ in spans)


def measure_fma_peak(threads: int = 1, seconds: float = SECONDS, repeats: int = REPEATS) -> float:
    """GFLOP/s of `threads` threads running the FMA loop at once, each about `seconds`: the best of `repeats` runs."""
    if threads < 1 or repeats < 1 or seconds <= 0:
        raise ValueError(f"threads and repeats must be >= 1 and seconds > 0, got {threads}, {repeats}, {seconds}")
    out = _operands()
    fma_loop(1, out, np.float32(1.0), np.float32(0.0))  # compiles (or loads from Numba's cache)
    iterations = 1 << 14
    while True:  # a run long enough to time, then scaled to `seconds`
        took = _timed_runs(1, iterations)
        if took > 0.02 or iterations >= 1 << 40:
            break
        iterations *= 8
    iterations = max(1, int(iterations * seconds / took))
    best = min(_timed_runs(threads, iterations) for _ in range(repeats))
    return threads * fma_flops(iterations) / best / 1e9


class FmaPeak(TypedDict):
    """The FMA peak of this machine, and the roofline it makes for a net."""

    cpu: str  # the CPU's model name
    target: str  # the LLVM CPU name Numba compiles for
    vector_width: int  # floats per vector
    chains: int
    core_gflops: float  # one thread
    cores: int  # threads run at once: the usable CPUs
    all_gflops: float  # all of them
    flops_per_sample: int
    samples_per_s: float  # all_gflops / flops_per_sample: the FMA roofline


# On a shared virtual machine one core may be busy or slowed by the host for seconds: an all-core peak under
# ALL_CORES_MIN_SCALING x cores x one core's is measured again, up to ALL_CORES_RETRIES times, the best kept
# (a run whose all-core peak read 1.01x one core's made its roofline fractions read 119 %).
ALL_CORES_MIN_SCALING = 0.75
ALL_CORES_RETRIES = 3


def scales_with_cores(core_gflops: float, all_gflops: float, cores: int) -> bool:
    """Whether an all-core FMA peak is at least ALL_CORES_MIN_SCALING x cores x the one-core peak."""
    return all_gflops >= ALL_CORES_MIN_SCALING * cores * core_gflops


def fma_roofline(flops_per_sample: int, cores: int | None = None, seconds: float = SECONDS,
                 repeats: int = REPEATS) -> FmaPeak:
    """The FMA peak on one core and on `cores` (default: every usable CPU), and the samples/s it allows. An
    all-core peak that does not scale with the cores (scales_with_cores) is measured again, the best kept."""
    cores = usable_cpus() if cores is None else cores
    core = measure_fma_peak(1, seconds, repeats)
    every = core
    if cores > 1:
        every = measure_fma_peak(cores, seconds, repeats)
        for _ in range(ALL_CORES_RETRIES):
            if scales_with_cores(core, every, cores):
                break
            every = max(every, measure_fma_peak(cores, seconds, repeats))
    return {"cpu": cpu_model_name(), "target": target_cpu()[0], "vector_width": VECTOR_WIDTH, "chains": CHAINS,
            "core_gflops": core, "cores": cores, "all_gflops": every, "flops_per_sample": flops_per_sample,
            "samples_per_s": every * 1e9 / flops_per_sample}


def cpu_model_name() -> str:
    """The CPU's model name as the OS reports it (Linux: /proc/cpuinfo), else what Python's platform module knows."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() in ("model name", "Model", "cpu model") and value.strip():
                    return value.strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"
