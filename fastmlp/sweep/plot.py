"""The figure of `python -m fastmlp.sweep --plot`: each trial's accuracy against each swept option.

Drawn like fastmlp/plot.py's figures: on a bare matplotlib Figure, never through pyplot, and
saved atomically.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from ..cli.plot import require_matplotlib, save_png
from .grid import format_value, option_flag


def plot_sweep(trials: Sequence[dict[str, Any]], options: Iterable[str], path: str | os.PathLike[str], *,
               metric: str = "test_accuracy") -> None:
    """Write a PNG of each sweep trial's accuracy (`metric` of its record) against each swept option, a panel each.

    trials: records of `fastmlp.sweep` (a "config" dict and the metric); each option's values
    are placed in sorted order, one column each, with the mean of their trials marked.
    """
    require_matplotlib()
    from matplotlib.figure import Figure

    options = list(options) or ["seed"]
    figure = Figure(figsize=(4 * len(options), 3.6), layout="constrained")
    axes_row = figure.subplots(1, len(options), squeeze=False)[0]
    label = metric.replace("_", " ").replace("accuracy", "accuracy (%)")
    for axes, dest in zip(axes_row, options):
        values = sorted({format_value(dest, t["config"][dest]): t["config"][dest] for t in trials}.items(),
                        key=lambda item: _sort_key(item[1]))
        position = {text: i for i, (text, _) in enumerate(values)}
        xs = [position[format_value(dest, t["config"][dest])] for t in trials]
        ys = [100 * t[metric] for t in trials]
        axes.plot(xs, ys, "o", alpha=0.6)
        for i in position.values():
            column = [y for x, y in zip(xs, ys) if x == i]
            axes.plot([i - 0.25, i + 0.25], [np.mean(column)] * 2, "-", color="C1", linewidth=2)
        axes.set_xticks(range(len(values)), [text for text, _ in values])
        axes.set(xlabel=option_flag(dest), ylabel=label)
        axes.grid(alpha=0.3)
        axes.margins(x=0.15)
    figure.suptitle(f"{len(trials)} trials: each dot a trial, each bar the mean of a value's trials")
    save_png(figure, path)


def _sort_key(value: Any) -> tuple[int, tuple[Any, ...], str]:
    """Numbers by value, layer widths by their sizes, anything else by its text."""
    if isinstance(value, (list, tuple)):
        return (1, tuple(value), "")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return (0, (value,), "")
    return (2, (), str(value))
