"""Where the numba backend's training step spends its time, phase by phase.

    python benchmarks/profile_fused_step.py [--batch-sizes 32 64 128 1024] [--rounds 5]
                                           [--layer-sizes 784 128 64 10]

For each batch size, on the 784-128-64-10 net (or --layer-sizes) and MNIST pixels, it times, interleaved round by
round (the machine drifts, so each column is a median over rounds of the same order):
- each phase of one step, alone, on one thread, over many repetitions on the same batch:
  gather (uint8 pixels to the float32 batch), layer-0 forward (the SIMD forward tile, bias +
  ReLU), the upper layers (forward, softmax + cross-entropy, backward to dZ_0, and each dZ_l
  copied in column panels), the layer-0 update (the weight-gradient tile fused with SGD), the
  upper layers' updates (with W.T repacked) and the biases; each as microseconds per step and,
  for the products, GFLOP/s and the fraction of one core's FMA peak (fastmlp.bench.fma_peak),
  the peak measured again in every round and each fraction the median over rounds of the phase's
  rate over that round's peak (measured once at the start, a slow moment put phases above 100 %);
- whole epochs through `Backend.train_epoch`, on one worker and on the default number, as
  samples/s: what the step's phases add up to, and what the workers' barriers and split cost; and the
  workers' speed-up over one worker, the median of the two epochs' ratios round by round, and each round's meeting
  of two workers at the barrier (fastmlp.bench.barrier_meeting: several times its least where a VM's host runs the
  two cores far apart, and the workers' epochs slow down with it). The numba
  backend's split chooser has kept its split before the timed epochs (`settle_numba_splits`, as the
  bench does): its trial epochs, most on splits it does not keep, were all five of a 5-round run's; and chosen
  again before a round whose meeting moved by over 2x from that of the state it was kept in (the host moved the cores);
- the step timeline of each backend's last epoch (fastmlp/backends/numba/timeline.py): each phase's median
  inside the epoch, worker by worker, from the cycle counter stamped at the phase boundaries, where the
  phases above are each timed alone on a batch already in cache.
A tool to read, not an asv suite.
"""

import argparse
import time

import numpy as np

from fastmlp import MLP
from fastmlp.backends.numba import threads as worker_threads
from fastmlp.backends.numba.backend import Backend
from fastmlp.backends.numba.buffers import _Packed, _Workspace
from fastmlp.backends.numba.layer1 import layer1_cut, training_forward_rows
from fastmlp.backends.numba.step import backward_rows_into_panels, bias_step
from fastmlp.backends.numba.threads import epoch_workers, training_threads
from fastmlp.backends.numba.timeline import StepTimeline
from fastmlp.bench.fma_peak import CHAINS, VECTOR_WIDTH, cpu_model_name, measure_fma_peak
from fastmlp.bench.report import splits_by_round
from fastmlp.bench.throughput import numba_split, resettle_numba_splits, round_meeting_ns, settle_numba_splits
from fastmlp.datasets import load_mnist
from fastmlp.kernels import gather_labels, gather_rows_scaled, softmax_xent_backward_rows_inplace
from fastmlp.kernels.packed import (
    BIAS_RELU,
    PLAIN_SGD,
    forward_part,
    transpose_packed_into,
    update_part,
)
from fastmlp.kernels.tiles import TILE
from fastmlp.runtime.jit import cached_njit

# The phases compile with fastmlp's cached_njit, not njit(cache=True): Numba keys a cached function by its own
# file alone, and kept running fastmlp's kernels as they were when it was cached (a profile after a change to
# the update tile measured the tile before it); cached_njit's key holds every fastmlp kernel source.

LAYER_SIZES = (784, 128, 64, 10)
LR = np.float32(1e-6)  # tiny updates: the weights stay what they were, whatever the repetitions


@cached_njit
def gather_phase(reps, x, labels, X, scale, y, rows):
    for _ in range(reps):
        gather_rows_scaled(x, X, rows, scale)
        gather_labels(labels, y, rows)


@cached_njit
def layer0_forward_phase(reps, packed, biases, x, acts, nb):
    for _ in range(reps):
        forward_part(acts[0], x, packed[0], biases[0], acts[0], BIAS_RELU, 0, nb, 0, packed[0].shape[0])


@cached_njit
def upper_layers_phase(reps, packed, transposed, biases, x, acts, deltas, labels, nb, delta_panels, halves):
    L = len(packed)
    for _ in range(reps):
        training_forward_rows(packed, biases, x, acts, 1, 0, nb, halves, layer1_cut(packed[0], biases[0].shape[0]),
                              False)  # layer 1's sum in two parts, as training does
        softmax_xent_backward_rows_inplace(acts[L - 1][:nb], labels[:nb], nb)
        # each dZ_l as its update reads it
        backward_rows_into_panels(transposed, acts, deltas, delta_panels, 0, nb, 0, packed[0].shape[0])


@cached_njit
def layer0_update_phase(reps, packed, x, delta_panels, nb):
    P = packed[0]
    for _ in range(reps):
        update_part(P, P, x, delta_panels[0], nb, 0, P.shape[1], 0, P.shape[0], LR, 0.0, 0.0, PLAIN_SGD, P,
                    0.0, 0.0, 0.0, 0.0)


@cached_njit
def upper_updates_phase(reps, packed, transposed, acts, delta_panels, nb):
    for _ in range(reps):
        for l in range(1, len(packed)):
            P = packed[l]
            update_part(P, P, acts[l - 1], delta_panels[l], nb, 0, P.shape[1], 0, P.shape[0], LR, 0.0, 0.0, PLAIN_SGD,
                        P, 0.0, 0.0, 0.0, 0.0)
            transpose_packed_into(transposed[l], P, 0, P.shape[1])


@cached_njit
def bias_phase(reps, biases, delta_panels, db, nb):
    for _ in range(reps):
        for l in range(len(biases)):
            bias_step(biases[l], biases[l], biases[l], delta_panels[l], db[l], nb, 0, biases[l].shape[0], LR, 0.0,
                      PLAIN_SGD, 0.0, 0.0, 0.0, 0.0)


def phase_calls(model, pixels, y, nb):
    """{phase: (call(reps), FLOPs per step)} on one batch of nb rows, buffers made once."""
    packed, ws = _Packed(model.layer_sizes), _Workspace(model.layer_sizes, nb)
    packed.load(model, None)
    biases = tuple(model.biases)
    rows = np.random.default_rng(0).permutation(len(y))[:nb]
    x, scale = ws.inputs[0], np.float32(pixels.scale)
    k0, n0 = model.layer_sizes[:2]
    upper = sum(a * b for a, b in zip(model.layer_sizes[1:-1], model.layer_sizes[2:]))
    calls = {
        "gather": (lambda r: gather_phase(r, x, ws.labels, pixels.data, scale, y, rows), 0),
        "layer-0 forward": (lambda r: layer0_forward_phase(r, packed.weights, biases, x, ws.acts, nb),
                            2 * nb * k0 * n0),
        "upper fwd+bwd": (lambda r: upper_layers_phase(r, packed.weights, packed.transposed, biases, x, ws.acts,
                                                       ws.deltas, ws.labels, nb, ws.delta_panels, ws.layer1_halves[0]),
                          2 * nb * (2 * upper)),
        "layer-0 update": (lambda r: layer0_update_phase(r, packed.weights, x, ws.delta_panels, nb), 2 * nb * k0 * n0),
        "upper updates": (lambda r: upper_updates_phase(r, packed.weights, packed.transposed, ws.acts,
                                                        ws.delta_panels, nb),
                          2 * nb * upper),
        "biases": (lambda r: bias_phase(r, biases, ws.delta_panels, ws.db, nb), 0),
    }
    for call, _ in calls.values():  # in order (each phase's inputs are the phases' before it), compiled before timing
        call(1)
    return calls


# Each round's FMA peak: a shorter measurement than the bench's (0.05 s, best of 3), taken beside the phases.
PEAK_SECONDS, PEAK_REPEATS = 0.05, 3


def profile(pixels, y, batch_size, rounds, layer_sizes=LAYER_SIZES):
    """({name: median seconds per step (phases) or per epoch (epochs)}, the phases' FLOPs,
    {phase: median over rounds of its GFLOP/s over the round's one-core FMA peak}, the rounds' peaks,
    {epoch name: the StepTimeline of its last round}, the median over rounds of the epoch's speed on all its
    workers over its speed on one in the same round, each round's barrier meeting in ns (none on one CPU), and
    the split its epochs on several workers ran (fastmlp.bench.report.splits_by_round; None where there was none to
    choose))."""
    model = MLP(layer_sizes, seed=0)
    calls = phase_calls(model, pixels, y, batch_size)
    reps = max(20, 200_000 // batch_size)
    workers = epoch_workers(training_threads(), batch_size, layer_sizes)
    backends = {"epoch, 1 worker": Backend(threads=1), f"epoch, {workers} workers": Backend()}
    for backend in backends.values():
        backend.timeline = StepTimeline()
        backend.train_epoch(MLP(layer_sizes, seed=0), pixels, y, batch_size=batch_size, lr=0.01,
                            rng=np.random.default_rng(0))
    # the split chooser's trial epochs over before the timed ones, which then run the split users' epochs keep
    settle_numba_splits(backends[f"epoch, {workers} workers"], {"pixels": pixels}, y, batch_size, model)
    seconds = {name: [] for name in (*calls, *backends)}
    peaks, meetings, kept_meeting, splits = [], [], None, []
    with worker_threads.SPLITS.kept_as_is():  # the kept split in every timed epoch, no trials among them
        for round_ in range(rounds):
            peaks.append(measure_fma_peak(1, PEAK_SECONDS, PEAK_REPEATS))
            if workers > 1:  # the splits chosen again where the cores moved, as the bench does
                meeting, kept_meeting = round_meeting_ns(kept_meeting, lambda: resettle_numba_splits(
                    backends[f"epoch, {workers} workers"], {"pixels": pixels}, y, batch_size, model))
                if meeting is not None:
                    meetings.append(meeting)
            splits.append(numba_split(layer_sizes, batch_size, pixels))
            for name, (call, _) in calls.items():
                start = time.perf_counter()
                call(reps)
                seconds[name].append((time.perf_counter() - start) / reps)
            for name, backend in backends.items():
                start = time.perf_counter()
                backend.train_epoch(MLP(layer_sizes, seed=0), pixels, y, batch_size=batch_size, lr=0.01,
                                    rng=np.random.default_rng(round_))
                seconds[name].append(time.perf_counter() - start)
    flops = {name: f for name, (_, f) in calls.items()}
    of_peak = {name: float(np.median([f / s / 1e9 / peak for s, peak in zip(seconds[name], peaks)]))
               for name, f in flops.items()}
    timelines = {name: backend.timeline for name, backend in backends.items()}
    one, many = (seconds[name] for name in backends)  # each round's epoch on one worker, then on `workers`
    over_one = float(np.median(np.divide(one, many)))  # same-round ratios: the machine's drift cancels
    split = splits_by_round(splits) if splits[-1] else None
    return ({name: float(np.median(s)) for name, s in seconds.items()}, flops, of_peak, peaks, timelines, over_one,
            meetings, split)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[32, 64, 128, 1024])
    parser.add_argument("--rounds", type=int, default=5, help="rounds of every measurement (default 5)")
    parser.add_argument("--layer-sizes", type=int, nargs="+", default=list(LAYER_SIZES),
                        help="the net, inputs first (784: MNIST) and classes last (10) (default 784 128 64 10)")
    args = parser.parse_args(argv)
    if args.rounds < 1 or min(args.batch_sizes) < 1:
        parser.error("--rounds and batch sizes must be >= 1")
    sizes = args.layer_sizes
    if len(sizes) < 3 or sizes[0] != 784 or sizes[-1] != 10 or min(sizes) < 1:
        parser.error("--layer-sizes: 784, at least one hidden width >= 1, then 10 (MNIST's inputs and classes)")
    X, y, _, _ = load_mnist(as_pixels=True)
    print(f"{cpu_model_name()}: SIMD tile {TILE.name}, {TILE.mr} rows x {TILE.nr} columns; one core's FMA peak "
          f"({CHAINS} chains of {VECTOR_WIDTH}-float FMAs) measured in every round")
    for batch_size in args.batch_sizes:
        median, flops, of_peak, peaks, timelines, over_one, meetings, split = profile(X, y, batch_size, args.rounds,
                                                                                      tuple(sizes))
        phases = {name: s for name, s in median.items() if name in flops}
        step = sum(phases.values())
        print(f"{'-'.join(map(str, sizes))}, batch {batch_size}: one thread, phases of a step add up to "
              f"{step * 1e6:.1f} us ({batch_size / step:,.0f} samples/s); the FMA peak "
              f"{np.median(peaks):.1f} GFLOP/s (rounds {min(peaks):.1f}-{max(peaks):.1f})")
        for name, s in phases.items():
            gflops = flops[name] / s / 1e9
            rate = f"  {gflops:6.1f} GFLOP/s  {100 * of_peak[name]:5.1f} % of the core's FMA peak"
            rate = rate if flops[name] else ""
            print(f"  {name:16s} {s * 1e6:8.1f} us  {100 * s / step:5.1f} %{rate}")
        epochs = [name for name in median if name not in flops]
        for name in epochs:
            s = median[name]
            than_one = f"; {over_one:.2f}x one worker's, same-round ratios" if name == epochs[-1] != epochs[0] else ""
            if than_one and meetings:
                than_one += f"; barrier meetings {min(meetings):.0f}-{max(meetings):.0f} ns"
            if than_one and split:
                than_one += f"; the step {split}"
            print(f"  {name:16s} {len(y) / s:10,.0f} samples/s  ({len(y) / s / (batch_size / step):.2f} of the "
                  f"one-thread phases{than_one})")
        for timeline in timelines.values():
            print(timeline.report())


if __name__ == "__main__":
    main()
