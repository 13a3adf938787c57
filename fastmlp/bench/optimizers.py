"""What an optimiser's step costs in the numba backend: the optimizer rows of `python -m fastmlp.bench`.

Adam reads and writes two moment arrays per weight where SGD with momentum has one velocity and
plain SGD none; fused into the weight-gradient epilogue that is a few vector operations per weight
next to the batch's FMAs. These rows measure it: each optimiser trains the same 784-128-64-10 net
from the same initial weights, one epoch per round on the same batches, rounds interleaved
(plain SGD, then the CLI's Nesterov momentum, Adam, AdamW, then the next round), through
`Trainer.fit`. A row gives the median seconds per step over the rounds after the first (which
also pays for any first allocations) and the median of its same-round ratios to plain SGD and to
the momentum step: the machine's drift cancels out of a ratio of epochs taken seconds apart.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from ..backends.base import BackendBase
from ..inputs import FloatArray, Pixels
from ..model import MLP
from ..trainer import Trainer

BATCH_SIZE = 64
# name: Trainer options. Rates as their recipes use them (the cost of a step does not depend on it).
OPTIMIZERS: dict[str, dict[str, Any]] = {
    "sgd": {"lr": 0.05},
    "sgd nesterov 0.9": {"lr": 0.05, "momentum": 0.9, "nesterov": True},
    "adam": {"lr": 1e-3, "optimizer": "adam"},
    "adamw wd 0.01": {"lr": 1e-3, "optimizer": "adamw", "weight_decay": 1e-2},
}
BASELINES = ("sgd", "sgd nesterov 0.9")


def measure_optimizer_steps(backend: BackendBase, X: FloatArray | Pixels, y: np.ndarray, *, rounds: int,
                            batch_size: int = BATCH_SIZE, hidden: tuple[int, ...] = (128, 64), seed: int = 0,
                            settle_seconds: float = 0.0) -> list[dict[str, Any]]:
    """One {'optimizer', 'step_us', 'vs_sgd', 'vs_sgd_nesterov', 'round_step_us'} per entry of OPTIMIZERS.

    rounds >= 2: epochs per optimiser, interleaved; the first is left out of every figure.
    """
    if rounds < 2:
        raise ValueError(f"rounds must be >= 2 (the first is a warm-up), got {rounds}")
    init = MLP((X.shape[1], *hidden, 10), seed=seed)
    trainers = {name: Trainer(init.copy(), backend, batch_size=batch_size, seed=seed, **options)
                for name, options in OPTIMIZERS.items()}
    for trainer in trainers.values():  # compile (or load) the epoch before any timed round
        backend.warm_up(trainer.model, pixels=not isinstance(X, np.ndarray))
    steps = -(-len(y) // batch_size)
    seconds: dict[str, list[float]] = {name: [] for name in OPTIMIZERS}
    for _ in range(rounds):
        for name, trainer in trainers.items():
            time.sleep(settle_seconds)
            start = time.perf_counter()
            trainer.fit(X, y, epochs=1)
            seconds[name].append(time.perf_counter() - start)
    steady = {name: np.asarray(s[1:]) for name, s in seconds.items()}
    rows: list[dict[str, Any]] = []
    for name in OPTIMIZERS:
        row = {"optimizer": name, "step_us": float(np.median(steady[name])) / steps * 1e6,
               "round_step_us": [s / steps * 1e6 for s in seconds[name]]}
        for baseline in BASELINES:
            key = "vs_" + baseline.split()[0] + ("_nesterov" if "nesterov" in baseline else "")
            row[key] = float(np.median(steady[name] / steady[baseline]))
        rows.append(row)
    return rows
