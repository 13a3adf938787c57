"""The MLP's parameters: initialisation, prediction, save and load. No training maths here."""

from __future__ import annotations

import math
import numbers
import os
import zipfile
import zlib
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from numpy.lib import format as npy_format

from .inputs import Features, FloatArray, Pixels, Seed, check_features, check_model, make_rng
from .runtime.aligned import aligned_copy, aligned_zeros, on_cache_line
from .runtime.atomic import atomic_write

INITS = ("he", "normal")

# The model file's layout (see `MLP.save`). Version 1 (no "format_version" entry) held the layers only;
# version 2 adds the optional class labels, standardisation and column names. A reader refuses versions
# it does not know, so that a newer file is never half-read.
FORMAT_VERSION = 2
_OPTIONAL_ENTRIES = ("classes", "mean", "std", "feature_names", "target")


_inference_module: Any = None


def _inference() -> Any:
    """fastmlp.inference, imported at the first prediction (it loads Numba, which `import fastmlp` does not)."""
    global _inference_module
    if _inference_module is None:
        from . import inference

        _inference_module = inference
    return _inference_module


class ModelFileError(ValueError):
    """A model file that is missing pieces, corrupt, pickled or inconsistent."""


class MLP:
    """A multilayer perceptron: ReLU hidden layers, a softmax output.

    `weights[i]` has shape (fan_in, fan_out) and `biases[i]` shape (fan_out,), float32,
    C-contiguous and writable. Backends update these very arrays in place.

    What a model trained on the user's own data also carries, each None when absent (the net then
    works on features as given, and predicts class indices):
    classes        the label of each output, sorted (int64, float64 or str): `predict` returns them;
    mean, std      float32 (n_features,): `predict_proba` and `predict` standardise X as (X - mean) / std
                   first (the backends and `Trainer` see features already standardised);
    feature_names  the training file's feature columns, and target its label column's name.
    """

    classes: np.ndarray | None = None
    mean: FloatArray | None = None
    std: FloatArray | None = None
    feature_names: tuple[str, ...] | None = None
    target: str | None = None

    def __init__(self, layer_sizes: Iterable[int], *, init: str = "he", seed: Seed = None) -> None:
        self.layer_sizes: tuple[int, ...] = _check_layer_sizes(layer_sizes)
        if not isinstance(init, str) or init not in INITS:
            raise ValueError(f"init must be one of {INITS}, got {init!r}")
        rng = make_rng(seed)
        self.weights: list[FloatArray] = []
        self.biases: list[FloatArray] = []
        for fan_in, fan_out in zip(self.layer_sizes[:-1], self.layer_sizes[1:]):
            std = np.sqrt(2.0 / fan_in) if init == "he" else 0.01
            W = rng.standard_normal((fan_in, fan_out), dtype=np.float32) * np.float32(std)
            self.weights.append(aligned_copy(W))  # on a cache line: see fastmlp/runtime/aligned.py
            self.biases.append(aligned_zeros(fan_out))

    def __setstate__(self, state: dict[str, Any]) -> None:
        """Unpickling (pickle, joblib, a process pool): the arrays back on cache lines, as `__init__` makes them
        (see fastmlp/runtime/aligned.py). Memory-mapped or read-only arrays (joblib's mmap_mode) are kept as
        they come: a copy would undo what the caller asked for."""
        self.__dict__.update(state)
        for arrays in (getattr(self, "weights", None), getattr(self, "biases", None)):
            if type(arrays) is list:
                arrays[:] = [aligned_copy(a) if _plain_off_line(a) else a for a in arrays]

    @property
    def n_features(self) -> int:
        return self.layer_sizes[0]

    @property
    def n_classes(self) -> int:
        return self.layer_sizes[-1]

    def __repr__(self) -> str:
        return f"MLP({list(self.layer_sizes)})"

    def predict_proba(self, X: Features, *, batch_size: int = 4096) -> FloatArray:
        """Class probabilities, float32 (n, classes), by fastmlp.inference: off `weights` as they are (edits
        in place count), safe from many threads, a row's bits independent of its batch and position.
        batch_size is checked but no longer needed: memory grows with the output alone."""
        if self.mean is not None:  # the model's standardisation first: the net was trained on (X - mean) / std
            X = self.standardize(check_features(X, self.n_features))
        return _inference().predict_proba(self, X, batch_size)

    def predict(self, X: Features) -> np.ndarray:
        """Predicted class per row (n,): its label from `classes` when the model has them, else its index (int64)."""
        index = self.predict_proba(X).argmax(axis=1)
        return index if self.classes is None else self.classes[index]

    def standardize(self, X: FloatArray | Pixels) -> FloatArray | Pixels:
        """X as the net's first layer takes it: (X - mean) / std in float32 when the model standardises, else X."""
        if self.mean is None or self.std is None:
            return X
        if isinstance(X, Pixels):
            X = X.to_float32()
        return np.divide(X - self.mean, self.std, dtype=np.float32)

    def set_standardization(self, mean: npt.ArrayLike, std: npt.ArrayLike) -> None:
        """Keep (X - mean) / std as the first step of every prediction; std 0 (a constant feature) counts as 1."""
        mean = np.ascontiguousarray(mean, dtype=np.float32)
        std = np.array(std, dtype=np.float32)
        if mean.shape != (self.n_features,) or std.shape != (self.n_features,):
            raise ValueError(f"mean and std must have shape ({self.n_features},), got {mean.shape} and {std.shape}")
        if not (np.isfinite(mean).all() and np.isfinite(std).all() and (std >= 0).all()):
            raise ValueError("mean and std must be finite, and std >= 0")
        std[std == 0] = 1
        self.mean, self.std = mean, std

    def copy(self) -> MLP:
        """An independent copy of this model."""
        other = MLP.__new__(MLP)
        other.layer_sizes = self.layer_sizes
        other.weights = [aligned_copy(W) for W in self.weights]
        other.biases = [aligned_copy(b) for b in self.biases]
        for name in _OPTIONAL_ENTRIES:
            value = getattr(self, name)
            setattr(other, name, value.copy() if isinstance(value, np.ndarray) else value)
        return other

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the model to an `.npz` file (no pickled objects), atomically.

        The file's entries, each a plain array (any tool with an .npz reader can use them):
        format_version  int64 scalar, 2 (files without it are version 1: layer entries only)
        layer_sizes     int64 (L+1,): inputs, hidden widths, classes
        W{i}, b{i}      float32 (fan_in, fan_out) and (fan_out,) for layer i = 0..L-1; the net is
                        softmax(relu(...relu(X @ W0 + b0)...) @ W{L-1} + b{L-1})
        classes         optional, (classes,) int64, float64 or unicode: the label of each output, sorted
        mean, std       optional, float32 (inputs,): X is replaced by (X - mean) / std first
        feature_names   optional, unicode (inputs,): the training file's feature columns
        target          optional, unicode scalar: the training file's label column
        """
        check_model(self, writable=False)
        path = _check_path(path)
        for name, a in [(f"weights[{i}]", W) for i, W in enumerate(self.weights)] + \
                       [(f"biases[{i}]", b) for i, b in enumerate(self.biases)]:
            if not np.isfinite(a).all():  # MLP.load would refuse the file
                raise ValueError(f"model.{name} contains NaN or inf; such a model is not saved")
        arrays: dict[str, Any] = {"format_version": np.int64(FORMAT_VERSION),
                                  "layer_sizes": np.asarray(self.layer_sizes, dtype=np.int64)}
        for i, (W, b) in enumerate(zip(self.weights, self.biases)):
            arrays[f"W{i}"] = W
            arrays[f"b{i}"] = b
        extras = _extras_as_arrays(self)
        _check_extras(extras, self.layer_sizes, "model")
        arrays.update(extras)
        with atomic_write(path) as f:
            np.savez(f, **arrays)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> MLP:
        """Read a model written by `save`; raise ModelFileError on anything unexpected."""
        path = _check_path(path)
        if not path.is_file():
            raise FileNotFoundError(f"model file not found: {path}")
        try:
            _check_declared_sizes(path)
            with np.load(path, allow_pickle=False) as npz:
                arrays = {name: npz[name] for name in npz.files}
        except _UNREADABLE as exc:
            raise ModelFileError(f"{path} is not a readable fastmlp model (.npz): {exc}") from None
        return cls._from_arrays(arrays, path)

    @classmethod
    def _from_arrays(cls, arrays: dict[str, np.ndarray], path: Path) -> MLP:
        if "layer_sizes" not in arrays:
            raise ModelFileError(f"{path} has no 'layer_sizes' entry: not a fastmlp model")
        sizes = arrays["layer_sizes"]
        if sizes.ndim != 1 or not np.issubdtype(sizes.dtype, np.integer):
            raise ModelFileError(f"{path}: 'layer_sizes' must be a 1-D integer array")
        try:
            layer_sizes = _check_layer_sizes(sizes.tolist())
        except ValueError as exc:
            raise ModelFileError(f"{path}: {exc}") from None
        version = arrays.pop("format_version", np.int64(1))
        if version.shape != () or version.dtype.kind not in "iu" or int(version) not in (1, FORMAT_VERSION):
            raise ModelFileError(f"{path}: model file format {version!r}; this fastmlp reads formats 1 and "
                                 f"{FORMAT_VERSION} (a newer fastmlp wrote it? upgrade fastmlp)")
        n_layers = len(layer_sizes) - 1
        expected = {"layer_sizes"} | {f"W{i}" for i in range(n_layers)} | {f"b{i}" for i in range(n_layers)}
        extras = {name: arrays.pop(name) for name in _OPTIONAL_ENTRIES if name in arrays and int(version) >= 2}
        if set(arrays) != expected:
            missing, extra = sorted(expected - set(arrays)), sorted(set(arrays) - expected)
            raise ModelFileError(f"{path}: entries do not match layer_sizes (missing {missing}, unexpected {extra})")
        _check_extras(extras, layer_sizes, str(path), error=ModelFileError)
        model = cls.__new__(cls)
        model.layer_sizes = layer_sizes
        model.weights, model.biases = [], []
        for i, (fan_in, fan_out) in enumerate(zip(layer_sizes[:-1], layer_sizes[1:])):
            for name, shape, dest in ((f"W{i}", (fan_in, fan_out), model.weights), (f"b{i}", (fan_out,), model.biases)):
                a = arrays[name]
                if a.dtype != np.float32 or a.shape != shape:
                    raise ModelFileError(f"{path}: {name} must be float32 {shape}, got {a.dtype} {a.shape}")
                if not np.isfinite(a).all():
                    raise ModelFileError(f"{path}: {name} contains NaN or inf")
                dest.append(aligned_copy(a, np.float32))
        if "classes" in extras:
            model.classes = extras["classes"]
        if "mean" in extras:
            model.mean, model.std = (np.array(extras[k], dtype=np.float32, order="C") for k in ("mean", "std"))
        if "feature_names" in extras:
            model.feature_names = tuple(str(name) for name in extras["feature_names"])
        if "target" in extras:
            model.target = str(extras["target"])
        return model


def _extras_as_arrays(model: MLP) -> dict[str, np.ndarray]:
    """The model's optional attributes that are set, as the arrays `save` writes."""
    extras: dict[str, np.ndarray] = {}
    if model.classes is not None:
        classes = np.asarray(model.classes)
        extras["classes"] = classes.astype(str) if classes.dtype.kind in "USO" else classes
    if model.mean is not None or model.std is not None:
        extras["mean"], extras["std"] = np.asarray(model.mean), np.asarray(model.std)
    if model.feature_names is not None:
        extras["feature_names"] = np.asarray([str(name) for name in model.feature_names], dtype=str)
    if model.target is not None:
        extras["target"] = np.asarray(str(model.target))
    return extras


def _check_extras(extras: dict[str, np.ndarray], layer_sizes: tuple[int, ...], where: str,
                  error: type[ValueError] = ValueError) -> None:
    """Raise error (naming where) unless the optional entries fit the net: classes one per output, sorted
    and distinct; mean and std both or neither, float32 per input, finite, std > 0; names one per input."""
    n_in, n_out = layer_sizes[0], layer_sizes[-1]
    classes = extras.get("classes")
    if classes is not None:
        if classes.shape != (n_out,) or classes.dtype.kind not in "iufU":
            raise error(f"{where}: classes must be {n_out} numbers or strings, got {classes.dtype} {classes.shape}")
        if classes.dtype.kind == "f" and not np.isfinite(classes).all():
            raise error(f"{where}: classes contains NaN or inf")
        if n_out > 1 and not (classes[1:] > classes[:-1]).all():
            raise error(f"{where}: classes must be sorted and distinct (as np.unique gives them)")
    if ("mean" in extras) != ("std" in extras):
        raise error(f"{where}: mean and std go together; only one of them is set")
    for name in ("mean", "std"):
        if name in extras:
            a = extras[name]
            if a.dtype != np.float32 or a.shape != (n_in,):
                raise error(f"{where}: {name} must be float32 ({n_in},), got {a.dtype} {a.shape}")
            if not np.isfinite(a).all() or (name == "std" and not (a > 0).all()):
                raise error(f"{where}: {name} must be finite" + (" and > 0" if name == "std" else ""))
    names = extras.get("feature_names")
    if names is not None and (names.dtype.kind != "U" or names.shape != (n_in,)):
        raise error(f"{where}: feature_names must be {n_in} strings, got {names.dtype} {names.shape}")
    target = extras.get("target")
    if target is not None and (target.dtype.kind != "U" or target.shape != ()):
        raise error(f"{where}: target must be one string, got {target.dtype} {target.shape}")


# What reading a corrupt .npz can raise: zipfile raises NotImplementedError for an unknown
# compression method and RuntimeError for an entry flagged as encrypted; zlib.error on bad deflate data.
_UNREADABLE = (ValueError, OSError, EOFError, KeyError, NotImplementedError, RuntimeError,
               zipfile.BadZipFile, zlib.error)
# Deflate expands at most about 1032:1, so an entry's declared size beyond that is a lie.
_MAX_DEFLATE_RATIO = 1032
_NPY_HEADER_READERS = {(1, 0): npy_format.read_array_header_1_0, (2, 0): npy_format.read_array_header_2_0}


def _check_declared_sizes(path: Path) -> None:
    """Raise ModelFileError if an entry declares more data than the file can hold.

    np.load allocates each array from its header alone before reading any data, so a corrupt
    header could otherwise ask for terabytes; here every declared size is bounded by the file's.
    """
    archive_size = path.stat().st_size
    with zipfile.ZipFile(path) as zf:
        for info in zf.infolist():
            ratio = 1 if info.compress_type == zipfile.ZIP_STORED else _MAX_DEFLATE_RATIO
            if info.compress_size > archive_size or info.file_size > ratio * info.compress_size:
                raise ModelFileError(f"entry {info.filename!r} declares {info.file_size} bytes, "
                                     f"more than the {archive_size}-byte file can hold")
            with zf.open(info) as member:
                read_header = _NPY_HEADER_READERS.get(npy_format.read_magic(member))
                if read_header is None:
                    raise ModelFileError(f"entry {info.filename!r} has an unsupported .npy format version")
                shape, _, dtype = read_header(member)
            if math.prod(shape) * dtype.itemsize > info.file_size:
                raise ModelFileError(f"entry {info.filename!r} declares a {dtype} array of shape {shape}, "
                                     f"more than its {info.file_size} bytes hold")


def _check_path(path: object) -> Path:
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be a str or os.PathLike, got {type(path).__name__}")
    return Path(path)


def _plain_off_line(a: object) -> bool:
    """Whether a is a plain writable float32 C-contiguous in-memory array whose data does not start on a cache line."""
    return (type(a) is np.ndarray and a.dtype == np.float32 and a.flags.c_contiguous and a.flags.writeable
            and not on_cache_line(a))


def _check_layer_sizes(layer_sizes: Any) -> tuple[int, ...]:
    try:
        sizes = list(layer_sizes)
    except TypeError:
        raise TypeError(f"layer_sizes must be a sequence of ints, got {type(layer_sizes).__name__}") from None
    if len(sizes) < 2:
        raise ValueError(f"layer_sizes needs at least 2 entries (inputs, classes), got {sizes}")
    for i, size in enumerate(sizes):
        if isinstance(size, bool) or not isinstance(size, numbers.Integral) or size < 1:
            raise ValueError(f"layer_sizes[{i}] must be an int >= 1, got {size!r}")
    return tuple(int(s) for s in sizes)
