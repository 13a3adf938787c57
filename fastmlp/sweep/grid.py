"""A sweep's trials: `fastmlp.train`'s options with several values each, as a grid of configurations.

A configuration is a dict of one value per training option, keyed by the options' `dest`
names (`batch_size`, `hidden`, ...), as JSON stores it. The grid is the cartesian product of
the values given (options left out take train's defaults), or a reproducible random sample of
it; `--and` on the command line starts another grid, and the sweep runs the union.
"""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from ..cli.train import ADAM_DEFAULT_LR, add_training_arguments
from ..optim import ADAM_OPTIMIZERS, OPTIMIZERS

# Held fixed for a whole sweep: the validation split decides what the table sorts by.
SINGLE_VALUED = {"val_size"}
DATA_OPTIONS = ("dataset",)  # part of each configuration; data_dir and no_download only say where it is

SGD_LR = 0.05  # fastmlp train's --lr, for an SGD trial without --lr
Config = dict[str, Any]  # one trial: {dest: value}, as the JSON stores it
Grid = dict[str, list[Any]]  # {dest: [values]}: one grid of trials, its product


def add_grid_arguments(parser: argparse.ArgumentParser) -> list[str]:
    """Add train's options to parser, each taking one or more values; returns their dest names in order."""
    dests: list[str] = []

    def several_values(dest: str, kwargs: dict[str, Any]) -> dict[str, Any]:
        dests.append(dest)
        if dest in SINGLE_VALUED or "action" in kwargs:  # --nesterov / --no-nesterov stays a flag
            return kwargs
        if kwargs.get("default") is None:  # as --patience: no value by default, which grid_values makes [None]
            return dict(kwargs, nargs="+")
        kwargs = dict(kwargs, nargs="+", default=[kwargs["default"]])
        if dest == "lr":  # resolved per trial: train's SGD default, or Adam's for an Adam trial
            kwargs.update(default=[None], help=f"learning rate (of the first epoch); {ADAM_DEFAULT_LR:g} for the "
                                               f"adam and adamw trials when not given (default: "
                                               f"{kwargs['default'][0]:g})")
            return kwargs
        if dest == "hidden":
            kwargs.update(type=hidden_widths, default=[tuple(kwargs["default"][0])], metavar="WxW",
                          help="hidden layer widths of a trial joined by x, e.g. 128x64 256x128 for two nets")
        kwargs["help"] += f" (default: {format_value(dest, kwargs['default'][0])})"  # the value, not a list
        return kwargs

    add_training_arguments(parser, several_values)
    parser.add_argument("--optimizer", nargs="+", choices=OPTIMIZERS, default=["sgd"],
                        help="sgd: SGD with --momentum; adam, adamw: Adam (betas 0.9 0.999, eps 1e-8), with "
                             f"--lr {ADAM_DEFAULT_LR:g} unless --lr is given; --momentum and --nesterov apply to "
                             "the sgd trials only (default: sgd)")
    dests.append("optimizer")
    dests.extend(DATA_OPTIONS)
    return dests


def hidden_widths(text: str) -> tuple[int, ...]:
    """'256x128' -> (256, 128): the hidden layers of one trial's net."""
    try:
        widths = tuple(int(part) for part in text.split("x"))
    except ValueError:
        widths = ()
    if not widths or min(widths) < 1:
        raise argparse.ArgumentTypeError(f"must be layer widths >= 1 joined by x, such as 128x64, got {text!r}")
    return widths


def grid_values(args: argparse.Namespace, dests: Iterable[str]) -> Grid:
    """{dest: [values]} of one parsed command line: a list per option, in the options' order."""
    values: Grid = {}
    for dest in dests:
        value = getattr(args, dest)
        values[dest] = list(dict.fromkeys(value)) if isinstance(value, list) else [value]
    return values


def grid_size(grid: Grid) -> int:
    return math.prod(len(values) for values in grid.values())


def configurations(grids: Sequence[Grid], sample: int | None = None, seed: int = 0) -> list[Config]:
    """The trials of the union of grids (each {dest: [values]}), in grid order, duplicates dropped.

    sample: None for every trial, or how many to draw at random without replacement
    (numpy.random.default_rng(seed), so a rerun or --resume draws the same ones).
    """
    sizes = [grid_size(grid) for grid in grids]
    indices: Iterable[Any]
    if sample is None:
        indices = range(sum(sizes))
    else:
        if sample > sum(sizes):
            raise ValueError(f"--random {sample} asks for more trials than the grid has ({sum(sizes)})")
        indices = np.sort(np.random.default_rng(seed).choice(sum(sizes), size=sample, replace=False))
    trials: dict[str, Config] = {}
    for index in indices:
        config = _nth_configuration(grids, sizes, int(index))
        trials.setdefault(config_key(config), config)
    return list(trials.values())


def _nth_configuration(grids: Sequence[Grid], sizes: Sequence[int], index: int) -> Config:
    """The index-th configuration of the grids' concatenated products (mixed radix, last option fastest),
    decoded so that --random never builds a product that may be large."""
    for position, size in enumerate(sizes):
        grid = grids[position]
        if index < size:
            break
        index -= size
    config: Config = {}
    for dest, values in reversed(grid.items()):
        index, digit = divmod(index, len(values))
        config[dest] = values[digit]
    config = {dest: config[dest] for dest in grid}
    config["hidden"] = list(config["hidden"])
    adam = config.get("optimizer", "sgd") in ADAM_OPTIMIZERS
    if config.get("lr") is None:
        config["lr"] = ADAM_DEFAULT_LR if adam else SGD_LR
    if adam:  # as fastmlp.train: Adam takes no momentum
        config["momentum"], config["nesterov"] = 0.0, False
    if config["momentum"] == 0:
        config["nesterov"] = False  # plain SGD has no velocity to look ahead with, as in fastmlp.train
    return config


def config_key(config: Config) -> str:
    """A configuration as one canonical string, equal for equal configurations, also after a JSON round trip."""
    return json.dumps(config, sort_keys=True)


def swept_options(configs: Sequence[Config]) -> list[str]:
    """The options that differ between configurations, in the configurations' key order."""
    if not configs:
        return []
    return [dest for dest in configs[0] if len({json.dumps(c[dest]) for c in configs}) > 1]


def option_flag(dest: str) -> str:
    return "--" + dest.replace("_", "-")


def format_value(dest: str, value: Any) -> str:
    if dest == "hidden":
        return "x".join(map(str, value)) or "none"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def describe(config: Config, dests: Iterable[str]) -> str:
    """'lr 0.05, batch-size 64': a configuration's values of the options dests."""
    return ", ".join(f"{dest.replace('_', '-')} {format_value(dest, config[dest])}" for dest in dests)


def without(config: Config, dest: str) -> Config:
    return {key: value for key, value in config.items() if key != dest}

