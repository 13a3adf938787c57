"""Training on a busy machine: `python -m fastmlp.bench --contention`.

For each backend, three epochs of the CLI's default recipe (`python -m fastmlp.train --epochs 3`),
each run a process of its own that writes `--metrics-json`; the time compared is its `train_s`
(the epochs alone: not loading the data, not compiling):

- alone: one run on the machine as it is;
- two at once: two identical runs started together; the slower one's time;
- beside a CPU hog: one run beside a process that spins on one core for the whole run.

Each ratio is that time over the run alone. Two jobs sharing the cores fairly take up to twice
as long, so 2x is the price of sharing and anything far above it is threads waiting for each
other (before the thread policy, the numpy backend's two runs at once took dozens of times as long).
Scenarios run one after the other, each `--repeats` times; the median is reported. The lead's
figures come from a machine where nothing else ran; on a machine shared with other work all
three scenarios carry that work too.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypedDict, cast

import numpy as np

from ..cli.common import plural

if TYPE_CHECKING:
    from ..datasets import PathLike

SCENARIOS = ("alone", "two at once", "beside a CPU hog")
FULL = {"epochs": 3}
QUICK = {"epochs": 1}
TARGET_RATIO = 2.5
HOG_HEAD_START_S = 0.5  # the hog runs before the training starts, as a busy machine's work would
_HOG = "while True: pass"


class ContentionRow(TypedDict):
    """One backend's line of the report: median seconds and ratios to the run alone, per scenario."""

    backend: str
    seconds: dict[str, float]
    ratios: dict[str, float]


def train_command(backend: str, epochs: int, metrics_json: PathLike, data_dir: PathLike | None = None,
                  threads: int | None = None) -> list[str]:
    """The CLI run of one measurement: the default recipe but `epochs`, quiet, metrics to metrics_json."""
    command = [sys.executable, "-m", "fastmlp.train", "--backend", backend, "--epochs", str(epochs), "--quiet",
               "--no-download", "--metrics-json", str(metrics_json)]
    if data_dir is not None:
        command += ["--data-dir", str(data_dir)]
    if threads is not None:
        command += ["--threads", str(threads)]
    return command


def _train_seconds(procs: Sequence[subprocess.Popen[str]], paths: Sequence[PathLike]) -> list[float]:
    """Wait for the training processes; the `train_s` of each one's metrics JSON."""
    seconds = []
    for proc, path in zip(procs, paths):
        _, err = proc.communicate()
        if proc.returncode != 0:
            last = (err.strip().splitlines() or ["no output"])[-1]
            command = cast("list[str]", proc.args)  # a train_command()
            raise ChildProcessError(f"training process {' '.join(command[1:4])}... failed "
                                    f"(exit {proc.returncode}): {last}")
        seconds.append(json.loads(Path(path).read_text())["timings"]["train_s"])
    return seconds


def run_scenario(scenario: str, backend: str, epochs: int, folder: PathLike, data_dir: PathLike | None = None,
                 threads: int | None = None) -> float:
    """Seconds of training in `scenario` (one of SCENARIOS): the slower run's `train_s`."""
    runs = 2 if scenario == "two at once" else 1
    paths = [Path(folder) / f"{backend}-{scenario.replace(' ', '-')}-{i}.json" for i in range(runs)]
    hog: subprocess.Popen[bytes] | None = None
    if scenario == "beside a CPU hog":
        hog = subprocess.Popen([sys.executable, "-c", _HOG])
        time.sleep(HOG_HEAD_START_S)
    try:
        procs = [subprocess.Popen(train_command(backend, epochs, path, data_dir, threads), stdout=subprocess.DEVNULL,
                                  stderr=subprocess.PIPE, text=True) for path in paths]
        return max(_train_seconds(procs, paths))
    finally:
        if hog is not None:
            hog.kill()
            hog.wait()


def measure_contention(backends: Sequence[str] = ("numpy", "numba"), *, epochs: int = FULL["epochs"],
                       repeats: int = 1, data_dir: PathLike | None = None, threads: int | None = None,
                       progress: Callable[[str], object] | None = None) -> list[ContentionRow]:
    """One row per backend: {'backend', 'seconds': {scenario: median s}, 'ratios': {scenario: x alone}}.

    The runs alternate scenario by scenario within each repeat, so a drift of the machine's load
    spreads over all of them. progress(message) is called after each run.
    """
    results: dict[str, dict[str, list[float]]] = {b: {s: [] for s in SCENARIOS} for b in backends}
    with tempfile.TemporaryDirectory(prefix="fastmlp-contention-") as folder:
        for backend in backends:  # compile (or load the cache) once, outside the measured runs
            _train_seconds([subprocess.Popen(train_command(backend, 1, Path(folder) / "warm.json", data_dir, threads),
                                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)],
                           [Path(folder) / "warm.json"])
        for _ in range(repeats):
            for backend in backends:
                for scenario in SCENARIOS:
                    results[backend][scenario].append(run_scenario(scenario, backend, epochs, folder, data_dir,
                                                                   threads))
                    if progress:
                        progress(f"{backend} {scenario}")
    rows: list[ContentionRow] = []
    for backend in backends:
        seconds = {s: float(np.median(v)) for s, v in results[backend].items()}
        rows.append({"backend": backend, "seconds": seconds,
                     "ratios": {s: seconds[s] / seconds["alone"] for s in SCENARIOS}})
    return rows


def machine_load() -> dict[str, Any]:
    """The 1-minute load average and usable CPUs, to print beside the table."""
    from ..runtime.blas_threads import usable_cpus

    try:
        load = os.getloadavg()[0]
    except (AttributeError, OSError):
        load = None
    return {"loadavg_1min": load, "usable_cpus": usable_cpus()}


def format_contention(rows: Sequence[ContentionRow], config: Mapping[str, Any]) -> str:
    """The contention table as text, with the conditions it was measured in."""
    from .report import format_table

    load = config["machine"]
    header = (f"fastmlp bench --contention ({config['mode']}): {plural(config['epochs'], 'epoch')} "
              "of the default recipe per run, train_s of python -m fastmlp.train --metrics-json, "
              f"median of {config['repeats']}; "
              f"{load['usable_cpus']} usable CPUs, load average {load['loadavg_1min']:.2f} before the run"
              + ("" if config["threads"] is None else f"; --threads {config['threads']}"))
    lines = []
    for r in rows:
        s, x = r["seconds"], r["ratios"]
        lines.append([r["backend"], f"{s['alone']:.2f} s", f"{s['two at once']:.2f} s (x{x['two at once']:.2f})",
                      f"{s['beside a CPU hog']:.2f} s (x{x['beside a CPU hog']:.2f})"])
    worst = max(max(r["ratios"]["two at once"], r["ratios"]["beside a CPU hog"]) for r in rows)
    verdict = (f"worst ratio x{worst:.2f}: " + ("within" if worst <= TARGET_RATIO else "ABOVE")
               + f" the x{TARGET_RATIO} target (2x is fair sharing of the cores)")
    table = format_table(["backend", "alone", "two at once (the slower)", "beside a CPU hog"], lines)
    return "\n".join([header, "", table, "", verdict])


def run(args: argparse.Namespace, progress: Callable[[str], object] | None = None) -> dict[str, Any]:
    """The contention report of the parsed `python -m fastmlp.bench --contention` arguments."""
    mode = QUICK if args.quick else FULL
    epochs = mode["epochs"]
    backends = [b for b in args.backends if b != "torch"] if args.backends else ["numpy", "numba"]
    if not backends:
        raise ValueError("--contention times fastmlp's own training CLI: "
                         "--backends numpy and/or numba, not torch alone")
    config = {"mode": "quick" if args.quick else "full", "epochs": epochs, "repeats": args.repeats,
              "backends": backends, "threads": args.threads, "machine": machine_load()}
    rows = measure_contention(backends, epochs=epochs, repeats=args.repeats, threads=args.threads, progress=progress)
    return {"config": config, "rows": rows}


def add_arguments(parser: argparse.ArgumentParser, positive_int: Callable[[str], int]) -> None:
    """The options of this mode, on `python -m fastmlp.bench`'s parser."""
    parser.add_argument("--contention", action="store_true",
                        help="instead: per backend, 3 epochs of the training CLI's default recipe alone, as two "
                             "runs at once and beside a CPU-bound process, and the slowdowns (--quick: 1 epoch)")
    parser.add_argument("--repeats", type=positive_int, default=1, help="with --contention: runs per scenario (median)")
    parser.add_argument("--threads", type=positive_int, metavar="N",
                        help="with --contention: the training CLI's --threads (default: its own thread policy)")


def report(args: argparse.Namespace) -> None:
    """Measure, print the table, and write the JSON report if asked: `python -m fastmlp.bench --contention`."""
    from tqdm import tqdm

    from ..runtime.atomic import atomic_write

    with tqdm(total=3 * len(args.backends) * args.repeats, desc="fastmlp bench --contention", unit="run",
              file=sys.stderr, leave=False, disable=None) as bar:
        result = run(args, lambda message: bar.update())
    print(format_contention(result["rows"], result["config"]), flush=True)
    if args.json:
        with atomic_write(args.json, "w", encoding="utf-8") as f:
            f.write(json.dumps(result, indent=2) + "\n")
        print(f"report written to {args.json}")
