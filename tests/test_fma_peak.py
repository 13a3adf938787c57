"""The FMA peak's loop (fastmlp.bench.fma_peak): it does the FLOPs it is credited with, on every lane.

Never its speed: only that what it computes is right, and that the peak it reports is positive."""

import numpy as np
import pytest

from fastmlp.bench import fma_peak
from fastmlp.kernels.tiles import select_tile, target_cpu


def reference(out, iterations, m, a):
    """The loop in NumPy, float64: out[j] = out[j] * m + a, `iterations` times."""
    x = out.astype(np.float64)
    for _ in range(iterations):
        x = x * m + a
    return x


@pytest.mark.parametrize("iterations, m, a", [(0, 1.0, 0.5), (1, 1.0, 0.5), (37, 1.0, 0.25), (5, 2.0, 0.0),
                                              (4, 0.5, 3.0), (6, -1.0, 1.0)])
def test_every_lane_of_every_chain_gets_one_fma_per_iteration(iterations, m, a):
    # Distinct exact starting values per lane and chain, and m, a whose results are exact in float32:
    # a lane updated one time too many or too few, or not at all, shows.
    out = np.arange(fma_peak.fma_lanes(), dtype=np.float32) - 7
    expected = reference(out, iterations, m, a)
    fma_peak.run_fma_loop(iterations, out, m, a)
    np.testing.assert_array_equal(out, expected.astype(np.float32))


def test_flops_are_two_per_lane_and_iteration():
    # With m = 1 every FMA adds `a` once: the total added over all lanes counts the FMAs done.
    out = np.zeros(fma_peak.fma_lanes(), dtype=np.float32)
    fma_peak.run_fma_loop(1000, out, 1.0, 1.0)
    assert 2 * out.sum(dtype=np.float64) == fma_peak.fma_flops(1000)


def test_the_loop_uses_the_vector_width_of_the_cpu_numba_compiles_for():
    assert fma_peak.VECTOR_WIDTH == select_tile(*target_cpu()).vw
    assert fma_peak.fma_lanes() == fma_peak.CHAINS * fma_peak.VECTOR_WIDTH
    assert fma_peak.CHAINS >= 10  # latency x ports of current cores: 4-5 cycles x 2


def test_the_loop_refuses_an_array_of_the_wrong_size():
    with pytest.raises(ValueError, match="out must be a C-contiguous float32 array"):
        fma_peak.run_fma_loop(1, np.zeros(fma_peak.fma_lanes() + 1, dtype=np.float32))
    with pytest.raises(ValueError, match="iterations must be >= 0"):
        fma_peak.run_fma_loop(-1, np.zeros(fma_peak.fma_lanes(), dtype=np.float32))


def test_the_peak_and_the_roofline_are_positive():
    peak = fma_peak.fma_roofline(454_400, cores=2, seconds=0.01, repeats=1)
    assert peak["core_gflops"] > 0 and peak["all_gflops"] > 0 and peak["cores"] == 2
    assert peak["samples_per_s"] == pytest.approx(peak["all_gflops"] * 1e9 / 454_400)
    assert peak["vector_width"] == fma_peak.VECTOR_WIDTH and peak["cpu"]
