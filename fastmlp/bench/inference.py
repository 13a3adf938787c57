"""`python -m fastmlp.bench --inference`: `MLP.predict_proba` against ONNX Runtime on the same net, side by side.

The default net (784-128-64-10), exported with `fastmlp.export_onnx`'s graph (Gemm + Relu, Softmax) and run
in a default ONNX Runtime session, on MNIST test images at batch 1, 64 and 10,000. Each side runs in blocks of
back-to-back calls (after a pause and untimed warm-up calls), the sides alternating block by block, so that
both meet the same machine state (turbo, other load) but not each other's idle threads; the time per side
is the median of its timed calls. The ratio, fastmlp's speed relative to ONNX Runtime's (above 1: fastmlp is
faster), is taken per round, from the two sides' blocks next to each other (ONNX Runtime's median time over
fastmlp's): the table gives the median of the rounds' ratios and their range. On a machine whose speed
drifts between blocks (a shared virtual machine), a round's two blocks meet nearly the same state where the
medians of all calls would not. The weights are He
initialised, not trained: the time of a dense forward pass does not depend on their values. Before timing,
the two sides' probabilities are compared (they must agree within 1e-5).

Without onnx or onnxruntime installed, the section is skipped with one line saying how to install them.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from functools import partial
from typing import Any

import numpy as np

from .common import LAYER_SIZES

BATCHES = (1, 64, 10_000)
# Timed calls per side and batch, over all rounds: enough for a stable median at each size.
CALLS = {1: 2400, 64: 480, 10_000: 48}
QUICK_CALLS = {1: 200, 64: 48, 10_000: 4}
WARMUP_CALLS = 3  # per side and block: compiles, allocates and fills the caches before any call is timed
WARMUP_SECONDS = 0.05  # and untimed calls for this long, per side and block: the cores back from idle
# Blocks per side and batch, alternating sides. Each round gives one ratio, and each block costs a pause and a
# warm-up (~0.1 s); on a machine whose speed drifts from one tenth of a second to the next, the median of 8 rounds'
# ratios moved 1.02-1.43x in seven runs of the same code at batch 64, of 24 rounds less (docs/guide/benchmarks.md).
ROUNDS = 24
QUICK_ROUNDS = 4
PAUSE_SECONDS = 0.05  # before each block: the other side's threads stop spinning
AGREEMENT = 1e-5
INSTALL_HINT = "pip install onnx onnxruntime"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The option of this mode, on `python -m fastmlp.bench`'s parser."""
    parser.add_argument("--inference", action="store_true",
                        help="instead: MLP.predict_proba against ONNX Runtime on the default net at batch "
                             f"{', '.join(f'{b:,}' for b in BATCHES)} (median of timed calls, in one run; needs "
                             f"onnx and onnxruntime; --quick: fewer calls)")


def onnx_runtime_missing() -> str | None:
    """None when onnx and onnxruntime can be imported, else the line saying what is missing and how to install it."""
    missing = []
    for name in ("onnx", "onnxruntime"):
        try:
            __import__(name)
        except ImportError:
            missing.append(name)
    if not missing:
        return None
    return f"inference benchmark skipped: {' and '.join(missing)} not installed ({INSTALL_HINT})"


def block_times(calls: dict[str, Callable[[], object]], repeats: int, rounds: int = ROUNDS,
                pause: float = PAUSE_SECONDS, warmup_seconds: float = WARMUP_SECONDS) -> dict[str, list[list[float]]]:
    """{name: the seconds of its timed calls, one list per round}: `rounds` rounds; in each, every function in
    turn (the order rotating from round to round) is left alone for `pause` seconds, called untimed
    WARMUP_CALLS times and for `warmup_seconds` at least, then `repeats // rounds` times (at least once) timed,
    back to back.

    Blocks rather than alternate single calls: a side's idle threads may still be spinning when the other's
    call starts (ONNX Runtime's default session spins its pool after each call), and each side is measured
    as a server calling it again and again would see it. The pause lets the other side's threads go to
    sleep; the warm-up, the cores come back from idle (after the pause, the first calls of either side run
    slower for some milliseconds: a quick run's few timed calls were mostly those).
    """
    names = list(calls)
    per_block = max(1, repeats // rounds)
    times: dict[str, list[list[float]]] = {name: [] for name in names}
    for round_ in range(rounds):
        shift = round_ % len(names)
        for name in names[shift:] + names[:shift]:
            time.sleep(pause)
            call = calls[name]
            warm_until = time.perf_counter() + warmup_seconds
            for _ in range(WARMUP_CALLS):
                call()
            while time.perf_counter() < warm_until:
                call()
            block = []
            for _ in range(per_block):
                start = time.perf_counter()
                call()
                block.append(time.perf_counter() - start)
            times[name].append(block)
    return times


def median_times(calls: dict[str, Callable[[], object]], repeats: int, rounds: int = ROUNDS,
                 pause: float = PAUSE_SECONDS, warmup_seconds: float = WARMUP_SECONDS) -> dict[str, float]:
    """{name: median seconds per call} of `block_times`' timed calls, all rounds together."""
    times = block_times(calls, repeats, rounds, pause, warmup_seconds)
    return {name: _pooled_median(blocks) for name, blocks in times.items()}


def _pooled_median(blocks: list[list[float]]) -> float:
    """The median of the times of all blocks together."""
    return statistics.median([t for block in blocks for t in block])


def round_ratios(times: dict[str, list[list[float]]], numerator: str, denominator: str) -> list[float]:
    """Per round of `block_times`, the median time of numerator's block over denominator's: two blocks run next
    to each other, which met (nearly) the same machine state."""
    return [statistics.median(a) / statistics.median(b) for a, b in zip(times[numerator], times[denominator])]


def run(quick: bool = False, images: np.ndarray | None = None,
        progress: Callable[[str], object] = lambda message: None) -> dict[str, Any]:
    """Measure; returns {"rows": [{"batch", "fastmlp_s", "onnxruntime_s", "speed_ratio"}], "config": {...}}.

    images: float32 (n, 784) inputs (default: the MNIST test images); rows are reused when n < 10,000.
    """
    import onnxruntime

    from ..cli.export import build_onnx
    from ..model import MLP

    if images is None:
        from ..datasets import load_mnist

        _, _, images, _ = load_mnist(progress=False)
    model = MLP(LAYER_SIZES, seed=0)
    session = onnxruntime.InferenceSession(build_onnx(model).SerializeToString(),
                                           providers=["CPUExecutionProvider"])
    X_all = np.ascontiguousarray(np.resize(images, (max(BATCHES), LAYER_SIZES[0])), dtype=np.float32)
    check = X_all[:64]
    difference = float(np.abs(session.run(["probabilities"], {"X": check})[0] - model.predict_proba(check)).max())
    if not difference <= AGREEMENT:
        raise AssertionError(f"fastmlp and ONNX Runtime disagree by {difference:.3g} (more than {AGREEMENT:g})")
    counts, rounds = (QUICK_CALLS, QUICK_ROUNDS) if quick else (CALLS, ROUNDS)
    rows = []
    for batch in BATCHES:
        progress(f"batch {batch}")
        X = np.ascontiguousarray(X_all[:batch])
        feed = {"X": X}
        times = block_times({"fastmlp": partial(model.predict_proba, X),
                             "onnxruntime": partial(session.run, ["probabilities"], feed)}, counts[batch], rounds)
        ratios = round_ratios(times, "onnxruntime", "fastmlp")
        rows.append({"batch": batch, "fastmlp_s": _pooled_median(times["fastmlp"]),
                     "onnxruntime_s": _pooled_median(times["onnxruntime"]),
                     "speed_ratio": statistics.median(ratios), "round_ratios": ratios, "calls": counts[batch]})
    config = {"layer_sizes": list(LAYER_SIZES), "onnxruntime": onnxruntime.__version__,
              "onnxruntime_threads": "default session", "max_abs_difference": difference, "quick": quick}
    return {"rows": rows, "config": config}


def _duration(seconds: float) -> str:
    if seconds < 1e-3:
        return f"{seconds * 1e6:.1f} µs"
    return f"{seconds * 1e3:.2f} ms"


def format_inference(result: dict[str, Any]) -> str:
    """The table: batch, fastmlp's and ONNX Runtime's median time per call, and the speed ratio."""
    lines = [f"MLP.predict_proba against ONNX Runtime {result['config']['onnxruntime']} (default session), net "
             f"{'-'.join(map(str, result['config']['layer_sizes']))}, median of timed calls; probabilities agree "
             f"within {result['config']['max_abs_difference']:.1g}",
             "",
             f"{'batch':>7}  {'fastmlp':>10}  {'ONNX Runtime':>12}  fastmlp's speed relative to ONNX Runtime "
             "(median of the rounds, lowest-highest)"]
    for row in result["rows"]:
        ratios = row["round_ratios"]
        lines.append(f"{row['batch']:>7,}  {_duration(row['fastmlp_s']):>10}  {_duration(row['onnxruntime_s']):>12}  "
                     f"{row['speed_ratio']:.2f}x ({min(ratios):.2f}-{max(ratios):.2f}, {len(ratios)} rounds)")
    return "\n".join(lines)


def report(args: argparse.Namespace) -> None:
    """`python -m fastmlp.bench --inference`: measure, print the table, write the JSON report if asked; or one
    line, and nothing measured, when onnx or onnxruntime is missing."""
    from ..runtime.atomic import atomic_write

    missing = onnx_runtime_missing()
    if missing is not None:
        print(missing, flush=True)
        return
    result = run(quick=args.quick, progress=lambda message: print(f"  {message}...", file=sys.stderr, flush=True)
                 if sys.stderr.isatty() else None)
    print(format_inference(result), flush=True)
    if args.json:
        with atomic_write(args.json, "w", encoding="utf-8") as f:
            f.write(json.dumps(result, indent=2) + "\n")
        print(f"report written to {args.json}")
