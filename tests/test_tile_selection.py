"""Each CI pass really runs the SIMD tile it claims: the tile fastmlp.kernels.tiles picked, and the
vector registers of the machine code compiled for it.

.ci/run sets FASTMLP_EXPECT_TILE in the passes that compile for another CPU (NUMBA_CPU_NAME=haswell:
avx2; x86-64: sse); without it, the tile must be the one the CPU Numba compiles for gets from the
built-in table, or one a tuning or FASTMLP_TILE chose among those that CPU runs."""

import os

import numpy as np
import pytest
from numba import njit

from fastmlp import kernels
from fastmlp.kernels import tiles
from fastmlp.runtime.jit import X86

pytestmark = pytest.mark.kernels

REGISTERS = {4: "xmm", 8: "ymm", 16: "zmm"}  # x86's vector registers of 4, 8 and 16 floats
BUILTIN = tiles.select_tile(*tiles.target_cpu())


def test_the_tile_is_the_one_this_pass_claims():
    expected = os.environ.get("FASTMLP_EXPECT_TILE")
    if expected:
        assert tiles.TILE.name == expected, f"the pass claims {expected}, got {tiles.TILE} ({tiles.TILE_SOURCE})"
    elif tiles.TILE_SOURCE.startswith(("built-in", "the only")):
        assert tiles.TILE == BUILTIN
    else:  # tuned, or FASTMLP_TILE: any tile the CPU runs
        assert tiles.TILE.vw <= BUILTIN.vw
    assert kernels.PANEL_WIDTH == tiles.TILE.nr and kernels.TILE_ROWS == tiles.TILE.mr


@pytest.mark.skipif(not X86, reason="x86 register names")
def test_the_machine_code_uses_the_tiles_vector_width():
    # A fresh dispatcher (never from the cache, whose code cannot be inspected) of a packed product;
    # its assembly holds the forward tile it calls.
    product = njit(kernels.packed_matmul_into.py_func)
    P = np.zeros(kernels.packed_shape(8, 20), np.float32)
    product(np.zeros((3, 20), np.float32), np.zeros((3, 8), np.float32), P)
    asm = "\n".join(product.inspect_asm().values())
    assert REGISTERS[tiles.TILE.vw] in asm
    if tiles.TILE == BUILTIN:  # nothing wider than the tile: the pass compiled for the CPU it claims
        wider = [name for vw, name in REGISTERS.items() if vw > tiles.TILE.vw]
        assert not [name for name in wider if name in asm], f"{wider} in code compiled for {tiles.target_cpu()[0]}"
