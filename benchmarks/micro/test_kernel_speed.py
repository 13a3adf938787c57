"""pytest-benchmark: each kernel of fastmlp.kernels and its NumPy counterpart at batch 128 on the default net.

Run with `python -m pytest benchmarks/micro` (the default `python -m pytest` collects tests/ only).
This folder has no __init__.py, so asv, which imports the packages under benchmarks/, skips it.
"""

import pytest

from fastmlp.bench import KERNELS, kernel_case

BATCH_SIZE = 128


@pytest.mark.parametrize("impl", ["fused", "numpy"])
@pytest.mark.parametrize("kernel", KERNELS)
def test_kernel(benchmark, kernel, impl):
    case = kernel_case(kernel, BATCH_SIZE)
    case.fused()  # compiles (or loads from Numba's cache) outside the timing
    benchmark.group = f"{kernel} at batch {BATCH_SIZE}"
    benchmark(getattr(case, impl))
