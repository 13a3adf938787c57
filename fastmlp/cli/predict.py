"""`python -m fastmlp.predict --model PATH INPUT...`: the predicted class of every row or image in INPUT, and its
probability.

INPUT is a CSV (header row), .npz (array X) or .npy of feature rows, for a model trained on your own data
(`fastmlp train --data`): the class printed is the label the training file used, and a CSV's columns are
picked by the names the model was trained on. For an image model INPUT is an IDX image file
(as in the datasets, gzipped or not), a `.npy` array or an image file
(PNG, read with Pillow from the `plot` extra). Pixels get the training scaling: uint8 values
times 1/255, so 0 is black background and 255 the white ink of an MNIST digit. An image file is
turned to grayscale and resized to the model's input square (28x28 for MNIST); `--invert` turns
black ink on white paper into MNIST's white on black.
"""

import argparse
import math
import os
import sys
import zipfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..datasets import DatasetError, read_idx
from ..datasets.tabular import TableError, load_features
from ..inputs import FloatArray, Pixels
from ..model import MLP
from .common import new_parser, run_reporting_errors
from .plot import INSTALL_HINT

PROG = "python -m fastmlp.predict"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")
ACCEPTED = ("predict reads a CSV (header row), .npz (array X) or .npy of feature rows, or images: an IDX file "
            "(as in MNIST, gzipped or not), a .npy of pixels, or an image file (" +
            ", ".join(suffix[1:].upper() for suffix in IMAGE_SUFFIXES[:4]) + ", ...)")


def is_image_model(model: MLP) -> bool:
    """Whether model was trained on images (MNIST-style pixels): it keeps no labels, columns or standardisation."""
    return model.classes is None and model.feature_names is None and model.mean is None


def load_input(path: str | os.PathLike[str], model: MLP, *, invert: bool = False) -> FloatArray:
    """The rows of one INPUT as the model takes them: feature rows from a CSV / .npz (/ .npy for a model trained
    on its own data), images otherwise. Errors name the file and, for a file of an unknown kind, list what
    predict reads."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"INPUT {path}: no such file ({ACCEPTED})")
    if path.is_dir():
        raise IsADirectoryError(f"INPUT {path} is a folder, not a file ({ACCEPTED})")
    suffix = path.suffix.lower()
    if suffix == ".npz" and _is_model_file(path):
        raise ValueError(f"INPUT {path} is a fastmlp model, not data: a model goes after --model ({ACCEPTED})")
    try:
        if suffix in (".csv", ".npz") or (suffix == ".npy" and not is_image_model(model)):
            if invert:
                raise ValueError("--invert is for images; this file holds feature rows")
            return load_features(path, model.n_features, model.feature_names)
        return load_images(path, model.n_features, invert=invert)
    except (DatasetError, TableError) as exc:  # not an IDX file, not a data file: say what predict reads
        raise ValueError(f"{exc} ({ACCEPTED})") from None


def _is_model_file(path: Path) -> bool:
    """Whether path is an .npz archive holding a model's layer_sizes entry (`MLP.save`'s file)."""
    try:
        with zipfile.ZipFile(path) as archive:
            return "layer_sizes.npy" in archive.namelist()
    except (OSError, zipfile.BadZipFile):
        return False


def load_images(path: str | os.PathLike[str], n_features: int, *, invert: bool = False) -> FloatArray:
    """The images in path as float32 (n, n_features) features scaled like the training data.

    .npy: uint8 pixels (scaled by 1/255) or floats already in [0, 1], one image per row or
    (n, side, side); an image file: one image; anything else is read as an IDX file.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".npy":
        array = np.load(path, allow_pickle=False)
    elif suffix in IMAGE_SUFFIXES:
        array = _read_image(path, n_features)
    else:
        array = read_idx(path)
    if array.dtype == np.bool_ or not (np.issubdtype(array.dtype, np.integer)
                                       or np.issubdtype(array.dtype, np.floating)):
        raise TypeError(f"{path}: expected pixel values, got an array of dtype {array.dtype}")
    rows = _as_rows(array, n_features, path)
    if rows.dtype == np.uint8:
        return Pixels(255 - rows if invert else rows).to_float32()
    if np.issubdtype(rows.dtype, np.integer):
        raise TypeError(f"{path}: integer pixels must be uint8 (0-255), got {rows.dtype}")
    with np.errstate(over="ignore"):  # a float64 beyond float32's range becomes inf, refused just below
        features = rows.astype(np.float32)
    # NaN fails both comparisons (min and max propagate it), and inf or -inf fails one: no separate finite test.
    if not (features.min() >= 0 and features.max() <= 1):
        raise ValueError(f"{path}: float pixels must lie in [0, 1], the training scale "
                         f"(save uint8 pixels to have them scaled by 1/255)")
    return 1 - features if invert else features


def _as_rows(array: np.ndarray, n_features: int, path: Path) -> np.ndarray:
    """array as (n, n_features): one flat image, rows already, or (side, side) images."""
    side = _side(n_features)
    if array.ndim == 1 and array.size == n_features:
        return array.reshape(1, n_features)
    if array.ndim == 2 and array.shape[1] == n_features:
        return array
    if array.ndim in (2, 3) and side is not None and array.shape[-2:] == (side, side):
        return array.reshape(-1, n_features)
    square = f", or (n, {side}, {side})" if side else ""
    raise ValueError(f"{path}: expected images of {n_features} pixels (rows of {n_features}{square}), "
                     f"got shape {array.shape}")


def _side(n_features: int) -> int | None:
    side = math.isqrt(n_features)
    return side if side * side == n_features else None


def _read_image(path: Path, n_features: int) -> np.ndarray:
    """One image file as a uint8 (side, side) grayscale array, resized to the model's input square."""
    side = _side(n_features)
    if side is None:
        raise ValueError(f"{path}: the model's {n_features} inputs are not a square image")
    try:
        from PIL import Image
    except ImportError:
        raise ImportError(f"reading {path.suffix} images needs Pillow, "
                          f"which is not installed: {INSTALL_HINT}") from None
    with Image.open(path) as image:
        gray = image.convert("L")
        if gray.size != (side, side):
            gray = gray.resize((side, side), Image.Resampling.LANCZOS)
        return np.asarray(gray, dtype=np.uint8)


def build_parser(prog: str = PROG) -> argparse.ArgumentParser:
    parser = new_parser(
        prog, description="Predict the class of each row of a data file, or of each image, with a saved fastmlp "
                          "model.",
        epilog="Pixels are scaled like the training data: uint8 / 255, white digit on a black background "
               "as in MNIST. Image files are turned to grayscale and resized to 28x28.",
    )
    parser.add_argument("--model", required=True, metavar="PATH", help="a model written by --save (.npz)")
    parser.add_argument("inputs", nargs="+", metavar="INPUT",
                        help="a CSV, .npz or .npy of feature rows (a model trained with --data), or images: an IDX "
                             "file, a .npy array or a PNG")
    parser.add_argument("--invert", action="store_true",
                        help="invert the pixels first: for dark digits on a light background")
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error")
    return parser


def run(args: argparse.Namespace) -> list[np.ndarray]:
    """Print 'INPUT[row]  class C  probability P' per row or image (C: the model's label for the class, when it
    has labels); returns the predicted class indices per input."""
    model = MLP.load(args.model)
    predictions = []
    for name in args.inputs:
        X = load_input(name, model, invert=args.invert)
        probs = model.predict_proba(X)
        classes = probs.argmax(axis=1)
        labels = classes if model.classes is None else model.classes[classes]
        for row, (c, p) in enumerate(zip(labels.tolist(), probs[np.arange(len(probs)), classes])):
            where = name if len(X) == 1 else f"{name}[{row}]"
            print(f"{where}  class {c}  probability {p:.4f}")
        predictions.append(classes)
    return predictions


def main(argv: Sequence[str] | None = None, *, prog: str = PROG) -> int:
    args = build_parser(prog).parse_args(argv)
    return run_reporting_errors(prog, lambda: run(args), debug=args.debug)


if __name__ == "__main__":
    sys.exit(main())
