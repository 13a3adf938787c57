"""Figures for people: learning curves and a confusion matrix as PNG files.

matplotlib comes with the `plot` extra (pip install "fastmlp[plot]"). Figures are drawn on a
bare `matplotlib.figure.Figure`, never through pyplot, so plotting leaves the caller's
matplotlib backend and open figures alone.
"""

import numpy as np

from ._atomic import atomic_write

INSTALL_HINT = 'pip install "fastmlp[plot]"'


class PlotUnavailableError(ImportError):
    """matplotlib, from the `plot` extra, is not installed."""


def require_matplotlib():
    """Raise PlotUnavailableError, saying how to install it, unless matplotlib can be imported."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise PlotUnavailableError(f"plotting needs matplotlib, which is not installed: {INSTALL_HINT}") from None


def plot_learning_curves(history, path, *, title=None, val_label="test", best_epoch=None):
    """Write a PNG of train loss and `val_label` loss and accuracy per epoch of a `History`.

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


def plot_confusion_matrix(matrix, path, *, class_names=None, title=None):
    """Write a PNG of a confusion matrix (rows: true class, columns: predicted), counts in each cell."""
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


def _new_figure(figsize):
    require_matplotlib()
    from matplotlib.figure import Figure

    return Figure(figsize=figsize, layout="constrained")


def save_png(figure, path, dpi=120):
    """Save figure as a PNG at path, atomically (a temp file in the same folder, renamed when complete)."""
    with atomic_write(path, "wb") as f:
        figure.savefig(f, format="png", dpi=dpi)
