"""MLP: construction, initialisation, prediction, and save/load with every refused file kind."""


import numpy as np
import pytest

from fastmlp import MLP, ModelFileError


def test_parameters_are_float32_contiguous_writable_and_shaped_fan_in_by_fan_out():
    model = MLP([784, 128, 64, 10], seed=0)
    assert model.layer_sizes == (784, 128, 64, 10)
    assert [W.shape for W in model.weights] == [(784, 128), (128, 64), (64, 10)]
    assert [b.shape for b in model.biases] == [(128,), (64,), (10,)]
    for a in model.weights + model.biases:
        assert a.dtype == np.float32 and a.flags.c_contiguous and a.flags.writeable


def test_he_init_has_std_sqrt_2_over_fan_in_and_zero_biases():
    model = MLP([2000, 300, 10], init="he", seed=0)
    assert model.weights[0].std() == pytest.approx(np.sqrt(2 / 2000), rel=0.02)
    assert model.weights[1].std() == pytest.approx(np.sqrt(2 / 300), rel=0.05)
    assert all((b == 0).all() for b in model.biases)


def test_normal_init_has_std_0_01():
    model = MLP([1000, 200], init="normal", seed=0)
    assert model.weights[0].std() == pytest.approx(0.01, rel=0.02)


def test_same_seed_gives_same_parameters_and_other_seed_differs():
    a, b, c = MLP([5, 4, 3], seed=7), MLP([5, 4, 3], seed=7), MLP([5, 4, 3], seed=8)
    assert all((x == y).all() for x, y in zip(a.weights, b.weights))
    assert not (a.weights[0] == c.weights[0]).all()


@pytest.mark.parametrize(
    "sizes, match",
    [([784], "at least 2"), ([], "at least 2"), ([784, 0, 10], r"layer_sizes\[1\]"),
     ([784, -3], r"layer_sizes\[1\]"), ([784, 12.5, 10], r"layer_sizes\[1\]"), ([True, 3], r"layer_sizes\[0\]"),
     (["784", 10], r"layer_sizes\[0\]")],
)
def test_bad_layer_sizes_are_refused_naming_the_entry(sizes, match):
    with pytest.raises(ValueError, match=match):
        MLP(sizes)


def test_unknown_init_is_refused():
    with pytest.raises(ValueError, match="init must be one of"):
        MLP([3, 2], init="xavier")


def test_assigning_into_weights_changes_the_model():
    model = MLP([3, 2], seed=0)
    model.weights[0][...] = 0
    model.biases[0][...] = [5, 0]
    np.testing.assert_array_equal(model.predict(np.ones((4, 3), np.float32)), [0, 0, 0, 0])


def test_predict_is_argmax_of_predict_proba_and_large_inputs_are_chunked():
    model = MLP([6, 5, 4], seed=1)
    X = np.random.default_rng(0).normal(size=(5000, 6)).astype(np.float32)
    probs = model.predict_proba(X, batch_size=1000)
    assert probs.shape == (5000, 4)
    np.testing.assert_allclose(probs.sum(axis=1), 1, rtol=1e-5)
    np.testing.assert_array_equal(model.predict(X), probs.argmax(axis=1))


def test_save_load_round_trip_is_exact(tmp_path):
    model = MLP([7, 6, 5, 3], seed=2)
    model.biases[1][...] = 0.5
    model.save(tmp_path / "m.npz")
    loaded = MLP.load(tmp_path / "m.npz")
    assert loaded.layer_sizes == model.layer_sizes
    for a, b in zip(model.weights + model.biases, loaded.weights + loaded.biases):
        np.testing.assert_array_equal(a, b)
        assert b.dtype == np.float32 and b.flags.c_contiguous and b.flags.writeable
    assert [p.name for p in tmp_path.iterdir()] == ["m.npz"]  # no temp file left


def test_save_leaves_the_old_file_intact_when_writing_fails(tmp_path, monkeypatch):
    path = tmp_path / "m.npz"
    MLP([3, 2], seed=0).save(path)
    before = path.read_bytes()

    def failing_savez(f, **arrays):
        f.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", failing_savez)
    with pytest.raises(OSError, match="disk full"):
        MLP([3, 2], seed=1).save(path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["m.npz"]


def _write_npz(path, **arrays):
    np.savez(path, **arrays)
    return path


def _valid_arrays():
    model = MLP([4, 3, 2], seed=0)
    return {"layer_sizes": np.array(model.layer_sizes), "W0": model.weights[0], "b0": model.biases[0],
            "W1": model.weights[1], "b1": model.biases[1]}


def test_load_refuses_a_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        MLP.load(tmp_path / "nope.npz")


def test_load_refuses_a_corrupt_file(tmp_path):
    path = tmp_path / "bad.npz"
    path.write_bytes(b"this is not a zip file")
    with pytest.raises(ModelFileError, match="not a readable"):
        MLP.load(path)


def test_load_refuses_a_truncated_file(tmp_path):
    path = _write_npz(tmp_path / "m.npz", **_valid_arrays())
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(ModelFileError):
        MLP.load(path)


def test_load_refuses_pickled_objects(tmp_path):
    arrays = _valid_arrays()
    arrays["W0"] = np.array([{"evil": 1}], dtype=object)
    path = _write_npz(tmp_path / "m.npz", **arrays)
    with pytest.raises(ModelFileError, match="not a readable"):
        MLP.load(path)


@pytest.mark.parametrize(
    "change, match",
    [
        (lambda a: a.pop("layer_sizes"), "no 'layer_sizes'"),
        (lambda a: a.pop("b1"), "missing"),
        (lambda a: a.update(W2=np.zeros((2, 2), np.float32)), "unexpected"),
        (lambda a: a.update(W0=np.zeros((4, 5), np.float32)), "W0 must be float32"),
        (lambda a: a.update(b0=a["b0"].astype(np.float64)), "b0 must be float32"),
        (lambda a: a.update(layer_sizes=np.array([4, 0, 2])), r"layer_sizes\[1\]"),
        (lambda a: a.update(layer_sizes=np.array([4.0, 3.0, 2.0])), "integer"),
        (lambda a: a["W1"].__setitem__((0, 0), np.nan), "NaN"),
    ],
    ids=["no-sizes", "missing-bias", "extra-layer", "wrong-shape", "wrong-dtype", "bad-sizes", "float-sizes", "nan"],
)
def test_load_refuses_inconsistent_files(tmp_path, change, match):
    arrays = _valid_arrays()
    change(arrays)
    path = _write_npz(tmp_path / "m.npz", **arrays)
    with pytest.raises(ModelFileError, match=match):
        MLP.load(path)
