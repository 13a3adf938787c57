"""The user's own data: a CSV file with a header row, or an `.npz` holding arrays `X` and `y`.

    load_table(path, target=None)   -> Table: float32 features, the labels as the file spells them
    load_features(path, ...)        -> float32 features only, for predictions (CSV, .npz or .npy)
    encode_labels(labels, classes)  -> class indices 0..k-1, the order of `classes`

A CSV is read in three passes over the file and never held as text or as Python objects: the
first (Python, one line at a time) checks that every row has as many fields as the header; the
second and third are NumPy's C parser (`np.loadtxt`), which writes the feature columns straight into
one float32 array that grows by chunks, then the label column into an array of its own. The peak
memory is the float32 features and the labels, plus a chunk of the parser's. Only when the parser
fails is the file read once more, in Python, to name the column and line of the first bad value.

Every error is a `TableError` (a ValueError) whose one-line message starts with the file's path,
so that the command line can print it as it is.
"""

from __future__ import annotations

import csv
import io
import os
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from ..inputs import FloatArray, all_finite

PathLike = str | os.PathLike[str]

# What `fastmlp predict` and `load_features` read as feature rows (images are the CLI's own).
FEATURE_SUFFIXES = (".csv", ".npz", ".npy")


class TableError(ValueError):
    """A data file that cannot be used: empty, ragged, non-numeric features, NaN, one class only..."""


@dataclass(frozen=True)
class Table:
    """Features (float32, C-contiguous, finite), labels as read (int64, float64 or str, one per row),
    the feature column names (X0, X1, ... for an .npz) and the target column's name (None for an .npz)."""

    X: FloatArray
    labels: np.ndarray
    feature_names: tuple[str, ...]
    target: str | None


# --- public entry points -----------------------------------------------------------------------


def load_table(path: PathLike, target: str | None = None) -> Table:
    """Features and labels from a CSV with a header row (target: the label column's name, default the
    last column) or an .npz with arrays X (n, features) and y (n,). Raises TableError naming the file."""
    path = _existing_file(path)
    if path.suffix.lower() == ".npy":
        raise TableError(f"{path}: an .npy file holds one array, so no labels; give a CSV with a label column, or "
                         f"an .npz holding X and y (np.savez(path, X=X, y=y))")
    if path.suffix.lower() == ".npz":
        if target is not None:
            raise TableError(f"{path}: --target names a CSV column; an .npz file holds its labels in array 'y'")
        return _load_npz(path)
    return _load_csv(path, target)


def load_features(path: PathLike, n_features: int, feature_names: Sequence[str] | None = None) -> FloatArray:
    """Feature rows from a CSV (header row; the model's feature columns picked by name when it knows them,
    so a label column is ignored), an .npz (its array X) or an .npy (rows, or one row), as float32."""
    path = _existing_file(path)
    suffix = path.suffix.lower()
    if suffix in (".npz", ".npy"):
        X = _numeric_array(_read_npy_or_npz(path, "X" if suffix == ".npz" else None), path, "X")
        if X.ndim == 1 and X.size == n_features:
            X = X.reshape(1, n_features)
        if X.ndim != 2 or X.shape[1] != n_features:
            raise TableError(f"{path}: the model takes rows of {n_features} features, got an array of shape {X.shape}")
        X = np.ascontiguousarray(X, dtype=np.float32)
        _check_finite(X, path, None)
        return X
    names = _header(path)
    if feature_names is not None and all(name in names for name in feature_names):
        columns = [names.index(name) for name in feature_names]
    elif len(names) == n_features:
        columns = list(range(n_features))
    else:
        wanted = f"the columns {', '.join(feature_names)}" if feature_names else f"{n_features} columns"
        raise TableError(f"{path}: the model takes {wanted}; the file has {len(names)}: {', '.join(names)}")
    _check_rows(path, len(names))
    return _read_features(path, names, columns)


def encode_labels(labels: np.ndarray, classes: np.ndarray, path: PathLike | None = None) -> npt.NDArray[np.int64]:
    """Each label's index in classes (sorted, as np.unique gives them); raises TableError, naming path, for a
    label that is not one of them."""
    where = f"{path}: " if path is not None else ""
    if classes.dtype.kind == "U":
        labels = labels.astype(str)  # "3" in a file of words matches the class "3"
    elif labels.dtype.kind == "U":
        raise TableError(f"{where}labels are words ({labels[0].item()!r}, ...) but the model's classes are numbers: "
                         f"{', '.join(map(str, classes[:20].tolist()))}")
    index = np.searchsorted(classes, labels)
    index = np.minimum(index, len(classes) - 1)
    unknown = classes[index] != labels
    if unknown.any():
        first = int(np.argmax(unknown))
        raise TableError(f"{where}label {labels[first].item()!r} (row {first + 1}) is not one of the model's "
                         f"classes: {', '.join(map(str, classes[:20].tolist()))}"
                         f"{' ...' if len(classes) > 20 else ''}")
    return index.astype(np.int64)


def class_labels(labels: np.ndarray, path: PathLike) -> np.ndarray:
    """The sorted distinct labels; raises TableError when there is only one (nothing to classify)."""
    classes = np.unique(labels)
    if len(classes) < 2:
        raise TableError(f"{path}: every row has the label {classes[0].item()!r}: "
                         "a classifier needs at least 2 classes")
    return classes


# --- CSV ---------------------------------------------------------------------------------------


def _load_csv(path: Path, target: str | None) -> Table:
    names = _header(path)
    if len(names) < 2:
        raise TableError(f"{path}: the header has {len(names)} column ({', '.join(names)}); a table needs at least "
                         f"one feature column and a label column")
    if target is None:
        t = len(names) - 1
    elif target in names:
        t = names.index(target)
    else:
        raise TableError(f"{path}: no column {target!r} for --target; the columns are: {', '.join(names)}")
    _check_rows(path, len(names))
    columns = [i for i in range(len(names)) if i != t]
    X = _read_features(path, names, columns)
    raw = _loadtxt(path, usecols=[t], dtype=str, ndmin=1)
    labels = _typed_labels(np.char.strip(raw), path, names[t])
    return Table(X, labels, tuple(names[i] for i in columns), names[t])


def _header(path: Path) -> list[str]:
    """The header row's column names; raises TableError for an empty file or a header without data rows."""
    with open(path, encoding="utf-8-sig", newline="") as f:
        first = f.readline()
        if not first.strip():
            raise TableError(f"{path}: the file is empty; expected a header row, then one row per sample")
        names = [name.strip() for name in next(csv.reader([first]))]
        if not any(line.strip() for line in _take(f, 1)):
            raise TableError(f"{path}: a header row ({', '.join(names)}) but no data rows")
    if len(set(names)) != len(names):
        repeated = sorted({name for name in names if names.count(name) > 1})
        raise TableError(f"{path}: the header names column {', '.join(map(repr, repeated))} more than once")
    return names


def _take(f: io.TextIOBase, count: int) -> Iterator[str]:
    """The next lines of f up to the first non-blank one, at most `count` non-blank ones."""
    for line in f:
        yield line
        if line.strip():
            count -= 1
            if count == 0:
                return


def _check_rows(path: Path, n_columns: int) -> None:
    """Raise TableError at the first data row with a field count other than the header's (blank lines
    are skipped, as the parser skips them). One line in memory at a time."""
    expected_commas = n_columns - 1
    with open(path, encoding="utf-8-sig", newline="") as f:
        f.readline()
        for number, line in enumerate(f, start=2):
            if '"' in line:  # quoted fields may hold commas: count the fields properly
                count = len(next(csv.reader([line]))) if line.strip() else n_columns
            elif line.count(",") == expected_commas or not line.strip():
                continue
            else:
                count = line.count(",") + 1
            if count != n_columns:
                raise TableError(f"{path}: line {number} has {count} fields but the header has {n_columns}")


def _read_features(path: Path, names: list[str], columns: list[int]) -> FloatArray:
    """The given columns as one float32 (n, len(columns)) array, finite; errors name the column and line."""
    try:
        X = _loadtxt(path, usecols=columns, dtype=np.float32, ndmin=2)
    except ValueError:
        _raise_first_non_number(path, names, columns)
        raise
    X = np.ascontiguousarray(X)
    _check_finite(X, path, [names[i] for i in columns])
    return X


def _loadtxt(path: Path, **kwargs: Any) -> np.ndarray:
    """NumPy's C CSV parser on the data rows: no comment character (a '#' may be in a label), '"' quotes."""
    with warnings.catch_warnings():  # NumPy's note that blank lines do not count as rows: they never do here
        warnings.simplefilter("ignore", UserWarning)
        return np.loadtxt(path, delimiter=",", skiprows=1, comments=None, quotechar='"', encoding="utf-8-sig",
                          **kwargs)


def _raise_first_non_number(path: Path, names: list[str], columns: list[int]) -> None:
    """Find the first feature field that is not a number (read again, in Python) and raise TableError on it."""
    row = 0
    with open(path, encoding="utf-8-sig", newline="") as f:
        f.readline()
        for number, line in enumerate(f, start=2):
            if not line.strip():
                continue
            row += 1
            fields = next(csv.reader([line]))
            for i in columns:
                text = fields[i].strip() if i < len(fields) else ""
                try:
                    float(text)
                except ValueError:
                    what = "an empty field (a missing value)" if not text else f"{text!r}, not a number"
                    raise TableError(f"{path}: column {names[i]!r}, line {number} (row {row}): {what}; feature "
                                     f"columns must be numbers (give the label column with --target)") from None


def _typed_labels(raw: np.ndarray, path: Path, column: str) -> np.ndarray:
    """Labels as int64 when every one is an integer, float64 when every one is a number, else str."""
    if (raw == "").any():
        row = int(np.argmax(raw == ""))
        raise TableError(f"{path}: column {column!r}, row {row + 1}: an empty label")
    for dtype in (np.int64, np.float64):
        try:
            labels = raw.astype(dtype)
        except (ValueError, OverflowError):
            continue
        if dtype is np.float64:
            if not np.isfinite(labels).all():
                row = int(np.argmax(~np.isfinite(labels)))
                raise TableError(f"{path}: column {column!r}, row {row + 1}: label {str(raw[row])!r} is NaN or inf")
            if (labels == np.round(labels)).all():
                labels = labels.astype(np.int64)  # "1.0", "2.0": the integers they spell
        return labels
    return raw.astype(str)


# --- .npz / .npy -------------------------------------------------------------------------------


def _load_npz(path: Path) -> Table:
    X = _numeric_array(_read_npy_or_npz(path, "X"), path, "X")
    y = _read_npy_or_npz(path, "y")
    if X.ndim != 2:
        raise TableError(f"{path}: X must be 2-D (samples, features), got shape {X.shape}")
    if y.ndim != 1 or len(y) != len(X):
        raise TableError(f"{path}: y must be 1-D with one label per row of X ({len(X)}), got shape {y.shape}")
    if len(X) == 0 or X.shape[1] == 0:
        raise TableError(f"{path}: X of shape {X.shape} holds no data")
    if y.dtype.kind in "iub":
        labels = y.astype(np.int64)
    elif y.dtype.kind == "f":
        if not np.isfinite(y).all():
            raise TableError(f"{path}: y, row {int(np.argmax(~np.isfinite(y))) + 1}: a label is NaN or inf")
        labels = y.astype(np.int64) if (y == np.round(y)).all() else y.astype(np.float64)
    elif y.dtype.kind in "US":
        labels = y.astype(str)
    else:
        raise TableError(f"{path}: y must hold numbers or strings, got dtype {y.dtype}")
    X = np.ascontiguousarray(X, dtype=np.float32)
    _check_finite(X, path, None)
    return Table(X, labels, tuple(f"X{j}" for j in range(X.shape[1])), None)


def _read_npy_or_npz(path: Path, key: str | None) -> np.ndarray:
    try:
        if key is None:
            return np.load(path, allow_pickle=False)
        with np.load(path, allow_pickle=False) as npz:
            if not hasattr(npz, "files"):
                raise TableError(f"{path}: expected an .npz archive holding X and y, found a single array")
            if key not in npz.files:
                raise TableError(f"{path}: no array {key!r} (it holds {', '.join(npz.files) or 'nothing'}); "
                                 f"an .npz of data holds X (samples, features) and y (labels)")
            return npz[key]
    except TableError:
        raise
    except ValueError as exc:
        if "pickle" in str(exc).lower():
            raise TableError(f"{path}: holds Python objects (pickled); save plain numeric or string arrays") from None
        raise TableError(f"{path}: not a readable NumPy file ({exc})") from None
    except (OSError, EOFError) as exc:
        raise TableError(f"{path}: not a readable NumPy file ({exc})") from None


def _numeric_array(a: np.ndarray, path: Path, name: str) -> np.ndarray:
    if a.dtype.kind not in "iubf":
        raise TableError(f"{path}: {name} must hold numbers, got dtype {a.dtype}")
    return a


# --- shared checks -----------------------------------------------------------------------------


def _existing_file(path: PathLike) -> Path:
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file")
    if path.is_dir():
        raise IsADirectoryError(f"{path} is a folder, not a data file")
    if path.stat().st_size == 0:
        raise TableError(f"{path}: the file is empty")
    return path


def _check_finite(X: FloatArray, path: Path, names: Sequence[str] | None) -> None:
    """Raise TableError at the first NaN or inf (values beyond float32's range parse as inf)."""
    if len(X) == 0:
        raise TableError(f"{path}: no data rows")
    if all_finite(X):  # one pass; the blocks below only look for where
        return
    # np.isfinite over the whole array would take a bool copy of it; one row block at a time takes little.
    step = max(1, (1 << 22) // max(1, X.shape[1]))
    for start in range(0, len(X), step):
        block = X[start : start + step]
        if not np.isfinite(block).all():
            row, col = (int(i) for i in np.argwhere(~np.isfinite(block))[0])
            row += start
            value = block[row - start, col]
            where = (f"column {names[col]!r}, row {row + 1}" if names is not None
                     else f"X row {row + 1}, column {col + 1}")
            raise TableError(f"{path}: {where}: {value} (NaN and inf cannot be trained on)")


def hold_out(X: FloatArray, y: np.ndarray, fraction: float, seed: int | None) -> tuple[FloatArray, np.ndarray,
                                                                                    FloatArray, np.ndarray]:
    """(X_train, y_train, X_test, y_test): a random `fraction` of the rows held out, each part in file order.

    The rows are drawn as `fastmlp.datasets.train_val_split` draws them, but X's training rows are moved
    to its front in place, block by block, and X_train is a view of them: only the held-out rows are
    copied, never the whole table.
    """
    from ..inputs import make_rng
    from . import _validation_count

    n_test = _validation_count(fraction, len(X))
    permutation = make_rng(seed).permutation(len(X))
    test_idx, train_idx = np.sort(permutation[:n_test]), np.sort(permutation[n_test:])
    X_test, y_test = X[test_idx], y[test_idx]
    # train_idx rises and train_idx[i] >= i, so writing row i never overwrites a row still to be read.
    step = max(1, (1 << 20) // max(1, X.shape[1]))
    for start in range(0, len(train_idx), step):
        rows = train_idx[start : start + step]
        X[start : start + len(rows)] = X[rows]
    return X[: len(train_idx)], y[train_idx], X_test, y_test


def mean_and_std(X: FloatArray) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """Each column's mean and standard deviation, summed in float64 one block of rows at a time (no copy of X)."""
    step = max(1, (1 << 20) // max(1, X.shape[1]))
    total = np.zeros(X.shape[1])
    for start in range(0, len(X), step):
        total += X[start : start + step].sum(axis=0, dtype=np.float64)
    mean = total / len(X)
    squares = np.zeros(X.shape[1])
    for start in range(0, len(X), step):
        squares += ((X[start : start + step] - mean) ** 2).sum(axis=0)
    return mean, np.sqrt(squares / len(X))


def standardize_in_place(X: FloatArray, mean: npt.ArrayLike, std: npt.ArrayLike) -> None:
    """X = (X - mean) / std in float32, in place, as `MLP.standardize` computes it (std 0 counts as 1)."""
    mean32 = np.asarray(mean, dtype=np.float32)
    std32 = np.array(std, dtype=np.float32)
    std32[std32 == 0] = 1
    X -= mean32
    X /= std32


def describe_shape(table: Table) -> str:
    """'1,000 rows, 4 features, 3 classes' for messages."""
    k = len(np.unique(table.labels))
    return f"{len(table.X):,} rows, {table.X.shape[1]} features, {k} classes"


__all__ = ["FEATURE_SUFFIXES", "Table", "TableError", "class_labels", "describe_shape", "encode_labels",
           "hold_out", "load_features", "load_table", "mean_and_std", "standardize_in_place"]
