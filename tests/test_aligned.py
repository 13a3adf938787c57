"""Arrays on cache lines (fastmlp.runtime.aligned): where the model, the packed buffers of training and the
copies kept for inference put their data, so that a tile's vector loads never straddle two cache lines."""

import pickle

import numpy as np
import pytest

from fastmlp import MLP
from fastmlp.backends.numba.buffers import _Packed, _Workspace
from fastmlp.inference.threads import kept_packed
from fastmlp.runtime.aligned import aligned_copy, aligned_empty, aligned_zeros, on_cache_line


def starts_on_a_line(a):
    return on_cache_line(a) or a.size == 0  # an empty array's address means nothing


@pytest.mark.parametrize("shape", [0, 1, 7, (3, 5), (784, 128), (2, 3, 16)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int64])
def test_aligned_arrays_start_on_a_line_and_behave_as_numpy_arrays(shape, dtype):
    for make in (aligned_empty, aligned_zeros):
        a = make(shape, dtype)
        assert starts_on_a_line(a) and a.flags.c_contiguous and a.flags.writeable
        assert a.shape == np.empty(shape).shape and a.dtype == dtype
    assert not aligned_zeros(shape, dtype).any()
    source = np.arange(np.prod(shape, dtype=int)).reshape(shape)
    copy = aligned_copy(source, dtype)
    assert starts_on_a_line(copy) and copy.dtype == dtype
    np.testing.assert_array_equal(copy, source.astype(dtype))
    copy[...] = 0  # its own memory
    assert source.sum() == np.arange(source.size).sum()


def test_a_models_arrays_start_on_lines_when_made_copied_or_loaded(tmp_path):
    model = MLP((784, 128, 64, 10), seed=0)
    path = tmp_path / "m.npz"
    model.save(path)
    for m in (model, model.copy(), MLP.load(path)):
        assert all(starts_on_a_line(a) for a in m.weights + m.biases)
        np.testing.assert_array_equal(m.weights[1], model.weights[1])


def test_training_buffers_and_kept_copies_start_on_lines():
    packed = _Packed((784, 128, 64, 10))
    work = _Workspace((784, 128, 64, 10), 64)
    arrays = [*packed.weights, *packed.transposed, *packed.velocity(), *packed.second_moments(), *work.inputs,
              *work.delta_panels, *work.acts, *work.deltas]
    assert all(starts_on_a_line(a) for a in arrays)
    assert starts_on_a_line(kept_packed(np.ones((30, 20), np.float32)))


def test_an_unpickled_model_is_back_on_lines_but_a_memory_mapped_one_is_left_as_mapped(tmp_path):
    joblib = pytest.importorskip("joblib")  # a dev dependency
    model = MLP((784, 128, 64, 10), seed=1)
    model.weights[0] = np.array(model.weights[0])  # NumPy's own placement: 16 bytes into a line, as large arrays go
    for copy in (pickle.loads(pickle.dumps(model)), joblib.load(_dumped(joblib, model, tmp_path))):
        assert all(starts_on_a_line(a) for a in copy.weights + copy.biases)
        np.testing.assert_array_equal(copy.predict_proba(np.ones((3, 784), np.float32)),
                                      model.predict_proba(np.ones((3, 784), np.float32)))
    mapped = joblib.load(_dumped(joblib, model, tmp_path), mmap_mode="r")
    assert all(isinstance(W, np.memmap) and not W.flags.writeable for W in mapped.weights)


def _dumped(joblib, model, tmp_path):
    path = tmp_path / "model.joblib"
    joblib.dump(model, path)
    return path
