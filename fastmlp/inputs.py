"""What the public edge accepts: validation of inputs and hyperparameters, and `Pixels`.

Every public entry point (backends, Trainer, the CLI) checks its arguments here, once,
so that the maths inside the backends and kernels can assume valid input.
"""

import math
import numbers
from dataclasses import dataclass
from typing import Any, TypeAlias, overload

import numpy as np
import numpy.typing as npt

FloatArray: TypeAlias = npt.NDArray[np.float32]
"""A float32 numpy array: the dtype of every parameter, activation and kernel operand."""


@dataclass(frozen=True)
class Pixels:
    """Images kept as uint8 until a batch is gathered; a row's features are `data[i] * scale`.

    Keeping pixels uint8 moves a quarter of the bytes of float32 when a shuffled batch is
    gathered, and the fused backend applies `scale` during that gather. The caller says so
    explicitly by wrapping the array: a plain uint8 array is never rescaled behind its back.
    """

    data: np.ndarray
    scale: float = 1.0 / 255.0

    def __post_init__(self) -> None:
        if not isinstance(self.data, np.ndarray) or self.data.dtype != np.uint8:
            raise TypeError(f"Pixels.data must be a uint8 numpy array, got {_describe(self.data)}")
        if self.data.ndim != 2:
            raise ValueError(f"Pixels.data must be 2-D (samples, features), got shape {self.data.shape}")
        scale = check_positive_float(self.scale, "Pixels.scale")
        if not np.isfinite(np.float32(scale) * np.float32(255)):  # the largest pixel must stay finite
            raise ValueError(f"Pixels.scale must keep 255 * scale finite in float32, got {scale!r}")
        if not self.data.flags.c_contiguous:
            object.__setattr__(self, "data", np.ascontiguousarray(self.data))

    @property
    def shape(self) -> tuple[int, ...]:
        return self.data.shape

    def __len__(self) -> int:
        return self.data.shape[0]

    def __getitem__(self, index: Any) -> FloatArray:
        """Rows as float32 features, e.g. `pixels[idx]` for a batch."""
        rows = self.data[index]
        return np.multiply(rows, np.float32(self.scale), dtype=np.float32)

    def to_float32(self) -> FloatArray:
        """All rows as a float32 array (n, features)."""
        return self[:]


@overload
def take_rows(X: Pixels, index: Any) -> Pixels: ...
@overload
def take_rows(X: FloatArray, index: Any) -> FloatArray: ...
@overload
def take_rows(X: FloatArray | Pixels, index: Any) -> FloatArray | Pixels: ...
def take_rows(X: FloatArray | Pixels, index: Any) -> FloatArray | Pixels:
    """X's rows at `index` (a slice or indices), of X's own kind: Pixels stay uint8 pixels at X's scale (where
    `X[index]` converts them to float32), an array is indexed."""
    return Pixels(X.data[index], X.scale) if isinstance(X, Pixels) else X[index]


def _describe(x: object) -> str:
    if isinstance(x, np.ndarray):
        return f"array of dtype {x.dtype} and shape {x.shape}"
    return type(x).__name__


Features: TypeAlias = "npt.ArrayLike | Pixels"
"""What the public API takes as samples: anything numpy reads as a 2-D real array, or `Pixels`."""


def check_features(X: Features, n_features: int, name: str = "X") -> FloatArray | Pixels:
    """Return X as a C-contiguous float32 (n, n_features) array or `Pixels`; raise on anything else.

    float32 C-contiguous arrays are used as they are (no copy); other real dtypes and
    non-contiguous arrays are converted. NaN and inf are refused.
    """
    if isinstance(X, Pixels):
        if X.data.shape[1] != n_features:
            raise ValueError(f"{name} must have {n_features} columns, got shape {X.data.shape}")
        if X.data.shape[0] == 0:
            raise ValueError(f"{name} is empty: need at least one sample")
        return X
    if not isinstance(X, np.ndarray):
        try:
            X = np.asarray(X)
        except Exception as exc:  # ragged lists and the like
            raise TypeError(f"{name} must be a 2-D array of numbers: {exc}") from None
    if X.dtype == np.bool_ or not (np.issubdtype(X.dtype, np.floating) or np.issubdtype(X.dtype, np.integer)):
        raise TypeError(f"{name} must hold real numbers, got dtype {X.dtype}")
    if X.ndim != 2:
        raise ValueError(f"{name} must be 2-D (samples, {n_features}), got shape {X.shape}")
    if X.shape[1] != n_features:
        raise ValueError(f"{name} must have {n_features} columns, got shape {X.shape}")
    if X.shape[0] == 0:
        raise ValueError(f"{name} is empty: need at least one sample")
    with np.errstate(over="ignore"):  # an overflow to inf is reported just below
        X = np.ascontiguousarray(X, dtype=np.float32)
    if not all_finite(X):
        raise ValueError(f"{name} contains NaN or inf (or values too large for float32)")
    return X


def all_finite(X: FloatArray) -> bool:
    """Whether the float32 C-contiguous 2-D array X holds no NaN and no infinity.

    X is read once: the sum of all its values (`np.einsum`, NumPy's own vectorised loop, on this thread) is NaN
    or infinite wherever some value is (inf + -inf is NaN), so a finite sum proves every value finite. A sum
    that overflows float32 (values near 3e38) proves nothing either way, and the exact test decides: the least
    and the greatest value, two passes, no n-sized temporary.
    """
    with np.errstate(over="ignore", invalid="ignore"):
        if np.isfinite(np.einsum("ij->", X)):
            return True
    return bool(np.isfinite(X.min()) and np.isfinite(X.max()))


def check_labels(y: npt.ArrayLike, n_samples: int, n_classes: int, name: str = "y") -> npt.NDArray[np.int64]:
    """Return y as a C-contiguous int64 array of length n_samples with values in [0, n_classes)."""
    if not isinstance(y, np.ndarray):
        y = np.asarray(y)
    if y.ndim != 1:
        raise ValueError(f"{name} must be 1-D class indices, got shape {y.shape}")
    if y.dtype == np.bool_ or not np.issubdtype(y.dtype, np.integer):
        raise TypeError(f"{name} must hold integer class indices, got dtype {y.dtype}")
    if len(y) != n_samples:
        raise ValueError(f"{name} has {len(y)} labels but X has {n_samples} samples")
    if len(y) and (y.min() < 0 or y.max() >= n_classes):
        raise ValueError(
            f"{name} must be class indices in [0, {n_classes}), got values in [{y.min()}, {y.max()}]"
        )
    return np.ascontiguousarray(y, dtype=np.int64)


def check_positive_float(value: float, name: str) -> float:
    """Return value as a float if it is a real number > 0 that stays finite and > 0 in float32.

    The kernels compute in float32: 1e300 would become inf there, and 1e-300 zero.
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a number, got {type(value).__name__}")
    value = float(value)
    with np.errstate(over="ignore", under="ignore"):
        single = np.float32(value)
    if not (math.isfinite(value) and value > 0 and np.isfinite(single) and single > 0):
        raise ValueError(f"{name} must be finite and > 0 (in float32), got {value!r}")
    return value


def check_positive_int(value: int, name: str) -> int:
    """Return value as an int if it is an integer >= 1."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer, got {type(value).__name__}")
    if value < 1:
        raise ValueError(f"{name} must be >= 1, got {value}")
    return int(value)


Seed: TypeAlias = "int | np.random.SeedSequence | np.random.BitGenerator | np.random.Generator | None"
"""None (fresh entropy), an int >= 0, or a NumPy seed object."""


def make_rng(seed: Seed, name: str = "seed") -> np.random.Generator:
    """A numpy Generator from seed: None (fresh entropy), an int >= 0, or a NumPy seed object."""
    if isinstance(seed, (np.random.SeedSequence, np.random.BitGenerator, np.random.Generator)):
        return np.random.default_rng(seed)
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, numbers.Integral)):
        raise TypeError(f"{name} must be None or an integer >= 0, got {type(seed).__name__}")
    if seed is not None and seed < 0:
        raise ValueError(f"{name} must be None or an integer >= 0, got {seed}")
    return np.random.default_rng(int(seed) if seed is not None else None)


def check_model(model: Any, *, writable: bool = True) -> None:
    """Raise unless model's parameters are float32, C-contiguous, shaped by layer_sizes and (if
    `writable`) writable.

    Backends write into these arrays in place, so a replaced or reshaped array must be caught
    here rather than read out of bounds by a kernel. Prediction only reads them, so it passes
    writable=False and works on read-only weights (a model memory-mapped by joblib.load).
    """
    sizes = getattr(model, "layer_sizes", None)
    if sizes is None or not hasattr(model, "weights") or not hasattr(model, "biases"):
        raise TypeError(f"model must be a fastmlp.MLP, got {type(model).__name__}")
    if len(model.weights) != len(sizes) - 1 or len(model.biases) != len(sizes) - 1:
        raise ValueError(f"model has {len(model.weights)} weight and {len(model.biases)} bias arrays "
                         f"for {len(sizes) - 1} layers")
    for i, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        for name, a, shape in ((f"weights[{i}]", model.weights[i], (fan_in, fan_out)),
                               (f"biases[{i}]", model.biases[i], (fan_out,))):
            if not isinstance(a, np.ndarray) or a.dtype != np.float32 or a.shape != shape:
                raise ValueError(f"model.{name} must be a float32 array of shape {shape}, got {_describe(a)}")
            if not a.flags.c_contiguous:
                raise ValueError(f"model.{name} must be C-contiguous")
            if writable and not a.flags.writeable:
                raise ValueError(f"model.{name} must be writable: training updates it in place")
