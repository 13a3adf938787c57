"""The CLI's default recipe, trained once per backend in one run: the recipe rows of `python -m fastmlp.bench`.

The recipe is `python -m fastmlp.train`'s own defaults (read from its parser, so the two never
drift apart): 784-128-64-10, batch 64, lr 0.05 on a cosine schedule, Nesterov momentum 0.9, 10
epochs. Each backend trains it from the same initial weights in the same batch order through
`Trainer.fit`; a row gives the seconds of training (the epochs' own, compilation excluded), the
test accuracy, and the speed relative to the numba backend's run of the same round.
"""

from __future__ import annotations

import time
from typing import Any

from ..inputs import Pixels
from ..model import MLP
from ..trainer import Trainer


def recipe_options() -> tuple[dict[str, Any], int, tuple[int, ...]]:
    """(Trainer keyword arguments, epochs, hidden sizes) of the CLI's default recipe."""
    from ..cli.train import build_parser

    args = build_parser().parse_args([])
    options = {"lr": args.lr, "batch_size": args.batch_size, "momentum": args.momentum, "nesterov": args.nesterov,
               "weight_decay": args.weight_decay, "schedule": args.schedule, "step_size": args.step_size,
               "gamma": args.gamma}
    return options, args.epochs, tuple(args.hidden)


def describe_recipe(options: dict[str, Any], epochs: int, hidden: tuple[int, ...]) -> str:
    return (f"{'-'.join(map(str, (784, *hidden, 10)))}, batch {options['batch_size']}, lr {options['lr']:g} "
            f"{options['schedule']}, {'Nesterov ' if options['nesterov'] else ''}momentum {options['momentum']:g}, "
            f"{epochs} epochs")


def measure_recipe(backends: dict[str, Any], X: Any, y: Any, X_test: Any, y_test: Any, *, epochs: int | None = None,
                   seed: int = 0, settle_seconds: float = 0.0) -> list[dict[str, Any]]:
    """One {'backend', 'train_s', 'test_accuracy', 'vs_numba'} per backend (a name -> backend mapping).

    X is the training input (float32 or Pixels); epochs defaults to the recipe's.
    """
    options, recipe_epochs, hidden = recipe_options()
    epochs = epochs or recipe_epochs
    init = MLP((X.shape[1], *hidden, 10), seed=seed)
    rows = []
    for name, backend in backends.items():
        time.sleep(settle_seconds)
        backend.warm_up(init, pixels=isinstance(X, Pixels))
        trainer = Trainer(init.copy(), backend, seed=seed, **options)
        history = trainer.fit(X, y, epochs=epochs)
        rows.append({"backend": name, "train_s": sum(history.column("seconds")),
                     "test_accuracy": trainer.evaluate(X_test, y_test)[1], "epochs": epochs})
    numba = next((r["train_s"] for r in rows if r["backend"] == "numba"), None)
    for r in rows:
        r["vs_numba"] = None if numba is None else numba / r["train_s"]
    return rows
