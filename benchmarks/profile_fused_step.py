"""Where the fused training epoch loses against the gemm floor: `python benchmarks/profile_fused_step.py`.

For each batch size, one interleaved run (each variant once per round, medians over the rounds
after the first) of a full MNIST epoch of plain SGD in nopython code, as the numba backend runs it:

- full:        gather the shuffled batch (uint8 pixels scaled to float32), then the fused step;
- no gather:   the same steps on one fixed batch (what the gather costs);
- in order:    gather rows in dataset order (what the random access costs);
- floor:       the step's sgemm calls alone with NumPy (fastmlp.bench.GemmFloor);

each as samples/s and as a fraction of the floor. `--blas-threads 1 2` repeats it per thread count.
Not a benchmark that asv runs: a tool for reading the profile behind the speed figures.
"""

import argparse
import time

import numpy as np
from numba import njit
from threadpoolctl import threadpool_limits

from fastmlp import MLP
from fastmlp.backends.numba_fused import _Workspace, sgd_step_inplace, train_batches_inplace
from fastmlp.bench import SETTLE_SECONDS, GemmFloor
from fastmlp.datasets import load_mnist
from fastmlp.kernels import gather_labels, gather_rows_scaled


@njit(cache=True)
def steps_without_gather(weights, biases, X, scale, y, order, batch_size, lr, acts, deltas, db, labels):
    """`train_batches_inplace` on the batch already in acts[0] and labels, never gathering; returns the summed loss."""
    n = order.shape[0]
    total = 0.0
    for start in range(0, n, batch_size):
        nb = min(batch_size, n - start)
        total += sgd_step_inplace(weights, biases, acts, deltas, db, labels[:nb], lr) * nb
    return total


@njit(cache=True)
def steps_gathering_in_order(weights, biases, X, scale, y, order, batch_size, lr, acts, deltas, db, labels):
    """`train_batches_inplace` with rows taken in dataset order instead of `order`; returns the summed loss."""
    n = order.shape[0]
    total = 0.0
    for start in range(0, n, batch_size):
        nb = min(batch_size, n - start)
        rows = np.arange(start, start + nb)
        gather_rows_scaled(acts[0][:nb], X, rows, scale)
        gather_labels(labels[:nb], y, rows)
        total += sgd_step_inplace(weights, biases, acts, deltas, db, labels[:nb], lr) * nb
    return total


VARIANTS = {"full": train_batches_inplace, "no gather": steps_without_gather, "in order": steps_gathering_in_order}


def profile(pixels, y, batch_size, rounds, layer_sizes=(784, 128, 64, 10)):
    """{variant: median epoch seconds} for full, no gather, in order and floor."""
    n = len(y)
    model = MLP(layer_sizes, seed=0)
    ws = _Workspace(layer_sizes, batch_size)
    ws.acts[0][:] = pixels.data[:batch_size] * np.float32(pixels.scale)
    ws.labels[:] = y[:batch_size]
    params = tuple(model.weights), tuple(model.biases)
    floor = GemmFloor(layer_sizes, batch_size)
    rng = np.random.default_rng(0)
    seconds = {name: [] for name in (*VARIANTS, "floor")}
    for _ in range(rounds):
        order = rng.permutation(n)
        for name, epoch in VARIANTS.items():
            time.sleep(SETTLE_SECONDS)
            start = time.perf_counter()
            epoch(*params, pixels.data, np.float32(pixels.scale), y, order, batch_size, np.float32(0.01),
                  ws.acts, ws.deltas, ws.db, ws.labels)
            seconds[name].append(time.perf_counter() - start)
        time.sleep(SETTLE_SECONDS)
        seconds["floor"].append(floor.epoch_seconds(n, batch_size))
    return {name: float(np.median(times[1:])) for name, times in seconds.items()}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[32, 128, 1024])
    parser.add_argument("--rounds", type=int, default=7, help="epochs per variant; the first is not counted")
    parser.add_argument("--blas-threads", type=int, nargs="+", default=[None],
                        help="BLAS thread counts to compare (default: BLAS's own)")
    args = parser.parse_args(argv)
    if args.rounds < 2 or min(args.batch_sizes) < 1:
        parser.error("--rounds must be >= 2 and batch sizes >= 1")
    X, y, _, _ = load_mnist(as_pixels=True)
    for threads in args.blas_threads:
        with threadpool_limits(threads, user_api="blas"):
            for batch_size in args.batch_sizes:
                median = profile(X, y, batch_size, args.rounds)
                cells = [f"{name} {len(y) / s / 1e3:,.0f}k ({median['floor'] / s:.2f})" for name, s in median.items()]
                print(f"batch {batch_size:>5}, BLAS threads {threads or 'default'}: " + "  ".join(cells), flush=True)


if __name__ == "__main__":
    main()
