"""`fastmlp tune`: measure again which SIMD tile is fastest on this machine, keep it, and print it.

The same tuning fastmlp runs by itself on first use (fastmlp.runtime.tuning): every tile this CPU
runs, each timed in a child process over a few SGD steps of the default net; the choice is kept
beside Numba's cache, per CPU, its features and fastmlp's version, and used from the next import.
The children run `child_main` below, which times the public packed kernels.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Sequence

import numpy as np

from ..runtime import tuning
from .common import check_output_path, new_parser, run_reporting_errors

PROG = "python -m fastmlp.cli.tune"


def _positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number of seconds, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0 seconds, got {text}")
    return value


def child_main() -> None:
    """In a tuning child: print as JSON the microseconds per SGD step of the default net, tile FASTMLP_TILE."""
    print(json.dumps({"step_us": step_microseconds()}))


def step_microseconds(layer_sizes: Sequence[int] = (784, 128, 64, 10), batch_size: int = tuning.BATCH_SIZE,
                      steps: int = tuning.STEPS, rounds: int = tuning.ROUNDS) -> float:
    """Microseconds per SGD step (forward, backward, update of every layer) through the public packed kernels.

    The kernels are those of the tile fastmlp.kernels.tiles chose in this process. The inputs are
    random and the learning rate tiny, so that every round does the same work on the same values.
    """
    from ..kernels import (
        pack_weights_into,
        packed_matmul_bias_into,
        packed_matmul_bias_relu_into,
        packed_matmul_relu_mask_into,
        packed_sgd_update_inplace,
        packed_shape,
    )

    rng = np.random.default_rng(0)
    pairs = list(zip(layer_sizes[:-1], layer_sizes[1:]))
    P, PT = [], []
    for k, n in pairs:
        W = (rng.standard_normal((k, n), dtype=np.float32) / np.sqrt(k)).astype(np.float32)
        p, pt = np.zeros(packed_shape(k, n), np.float32), np.zeros(packed_shape(n, k), np.float32)
        pack_weights_into(p, W)
        pack_weights_into(pt, np.ascontiguousarray(W.T))
        P.append(p)
        PT.append(pt)
    b = [np.zeros(n, np.float32) for _, n in pairs]
    acts = [rng.random((batch_size, layer_sizes[0]), dtype=np.float32)] + [
        np.zeros((batch_size, n), np.float32) for _, n in pairs]
    deltas = [np.zeros((batch_size, n), np.float32) for n in layer_sizes]
    deltas[-1][:] = rng.standard_normal(deltas[-1].shape, dtype=np.float32) / batch_size
    lr = np.float32(1e-7)
    last = len(pairs) - 1

    def step() -> None:
        for l in range(last):
            packed_matmul_bias_relu_into(acts[l + 1], acts[l], P[l], b[l])
        packed_matmul_bias_into(acts[last + 1], acts[last], P[last], b[last])
        for l in reversed(range(len(pairs))):
            if l > 0:
                packed_matmul_relu_mask_into(deltas[l], deltas[l + 1], PT[l], acts[l])
            packed_sgd_update_inplace(P[l], acts[l], deltas[l + 1], lr, np.float32(0.0))

    step()  # compiles (or loads from this child's Numba cache)
    best = float("inf")
    for _ in range(rounds):
        begin = time.perf_counter()
        for _ in range(steps):
            step()
        best = min(best, (time.perf_counter() - begin) / steps)
    return best * 1e6


def _target() -> tuple[str, str, str, list[str]]:
    """(CPU name, features, built-in tile, runnable tiles) of the CPU Numba compiles for, without a first-use tuning."""
    saved = os.environ.get(tuning.ENV_TUNE)
    os.environ[tuning.ENV_TUNE] = "0"  # this command measures itself: no tuning at the import of tiles
    try:
        from ..kernels.tiles import TILES, select_tile, target_cpu
    finally:
        if saved is None:
            del os.environ[tuning.ENV_TUNE]
        else:
            os.environ[tuning.ENV_TUNE] = saved
    cpu, features = target_cpu()
    builtin = select_tile(cpu, features)
    return cpu, features, builtin.name, [t.name for t in TILES.values() if t.vw <= builtin.vw]


def build_parser(prog: str = PROG) -> argparse.ArgumentParser:
    parser = new_parser(prog, description="Measure which SIMD tile of fastmlp's kernels is fastest on this machine "
                                          "(each in a child process, a few SGD steps of the default net), keep the "
                                          "choice beside Numba's cache and print it. fastmlp does this by itself "
                                          "once, on first use; FASTMLP_TILE=<name> overrides it.")
    parser.add_argument("--budget", type=_positive_seconds, default=tuning.BUDGET_SECONDS, metavar="SECONDS",
                        help="at most this long in all; a tile not measured by then is left out")
    parser.add_argument("--json", metavar="PATH", help="also write the choice and the measurements as JSON")
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error")
    return parser


def main(argv: Sequence[str] | None = None, *, prog: str = PROG) -> int:
    """`fastmlp tune`: measure, keep and print the choice; returns the exit status."""
    parser = build_parser(prog)
    args = parser.parse_args(argv)

    def measure() -> None:
        check_output_path(args.json, "--json")
        cpu, features, builtin, runnable = _target()
        folder = tuning.writable_folder()
        if folder is None:
            raise PermissionError("no writable folder to keep a tuning in (looked in "
                                  f"{', '.join(map(str, tuning.tuning_folders()))}): set NUMBA_CACHE_DIR to one")
        print(f"tuning for {cpu}: tiles {', '.join(runnable)} (built-in: {builtin})", flush=True)
        choice = tuning.tune(cpu, features, builtin, runnable, folder, budget_s=args.budget,
                             progress=lambda name: print(f"  measuring {name} ...", file=sys.stderr, flush=True))
        print("\n".join(tuning.describe(choice)))
        print(f"kept in {folder}; FASTMLP_TILE=<name> overrides it")
        if args.json:
            from ..runtime.atomic import atomic_write

            with atomic_write(args.json, "w", encoding="utf-8") as f:
                f.write(json.dumps(choice, indent=2) + "\n")

    return run_reporting_errors(prog, measure, debug=args.debug)


if __name__ == "__main__":
    sys.exit(main())
