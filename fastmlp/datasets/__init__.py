"""MNIST-style datasets: IDX parsing, finding a local copy, and verified download.

A dataset is four IDX files (images and labels, training and test set), plain or gzipped.
`load_mnist` looks for them, in order, in the `data_dir` argument (when given, the only place),
`$FASTMLP_DATA`, the copy shipped with this package (MNIST) or with the system (Fashion-MNIST
on Debian), and the user cache; if none holds them it downloads them into the cache, trying each
mirror in turn and keeping a file only once its SHA-256 matches. Local files are trusted once the
IDX parser has checked them.

`MIRRORS`, `FILES` and `BUNDLED_DIRS` are plain module-level tables, so tests (or a site with
its own mirror) can point the loader elsewhere.
"""

import gzip
import hashlib
import http.client
import math
import numbers
import os
import sys
import urllib.error
import urllib.request
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal, overload

import numpy as np
import numpy.typing as npt
from tqdm import tqdm

from ..inputs import FloatArray, Pixels, Seed, make_rng, take_rows
from ..runtime.atomic import atomic_write

Labels = npt.NDArray[np.int64]
PathLike = str | os.PathLike[str]

# Mirror base URLs per dataset, tried in order; a file's URL is the base followed by its name.
MIRRORS = {
    "mnist": [
        "https://ossci-datasets.s3.amazonaws.com/mnist/",
        "https://storage.googleapis.com/cvdf-datasets/mnist/",
        "http://yann.lecun.com/exdb/mnist/",
    ],
    "fashion-mnist": [
        "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
        "https://storage.googleapis.com/tensorflow/tf-keras-datasets/",
        "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/",
    ],
}

# File name on the mirrors -> (kind, SHA-256). "raw" is the digest of the decompressed IDX bytes,
# so a re-compressed gz still verifies; "gz" is the digest of the file exactly as served.
FILES = {
    "mnist": {
        "train-images-idx3-ubyte.gz": ("raw", "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db"),
        "train-labels-idx1-ubyte.gz": ("raw", "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5"),
        "t10k-images-idx3-ubyte.gz": ("raw", "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7"),
        "t10k-labels-idx1-ubyte.gz": ("raw", "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2"),
    },
    "fashion-mnist": {
        "train-images-idx3-ubyte.gz": ("raw", "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888"),
        "train-labels-idx1-ubyte.gz": ("raw", "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9"),
        "t10k-images-idx3-ubyte.gz": ("raw", "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b"),
        "t10k-labels-idx1-ubyte.gz": ("raw", "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34"),
    },
}

# Folders that may already hold a dataset without any setup: shipped with this package or by
# the operating system's packages. Looked at after $FASTMLP_DATA and before the user cache.
BUNDLED_DIRS = {
    "mnist": [Path(__file__).parent.parent / "data" / "mnist"],
    "fashion-mnist": [Path("/usr/share/datasets/fashion-mnist")],
}

# What each class index means, for reports and plots.
CLASS_NAMES = {
    "mnist": [str(digit) for digit in range(10)],
    "fashion-mnist": ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                      "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"],
}

# The four files of a dataset, as (images, labels) for the training and the test set.
TRAIN_IMAGES, TRAIN_LABELS = "train-images-idx3-ubyte", "train-labels-idx1-ubyte"
TEST_IMAGES, TEST_LABELS = "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"
CANONICAL_FILES = (TRAIN_IMAGES, TRAIN_LABELS, TEST_IMAGES, TEST_LABELS)

ENV_VAR = "FASTMLP_DATA"
TIMEOUT = 30.0  # seconds without progress before a mirror is given up
_CHUNK = 1 << 20
_GZIP_MAGIC = b"\x1f\x8b"
_IDX_UINT8 = 0x08
_IDX_MAX_DIMS = 32  # NumPy's limit (32 before NumPy 2); images and labels need 3 and 1


class DatasetError(ValueError):
    """A dataset file exists but is not a valid IDX file, or the four files do not fit together."""


class DatasetNotFoundError(FileNotFoundError):
    """No folder holds the dataset's four files and downloading is not allowed.

    dataset: its name; data_dir: the folder given, or None when the usual places were searched;
    places: (label, folder, what is missing there) for each folder looked in.
    """

    def __init__(self, message: str, *, dataset: str | None = None, data_dir: Path | None = None,
                 places: Sequence[tuple[str, Path, str]] = ()) -> None:
        super().__init__(message)
        self.dataset = dataset
        self.data_dir = data_dir
        self.places = list(places)


class DownloadError(OSError):
    """Every mirror failed to deliver a file whose checksum matches."""


# --- IDX parsing -------------------------------------------------------------------------------


def read_idx(path: PathLike) -> npt.NDArray[np.uint8]:
    """Read an IDX file of uint8 values (gzipped or plain, told by its first bytes) as an array.

    Returns a writable C-contiguous uint8 array whose shape is the header's dimensions.
    Raises DatasetError, naming the file, if the magic number is wrong, the data type is not
    uint8, or the data is shorter or longer than the dimensions say.
    """
    path = Path(path)
    with open(path, "rb") as raw:
        gzipped = raw.read(2) == _GZIP_MAGIC
    try:
        with (gzip.open(path, "rb") if gzipped else open(path, "rb")) as f:
            return _parse_idx(f, path)
    except (EOFError, zlib.error, gzip.BadGzipFile) as exc:
        raise DatasetError(f"{path}: corrupt or truncated gzip data ({exc})") from None


def _parse_idx(f: Any, path: PathLike) -> npt.NDArray[np.uint8]:
    header = _read_at_most(f, 4)
    if len(header) < 4:
        raise DatasetError(f"{path}: truncated, {len(header)} bytes where the 4-byte IDX magic number should be")
    if header[:2] != b"\0\0":
        raise DatasetError(f"{path}: wrong magic number 0x{header.hex()}, not an IDX file "
                           "(IDX files start with two zero bytes)")
    if header[2] != _IDX_UINT8:
        raise DatasetError(f"{path}: unsupported IDX data type 0x{header[2]:02x} (only 0x08, uint8, is supported)")
    ndim = header[3]
    if not 1 <= ndim <= _IDX_MAX_DIMS:
        raise DatasetError(f"{path}: IDX header declares {ndim} dimensions; 1 to {_IDX_MAX_DIMS} are supported")
    dims_bytes = _read_at_most(f, 4 * ndim)
    if len(dims_bytes) < 4 * ndim:
        raise DatasetError(f"{path}: truncated header, {len(dims_bytes)} of the {4 * ndim} bytes "
                           f"giving {ndim} dimensions")
    shape = tuple(int(d) for d in np.frombuffer(dims_bytes, dtype=">u4"))
    needed = math.prod(shape)
    # The header alone never decides how much memory is taken: a corrupt header may declare
    # terabytes, and a gzip stream's length is unknown until it is read. Memory grows with the
    # data actually read, and reading stops one byte past what the header asked for.
    data = _read_at_most(f, needed + 1)
    if len(data) < needed:
        raise DatasetError(f"{path}: truncated, {len(data)} data bytes where the header's shape {shape} "
                           f"needs {needed}")
    if len(data) > needed:
        raise DatasetError(f"{path}: too long, data continues past the {needed} bytes of the header's "
                           f"shape {shape}")
    return np.frombuffer(data, dtype=np.uint8).reshape(shape)  # a bytearray: writable, no copy


def _read_at_most(f: Any, limit: int) -> bytearray:
    """Up to `limit` bytes of f as a bytearray, read chunk by chunk so memory follows the data."""
    data = bytearray()
    while len(data) < limit:
        chunk = f.read(min(_CHUNK, limit - len(data)))
        if not chunk:
            break
        data += chunk
    return data


# --- finding the files -------------------------------------------------------------------------


def cache_dir(dataset: str) -> Path:
    """Where downloads of `dataset` go: $XDG_CACHE_HOME/fastmlp/<dataset>, else ~/.cache/fastmlp/<dataset>."""
    base = os.environ.get("XDG_CACHE_HOME", "")
    root = Path(base) if os.path.isabs(base) else Path.home() / ".cache"
    return root / "fastmlp" / dataset


def _find_file(folder: Path, stem: str) -> Path | None:
    """The path of `stem` or `stem.gz` in folder, or None."""
    for name in (stem + ".gz", stem):
        path = folder / name
        if path.is_file():
            return path
    return None


def _missing_files(folder: Path) -> list[str]:
    return [stem for stem in CANONICAL_FILES if _find_file(folder, stem) is None]


def _describe_missing(folder: Path) -> str:
    if folder.exists() and not folder.is_dir():
        return "a file, not a folder"
    if not folder.is_dir():
        return "folder does not exist"
    missing = _missing_files(folder)
    return "missing " + ", ".join(f"{stem}[.gz]" for stem in missing)


def _search_places(dataset: str) -> list[tuple[str, Path]]:
    """(label, folder) pairs looked at when no data_dir is given, in order."""
    places = []
    env = os.environ.get(ENV_VAR)
    if env:
        places.append((f"${ENV_VAR}", Path(env).expanduser()))
    package = Path(__file__).parent.parent  # fastmlp/, this file being fastmlp/datasets/__init__.py
    places += [("copy shipped with fastmlp" if folder.is_relative_to(package) else "system copy", folder)
               for folder in BUNDLED_DIRS.get(dataset, [])]
    places.append(("user cache", cache_dir(dataset)))
    return places


def find_dataset(dataset: str, data_dir: PathLike | None = None, *, download: bool = True,
                 progress: bool | None = None) -> tuple[str, Path]:
    """(where, folder): the folder holding the dataset's four files and which place it is ("data_dir",
    "$FASTMLP_DATA", "copy shipped with fastmlp", "system copy", "user cache"), looked for as `load_mnist`
    does (downloading into the cache, or into data_dir, if allowed and needed)."""
    if dataset not in FILES:
        raise ValueError(f"unknown dataset {dataset!r}; known datasets: {', '.join(sorted(FILES))}")
    return _locate(dataset, data_dir, download, progress)


def unused_env_folder(dataset: str) -> tuple[Path, str] | None:
    """($FASTMLP_DATA's folder, what it lacks) when the variable is set but does not hold the dataset, so that
    another place's copy is used instead: a caller can say so. None when unset or holding it."""
    env = os.environ.get(ENV_VAR)
    if not env:
        return None
    folder = Path(env).expanduser()
    return None if not _missing_files(folder) else (folder, _describe_missing(folder))


def _locate(dataset: str, data_dir: PathLike | None, download: bool, progress: bool | None) -> tuple[str, Path]:
    """(label, folder): the folder holding the dataset's four files, downloading them if allowed and needed."""
    if data_dir is not None:
        folder = Path(data_dir).expanduser()
        if folder.exists() and not folder.is_dir():  # a download could not create the folder either
            raise DatasetNotFoundError(
                f"data_dir {folder} is a file, not a folder holding the {dataset} IDX files",
                dataset=dataset, data_dir=folder, places=[("data_dir", folder, "a file, not a folder")],
            )
        if not _missing_files(folder):
            return "data_dir", folder
        if not download:
            missing = _describe_missing(folder)
            raise DatasetNotFoundError(
                f"data_dir {folder} does not hold the {dataset} files ({missing}); "
                f"put the four IDX files there, or pass download=True to download them into it",
                dataset=dataset, data_dir=folder, places=[("data_dir", folder, missing)],
            )
        return "data_dir", _download_missing(dataset, folder, progress)

    places = _search_places(dataset)
    for label, folder in places:
        if not _missing_files(folder):
            return label, folder
    if download:
        return "download into the user cache", _download_missing(dataset, cache_dir(dataset), progress)
    looked_in = [(label, folder, _describe_missing(folder)) for label, folder in places]
    looked = "\n".join(f"  - {label}: {folder} ({missing})" for label, folder, missing in looked_in)
    raise DatasetNotFoundError(
        f"{dataset} not found and download=False. Looked for "
        f"{', '.join(s + '[.gz]' for s in CANONICAL_FILES)} in:\n{looked}\n"
        f"Set ${ENV_VAR} to a folder holding them, pass data_dir=..., or allow download=True.",
        dataset=dataset, places=looked_in,
    )


# --- download ----------------------------------------------------------------------------------


def _download_missing(dataset: str, folder: Path, progress: bool | None) -> Path:
    """Download into folder each of the dataset's files it lacks; returns folder."""
    table = FILES.get(dataset, {})
    folder.mkdir(parents=True, exist_ok=True)
    for stem in _missing_files(folder):
        name = stem + ".gz"
        if name not in table:
            raise DownloadError(f"no checksum is known for {dataset} file {name}, so it cannot be downloaded")
        _download_file(dataset, name, folder, progress)
    return folder


def _download_file(dataset: str, name: str, folder: Path, progress: bool | None) -> None:
    """Fetch name from the first mirror that delivers it with the right checksum, into folder/name."""
    kind, digest = FILES[dataset][name]
    failures = []
    for base in MIRRORS.get(dataset, []):
        url = base + name
        try:
            _fetch_verified(url, folder / name, kind, digest, progress)
            return
        except (OSError, http.client.HTTPException, ValueError, EOFError, zlib.error) as exc:
            failures.append(f"  - {url}: {_describe_failure(exc)}")
    tried = "\n".join(failures) if failures else "  (no mirror is configured)"
    raise DownloadError(f"could not download {dataset} file {name}; tried:\n{tried}")


def _describe_failure(exc: BaseException) -> str:
    if isinstance(exc, urllib.error.HTTPError):
        return f"HTTP {exc.code} {exc.reason}"
    if isinstance(exc, urllib.error.URLError):
        return f"{exc.reason}"
    return str(exc) or type(exc).__name__


def _fetch_verified(url: str, dest: Path, kind: str, digest: str, progress: bool | None) -> None:
    """Stream url into a temp file beside dest, check its SHA-256, then rename it to dest.

    The temp file is removed on any failure, so dest either is a verified file or does not exist.
    """
    with atomic_write(dest) as out, urllib.request.urlopen(url, timeout=TIMEOUT) as response:
        expected_length = getattr(response, "length", None)  # None without a Content-Length
        hasher = hashlib.sha256()
        received = 0
        show = sys.stderr.isatty() if progress is None else progress
        with tqdm(total=expected_length, unit="B", unit_scale=True, unit_divisor=1024,
                  desc=dest.name, disable=not show, leave=False) as bar:
            while chunk := response.read(_CHUNK):
                out.write(chunk)
                hasher.update(chunk)
                received += len(chunk)
                bar.update(len(chunk))
        # http.client returns short reads silently when the connection drops, so count the bytes.
        if expected_length is not None and received < expected_length:
            raise ConnectionError(f"connection closed after {received} of {expected_length} bytes")
        out.flush()
        actual = hasher.hexdigest() if kind == "gz" else _sha256_decompressed(out.name)
        if actual != digest:
            what = "of the file" if kind == "gz" else "of the decompressed content"
            raise ValueError(f"SHA-256 mismatch {what}: got {actual}, expected {digest}")


def _sha256_decompressed(path: PathLike) -> str:
    """SHA-256 of the file's content, gunzipped first if it starts with the gzip magic."""
    with open(path, "rb") as raw:
        gzipped = raw.read(2) == _GZIP_MAGIC
    hasher = hashlib.sha256()
    with (gzip.open(path, "rb") if gzipped else open(path, "rb")) as f:
        while chunk := f.read(_CHUNK):
            hasher.update(chunk)
    return hasher.hexdigest()


# --- loading -----------------------------------------------------------------------------------


@overload
def load_mnist(data_dir: PathLike | None = None, *, download: bool = True, dataset: str = "mnist",
               as_pixels: Literal[False] = False,
               progress: bool | None = None) -> tuple[FloatArray, Labels, FloatArray, Labels]: ...
@overload
def load_mnist(data_dir: PathLike | None = None, *, download: bool = True, dataset: str = "mnist",
               as_pixels: Literal[True], progress: bool | None = None) -> tuple[Pixels, Labels, Pixels, Labels]: ...
@overload
def load_mnist(data_dir: PathLike | None = None, *, download: bool = True, dataset: str = "mnist",
               as_pixels: bool = False,
               progress: bool | None = None) -> tuple[FloatArray | Pixels, Labels, FloatArray | Pixels, Labels]: ...
def load_mnist(data_dir: PathLike | None = None, *, download: bool = True, dataset: str = "mnist",
               as_pixels: bool = False,
               progress: bool | None = None) -> tuple[FloatArray | Pixels, Labels, FloatArray | Pixels, Labels]:
    """Load an MNIST-style dataset as (X_train, y_train, X_test, y_test).

    X is float32 (n, rows * cols), C-contiguous, with values in [0, 1]; with as_pixels=True it is
    `Pixels(data=uint8 (n, rows * cols), scale=1/255)` instead. y is int64 (n,).
    dataset is "mnist" or "fashion-mnist". When data_dir is given it is the only folder looked
    at (and the download target); otherwise $FASTMLP_DATA, the shipped copy and the user cache are
    searched and missing files are downloaded into the cache. download=False never uses the network.
    progress shows a download progress bar (None: only when stderr is a terminal).
    """
    if dataset not in FILES:
        raise ValueError(f"unknown dataset {dataset!r}; known datasets: {', '.join(sorted(FILES))}")
    _, folder = _locate(dataset, data_dir, download, progress)
    paths = {stem: _find_file(folder, stem) or folder / stem for stem in CANONICAL_FILES}  # all found by _locate
    X_train, y_train = _read_pair(paths[TRAIN_IMAGES], paths[TRAIN_LABELS], as_pixels)
    X_test, y_test = _read_pair(paths[TEST_IMAGES], paths[TEST_LABELS], as_pixels)
    if X_train.shape[1] != X_test.shape[1]:
        raise DatasetError(f"{paths[TRAIN_IMAGES]} has {X_train.shape[1]} pixels per image but "
                           f"{paths[TEST_IMAGES]} has {X_test.shape[1]}")
    return X_train, y_train, X_test, y_test


def _read_pair(images_path: Path, labels_path: Path, as_pixels: bool) -> tuple[FloatArray | Pixels, Labels]:
    """Images as float32 (or Pixels) (n, rows * cols) and labels as int64 (n,), checked to match."""
    images = read_idx(images_path)
    labels = read_idx(labels_path)
    if images.ndim != 3:
        raise DatasetError(f"{images_path}: images must have 3 dimensions (n, rows, cols), "
                           f"got shape {images.shape}")
    if labels.ndim != 1:
        raise DatasetError(f"{labels_path}: labels must have 1 dimension (n,), got shape {labels.shape}")
    if len(images) != len(labels):
        raise DatasetError(f"count mismatch: {images_path} holds {len(images)} images "
                           f"but {labels_path} holds {len(labels)} labels")
    pixels = images.reshape(len(images), -1)
    X: FloatArray | Pixels
    if as_pixels:
        X = Pixels(data=pixels, scale=1.0 / 255.0)
    else:
        # One float32 array, scaled in place; the same float32 product as Pixels' batch gather.
        X = pixels.astype(np.float32)
        X *= np.float32(1.0 / 255.0)
    return X, labels.astype(np.int64)


def train_val_split(X: Any, y: npt.ArrayLike, val_size: float, seed: Seed) -> tuple[Any, np.ndarray, Any, np.ndarray]:
    """Split (X, y) at random into (X_train, y_train, X_val, y_val).

    val_size is a fraction in (0, 1) of the samples (rounded to the nearest count) or an int count;
    both parts must be non-empty. The rows are drawn with np.random.default_rng(seed) and keep
    their original order within each part. X may be an array or `Pixels` (its rows are split).
    """
    if not isinstance(X, Pixels):
        X = np.asarray(X)
        if X.ndim == 0:
            raise ValueError(f"X must be an array of samples, got shape {X.shape}")
    y = np.asarray(y)
    n = len(X)
    if y.ndim != 1:
        raise ValueError(f"y must be 1-D labels, got shape {y.shape}")
    if len(y) != n:
        raise ValueError(f"X has {n} samples but y has {len(y)} labels")
    if n < 2:
        raise ValueError(f"X has {n} samples; a split needs at least 2")
    n_val = _validation_count(val_size, n)
    permutation = make_rng(seed).permutation(n)
    val_idx = np.sort(permutation[:n_val])
    train_idx = np.sort(permutation[n_val:])
    return take_rows(X, train_idx), y[train_idx], take_rows(X, val_idx), y[val_idx]


def _validation_count(val_size: object, n: int) -> int:
    """The number of validation samples val_size asks for out of n; raises unless 1 <= count < n."""
    if isinstance(val_size, bool) or not isinstance(val_size, numbers.Real):
        raise TypeError(f"val_size must be a fraction in (0, 1) or an int count, got {type(val_size).__name__}")
    if isinstance(val_size, numbers.Integral):
        count = int(val_size)
        if not 1 <= count < n:
            raise ValueError(f"val_size as a count must be in [1, {n - 1}] for {n} samples, got {count}")
        return count
    val_size = float(val_size)
    if not (math.isfinite(val_size) and 0 < val_size < 1):
        raise ValueError(f"val_size as a fraction must be in (0, 1), got {val_size!r}")
    count = round(val_size * n)
    if not 1 <= count < n:
        raise ValueError(f"val_size {val_size!r} of {n} samples gives {count} validation samples; "
                         f"both parts need at least one")
    return count
