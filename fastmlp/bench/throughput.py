"""Training speed of the backends against the gemm floor and the roofline: `python -m fastmlp.bench`.

All speeds are samples/s measured in one interleaved run, epoch by epoch: each backend (numpy,
numba, and PyTorch CPU when it is installed) trains one epoch through `Trainer.fit`, then the
gemm floor runs one epoch, because this kind of machine drifts by tens of percent between runs:
only the ratios within a run mean anything. Every backend starts from the same initial weights
and sees the same batches (the Trainer's seeded shuffle).

- steady state: median over the epochs after the first two, from the seconds the History
  records; JIT compilation is done before the first timed epoch, and so is the numba backend's
  choice of how to split a step between its workers (its trial epochs: `settle_numba_splits`).
- vs floor, vs numpy: the median over the steady epochs of each epoch's ratio to the floor's (or
  numpy's) epoch of the same round, taken seconds apart: the machine's drift, tens of percent
  over a run, cancels out of these, while it does not out of a ratio of two medians.
- gemm floor: the step's sgemm calls alone (three forward; per layer the weight gradient and,
  except for the first layer, the input gradient: eight for 784-128-64-10) with NumPy
  `np.matmul(..., out=...)` at the epoch's batch shapes, on preallocated operands.
- FMA roofline: the FMA peak of all usable cores at once (fastmlp.bench.fma_peak: a loop of
  independent vector FMAs in fastmlp's own IR, no memory traffic) divided by the FLOPs of a
  sample's step, those of the floor's gemms: 2 * (3 * sum(fan_in * fan_out) - 784 * 128) =
  454 kFLOP for 784-128-64-10. It does not depend on the BLAS loaded: the main yardstick. The numba
  backend's layer 0 does fewer: it skips the inputs that are zero (fastmlp.kernels.packed's
  SKIP_ZERO_INPUTS; on MNIST about half of layer 0's FLOPs), so its fractions may pass 100 %.
- sgemm roofline: the GFLOP/s of one large square sgemm divided by the same FLOPs.
- barrier meeting (numba, two CPUs or more): once a round, just before numba's epochs, the time two of the numba
  backend's workers, run as its epochs run them, take to meet at its barrier (fastmlp.bench.barrier_meeting). On
  a virtual machine the host may move two vCPUs from cores near each other to cores on different dies, for
  minutes at a time; a meeting then takes several times as long, and two workers' epochs slow down with it.
  Which of numba's step splits is fastest can change with it: where a round's meeting has moved by over
  MOVED_MEETING_FACTOR from the one of the state the split was kept in, the split is chosen again before that round
  (`resettle_numba_splits`), as training's own re-timing would choose it a few epochs into such a change.
- late/early: whether the trained state itself trains slower (subnormal floats are the usual
  cause). The model as the run leaves it (late) and as it was after the first two epochs (early)
  each train one more epoch, from copies, on the same batches, back to back, LATE_EARLY_PAIRS
  times: the median of early seconds / late seconds. Comparing epochs minutes apart in the run's
  history instead measured the machine's drift (ratios far from 1 for states that train at the
  same speed side by side; docs/results.md).
- peak RSS: a process's high-water mark cannot be split between backends that share it, so each
  (backend, input) trains one epoch per batch size in a process of its own; it reports the peak
  of loading the data, then resets the peak (Linux) and reports training's.
- optimizers (numba only): one step's cost per optimiser at batch 64, plain SGD, Nesterov
  momentum, Adam and AdamW in interleaved rounds, as ratios to SGD's (fastmlp/bench_optimizers.py).
- compile: a fresh process compiles the numba backend's training epoch for float32 and Pixels
  inputs with an empty NUMBA_CACHE_DIR (cold), then a second one loads it from that cache (warm).

Every backend's turn starts after a short pause: NumPy and SciPy wheels each bundle their own
OpenBLAS (PyTorch its own threads), whose worker threads spin for ~0.1 s after a call, and a run
started while another library's threads still spin loses tens of milliseconds to the
oversubscribed cores. Runs of the same library follow each other without a pause.
"""

import argparse
import contextlib
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from tqdm import tqdm

from ..inputs import Pixels, take_rows
from ..model import MLP
from ..trainer import Trainer
from . import contention as bench_contention
from . import inference as bench_inference
from .blas_report import blas_info, blas_threads
from .children import measure_compile, measure_peak_rss
from .common import (
    BATCH_SIZES,
    FULL,
    INPUTS,
    LATE_EARLY_PAIRS,
    LAYER_SIZES,
    LR,
    MNIST_TRAIN_SAMPLES,
    PROG,
    QUICK,
    SETTLE_SECONDS,
    WARMUP_EPOCHS,
    input_data,
    load_data,
    load_test_data,
    make_backend,
)
from .optimizers import measure_optimizer_steps
from .recipe import measure_recipe
from .report import format_report
from .torch_yardstick import torch_available
from .yardsticks import GemmFloor, fma_yardstick, native_roofline, roofline

DEFAULT_HIDDEN = tuple(LAYER_SIZES[1:-1])  # the default net's hidden widths: 128 64


def warm_up_backends(backends, data, y, batch_sizes, seed=0, layer_sizes=LAYER_SIZES):
    """Train one short epoch per backend, input and batch size: JIT compilation and first allocations."""
    n = min(len(y), 2 * max(batch_sizes))
    for backend in backends.values():
        for X in data.values():
            subset = take_rows(X, slice(n))
            for batch_size in batch_sizes:
                Trainer(MLP(layer_sizes, seed=seed), backend, lr=LR, batch_size=batch_size,
                        seed=seed).fit(subset, y[:n], epochs=1)


def late_over_early(backend, early, late, X, y, batch_size, seed=0):
    """Throughput of the model state `late` over that of `early`: one epoch of a copy of each on the
    same batches, back to back (order alternating), LATE_EARLY_PAIRS times; the median ratio."""
    ratios = []
    for pair in range(LATE_EARLY_PAIRS):
        seconds = {}
        for name in ("early", "late") if pair % 2 == 0 else ("late", "early"):
            model = (early if name == "early" else late).copy()
            rng = np.random.default_rng([seed, pair])
            start = time.perf_counter()
            backend.train_epoch(model, X, y, batch_size=batch_size, lr=LR, rng=rng)
            seconds[name] = time.perf_counter() - start
        ratios.append(seconds["early"] / seconds["late"])
    return float(np.median(ratios))


def epochwise_ratio(rates, baseline_rates):
    """Median over the steady epochs of rates[e] / baseline_rates[e]: each epoch against the baseline's
    epoch of the same round, seconds apart, so that the machine's drift over the run cancels out."""
    ratios = np.asarray(rates[WARMUP_EPOCHS:]) / np.asarray(baseline_rates[WARMUP_EPOCHS:])
    return float(np.median(ratios))


def _of_shape(key, layer_sizes, batch_rows, X):
    """Whether a key of the numba backend's SplitChooser (layer sizes, batch rows, workers, input dtype, rule) is
    that of the net layer_sizes trained on X at batch_rows rows, whatever its workers and update rule."""
    dtype = np.asarray(X.data if isinstance(X, Pixels) else X).dtype.str
    return key[0] == tuple(layer_sizes) and key[1] == batch_rows and key[3] == dtype


def numba_split(layer_sizes, batch_rows, X):
    """How the numba backend split the two-worker steps of this shape (fastmlp.backends.numba.threads.SplitChooser):
    "replicated", "split" or "split, inputs shared" once its epochs chose, None where it had no choice (one worker,
    a net whose upper layers are too big at a small batch) or has not chosen yet."""
    from ..backends.numba import threads

    kept = [split for key, split in threads.SPLITS.chosen_splits().items()
            if _of_shape(key, layer_sizes, batch_rows, X)]
    if not kept:
        return None
    return ("replicated" if kept[-1].replicated else "split") + ("" if kept[-1].private_inputs else ", inputs shared")


def numba_splits_kept(backends):
    """A context in which the numba backend's kept splits are not timed again (SplitChooser.kept_as_is): its
    re-timing, where the machine changes under a kept split, would otherwise run trial epochs among the measured
    ones. Nothing where the numba backend is not measured."""
    if "numba" not in backends:
        return contextlib.nullcontext()
    from ..backends.numba import threads

    return threads.SPLITS.kept_as_is()


def numba_meeting_cpus():
    """The CPUs of the bench's barrier meetings (fastmlp.bench.barrier_meeting.meeting_cpus) as a list, empty where
    the OS places the workers."""
    from .barrier_meeting import meeting_cpus

    return list(meeting_cpus() or [])


def settle_numba_splits(backend, data, y, batch_size, init, seed=0):
    """Train the numba backend on each input at this batch size, whole epochs of the run's data, until its split
    chooser (fastmlp.backends.numba.threads.SplitChooser) has kept a split for the shape: its trials, one split
    and then another, are over before the epochs the bench times, which then measure the kept split. (Before,
    the trials fell among the steady epochs: four of the ten of a 12-epoch run where a shape has three splits,
    all four of a 6-epoch run's.) At most the chooser's first epoch and SPLIT_TRIALS of each of three splits
    (step_splits' most) a shape; one epoch where the shape has one split (one worker): nothing to time."""
    from ..backends.numba import threads

    rows = min(batch_size, len(y))
    for X in data.values():
        trainer = Trainer(init.copy(), backend, lr=LR, batch_size=batch_size, seed=seed)
        for _ in range(1 + 3 * threads.SPLIT_TRIALS):
            trainer.fit(X, y, epochs=1)
            if not any(_of_shape(key, init.layer_sizes, rows, X) for key in threads.SPLITS.timing()):
                break


# A round whose barrier meeting is over this many times that of the state numba's split was kept in, or
# under 1 / this: the host moved the two cores (fastmlp.bench.barrier_meeting), near and far apart reading 40-145
# and 300-430 ns on a 2-core Zen 5 VM (docs/results.md), and the split kept in one state may be the slower in the
# other (there at batch 32: split by rows 70 ms an epoch near, replicated 107 against split 120 ms far).
MOVED_MEETING_FACTOR = 2.0


def cores_moved(kept_meeting_ns, meeting_ns):
    """Whether two barrier meetings, in ns, differ by over MOVED_MEETING_FACTOR either way."""
    return not kept_meeting_ns / MOVED_MEETING_FACTOR <= meeting_ns <= kept_meeting_ns * MOVED_MEETING_FACTOR


def resettle_numba_splits(backend, data, y, batch_size, init, seed=0):
    """The numba backend's splits of this batch size's shapes chosen again (SplitChooser.retime, then
    `settle_numba_splits`): between the rounds of a run where the host moved the cores, so that the rounds after run
    the split that training's own re-timing would come to, not the one kept in the other state."""
    from ..backends.numba import threads

    rows = min(batch_size, len(y))
    for key in threads.SPLITS.chosen_splits():
        if any(_of_shape(key, init.layer_sizes, rows, X) for X in data.values()):
            threads.SPLITS.retime(key)
    settle_numba_splits(backend, data, y, batch_size, init, seed)


def round_meeting_ns(kept_meeting_ns, resettle):
    """This round's barrier meeting in ns (`numba_meeting_ns`, None on one CPU) and that of the state the numba
    backend's splits are kept in from now on: where the cores moved from kept_meeting_ns (`cores_moved`),
    resettle() first chooses them again; where none was kept yet (None), this round's."""
    meeting_ns = numba_meeting_ns()
    if meeting_ns is None:
        return None, kept_meeting_ns
    if kept_meeting_ns is None or cores_moved(kept_meeting_ns, meeting_ns):
        if kept_meeting_ns is not None:
            resettle()
        return meeting_ns, meeting_ns
    return meeting_ns, kept_meeting_ns


def measure_training(backends, data, y, *, batch_sizes=BATCH_SIZES, epochs=FULL["epochs"], seed=0, progress=None,
                     layer_sizes=LAYER_SIZES):
    """One row per (batch size, backend, input) with its steady-state samples/s and the ratios, training the net of
    layer_sizes.

    backends maps names to backends, data maps input kinds to training inputs. Each row holds
    samples_per_s, floor_samples_per_s, vs_floor, vs_numpy (the same input on the numpy backend,
    when it runs), late_over_early, epoch_samples_per_s and, where the numba backend runs on two CPUs or more,
    barrier_meeting_ns: a meeting of two workers at its barrier once a round (fastmlp.bench.barrier_meeting), else
    None; the numba backend's rows also the split its steps ran (`numba_split`) in each round, round_splits, and
    at the end, split. progress(message) is called per epoch.
    """
    if epochs < WARMUP_EPOCHS + 2:
        raise ValueError(f"epochs must be >= {WARMUP_EPOCHS + 2} to compare early and late epochs, got {epochs}")
    init = MLP(layer_sizes, seed=seed)
    rows = []
    with numba_splits_kept(backends):  # trials before the measured epochs, none among them
        for batch_size in batch_sizes:
            rows += _rows_of_batch_size(backends, data, y, batch_size, epochs, seed, progress, layer_sizes, init)
    return rows


def _rows_of_batch_size(backends, data, y, batch_size, epochs, seed, progress, layer_sizes, init):
    """measure_training's rows of one batch size: each (backend, input)'s epochs and the gemm floor's, interleaved
    epoch by epoch so that the machine's drift touches them alike, every trainer starting from a copy of init."""
    n = len(y)
    if "numba" in backends:
        settle_numba_splits(backends["numba"], data, y, batch_size, init, seed)
    runs = [(name, kind) for name in backends for kind in data]
    trainers = {run: Trainer(init.copy(), backends[run[0]], lr=LR, batch_size=batch_size, seed=seed) for run in runs}
    floor = GemmFloor(layer_sizes, min(batch_size, n), seed)
    floor_rates, early, meetings_ns = [], {}, []
    kept_meeting_ns = None  # the state numba's splits were (last) chosen in: round 1's meeting, or the one that moved
    round_splits: dict[str, list[str | None]] = {kind: [] for kind in data}
    for epoch in range(epochs):
        if epoch == WARMUP_EPOCHS:
            early = {run: trainer.model.copy() for run, trainer in trainers.items()}
        for name in backends:
            time.sleep(SETTLE_SECONDS)
            if name == "numba":  # just before its epochs: the state they run in, which lasts seconds or more
                meeting_ns, kept_meeting_ns = round_meeting_ns(
                    kept_meeting_ns, lambda: resettle_numba_splits(backends["numba"], data, y, batch_size, init, seed))
                if meeting_ns is not None:
                    meetings_ns.append(meeting_ns)
                for kind in data:
                    round_splits[kind].append(numba_split(layer_sizes, min(batch_size, n), data[kind]))
            for kind in data:
                trainers[name, kind].fit(data[kind], y, epochs=1)
        time.sleep(SETTLE_SECONDS)
        floor_rates.append(n / floor.epoch_seconds(n, batch_size))
        if progress:
            progress(f"batch {batch_size} epoch {epoch + 1}/{epochs}")
    floor_rate = float(np.median(floor_rates[WARMUP_EPOCHS:]))
    rates = {run: np.asarray(trainers[run].history.column("samples_per_s")) for run in runs}
    steady = {run: float(np.median(r[WARMUP_EPOCHS:])) for run, r in rates.items()}
    late_early = {}
    for run in runs:
        time.sleep(SETTLE_SECONDS)
        late_early[run] = late_over_early(backends[run[0]], early[run], trainers[run].model, data[run[1]], y,
                                          batch_size, seed)
    rows = []
    for run in runs:
        rate = rates[run]
        numpy_rate = rates.get(("numpy", run[1]))
        rows.append({
            "batch_size": batch_size, "backend": run[0], "input": run[1],
            "split": numba_split(layer_sizes, min(batch_size, n), data[run[1]]) if run[0] == "numba" else None,
            "round_splits": round_splits[run[1]] if run[0] == "numba" else None,
            "samples_per_s": steady[run], "floor_samples_per_s": floor_rate,
            "vs_floor": epochwise_ratio(rate, floor_rates),
            "vs_numpy": epochwise_ratio(rate, numpy_rate) if numpy_rate is not None else None,
            "late_over_early": late_early[run],
            "epoch_samples_per_s": rate.tolist(), "floor_epoch_samples_per_s": floor_rates,
            "barrier_meeting_ns": meetings_ns or None,
        })
    return rows


# A round's barrier meeting is the median of this many, each a few milliseconds: on a 2-core Zen 5 VM single ones
# ranged 31-110 ns within minutes of cores near each other, the median of three 40-65 ns (far: 300-323).
MEETING_READS = 3


def numba_meeting_ns():
    """Two numba workers' meeting at their barrier in ns (fastmlp.bench.barrier_meeting), the median of
    MEETING_READS; None on one CPU.

    Imported here, as numba_split does: the numba backend's modules load only where it is measured.
    """
    from .barrier_meeting import barrier_meeting_seconds

    meetings = [m for m in (barrier_meeting_seconds() for _ in range(MEETING_READS)) if m is not None]
    return float(np.median(meetings)) * 1e9 if meetings else None


def run(args, progress_bar=None):
    """Measure everything args ask for; returns the report (a JSON-ready dict)."""
    names = list(args.backends)
    threads = blas_threads()
    backends = {name: make_backend(name, threads) for name in names}
    pixels, y = load_data(args.samples)
    data = {kind: input_data(pixels, kind) for kind in args.inputs}
    bar = progress_bar if progress_bar is not None else tqdm(disable=True)

    def step(message):
        bar.set_description(message, refresh=False)
        bar.update()

    compile_times = None
    if "numba" in names:
        bar.set_description("numba compile, cold and warm cache")
        compile_times = measure_compile()
        step("numba compile")
    bar.set_description("peak RSS, one process per backend and input")
    layer_sizes = args.layer_sizes
    peak_rss = measure_peak_rss(names, args.inputs, args.batch_sizes, args.samples, threads, layer_sizes)
    step("peak RSS")
    warm_up_backends(backends, data, y, args.batch_sizes, args.seed, layer_sizes)
    time.sleep(SETTLE_SECONDS)
    roof = roofline(layer_sizes)
    fma = fma_yardstick(layer_sizes)
    native = native_roofline(layer_sizes)
    if native is not None:
        roof["native"] = native
    step("warm-up and roofline")
    rows = measure_training(backends, data, y, batch_sizes=args.batch_sizes, epochs=args.epochs, seed=args.seed,
                            progress=step, layer_sizes=layer_sizes)
    for r in rows:
        r["vs_roofline"] = r["samples_per_s"] / roof["samples_per_s"]
        r["vs_fma_roofline"] = r["samples_per_s"] / fma["samples_per_s"]
        if native is not None:
            r["vs_native_roofline"] = r["samples_per_s"] / native["samples_per_s"]
    bar.set_description("the CLI's default recipe, once per backend")
    recipe = measure_recipe(backends, pixels, y, *load_test_data(), epochs=None if not args.quick else WARMUP_EPOCHS,
                            seed=args.seed, settle_seconds=SETTLE_SECONDS)
    step("recipe")
    optimizers = None
    if "numba" in names:
        bar.set_description("one step per optimiser, numba backend")
        optimizers = measure_optimizer_steps(backends["numba"], pixels, y, rounds=args.epochs,
                                             settle_seconds=SETTLE_SECONDS)
        step("optimizers")
    config = {"mode": "quick" if args.quick else "full", "samples": len(y), "subset": len(y) < MNIST_TRAIN_SAMPLES,
              "epochs": args.epochs, "batch_sizes": list(args.batch_sizes), "backends": names,
              "inputs": list(args.inputs), "layer_sizes": list(layer_sizes), "lr": LR, "seed": args.seed,
              "blas": blas_info(), "warmup_epochs": WARMUP_EPOCHS,
              "meeting_cpus": numba_meeting_cpus() if "numba" in names else []}
    if "torch" in backends:
        config["torch_version"] = backends["torch"].torch.__version__
        config["torch_threads"] = backends["torch"].torch.get_num_threads()
    return {"config": config, "roofline": roof, "fma_roofline": fma, "compile": compile_times, "peak_rss": peak_rss,
            "rows": rows, "recipe": recipe, "optimizers": optimizers}




def _int_at_least(minimum):
    """An argparse type: an integer >= minimum, else a message naming both."""

    def parse(text):
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be an integer, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be an integer >= {minimum}, got {text}")
        return value

    return parse


_positive_int = _int_at_least(1)
_non_negative_int = _int_at_least(0)


def _epochs(text):
    value = _positive_int(text)
    if value < WARMUP_EPOCHS + 2:
        raise argparse.ArgumentTypeError(f"must be >= {WARMUP_EPOCHS + 2} (two warm-up epochs, then at least "
                                         f"one early and one late), got {text}")
    return value


def build_parser(prog: str = PROG) -> argparse.ArgumentParser:
    from ..cli.common import new_parser

    parser = new_parser(
        prog,
        description="Measure training throughput (samples/s) of the numpy and numba backends, and PyTorch CPU "
                    "when installed, against the gemm floor, the FMA roofline (the FMA peak of the usable "
                    "cores) and the sgemm roofline, in one interleaved run; "
                    "plus late/early epoch ratio, peak RSS and numba compile time. Prints a table.",
    )
    parser.add_argument("--quick", action="store_true",
                        help=f"a short run: {QUICK['epochs']} epochs on the first {QUICK['samples']:,} samples "
                             f"(default: {FULL['epochs']} epochs on all 60,000)")
    parser.add_argument("--epochs", type=_epochs, help="epochs per backend, input and batch size (default: "
                        f"{FULL['epochs']}, {QUICK['epochs']} with --quick)")
    parser.add_argument("--samples", type=_positive_int, metavar="N",
                        help="train on the first N MNIST samples "
                             f"(default: all 60,000, {QUICK['samples']:,} with --quick)")
    parser.add_argument("--batch-sizes", type=_positive_int, nargs="+", default=list(BATCH_SIZES), metavar="N",
                        help=f"batch sizes to measure (default: {' '.join(map(str, BATCH_SIZES))})")
    parser.add_argument("--backends", nargs="+", choices=["numpy", "numba", "torch"],
                        help="backends to measure (default: numpy numba, and torch when it is installed)")
    parser.add_argument("--inputs", nargs="+", choices=INPUTS, default=list(INPUTS),
                        help="float32: images scaled up front; pixels: uint8 scaled at the gather (fastmlp.Pixels) "
                             f"(default: {' '.join(INPUTS)})")
    parser.add_argument("--hidden", type=_positive_int, nargs="+", default=list(DEFAULT_HIDDEN), metavar="N",
                        help="the hidden layers' widths of the net the throughput table, gemm floor, rooflines and "
                             "peak RSS measure, e.g. --hidden 512 256; the recipe and optimiser tables keep the "
                             f"CLI's default net (default: {' '.join(map(str, DEFAULT_HIDDEN))})")
    parser.add_argument("--seed", type=_non_negative_int, default=0,
                        help="seed of the initial weights and the shuffling")
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write the full report as JSON")
    parser.add_argument("--plot", type=Path, metavar="PATH",
                        help="also draw samples/s against batch size, with the gemm floor and the roofline, as a "
                             "PNG (needs matplotlib: the plot extra)")
    bench_contention.add_arguments(parser, _positive_int)
    bench_inference.add_arguments(parser)
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error")
    return parser


def main(argv: Sequence[str] | None = None, *, prog: str = PROG) -> int:
    from ..cli.common import check_output_path, run_reporting_errors
    from ..cli.plot import plot_throughput, require_matplotlib
    from ..runtime.atomic import atomic_write

    parser = build_parser(prog)
    args = parser.parse_args(argv)
    if (args.contention or args.inference) and tuple(args.hidden) != DEFAULT_HIDDEN:
        parser.error("--hidden: --contention and --inference measure the CLI's default net; leave --hidden out")
    args.layer_sizes = (LAYER_SIZES[0], *args.hidden, LAYER_SIZES[-1])
    mode = QUICK if args.quick else FULL
    args.epochs = args.epochs or mode["epochs"]
    args.samples = args.samples or mode["samples"]
    args.backends = args.backends or ["numpy", "numba"] + (["torch"] * torch_available())
    for name in ("backends", "inputs", "batch_sizes"):  # each once, in the order given
        setattr(args, name, list(dict.fromkeys(getattr(args, name))))

    def check_output_then_measure():
        check_output_path(args.json, "--json")
        if args.contention:
            return bench_contention.report(args)
        if args.inference:
            return bench_inference.report(args)
        check_output_path(args.plot, "--plot")
        if args.plot:
            require_matplotlib()
        steps = 2 * ("numba" in args.backends) + 3 + len(args.batch_sizes) * args.epochs
        # A bar on a terminal only (disable=None): in a log, its redraws are noise.
        with tqdm(total=steps, desc="fastmlp bench", unit="step", file=sys.stderr, leave=False, disable=None) as bar:
            report = run(args, bar)
        print(format_report(report), flush=True)
        if args.json:
            with atomic_write(args.json, "w", encoding="utf-8") as f:
                f.write(json.dumps(report, indent=2) + "\n")
            print(f"report written to {args.json}")
        if args.plot:
            plot_throughput(report, args.plot)
            print(f"plot written to {args.plot}")

    return run_reporting_errors(prog, check_output_then_measure, debug=args.debug)


if __name__ == "__main__":
    sys.exit(main())
