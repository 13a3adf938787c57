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

from .runtime.atomic import atomic_write
from .inputs import FloatArray, Features, Seed, check_features, check_model, check_positive_int, make_rng

INITS = ("he", "normal")


class ModelFileError(ValueError):
    """A model file that is missing pieces, corrupt, pickled or inconsistent."""


class MLP:
    """A multilayer perceptron: ReLU hidden layers, a softmax output.

    `weights[i]` has shape (fan_in, fan_out) and `biases[i]` shape (fan_out,), float32,
    C-contiguous and writable. Backends update these very arrays in place.
    """

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
            self.weights.append(np.ascontiguousarray(W, dtype=np.float32))
            self.biases.append(np.zeros(fan_out, dtype=np.float32))

    @property
    def n_features(self) -> int:
        return self.layer_sizes[0]

    @property
    def n_classes(self) -> int:
        return self.layer_sizes[-1]

    def __repr__(self) -> str:
        return f"MLP({list(self.layer_sizes)})"

    def predict_proba(self, X: Features, *, batch_size: int = 4096) -> FloatArray:
        """Class probabilities, float32 (n, classes), by fastmlp.inference: straight off `weights` (edits
        in place count), safe from many threads, a row's bits independent of its batch and position.
        batch_size is checked but no longer needed: memory grows with the output alone."""
        from .inference import predict_proba

        return predict_proba(self, X, batch_size)

    def predict(self, X: Features) -> npt.NDArray[np.intp]:
        """Predicted class index per row, int64 (n,)."""
        return self.predict_proba(X).argmax(axis=1)

    def copy(self) -> MLP:
        """An independent copy of this model."""
        other = MLP.__new__(MLP)
        other.layer_sizes = self.layer_sizes
        other.weights = [W.copy() for W in self.weights]
        other.biases = [b.copy() for b in self.biases]
        return other

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the parameters to an `.npz` file (no pickled objects), atomically."""
        check_model(self, writable=False)
        path = _check_path(path)
        for name, a in [(f"weights[{i}]", W) for i, W in enumerate(self.weights)] + \
                       [(f"biases[{i}]", b) for i, b in enumerate(self.biases)]:
            if not np.isfinite(a).all():  # MLP.load would refuse the file
                raise ValueError(f"model.{name} contains NaN or inf; such a model is not saved")
        arrays: dict[str, Any] = {"layer_sizes": np.asarray(self.layer_sizes, dtype=np.int64)}
        for i, (W, b) in enumerate(zip(self.weights, self.biases)):
            arrays[f"W{i}"] = W
            arrays[f"b{i}"] = b
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
        n_layers = len(layer_sizes) - 1
        expected = {"layer_sizes"} | {f"W{i}" for i in range(n_layers)} | {f"b{i}" for i in range(n_layers)}
        if set(arrays) != expected:
            missing, extra = sorted(expected - set(arrays)), sorted(set(arrays) - expected)
            raise ModelFileError(f"{path}: entries do not match layer_sizes (missing {missing}, unexpected {extra})")
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
                dest.append(np.array(a, dtype=np.float32, order="C"))
        return model


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
