"""Figures for people: learning curves and a confusion matrix as PNG files.

matplotlib comes with the `plot` extra (pip install "fastmlp[plot]"). Figures are drawn on a
bare `matplotlib.figure.Figure`, never through pyplot, so plotting leaves the caller's
matplotlib backend and open figures alone.
"""

import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..runtime.atomic import atomic_write

if TYPE_CHECKING:
    from ..trainer import History

INSTALL_HINT = 'pip install "fastmlp[plot]"'
# The suffixes --plot and the plot functions accept, and the matplotlib format each writes.
PLOT_FORMATS = {".png": "png", ".jpg": "jpeg", ".jpeg": "jpeg", ".pdf": "pdf", ".svg": "svg"}


class PlotUnavailableError(ImportError):
    """matplotlib, from the `plot` extra, is not installed."""


def require_matplotlib() -> None:
    """Raise PlotUnavailableError, saying how to install it, unless matplotlib can be imported."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise PlotUnavailableError(f"plotting needs matplotlib, which is not installed: {INSTALL_HINT}") from None


def require_plotting(path: str | os.PathLike[str]) -> None:
    """Raise before any work if a figure cannot be drawn at path: no matplotlib, a suffix not in
    PLOT_FORMATS, or a JPEG without Pillow."""
    require_matplotlib()
    if plot_format(path) == "jpeg":
        try:
            import PIL  # noqa: F401
        except ImportError:
            raise PlotUnavailableError(f"drawing a JPEG needs Pillow, which is not installed: {INSTALL_HINT}") from None


def plot_learning_curves(history: "History", path: str | os.PathLike[str], *, title: str | None = None,
                         val_label: str = "test", best_epoch: int | None = None) -> None:
    """Draw train loss and `val_label` loss and accuracy per epoch of a `History` (PNG, or as path's suffix says).

    best_epoch, if given, is marked as the epoch whose parameters were kept (early stopping).
    """
    figure = _new_figure(figsize=(10, 4))
    epochs = history.column("epoch")
    val_label = {"val": "validation"}.get(val_label, val_label)
    loss_axes, accuracy_axes = figure.subplots(1, 2)

    loss_axes.plot(epochs, history.column("train_loss"), "o-", label="train")
    val_loss = history.column("val_loss")
    if val_loss and val_loss[0] is not None:
        loss_axes.plot(epochs, val_loss, "s-", label=val_label)
    loss_axes.set(title="Loss", xlabel="epoch", ylabel="mean cross-entropy (nats)")

    val_accuracy = history.column("val_accuracy")
    if val_accuracy and val_accuracy[0] is not None:
        percent = 100 * np.asarray(val_accuracy, dtype=float)
        accuracy_axes.plot(epochs, percent, "s-", color="C1", label=val_label)
        best = int(np.argmax(percent))
        accuracy_axes.annotate(f"{percent[best]:.2f}%", (epochs[best], percent[best]), textcoords="offset points",
                               xytext=(0, 8), ha="center")
        accuracy_axes.set(title=f"{val_label.capitalize()} accuracy", xlabel="epoch", ylabel="accuracy (%)")
    else:
        accuracy_axes.text(0.5, 0.5, "no validation or test data", ha="center", va="center",
                           transform=accuracy_axes.transAxes)
        accuracy_axes.set(title="Accuracy", xlabel="epoch")

    for axes in (loss_axes, accuracy_axes):
        if best_epoch is not None:
            axes.axvline(best_epoch, color="grey", linestyle="--", label=f"kept: epoch {best_epoch}")
        axes.grid(alpha=0.3)
        axes.margins(x=0.05, y=0.12)  # room for the accuracy label above the best point
        axes.xaxis.get_major_locator().set_params(integer=True)
        if axes.has_data():
            axes.legend()
    if title:
        figure.suptitle(title)
    save_png(figure, path)


def plot_confusion_matrix(matrix: Any, path: str | os.PathLike[str], *, class_names: Sequence[str] | None = None,
                          title: str | None = None) -> None:
    """Draw a confusion matrix (rows: true class, columns: predicted), counts in each cell
    (PNG, or as path's suffix says)."""
    from matplotlib.colors import LogNorm

    matrix = np.asarray(matrix)
    k = matrix.shape[0]
    names = [str(c) for c in range(k)] if class_names is None else list(class_names)
    figure = _new_figure(figsize=(1.0 + 0.75 * k, 0.5 + 0.7 * k))
    axes = figure.subplots()
    # A log scale keeps the few confusions visible next to the diagonal's thousands.
    image = axes.imshow(np.where(matrix > 0, matrix, np.nan), cmap="Blues",
                        norm=LogNorm(vmin=1, vmax=max(int(matrix.max()), 2)))
    threshold = np.sqrt(max(int(matrix.max()), 1))  # the colour midpoint on the log scale
    for i in range(k):
        for j in range(k):
            if matrix[i, j]:
                axes.text(j, i, str(int(matrix[i, j])), ha="center", va="center", fontsize=8,
                          color="white" if matrix[i, j] > threshold else "black")
    axes.set_xticks(range(k), names, rotation=45 if max(map(len, names)) > 2 else 0, ha="right" if
                    max(map(len, names)) > 2 else "center")
    axes.set_yticks(range(k), names)
    axes.set(xlabel="predicted class", ylabel="true class",
             title=title or f"Confusion matrix ({int(matrix.sum()):,} samples)")
    figure.colorbar(image, ax=axes, label="samples (log scale)")
    save_png(figure, path)


def _new_figure(figsize: tuple[float, float]) -> Any:
    require_matplotlib()
    from matplotlib.figure import Figure

    return Figure(figsize=figsize, layout="constrained")


def plot_format(path: str | os.PathLike[str]) -> str:
    """The image format that path's suffix asks for (PNG without one); ValueError for a suffix not in PLOT_FORMATS."""
    suffix = Path(path).suffix.lower()
    if suffix and suffix not in PLOT_FORMATS:
        raise ValueError(f"{path}: cannot draw a {suffix} file; "
                         f"use one of {', '.join(PLOT_FORMATS)} (PNG without a suffix)")
    return PLOT_FORMATS.get(suffix, "png")


def save_png(figure: Any, path: str | os.PathLike[str], dpi: int = 120) -> None:
    """Save figure at path in the format its suffix names (PNG by default, see `plot_format`), atomically
    (a temp file in the same folder, renamed when complete). JPEG needs Pillow, of the same plot extra."""
    fmt = plot_format(path)
    with atomic_write(path, "wb") as f:
        figure.savefig(f, format=fmt, dpi=dpi)


def plot_throughput(report: dict[str, Any], path: str | os.PathLike[str]) -> None:
    """Write a PNG of a `python -m fastmlp.bench` report: samples/s against batch size for each backend
    and input, with the gemm floor and the roofline as lines (log scales)."""
    figure = _new_figure(figsize=(8, 5))
    axes = figure.subplots()
    rows = report["rows"]
    runs = list(dict.fromkeys((r["backend"], r["input"]) for r in rows))
    backends = list(dict.fromkeys(backend for backend, _ in runs))
    for backend, kind in runs:  # a colour per backend, a line style per input
        points = sorted((r["batch_size"], r["samples_per_s"]) for r in rows
                        if (r["backend"], r["input"]) == (backend, kind))
        axes.plot(*zip(*points), "o-" if kind == "float32" else "s--", color=f"C{backends.index(backend)}",
                  label=f"{backend}, {kind}")
    floor = sorted({(r["batch_size"], r["floor_samples_per_s"]) for r in rows})
    axes.plot(*zip(*floor), ":", color="black", label="gemm floor (the step's sgemm calls alone)")
    roofline = report["roofline"]["samples_per_s"]
    axes.axhline(roofline, color="grey", linestyle="-.", label=f"roofline ({roofline:,.0f} samples/s)")
    if "native" in report["roofline"]:  # OPENBLAS_CORETYPE set: the hardware's own roofline too
        native = report["roofline"]["native"]["samples_per_s"]
        axes.axhline(native, color="grey", linestyle="--", label=f"roofline, OPENBLAS_CORETYPE unset ({native:,.0f})")
    batch_sizes = [b for b, _ in floor]
    axes.set_xscale("log", base=2)
    axes.set_yscale("log")
    axes.set_xticks(batch_sizes, [str(b) for b in batch_sizes])
    net = "-".join(map(str, report["config"]["layer_sizes"]))
    axes.set(xlabel="batch size", ylabel="samples/s (steady state)",
             title=f"Training throughput, {net}, SGD ({report['config']['mode']} bench)")
    axes.grid(alpha=0.3, which="both")
    axes.legend(fontsize=8)
    save_png(figure, path)
