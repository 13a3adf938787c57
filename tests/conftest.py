"""Shared fixtures: small synthetic datasets in the canonical IDX layout."""

import gzip
import struct

import numpy as np
import pytest

IDX_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


def idx_bytes(array):
    """The IDX encoding of a uint8 array: magic 0x0000080N, one big-endian uint32 per dim, data."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.tobytes()


def write_idx(path, array, gz=True):
    data = idx_bytes(array)
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


def synthetic_digits(n, seed):
    """n 28x28 uint8 images whose class c lights up horizontal band c, plus noise: easy to learn."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 10, n).astype(np.uint8)
    images = rng.integers(0, 60, (n, 28, 28)).astype(np.uint8)
    for i, c in enumerate(labels):
        images[i, 2 * c + 4 : 2 * c + 6, 4:24] = 255
    return images, labels


@pytest.fixture(scope="session")
def tiny_mnist_dir(tmp_path_factory):
    """A folder holding the four MNIST files of a 600/100-sample synthetic dataset."""
    folder = tmp_path_factory.mktemp("tiny_mnist")
    train_images, train_labels = synthetic_digits(600, seed=0)
    test_images, test_labels = synthetic_digits(100, seed=1)
    for name, array in zip(IDX_FILES, (train_images, train_labels, test_images, test_labels)):
        write_idx(folder / f"{name}.gz", array)
    return folder


@pytest.fixture(autouse=True)
def a_fresh_split_chooser(monkeypatch):
    """Each test starts the numba backend's choice of split afresh (fastmlp.backends.numba.threads.SplitChooser),
    so that which split each of its epochs runs follows from the test alone: the first epoch of a shape split,
    then the two in turn (both give the same bits; only the kept choice would follow timing)."""
    from fastmlp.backends.numba import threads

    monkeypatch.setattr(threads, "SPLITS", threads.SplitChooser())
