"""The SIMD tile shapes, one per instruction set, and which one the CPU Numba compiles for gets.

A tile is MR rows by NR = VW * NV columns of a product, held in MR * NV vector registers while
its loop runs (see fastmlp/kernels/simd_ir.py). The shapes fit the register files: AVX-512 has
32 registers of 16 floats, so 8 x 2 accumulators leave room for the 2 B vectors and a
broadcast; AVX2 and SSE have 16, so 6 x 2 (the classic 6 x 16 AVX2 sgemm tile): 15 of 16,
which leaves no register for anything else in the loop (a mask, a constant: simd_ir keeps them
out of it, and tests/test_tile_asm.py checks the machine code for spills). Eight or more
independent FMA chains hide the FMA latency (4 cycles, two FMA ports) on every one of them.

The choice follows the target Numba compiles for, never a guess: NUMBA_CPU_NAME and
NUMBA_CPU_FEATURES when they are set (as Numba itself reads them), the host CPU otherwise.
Among the tiles that target runs, FASTMLP_TILE=<name> or a tuning measured on this machine may
pick another one (`chosen_tile`, fastmlp.runtime.tuning); the table stays the fallback.
"""

from typing import NamedTuple

import llvmlite.binding as llvm
from numba.core import config

from ..runtime import jit


class Tile(NamedTuple):
    name: str
    vw: int  # floats per vector register
    nv: int  # vectors per row of a packed panel
    mr: int  # rows of A per tile
    registers: int = 16  # vector registers of the instruction set

    @property
    def nr(self) -> int:
        """Columns of a packed panel (and of a tile)."""
        return self.vw * self.nv


TILES = {
    "avx512": Tile("avx512", vw=16, nv=2, mr=8, registers=32),
    "avx2": Tile("avx2", vw=8, nv=2, mr=6),
    "sse": Tile("sse", vw=4, nv=2, mr=6),
}

# CPU models whose defaults include AVX-512 (F) or AVX2 + FMA, as LLVM names them.
_AVX512_CPUS = ("skylake-avx512", "cascadelake", "cooperlake", "cannonlake", "icelake-client", "icelake-server",
                "tigerlake", "rocketlake", "sapphirerapids", "emeraldrapids", "graniterapids", "graniterapids-d",
                "diamondrapids", "knl", "knm", "znver4", "znver5", "x86-64-v4")
_AVX2_CPUS = ("haswell", "broadwell", "skylake", "alderlake", "raptorlake", "meteorlake", "arrowlake",
              "arrowlake-s", "lunarlake", "gracemont", "pantherlake", "znver1", "znver2", "znver3", "x86-64-v3",
              "bdver4") + _AVX512_CPUS


def target_cpu() -> tuple[str, str]:
    """(CPU name, feature string) that Numba's JIT compiles for."""
    # Numba sets these from NUMBA_CPU_NAME / NUMBA_CPU_FEATURES when it reads its environment.
    name = getattr(config, "CPU_NAME", None) or llvm.get_host_cpu_name()
    features = getattr(config, "CPU_FEATURES", None)
    if features is not None:
        return name, features
    from numba.core.codegen import get_host_cpu_features

    return name, get_host_cpu_features()


def select_tile(cpu_name: str, features: str) -> Tile:
    """The tile for a CPU model and LLVM feature string ("+avx2,-avx512f,...")."""
    flags = {f[1:]: f[0] == "+" for f in features.split(",") if f[:1] in "+-" and len(f) > 1}

    def has(feature: str, cpus: tuple[str, ...]) -> bool:
        return flags.get(feature, cpu_name in cpus)

    if has("avx512f", _AVX512_CPUS):
        return TILES["avx512"]
    if has("avx2", _AVX2_CPUS) and has("fma", _AVX2_CPUS):
        return TILES["avx2"]
    return TILES["sse"]


def chosen_tile() -> tuple[Tile, str]:
    """The tile in use and where the choice came from: FASTMLP_TILE, this machine's tuning, else the table above."""
    from ..runtime import tuning

    cpu, features = target_cpu()
    builtin = select_tile(cpu, features)
    runnable = [tile.name for tile in TILES.values() if tile.vw <= builtin.vw]
    name, source = tuning.tile_choice(cpu, features, builtin.name, runnable)
    return TILES[name], source


TILE, TILE_SOURCE = chosen_tile()
# The tile shapes the machine code but not the source that Numba keys its cache by: key it by the tile too.
jit.CODE_CHOICES["tile"] = TILE.name
