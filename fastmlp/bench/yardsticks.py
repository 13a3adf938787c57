"""The yardsticks a training speed is read against: the FMA roofline (the FMA peak of every usable core,
fastmlp.bench.fma_peak), the sgemm roofline (large-square sgemm) and the gemm floor (the step's sgemm
calls alone)."""

import json
import os
import time

import numpy as np

from .common import LAYER_SIZES, run_child, timed


def flops_per_sample(layer_sizes=LAYER_SIZES):
    """FLOPs of one sample's gemms: forward, dW and dA per layer, but no dA for the input layer."""
    return 2 * (3 * sum(a * b for a, b in zip(layer_sizes[:-1], layer_sizes[1:])) - layer_sizes[0] * layer_sizes[1])


def fma_yardstick(layer_sizes=LAYER_SIZES):
    """The FMA roofline of the net: `fma_peak.fma_roofline` with its FLOPs per sample, plus the tile in use.

    {'cpu', 'target', 'vector_width', 'chains', 'core_gflops', 'cores', 'all_gflops',
    'flops_per_sample', 'samples_per_s', 'tile', 'tile_source', 'tuning_s'}; tile is
    fastmlp.kernels.tiles.TILE as a dict, tile_source where the choice came from (the built-in table,
    a tuning, FASTMLP_TILE), tuning_s the seconds the stored tuning took (None without one).
    """
    from ..kernels.tiles import TILE, TILE_SOURCE, target_cpu
    from ..runtime.tuning import stored_choice
    from .fma_peak import fma_roofline

    peak = dict(fma_roofline(flops_per_sample(layer_sizes)))
    peak["tile"] = {"name": TILE.name, "vw": TILE.vw, "nv": TILE.nv, "mr": TILE.mr, "nr": TILE.nr}
    peak["tile_source"] = TILE_SOURCE
    tuning = stored_choice(*target_cpu())  # its time is not in the compile times: reported apart
    peak["tuning_s"] = tuning["seconds"] if tuning is not None and tuning["tile"] == TILE.name else None
    return peak


def roofline(layer_sizes=LAYER_SIZES, n=2048, repeats=5):
    """{'sgemm_gflops', 'flops_per_sample', 'samples_per_s'} from the best of `repeats` n x n sgemms."""
    rng = np.random.default_rng(0)
    A, B = (rng.standard_normal((n, n), dtype=np.float32) for _ in range(2))
    C = np.empty((n, n), dtype=np.float32)
    np.matmul(A, B, out=C)
    best = min(timed(np.matmul, A, B, out=C) for _ in range(repeats))
    gflops = 2 * n**3 / best / 1e9
    fps = flops_per_sample(layer_sizes)
    return {"sgemm_gflops": gflops, "flops_per_sample": fps, "samples_per_s": gflops * 1e9 / fps}


def report_roofline(layer_sizes=LAYER_SIZES):
    """In a fresh process: print `roofline(layer_sizes)` as JSON (see `native_roofline`)."""
    print(json.dumps(roofline(layer_sizes)))


def native_roofline(layer_sizes=LAYER_SIZES):
    """`roofline(layer_sizes)` in a process without OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE, or None if neither is set.

    Some machines here set them (older OpenBLAS builds crash or compute wrong on their CPUs), and
    a current OpenBLAS then runs that core type's kernels: Haswell's AVX2 where the CPU has
    AVX-512, half the FMA width. The roofline as configured is the yardstick of the table; this
    one says what the hardware itself allows.
    """
    names = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")
    if not any(name in os.environ for name in names):
        return None
    env = {key: value for key, value in os.environ.items() if key not in names}
    return run_child(f"report_roofline({tuple(layer_sizes)!r})", env, module="yardsticks")


class GemmFloor:
    """The sgemm calls of one training step with `np.matmul(..., out=...)` on preallocated operands."""

    def __init__(self, layer_sizes, batch_size, seed=0):
        rng = np.random.default_rng(seed)
        pairs = list(zip(layer_sizes[:-1], layer_sizes[1:]))
        self.weights = [rng.standard_normal(shape, dtype=np.float32) for shape in pairs]
        self.grads = [np.empty(shape, dtype=np.float32) for shape in pairs]
        self.acts = [rng.standard_normal((batch_size, s), dtype=np.float32) for s in layer_sizes]
        self.deltas = [rng.standard_normal((batch_size, s), dtype=np.float32) for s in layer_sizes]

    def step(self, n):
        """The step's gemms on the first n rows of the batch buffers."""
        acts = [a[:n] for a in self.acts]
        deltas = [d[:n] for d in self.deltas]
        for l, W in enumerate(self.weights):
            np.matmul(acts[l], W, out=acts[l + 1])
        for l in reversed(range(len(self.weights))):
            np.matmul(acts[l].T, deltas[l + 1], out=self.grads[l])
            if l > 0:
                np.matmul(deltas[l + 1], self.weights[l].T, out=deltas[l])

    def epoch_seconds(self, n_samples, batch_size):
        """Seconds for the gemms of one epoch of n_samples, the last partial batch included."""
        start = time.perf_counter()
        for first in range(0, n_samples, batch_size):
            self.step(min(batch_size, n_samples - first))
        return time.perf_counter() - start
