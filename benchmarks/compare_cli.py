"""Training time of one `python -m fastmlp.train` command under two installs, run alternately.

    python benchmarks/compare_cli.py --baseline /path/to/old-venv/bin/python --rounds 3 -- --epochs 10

runs the command (everything after `--`, the CLI's default recipe when empty) with this
interpreter and with the baseline's, one after the other, `--rounds` times, and prints each
run's `train_s` and test accuracy (from `--metrics-json`) and the median of the per-round
ratios baseline / this, so that the machine's drift cancels out. It runs from a temporary
folder, so that each interpreter imports the fastmlp installed in its own environment.

To compare against a release, install it into a venv of its own, e.g. for 0.1.0:
    git archive 254a01f | tar -x -C /tmp/fastmlp-0.1.0
    python -m venv /tmp/venv-0.1.0 && /tmp/venv-0.1.0/bin/pip install /tmp/fastmlp-0.1.0
"""

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path


def train_once(python, args, folder):
    """(train_s, test_accuracy, fastmlp version) of one CLI run with `python`."""
    metrics = Path(folder) / "metrics.json"
    subprocess.run([python, "-m", "fastmlp.train", *args, "--quiet", "--metrics-json", str(metrics)], cwd=folder,
                   check=True)
    report = json.loads(metrics.read_text())
    version = subprocess.run([python, "-c", "import fastmlp; print(fastmlp.__version__)"], cwd=folder, check=True,
                             capture_output=True, text=True).stdout.strip()
    return report["timings"]["train_s"], report["test_accuracy"], version


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", required=True, help="the Python interpreter of the baseline install")
    parser.add_argument("--rounds", type=int, default=3, help="runs of each install, alternating (default 3)")
    parser.add_argument("train_args", nargs="*", help="arguments of python -m fastmlp.train (after --)")
    args = parser.parse_args(argv)
    ratios = []
    with tempfile.TemporaryDirectory(prefix="fastmlp-compare-") as folder:
        for round_ in range(1, args.rounds + 1):
            runs = {}
            order = (("this", sys.executable), ("baseline", args.baseline))
            for name, python in order if round_ % 2 else order[::-1]:
                runs[name] = train_once(python, args.train_args, folder)
                seconds, accuracy, version = runs[name]
                print(f"round {round_}  {name:8s} fastmlp {version:8s} train {seconds:7.2f} s  "
                      f"test accuracy {100 * accuracy:.2f} %", flush=True)
            ratios.append(runs["baseline"][0] / runs["this"][0])
    print(f"baseline / this, median of {len(ratios)} rounds: {statistics.median(ratios):.2f}x "
          f"(rounds: {', '.join(f'{r:.2f}' for r in ratios)})")


if __name__ == "__main__":
    sys.exit(main())
