"""Where the fused training epoch loses against the gemm floor: `python benchmarks/profile_fused_step.py`.

For each batch size, one interleaved run (each variant once per round, medians over the rounds
after the first) of a full MNIST epoch of plain SGD (uint8 pixels scaled at the gather):

- workers:     the numba backend as it trains, one worker thread per core with single-threaded
               BLAS (`Backend()`);
- no gather:   the same workers on one fixed batch (what gathering the shuffled batch costs);
- one worker:  the same code on one thread, BLAS with its own threads (`Backend(threads=1)`);
- floor:       the step's sgemm calls alone with NumPy (fastmlp.bench.GemmFloor);

each as samples/s and as a fraction of the floor.
Not a benchmark that asv runs: a tool for reading the profile behind the speed figures.
"""

import argparse
import time

import numpy as np
from numba import njit

from fastmlp import MLP
from fastmlp.backends.numba_fused import (
    PLAIN_SGD, Backend, backprop_rows, part_of, training_threads, update_part,
)
from fastmlp.bench import SETTLE_SECONDS, GemmFloor
from fastmlp.datasets import load_mnist
from fastmlp.spin_barrier import barrier_state, barrier_wait


@njit(nogil=True, cache=True)
def worker_without_gather(t, workers, barrier, weights, biases, order, batch_size, lr, acts, deltas, db_parts, db,
                          labels):
    """`train_batches_worker` (plain SGD) on the batch already in acts[0] and labels, never gathering."""
    n = order.shape[0]
    total = 0.0
    for start in range(0, n, batch_size):
        nb = min(batch_size, n - start)
        r0, r1 = part_of(t, nb, workers)
        total += backprop_rows(weights, biases, acts, deltas, db_parts[t], labels, r0, r1, nb)
        barrier_wait(barrier, workers)
        update_part(t, workers, weights, biases, weights, biases, acts, deltas, db_parts, db, weights, nb, lr,
                    np.float32(0.0), np.float32(0.0), PLAIN_SGD)
        barrier_wait(barrier, workers)
    return total


def epoch_without_gather(model, pixels, y, batch_size, order, workers):
    backend = Backend(threads=workers)
    ws = backend._workspace(model.layer_sizes, batch_size, workers)
    ws.acts[0][:] = pixels.data[:batch_size] * np.float32(pixels.scale)
    ws.labels[:] = y[:batch_size]
    params = tuple(model.weights), tuple(model.biases)
    barrier = barrier_state()

    def run(t, part_of_order):
        return worker_without_gather(t, workers, barrier, *params, part_of_order, batch_size, np.float32(0.01),
                                     ws.acts, ws.deltas, ws.db_parts, ws.db_layers, ws.labels)

    backend._run_workers(run, workers, order, batch_size, None, barrier)


def profile(pixels, y, batch_size, rounds, layer_sizes=(784, 128, 64, 10)):
    """{variant: median epoch seconds} for workers, no gather, one worker and floor."""
    n, workers = len(y), training_threads()
    models = {name: MLP(layer_sizes, seed=0) for name in ("workers", "no gather", "one worker")}
    backends = {"workers": Backend(), "one worker": Backend(threads=1)}
    floor = GemmFloor(layer_sizes, batch_size)
    rng = np.random.default_rng(0)
    seconds = {name: [] for name in (*models, "floor")}
    for _ in range(rounds):
        order = rng.permutation(n)
        for name, model in models.items():
            time.sleep(SETTLE_SECONDS)
            start = time.perf_counter()
            if name in backends:
                backends[name].train_epoch(model, pixels, y, batch_size=batch_size, lr=0.01,
                                           rng=np.random.default_rng(order[0]))
            else:
                epoch_without_gather(model, pixels, y, batch_size, order, workers)
            seconds[name].append(time.perf_counter() - start)
        time.sleep(SETTLE_SECONDS)
        seconds["floor"].append(floor.epoch_seconds(n, batch_size))
    return {name: float(np.median(times[1:])) for name, times in seconds.items()}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[32, 128, 1024])
    parser.add_argument("--rounds", type=int, default=7, help="epochs per variant; the first is not counted")
    args = parser.parse_args(argv)
    if args.rounds < 2 or min(args.batch_sizes) < 1:
        parser.error("--rounds must be >= 2 and batch sizes >= 1")
    X, y, _, _ = load_mnist(as_pixels=True)
    print(f"{training_threads()} worker threads", flush=True)
    for batch_size in args.batch_sizes:
        median = profile(X, y, batch_size, args.rounds)
        cells = [f"{name} {len(y) / s / 1e3:,.0f}k ({median['floor'] / s:.2f})" for name, s in median.items()]
        print(f"batch {batch_size:>5}: " + "  ".join(cells), flush=True)


if __name__ == "__main__":
    main()
