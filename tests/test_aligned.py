"""Arrays on cache lines (fastmlp.runtime.aligned): where the model, the packed buffers of training and the
copies kept for inference put their data, so that a tile's vector loads never straddle two cache lines."""

import pickle

import numpy as np
import pytest

from fastmlp import MLP
from fastmlp.backends.numba.buffers import _Packed, _Workspace
from fastmlp.inference.threads import kept_packed
from fastmlp.runtime.aligned import PAGE, aligned_copy, aligned_empty, aligned_zeros, on_cache_line


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


def _pages(a):
    """The pages a's data touches: range of page numbers."""
    return range(a.ctypes.data // PAGE, (a.ctypes.data + a.nbytes - 1) // PAGE + 1)


def test_each_aligned_array_has_pages_of_its_own():
    # Small and large arrays made one after another (NumPy's allocator puts small ones side by side): none shares a
    # page with another, so one worker's stream over its array never has the prefetcher fetch another's lines.
    arrays = [make(shape, dtype) for make in (aligned_empty, aligned_zeros) for shape, dtype in
              [(1, np.float32), (100, np.int64), (1024, np.float32), (1025, np.float32), ((64, 784), np.float32),
               (3, np.float64)]]
    arrays += [aligned_copy(np.ones(17, np.float32)), aligned_copy(np.ones((300, 7)))]
    pages = [set(_pages(a)) for a in arrays]
    assert all(a.ctypes.data % PAGE == 0 for a in arrays)
    for i, mine in enumerate(pages):
        assert not any(mine & theirs for theirs in pages[i + 1:])


@pytest.mark.parametrize("rows, width", [(32, 784), (64, 784), (1, 785), (5, 3), (1024, 1024)])
def test_the_workers_input_buffers_each_start_on_a_page(rows, width):
    inputs = _Workspace((width, 16, 10), rows).inputs_for(2, private=True)
    assert inputs.shape[0] == 4 and inputs.shape[1] >= rows
    assert all(buffer.ctypes.data % PAGE == 0 for buffer in inputs)  # so no page holds two workers' rows


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
