"""Training speed of the backends against the gemm floor and the roofline: `python -m fastmlp.speed`.

All speeds are samples/s measured in one interleaved run (epoch by epoch: each backend, then
the floor), because this kind of machine drifts by tens of percent between runs: only the
ratios within a run mean anything.

- steady state: median over the epochs after the first two; JIT compilation is done before.
- gemm floor: the step's sgemm calls alone (three forward; per layer the weight gradient and,
  except for the first layer, the input gradient: eight for 784-128-64-10) with NumPy
  `np.matmul(..., out=...)` at the epoch's batch shapes, on preallocated operands.
- roofline: the GFLOP/s of one large square sgemm divided by the FLOPs of a sample's step, those
  of the floor's gemms: 2 * (3 * sum(fan_in * fan_out) - 784 * 128) = 454 kFLOP for 784-128-64-10.
- late/early: median throughput of the last three epochs over that of epochs 3-5; below 1 means
  training got slower as it went (subnormal floats are the usual cause).

Every timed run starts after a short pause: NumPy and SciPy wheels each bundle their own
OpenBLAS, whose worker threads spin for ~0.1 s after a call, and a run started while the other
library's threads still spin loses tens of milliseconds to the oversubscribed cores.
"""

import argparse
import sys
import time

import numpy as np

from .backends import get_backend
from .inputs import Pixels
from .model import MLP

LAYER_SIZES = (784, 128, 64, 10)
BATCH_SIZES = (32, 128, 1024)
WARMUP_EPOCHS = 2
SETTLE_SECONDS = 0.3  # longer than OpenBLAS worker threads spin after their last call


def flops_per_sample(layer_sizes=LAYER_SIZES):
    """FLOPs of one sample's gemms: forward, dW and dA per layer, but no dA for the input layer."""
    return 2 * (3 * sum(a * b for a, b in zip(layer_sizes[:-1], layer_sizes[1:])) - layer_sizes[0] * layer_sizes[1])


def roofline(layer_sizes=LAYER_SIZES, n=2048, repeats=5):
    """{'sgemm_gflops', 'flops_per_sample', 'samples_per_s'} from the best of `repeats` n x n sgemms."""
    rng = np.random.default_rng(0)
    A, B = (rng.standard_normal((n, n), dtype=np.float32) for _ in range(2))
    C = np.empty((n, n), dtype=np.float32)
    np.matmul(A, B, out=C)
    best = min(_timed(np.matmul, A, B, out=C) for _ in range(repeats))
    gflops = 2 * n**3 / best / 1e9
    fps = flops_per_sample(layer_sizes)
    return {"sgemm_gflops": gflops, "flops_per_sample": fps, "samples_per_s": gflops * 1e9 / fps}


class GemmFloor:
    """The sgemm calls of one training step with `np.matmul(..., out=...)` on preallocated operands."""

    def __init__(self, layer_sizes, batch_size, seed=0):
        rng = np.random.default_rng(seed)
        pairs = list(zip(layer_sizes[:-1], layer_sizes[1:]))
        self.weights = [rng.standard_normal(shape, dtype=np.float32) for shape in pairs]
        self.grads = [np.empty(shape, dtype=np.float32) for shape in pairs]
        self.acts = [rng.standard_normal((batch_size, s), dtype=np.float32) for s in layer_sizes]
        self.deltas = [rng.standard_normal((batch_size, s), dtype=np.float32) for s in layer_sizes]

    def n_calls(self):
        return 3 * len(self.weights) - 1

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


def measure(X, y, *, layer_sizes=LAYER_SIZES, batch_sizes=BATCH_SIZES, epochs=12, lr=0.1, seed=0,
            backends=("numpy", "numba"), inputs=("float32", "pixels"), progress=None):
    """One row per (batch size, backend, input) with its steady-state samples/s and the ratios.

    X is a uint8 (n, features) array of pixels; "float32" runs use X / 255 as float32 and
    "pixels" runs `Pixels(X)`. Each row holds samples_per_s, floor_samples_per_s, vs_floor,
    vs_numpy (the same input on the numpy backend), late_over_early and per-epoch samples/s.
    """
    if epochs < WARMUP_EPOCHS + 3:
        raise ValueError(f"epochs must be >= {WARMUP_EPOCHS + 3} to have steady-state epochs, got {epochs}")
    pixels = Pixels(np.ascontiguousarray(X, dtype=np.uint8))
    data = {"float32": pixels.to_float32(), "pixels": pixels}
    n = len(y)
    init = MLP(layer_sizes, seed=seed)
    rows = []
    for batch_size in batch_sizes:
        runs = [(b, i) for b in backends for i in inputs]
        models = {run: init.copy() for run in runs}
        rngs = {run: np.random.default_rng(seed) for run in runs}
        times = {run: [] for run in runs}
        floor = GemmFloor(layer_sizes, min(batch_size, n), seed)
        floor_times = []
        for epoch in range(epochs):
            for run in runs:
                backend, kind = get_backend(run[0]), run[1]
                time.sleep(SETTLE_SECONDS)
                times[run].append(_timed(backend.train_epoch, models[run], data[kind], y,
                                         batch_size=batch_size, lr=lr, rng=rngs[run]))
            time.sleep(SETTLE_SECONDS)
            floor_times.append(floor.epoch_seconds(n, batch_size))
            if progress:
                progress(f"batch {batch_size}: epoch {epoch + 1}/{epochs}")
        floor_rate = n / np.median(floor_times[WARMUP_EPOCHS:])
        steady = {run: n / np.median(t[WARMUP_EPOCHS:]) for run, t in times.items()}
        for run in runs:
            rate = [n / t for t in times[run]]
            early = np.median(rate[WARMUP_EPOCHS : WARMUP_EPOCHS + 3])
            late = np.median(rate[-3:])
            numpy_rate = steady.get(("numpy", run[1]))
            rows.append({
                "batch_size": batch_size, "backend": run[0], "input": run[1],
                "samples_per_s": steady[run], "floor_samples_per_s": floor_rate,
                "vs_floor": steady[run] / floor_rate,
                "vs_numpy": steady[run] / numpy_rate if numpy_rate else None,
                "late_over_early": late / early, "epoch_samples_per_s": rate,
            })
    return rows


def compile_times(layer_sizes=LAYER_SIZES):
    """{'numba_compile_s': seconds} to compile, or load from the cache, the fused backend's functions."""
    from .backends.numba_fused import compile_seconds

    return {"numba_compile_s": compile_seconds(layer_sizes, pixels=False) + compile_seconds(layer_sizes, pixels=True)}


def blas_info():
    """The BLAS libraries loaded and their thread counts, as threadpoolctl reports them (if installed)."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return []
    return [f"{i.get('internal_api')} {i.get('version')} {i.get('num_threads')} threads ({i.get('prefix')})"
            for i in threadpool_info() if i.get("user_api") == "blas"]


def format_table(rows):
    """The rows of `measure` as an aligned text table."""
    header = ["batch", "backend", "input", "samples/s", "floor/s", "vs floor", "vs numpy", "late/early"]
    lines = [[str(r["batch_size"]), r["backend"], r["input"], f"{r['samples_per_s']:,.0f}",
              f"{r['floor_samples_per_s']:,.0f}", f"{r['vs_floor']:.2f}",
              "-" if r["vs_numpy"] is None else f"{r['vs_numpy']:.2f}", f"{r['late_over_early']:.2f}"]
             for r in rows]
    widths = [max(len(h), *(len(line[i]) for line in lines)) for i, h in enumerate(header)]
    fmt = lambda cells: "  ".join(c.ljust(w) if i < 3 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))
    return "\n".join([fmt(header), fmt(["-" * w for w in widths])] + [fmt(line) for line in lines])


def _timed(fn, *args, **kwargs):
    start = time.perf_counter()
    fn(*args, **kwargs)
    return time.perf_counter() - start


def _load_pixels():
    from .datasets import load_mnist

    X, y, _, _ = load_mnist(as_pixels=True)
    return (X.data if isinstance(X, Pixels) else X), y


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m fastmlp.speed", description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=12, help="epochs per backend and batch size (default 12)")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=list(BATCH_SIZES))
    parser.add_argument("--inputs", nargs="+", choices=["float32", "pixels"], default=["float32", "pixels"])
    args = parser.parse_args(argv)

    X, y = _load_pixels()
    print(f"MNIST {len(y):,} samples, net {'-'.join(map(str, LAYER_SIZES))}, SGD lr 0.1, float32")
    for line in blas_info():
        print(f"BLAS: {line}")
    print(f"numba compile (or cache load): {compile_times()['numba_compile_s']:.2f} s")
    roof = roofline()
    print(f"roofline: {roof['sgemm_gflops']:.1f} GFLOP/s sgemm 2048^3 / {roof['flops_per_sample'] / 1e3:.0f} "
          f"kFLOP per sample = {roof['samples_per_s']:,.0f} samples/s")
    rows = measure(X, y, batch_sizes=args.batch_sizes, epochs=args.epochs, inputs=args.inputs,
                   progress=lambda msg: print(msg, file=sys.stderr, flush=True))
    print(f"steady state = median of epochs {WARMUP_EPOCHS + 1}-{args.epochs}; "
          f"late/early = epochs {args.epochs - 2}-{args.epochs} over {WARMUP_EPOCHS + 1}-{WARMUP_EPOCHS + 3} (medians)")
    print(format_table(rows))
    for r in rows:
        r["vs_roofline"] = r["samples_per_s"] / roof["samples_per_s"]
    print("vs roofline: " + ", ".join(f"{r['backend']}/{r['input']}@{r['batch_size']} {r['vs_roofline']:.2f}"
                                      for r in rows))


if __name__ == "__main__":
    main()
