"""`python -m fastmlp.evaluate --model PATH`: a saved model's test accuracy, per-class precision and
recall, and its confusion matrix (as text, and as a PNG with --plot)."""

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt

from ..datasets import CLASS_NAMES, load_mnist
from ..datasets.tabular import encode_labels, load_table
from ..inputs import FloatArray, check_labels
from ..model import MLP
from ..trainer import Trainer
from .common import add_data_arguments, check_output_path, new_parser, run_reporting_errors
from .plot import PLOT_FORMATS, require_plotting

PROG = "python -m fastmlp.evaluate"


def confusion_matrix(y_true: npt.ArrayLike, y_pred: npt.ArrayLike, n_classes: int) -> npt.NDArray[np.int64]:
    """int64 (n_classes, n_classes) counts: entry [i, j] is how many samples of class i were predicted j."""
    true = np.asarray(y_true)
    true = check_labels(true, len(true) if true.ndim else 0, n_classes, "y_true")
    pred = check_labels(y_pred, len(true), n_classes, "y_pred")
    return np.bincount(true * n_classes + pred, minlength=n_classes * n_classes).reshape(n_classes, n_classes)


def precision_recall(matrix: npt.ArrayLike) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """(precision, recall) per class from a confusion matrix; 0 where a class was never predicted / present."""
    matrix = np.asarray(matrix, dtype=np.float64)
    hits = np.diag(matrix)
    predicted, actual = matrix.sum(axis=0), matrix.sum(axis=1)
    precision = np.divide(hits, predicted, out=np.zeros_like(hits), where=predicted > 0)
    recall = np.divide(hits, actual, out=np.zeros_like(hits), where=actual > 0)
    return precision, recall


def format_report(matrix: npt.ArrayLike, class_names: Sequence[str] | None = None) -> list[str]:
    """Per-class precision, recall and support, then the confusion matrix, as text lines."""
    matrix = np.asarray(matrix)
    k = len(matrix)
    names = [str(c) for c in range(k)] if class_names is None else list(class_names)
    precision, recall = precision_recall(matrix)
    labels = [name if name == str(c) else f"{c} {name}" for c, name in enumerate(names)]
    width = max(len("class"), *map(len, labels))
    lines = [f"{'class':<{width}}  precision   recall  support"]  # room for a recall of 100.00%
    for c, label in enumerate(labels):
        lines.append(f"{label:<{width}}  {100 * precision[c]:8.2f}%  {100 * recall[c]:6.2f}%  "
                     f"{int(matrix[c].sum()):7,}")
    width = max(5, len(f"{int(matrix.max()):,}") + 1)
    lines += ["", "confusion matrix (rows: true class, columns: predicted class)",
              "true\\pred" + "".join(f"{c:>{width}}" for c in range(k))]
    lines += [f"{c:>9}" + "".join(f"{int(v):>{width},}" for v in row) for c, row in enumerate(matrix)]
    return lines


def build_parser(prog: str = PROG) -> argparse.ArgumentParser:
    parser = new_parser(prog, description="Evaluate a saved fastmlp model on a dataset's test set, or on your own "
                                          "data file with --data.")
    parser.add_argument("--model", type=str, required=True, metavar="PATH", help="a model written by --save (.npz)")
    add_data_arguments(parser)
    parser.add_argument("--data", type=Path, metavar="PATH",
                        help="your own test data instead of --dataset: a CSV with a header row, or an .npz holding "
                             "X and y, with the columns the model was trained on")
    parser.add_argument("--target", metavar="COLUMN",
                        help="the CSV column holding the labels (default: the model's training target, else the "
                             "last column)")
    parser.add_argument("--plot", type=str, metavar="PATH",
                        help="also draw the confusion matrix, as an image in the format of PATH's suffix "
                             f"({', '.join(PLOT_FORMATS)}; PNG without one)")
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error")
    return parser


def own_test_data(model: MLP, path: Path, target: str | None) -> tuple[FloatArray, npt.NDArray[np.int64], list[str]]:
    """(X, class indices, class names) of a CSV or .npz test file, checked against what the model was trained on:
    the same feature columns (by name when both know them), labels among the model's classes."""
    is_csv = path.suffix.lower() != ".npz"
    table = load_table(path, (target or model.target) if is_csv else None)
    if table.X.shape[1] != model.n_features or (is_csv and model.feature_names is not None
                                                and table.feature_names != model.feature_names):
        trained = ", ".join(model.feature_names) if model.feature_names else f"{model.n_features} columns"
        raise ValueError(f"{path}: its feature columns ({', '.join(table.feature_names)}) are not the model's "
                         f"({trained})")
    classes = model.classes if model.classes is not None else np.arange(model.n_classes)
    return table.X, encode_labels(table.labels, classes, path), [str(c) for c in classes.tolist()]


def run(args: argparse.Namespace) -> tuple[float, npt.NDArray[np.int64]]:
    """Load the model and the test set, print the report, draw the plot; returns (accuracy, matrix)."""
    model = MLP.load(args.model)
    if args.data is not None:
        X_test, y_test, class_names = own_test_data(model, args.data, args.target)
        name = str(args.data)
    else:
        _, _, X_test, y_test = load_mnist(args.data_dir, download=not args.no_download, dataset=args.dataset)
        class_names, name = CLASS_NAMES[args.dataset], f"{args.dataset} test"
        if model.n_features != X_test.shape[1] or model.n_classes != len(class_names):
            raise ValueError(f"model {args.model} ({'-'.join(map(str, model.layer_sizes))}) does not fit "
                             f"{args.dataset}: it has {X_test.shape[1]} inputs and {len(class_names)} classes")
    # Both apply the model's standardisation, if it has one: the loss as training reported it, the
    # predictions as `predict_proba` makes them.
    loss, accuracy = Trainer(model, "numpy").evaluate(model.standardize(X_test), y_test)
    matrix = confusion_matrix(y_test, model.predict_proba(X_test).argmax(axis=1), model.n_classes)
    print(f"model {args.model} ({'-'.join(map(str, model.layer_sizes))}) on {name}, {len(y_test):,} samples")
    print(f"test accuracy {100 * accuracy:.2f}%  (loss {loss:.4f})\n")
    print("\n".join(format_report(matrix, class_names)))
    if args.plot:
        from .plot import plot_confusion_matrix

        plot_confusion_matrix(matrix, args.plot, class_names=class_names,
                              title=f"{name}: accuracy {100 * accuracy:.2f}%")
        print(f"\nconfusion matrix drawn in {args.plot}")
    return accuracy, matrix


def main(argv: Sequence[str] | None = None, *, prog: str = PROG) -> int:
    parser = build_parser(prog)
    args = parser.parse_args(argv)
    if args.data is not None and (args.data_dir is not None or args.no_download or args.dataset != "mnist"):
        parser.error("--dataset, --data-dir and --no-download choose an MNIST-style dataset; --data tests on your "
                     "file instead: give one or the other")
    if args.target is not None and args.data is None:
        parser.error("--target goes with --data PATH (your own CSV file)")

    def check_output_then_run() -> None:
        check_output_path(args.plot, "--plot")
        if args.plot:
            require_plotting(args.plot)
        run(args)

    return run_reporting_errors(prog, check_output_then_run, debug=args.debug)


if __name__ == "__main__":
    sys.exit(main())
