"""fastmlp.datasets: IDX parsing, where files are looked for, verified download, train/val split.

Downloads go to a local http.server on 127.0.0.1 serving synthetic files, under a dataset name
that the tests register in the module's tables; no test touches a real mirror.
"""

import gzip
import hashlib
import http.server
import socket
import struct
import threading
import urllib.request
from functools import partial
from pathlib import Path

import numpy as np
import pytest

from fastmlp import datasets
from fastmlp.datasets import (
    DatasetError,
    DatasetNotFoundError,
    DownloadError,
    cache_dir,
    load_mnist,
    read_idx,
    train_val_split,
)
from fastmlp.inputs import Pixels

FILE_NAMES = [stem + ".gz" for stem in datasets.CANONICAL_FILES]


def idx_bytes(array):
    """The IDX encoding of a uint8 array: magic, one big-endian uint32 per dimension, data."""
    array = np.asarray(array, dtype=np.uint8)
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.tobytes()


def write_idx(path, array, gz=True):
    """Write array as an IDX file at path, gzip-compressed if gz; returns path."""
    data = idx_bytes(array)
    Path(path).write_bytes(gzip.compress(data) if gz else data)
    return Path(path)


def synthetic_arrays(n_train=40, n_test=12, shape=(4, 3), seed=0):
    """Four arrays in the role of the dataset's files; the pixels cover 0 and 255."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(n_train + n_test, *shape), dtype=np.uint8)
    images[0].flat[0], images[0].flat[1] = 0, 255
    labels = rng.integers(0, 10, size=n_train + n_test, dtype=np.uint8)
    return {
        "train-images-idx3-ubyte": images[:n_train], "train-labels-idx1-ubyte": labels[:n_train],
        "t10k-images-idx3-ubyte": images[n_train:], "t10k-labels-idx1-ubyte": labels[n_train:],
    }


def write_dataset(folder, arrays, gz=True):
    folder.mkdir(parents=True, exist_ok=True)
    for stem, array in arrays.items():
        write_idx(folder / (stem + (".gz" if gz else "")), array, gz=gz)
    return folder


@pytest.fixture(autouse=True)
def isolated_environment(tmp_path, monkeypatch):
    """No test reads the real $FASTMLP_DATA or writes the real user cache."""
    monkeypatch.delenv("FASTMLP_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))


@pytest.fixture
def no_network(monkeypatch):
    """Fail the test if anything opens a URL or a socket connection."""
    def refuse(*args, **kwargs):
        raise AssertionError("the network was used")
    monkeypatch.setattr(urllib.request, "urlopen", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


# --- IDX parsing -------------------------------------------------------------------------------


@pytest.mark.parametrize("gz", [True, False])
@pytest.mark.parametrize("shape", [(7,), (5, 4, 3), (2, 3), (1, 1, 1, 2)])
def test_read_idx_round_trips_uint8_arrays(tmp_path, gz, shape):
    array = np.random.default_rng(1).integers(0, 256, size=shape, dtype=np.uint8)
    got = read_idx(write_idx(tmp_path / "a.idx", array, gz=gz))
    assert got.dtype == np.uint8 and got.shape == shape
    np.testing.assert_array_equal(got, array)
    assert got.flags.c_contiguous and got.flags.writeable


def test_read_idx_tells_gzip_by_magic_bytes_not_by_name(tmp_path):
    array = np.arange(12, dtype=np.uint8).reshape(3, 2, 2)
    np.testing.assert_array_equal(read_idx(write_idx(tmp_path / "plain.gz", array, gz=False)), array)
    np.testing.assert_array_equal(read_idx(write_idx(tmp_path / "compressed", array, gz=True)), array)


def test_read_idx_reads_a_file_larger_than_one_chunk(tmp_path, monkeypatch):
    monkeypatch.setattr(datasets, "_CHUNK", 7)
    array = np.random.default_rng(2).integers(0, 256, size=(9, 5, 5), dtype=np.uint8)
    np.testing.assert_array_equal(read_idx(write_idx(tmp_path / "a.gz", array)), array)


@pytest.mark.parametrize("gz", [True, False])
@pytest.mark.parametrize("corrupt, message", [
    (lambda b: b[:-1], r"truncated, 11 data bytes where the header's shape \(3, 4\) needs 12"),
    (lambda b: b[:10], r"truncated header"),
    (lambda b: b[:2], r"truncated, 2 bytes"),
    (lambda b: b"", r"truncated, 0 bytes"),
    (lambda b: b + b"\x00", r"too long"),
    (lambda b: b"\x01" + b[1:], r"wrong magic number 0x01000802"),
    (lambda b: b[:2] + b"\x0d" + b[3:], r"unsupported IDX data type 0x0d"),
    (lambda b: b[:3] + b"\x00" + b[4:], r"0 dimensions"),
])
def test_read_idx_rejects_corrupt_files_naming_file_and_problem(tmp_path, gz, corrupt, message):
    data = corrupt(idx_bytes(np.zeros((3, 4), dtype=np.uint8)))
    path = tmp_path / "bad-file.idx"
    path.write_bytes(gzip.compress(data) if gz else data)
    with pytest.raises(DatasetError, match=message) as info:
        read_idx(path)
    assert "bad-file.idx" in str(info.value)


def test_read_idx_rejects_a_cut_gzip_stream(tmp_path):
    packed = gzip.compress(idx_bytes(np.arange(200, dtype=np.uint8)))
    path = tmp_path / "cut.gz"
    path.write_bytes(packed[: len(packed) // 2])
    with pytest.raises(DatasetError, match=r"cut\.gz.*corrupt or truncated gzip"):
        read_idx(path)


def test_dataset_errors_are_value_errors_and_missing_data_is_an_os_error():
    assert issubclass(DatasetError, ValueError)
    assert issubclass(DatasetNotFoundError, OSError) and issubclass(DownloadError, OSError)


# --- loading from local folders ----------------------------------------------------------------


@pytest.mark.parametrize("gz", [True, False])
def test_load_mnist_from_data_dir_gives_scaled_float32_rows_and_int64_labels(tmp_path, gz):
    arrays = synthetic_arrays()
    folder = write_dataset(tmp_path / "data", arrays, gz=gz)
    X_train, y_train, X_test, y_test = load_mnist(folder, download=False)
    for X, y, split in [(X_train, y_train, "train"), (X_test, y_test, "t10k")]:
        images, labels = arrays[f"{split}-images-idx3-ubyte"], arrays[f"{split}-labels-idx1-ubyte"]
        assert X.dtype == np.float32 and X.shape == (len(images), 12) and X.flags.c_contiguous
        assert y.dtype == np.int64 and y.shape == (len(images),)
        assert X.min() >= 0.0 and X.max() <= 1.0
        np.testing.assert_allclose(X, images.reshape(len(images), -1) / 255.0, rtol=1e-6)
        np.testing.assert_array_equal(y, labels)
    assert X_train.min() == 0.0 and X_train.max() == 1.0


def test_as_pixels_holds_the_uint8_rows_and_matches_the_float_path_exactly(tmp_path):
    folder = write_dataset(tmp_path / "data", synthetic_arrays())
    X_train, y_train, X_test, y_test = load_mnist(folder, download=False)
    P_train, p_y_train, P_test, _ = load_mnist(folder, download=False, as_pixels=True)
    for P, X in [(P_train, X_train), (P_test, X_test)]:
        assert isinstance(P, Pixels)
        assert P.data.dtype == np.uint8 and P.data.shape == X.shape
        assert P.scale == pytest.approx(1 / 255)
        np.testing.assert_array_equal(P.to_float32(), X)
    np.testing.assert_array_equal(p_y_train, y_train)


def test_fastmlp_data_env_var_is_honoured(tmp_path, monkeypatch, no_network):
    register_dataset(monkeypatch, "synthetic", mirrors=[])
    write_dataset(tmp_path / "env", synthetic_arrays(n_train=9))
    monkeypatch.setenv("FASTMLP_DATA", str(tmp_path / "env"))
    assert len(load_mnist(dataset="synthetic", download=False)[0]) == 9


def test_data_dir_beats_fastmlp_data(tmp_path, monkeypatch):
    write_dataset(tmp_path / "env", synthetic_arrays(n_train=9))
    write_dataset(tmp_path / "arg", synthetic_arrays(n_train=7))
    monkeypatch.setenv("FASTMLP_DATA", str(tmp_path / "env"))
    assert len(load_mnist(tmp_path / "arg", download=False)[0]) == 7


def test_a_folder_with_only_some_of_the_files_is_skipped(tmp_path, monkeypatch):
    register_dataset(monkeypatch, "synthetic", mirrors=[])
    partial_arrays = synthetic_arrays(n_train=9)
    del partial_arrays["t10k-labels-idx1-ubyte"]
    write_dataset(tmp_path / "env", partial_arrays)
    write_dataset(cache_dir("synthetic"), synthetic_arrays(n_train=5))
    monkeypatch.setenv("FASTMLP_DATA", str(tmp_path / "env"))
    assert len(load_mnist(dataset="synthetic", download=False)[0]) == 5


def test_count_mismatch_between_images_and_labels_names_both_files(tmp_path):
    arrays = synthetic_arrays(n_train=10)
    arrays["train-labels-idx1-ubyte"] = arrays["train-labels-idx1-ubyte"][:9]
    folder = write_dataset(tmp_path / "data", arrays)
    with pytest.raises(DatasetError, match=r"count mismatch.*train-images.*10 images.*train-labels.*9 labels"):
        load_mnist(folder, download=False)


def test_images_file_with_labels_shape_is_rejected(tmp_path):
    arrays = synthetic_arrays(n_train=10)
    arrays["train-images-idx3-ubyte"] = arrays["train-labels-idx1-ubyte"]
    folder = write_dataset(tmp_path / "data", arrays)
    with pytest.raises(DatasetError, match=r"train-images-idx3-ubyte.*3 dimensions"):
        load_mnist(folder, download=False)


def test_unknown_dataset_name_is_refused():
    with pytest.raises(ValueError, match=r"unknown dataset 'cifar'.*fashion-mnist, mnist"):
        load_mnist(dataset="cifar")


def test_cache_dir_follows_xdg_cache_home_else_home(tmp_path, monkeypatch):
    assert cache_dir("mnist") == tmp_path / "xdg-cache" / "fastmlp" / "mnist"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert cache_dir("fashion-mnist") == Path.home() / ".cache" / "fastmlp" / "fashion-mnist"


def test_embedded_mnist_loads_and_matches_its_checksums(no_network):
    X_train, y_train, X_test, y_test = load_mnist(download=False, as_pixels=True)
    assert X_train.data.shape == (60000, 784) and X_test.data.shape == (10000, 784)
    assert y_train.shape == (60000,) and y_test.shape == (10000,)
    assert set(np.unique(y_train)) == set(range(10)) == set(np.unique(y_test))
    folder = datasets.BUNDLED_DIRS["mnist"][0]
    for name, (kind, digest) in datasets.FILES["mnist"].items():
        assert kind == "raw"
        assert hashlib.sha256(gzip.decompress((folder / name).read_bytes())).hexdigest() == digest


def test_download_false_with_nothing_found_lists_places_and_stays_offline(tmp_path, monkeypatch, no_network):
    register_dataset(monkeypatch, "synthetic", mirrors=["http://127.0.0.1:9/never/"])
    monkeypatch.setitem(datasets.BUNDLED_DIRS, "synthetic", [tmp_path / "bundled"])
    monkeypatch.setenv("FASTMLP_DATA", str(tmp_path / "env"))
    with pytest.raises(DatasetNotFoundError) as info:
        load_mnist(dataset="synthetic", download=False)
    message = str(info.value)
    for place in [tmp_path / "env", tmp_path / "bundled", cache_dir("synthetic")]:
        assert str(place) in message
    assert "FASTMLP_DATA" in message and "data_dir" in message and "download=True" in message


def test_explicit_data_dir_without_the_files_says_so_when_download_is_off(tmp_path, no_network):
    write_dataset(tmp_path / "data", {"train-images-idx3-ubyte": np.zeros((2, 2, 2), np.uint8)})
    with pytest.raises(DatasetNotFoundError, match=r"data_dir .*data does not hold .*missing train-labels"):
        load_mnist(tmp_path / "data", download=False)


# --- download ----------------------------------------------------------------------------------


class _Handler(http.server.SimpleHTTPRequestHandler):
    """Serves the folder; under /short/ it promises 100 bytes more than it sends, then hangs up."""

    def do_GET(self):
        if self.path.startswith("/short/"):
            data = (Path(self.directory) / self.path.removeprefix("/short/")).read_bytes()
            self.send_response(200)
            self.send_header("Content-Length", str(len(data) + 100))
            self.end_headers()
            self.wfile.write(data)
            self.close_connection = True
            return
        super().do_GET()

    def log_message(self, *args):
        pass


@pytest.fixture
def server(tmp_path):
    """A local HTTP server over tmp_path/served; yields its base URL and folder."""
    folder = tmp_path / "served"
    folder.mkdir()
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), partial(_Handler, directory=str(folder)))
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/", folder
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join()


def closed_port_url():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/"


def register_dataset(monkeypatch, name, mirrors, files=None):
    monkeypatch.setitem(datasets.MIRRORS, name, mirrors)
    monkeypatch.setitem(datasets.FILES, name, files or {})


def serve_dataset(folder, arrays, kind="raw"):
    """Write the arrays as gz files into folder; returns their FILES table of the given kind."""
    table = {}
    for stem, array in arrays.items():
        path = write_idx(folder / (stem + ".gz"), array)
        content = path.read_bytes() if kind == "gz" else idx_bytes(array)
        table[path.name] = (kind, hashlib.sha256(content).hexdigest())
    return table


@pytest.mark.parametrize("kind", ["raw", "gz"])
def test_download_fills_the_cache_with_verified_files(server, monkeypatch, kind):
    base, folder = server
    arrays = synthetic_arrays()
    register_dataset(monkeypatch, "synthetic", [base], serve_dataset(folder, arrays, kind))
    X_train, y_train, _, _ = load_mnist(dataset="synthetic", progress=False)
    assert sorted(p.name for p in cache_dir("synthetic").iterdir()) == sorted(FILE_NAMES)
    np.testing.assert_array_equal(y_train, arrays["train-labels-idx1-ubyte"])
    # The second load finds the cache and does not download again.
    for path in folder.iterdir():
        path.unlink()
    assert len(load_mnist(dataset="synthetic", progress=False)[0]) == len(X_train)


def test_raw_checksum_accepts_a_recompressed_gz(server, monkeypatch):
    base, folder = server
    arrays = synthetic_arrays()
    table = serve_dataset(folder, arrays, "raw")
    path = folder / "train-images-idx3-ubyte.gz"
    path.write_bytes(gzip.compress(idx_bytes(arrays["train-images-idx3-ubyte"]), compresslevel=1, mtime=123))
    register_dataset(monkeypatch, "synthetic", [base], table)
    load_mnist(dataset="synthetic", progress=False)
    assert (cache_dir("synthetic") / path.name).read_bytes() == path.read_bytes()


def test_download_into_an_explicit_data_dir(server, monkeypatch, tmp_path):
    base, folder = server
    register_dataset(monkeypatch, "synthetic", [base], serve_dataset(folder, synthetic_arrays()))
    load_mnist(tmp_path / "mine", dataset="synthetic", progress=False)
    assert sorted(p.name for p in (tmp_path / "mine").iterdir()) == sorted(FILE_NAMES)
    assert not cache_dir("synthetic").exists()


def test_download_falls_back_to_the_next_mirror(server, monkeypatch):
    base, folder = server
    table = serve_dataset(folder, synthetic_arrays())
    register_dataset(monkeypatch, "synthetic", [closed_port_url(), base + "missing/", base], table)
    X_train = load_mnist(dataset="synthetic", progress=False)[0]
    assert len(X_train) == 40


def test_download_error_lists_every_mirror_and_why(server, monkeypatch):
    base, folder = server
    table = serve_dataset(folder, synthetic_arrays())
    dead = closed_port_url()
    register_dataset(monkeypatch, "synthetic", [dead, base + "missing/"], table)
    with pytest.raises(DownloadError) as info:
        load_mnist(dataset="synthetic", progress=False)
    message = str(info.value)
    assert f"{dead}train-images-idx3-ubyte.gz" in message and "refused" in message
    assert f"{base}missing/train-images-idx3-ubyte.gz: HTTP 404" in message
    assert_nothing_left_in(cache_dir("synthetic"))


def assert_nothing_left_in(folder):
    assert not folder.exists() or list(folder.iterdir()) == []


@pytest.mark.parametrize("kind", ["raw", "gz"])
def test_checksum_mismatch_fails_and_leaves_no_file(server, monkeypatch, kind):
    base, folder = server
    table = serve_dataset(folder, synthetic_arrays(), kind)
    name = "train-images-idx3-ubyte.gz"  # the first file downloaded
    table[name] = (kind, "0" * 64)
    register_dataset(monkeypatch, "synthetic", [base], table)
    with pytest.raises(DownloadError, match=r"SHA-256 mismatch .*expected 0{64}"):
        load_mnist(dataset="synthetic", progress=False)
    assert_nothing_left_in(cache_dir("synthetic"))


def test_interrupted_transfer_fails_and_leaves_no_file(server, monkeypatch):
    base, folder = server
    register_dataset(monkeypatch, "synthetic", [base + "short/"], serve_dataset(folder, synthetic_arrays()))
    expected = r"short/train-images-idx3-ubyte\.gz: connection closed after \d+ of \d+ bytes"
    with pytest.raises(DownloadError, match=expected):
        load_mnist(dataset="synthetic", progress=False)
    assert_nothing_left_in(cache_dir("synthetic"))


def test_only_missing_files_are_downloaded(server, monkeypatch):
    base, folder = server
    arrays = synthetic_arrays()
    table = serve_dataset(folder, arrays)
    register_dataset(monkeypatch, "synthetic", [base], table)
    kept = {stem: arrays[stem] for stem in ["train-images-idx3-ubyte", "t10k-images-idx3-ubyte"]}
    write_dataset(cache_dir("synthetic"), kept)
    (folder / "train-images-idx3-ubyte.gz").unlink()
    (folder / "t10k-images-idx3-ubyte.gz").unlink()
    assert len(load_mnist(dataset="synthetic", progress=False)[2]) == 12


# --- train/validation split --------------------------------------------------------------------


@pytest.mark.parametrize("val_size, n_val", [(0.25, 10), (0.1, 4), (1, 1), (39, 39)])
def test_split_sizes_are_as_asked_and_parts_are_disjoint_and_complete(val_size, n_val):
    X = np.arange(40 * 3, dtype=np.float32).reshape(40, 3)
    y = np.arange(40)
    X_train, y_train, X_val, y_val = train_val_split(X, y, val_size, seed=0)
    assert len(X_val) == len(y_val) == n_val and len(X_train) == len(y_train) == 40 - n_val
    assert sorted(np.concatenate([y_train, y_val])) == list(range(40))
    np.testing.assert_array_equal(X_train[:, 0], 3 * y_train)  # rows stay with their labels
    np.testing.assert_array_equal(X_val[:, 0], 3 * y_val)


def test_split_is_reproducible_by_seed():
    X, y = np.zeros((100, 2), np.float32), np.arange(100)
    first = train_val_split(X, y, 0.2, seed=3)[3]
    np.testing.assert_array_equal(first, train_val_split(X, y, 0.2, seed=3)[3])
    assert not np.array_equal(first, train_val_split(X, y, 0.2, seed=4)[3])


def test_split_of_pixels_splits_their_rows_and_keeps_the_scale():
    data = np.arange(20, dtype=np.uint8).reshape(10, 2)
    X_train, y_train, X_val, y_val = train_val_split(Pixels(data, 0.5), np.arange(10), 3, seed=1)
    assert isinstance(X_train, Pixels) and isinstance(X_val, Pixels)
    assert X_val.scale == 0.5 and X_val.data.shape == (3, 2) and X_train.data.shape == (7, 2)
    np.testing.assert_array_equal(X_val.data[:, 0], 2 * y_val)


@pytest.mark.parametrize("val_size, error", [
    (0.0, ValueError), (1.0, ValueError), (-0.5, ValueError), (float("nan"), ValueError),
    (0, ValueError), (10, ValueError), (-1, ValueError), (0.01, ValueError),
    (True, TypeError), ("0.2", TypeError), (None, TypeError),
])
def test_split_refuses_bad_val_size(val_size, error):
    with pytest.raises(error, match="val_size"):
        train_val_split(np.zeros((10, 2)), np.zeros(10), val_size, seed=0)


def test_split_refuses_mismatched_lengths():
    with pytest.raises(ValueError, match="10 samples but y has 9"):
        train_val_split(np.zeros((10, 2)), np.zeros(9), 0.2, seed=0)
