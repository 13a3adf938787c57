"""Fuzzing the two file readers, `datasets.read_idx` and `MLP.load`, with random, truncated and
bit-flipped bytes: each either returns a correct result or raises one of its documented errors."""

import gzip
import io
import struct
import zipfile

import numpy as np
import pytest
from conftest import idx_bytes
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fastmlp import MLP, ModelFileError
from fastmlp.datasets import DatasetError, read_idx

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

IDX_ARRAY = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
VALID_IDX = idx_bytes(IDX_ARRAY)
VALID_IDX_GZ = gzip.compress(VALID_IDX, mtime=0)


def _model_bytes(compressed=False):
    model = MLP([3, 4, 2], seed=0)
    arrays = {"layer_sizes": np.asarray(model.layer_sizes, dtype=np.int64)}
    for i, (W, b) in enumerate(zip(model.weights, model.biases)):
        arrays[f"W{i}"], arrays[f"b{i}"] = W, b
    buffer = io.BytesIO()
    (np.savez_compressed if compressed else np.savez)(buffer, **arrays)
    return model, buffer.getvalue()


VALID_MODEL, VALID_NPZ = _model_bytes()
_, VALID_NPZ_COMPRESSED = _model_bytes(compressed=True)


def mutations(valid):
    """Bytes derived from `valid`: truncated, bit-flipped (a few bits), spliced with random bytes, or random."""
    n = len(valid)
    truncated = st.integers(0, n - 1).map(lambda k: valid[:k])
    flips = st.lists(st.tuples(st.integers(0, n - 1), st.integers(0, 7)), min_size=1, max_size=4)
    flipped = flips.map(lambda fl: _flip(valid, fl))
    spliced = st.tuples(st.integers(0, n), st.binary(min_size=1, max_size=16)).map(
        lambda t: valid[: t[0]] + t[1] + valid[t[0] + len(t[1]):])
    return st.one_of(truncated, flipped, spliced, st.binary(max_size=200))


def _flip(data, flips):
    out = bytearray(data)
    for index, bit in flips:
        out[index] ^= 1 << bit
    return bytes(out)


def read_idx_bytes(tmp_path, data):
    path = tmp_path / "fuzz.idx"
    path.write_bytes(data)
    return read_idx(path)


@FUZZ
@given(data=st.one_of(mutations(VALID_IDX), mutations(VALID_IDX_GZ)))
def test_read_idx_on_mutated_bytes_returns_the_data_or_raises_dataset_error(tmp_path, data):
    try:
        array = read_idx_bytes(tmp_path, data)
    except DatasetError as exc:
        assert "fuzz.idx" in str(exc)
        return
    # Accepted: it must be exactly what the bytes say (a flip in the data changes values, not shape).
    raw = gzip.decompress(data) if data[:2] == b"\x1f\x8b" else data
    ndim = raw[3]
    shape = struct.unpack(f">{ndim}I", raw[4 : 4 + 4 * ndim])
    assert array.dtype == np.uint8 and array.shape == shape and array.flags.c_contiguous
    assert array.tobytes() == raw[4 + 4 * ndim:]


@pytest.mark.parametrize("gz", [False, True], ids=["plain", "gzip"])
def test_read_idx_refuses_a_header_declaring_terabytes_without_allocating_them(tmp_path, gz):
    data = struct.pack(">BBBB", 0, 0, 8, 3) + struct.pack(">3I", 2**32 - 1, 2**32 - 1, 2**32 - 1) + b"\0" * 100
    with pytest.raises(DatasetError, match="truncated, 100 data bytes"):
        read_idx_bytes(tmp_path, gzip.compress(data) if gz else data)


def test_read_idx_refuses_more_dimensions_than_numpy_supports(tmp_path):
    data = struct.pack(">BBBB", 0, 0, 8, 200) + struct.pack(">200I", *([1] * 200)) + b"\0"
    with pytest.raises(DatasetError, match="declares 200 dimensions"):
        read_idx_bytes(tmp_path, data)


def load_bytes(tmp_path, data):
    path = tmp_path / "fuzz.npz"
    path.write_bytes(data)
    return MLP.load(path)


@FUZZ
@given(data=st.one_of(mutations(VALID_NPZ), mutations(VALID_NPZ_COMPRESSED)))
def test_mlp_load_on_mutated_bytes_returns_a_valid_model_or_raises_model_file_error(tmp_path, data):
    try:
        model = load_bytes(tmp_path, data)
    except ModelFileError as exc:
        assert "fuzz.npz" in str(exc)
        return
    # Accepted: a consistent model (a flip inside a weight's data may change its value).
    assert model.layer_sizes == VALID_MODEL.layer_sizes
    for i, (W, b) in enumerate(zip(model.weights, model.biases)):
        assert W.dtype == np.float32 and W.shape == VALID_MODEL.weights[i].shape and np.isfinite(W).all()
        assert b.dtype == np.float32 and b.shape == VALID_MODEL.biases[i].shape and np.isfinite(b).all()


def test_mlp_load_refuses_an_entry_declaring_terabytes_without_allocating_them(tmp_path):
    header = "{'descr': '<f4', 'fortran_order': False, 'shape': (1000000, 1000000), }"
    npy = b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header) + 1) + header.encode() + b"\n" + b"\0" * 64
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        zf.writestr("layer_sizes.npy", npy)
    with pytest.raises(ModelFileError, match=r"declares a float32 array of shape \(1000000, 1000000\)"):
        load_bytes(tmp_path, buffer.getvalue())


def test_mlp_load_refuses_a_plain_npy_file(tmp_path):
    buffer = io.BytesIO()
    np.save(buffer, np.zeros(3, np.float32))
    with pytest.raises(ModelFileError, match="not a readable fastmlp model"):
        load_bytes(tmp_path, buffer.getvalue())
