"""The ONNX export run in ONNX Runtime gives fastmlp's probabilities (within 1e-5) and its labels: for an MNIST
net, and for a net trained from a CSV with string labels and standardised features; the command line too."""

import json

import numpy as np
import onnx
import onnxruntime
import pytest

import fastmlp
from fastmlp import MLP, Trainer
from fastmlp.cli import export as export_cli
from fastmlp.cli import train
from fastmlp.datasets import load_mnist


def run_onnx(path, X):
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["X"]
    assert [o.name for o in session.get_outputs()] == ["label", "probabilities"]
    labels, probabilities = session.run(None, {"X": X})
    return labels, probabilities, session.get_modelmeta().custom_metadata_map


def test_an_mnist_net_in_onnx_runtime_gives_fastmlps_probabilities_and_classes(tiny_mnist_dir, tmp_path):
    X_train, y_train, X_test, _ = load_mnist(tiny_mnist_dir, download=False)
    model = MLP([784, 128, 64, 10], seed=0)
    Trainer(model, "numpy", lr=0.05, batch_size=32).fit(X_train, y_train, epochs=2)
    fastmlp.export_onnx(model, tmp_path / "mnist.onnx")
    labels, probabilities, metadata = run_onnx(tmp_path / "mnist.onnx", X_test)
    np.testing.assert_allclose(probabilities, model.predict_proba(X_test), atol=1e-5, rtol=0)
    np.testing.assert_array_equal(labels, model.predict(X_test))
    assert json.loads(metadata["classes"]) == list(range(10))
    assert json.loads(metadata["layer_sizes"]) == [784, 128, 64, 10]
    graph = onnx.load(tmp_path / "mnist.onnx").graph
    assert [node.op_type for node in graph.node] == ["Gemm", "Relu", "Gemm", "Relu", "Gemm", "Softmax", "ArgMax"]


def write_csv(path, n, seed):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, 3)) * [1, 50, 0.01] + [0, 100, 5]
    score = X[:, 0] + (X[:, 1] - 100) / 50
    species = np.where(score > 0.7, "virginica", np.where(score < -0.7, "setosa", "versicolor"))
    with open(path, "w") as f:
        f.write("length,species,width,depth\n")
        for row, label in zip(X, species):
            f.write(f"{row[0]:.5f},{label},{row[1]:.5f},{row[2]:.5f}\n")
    return X.astype(np.float32), species


def test_a_csv_trained_net_with_string_labels_in_onnx_runtime(tmp_path):
    write_csv(tmp_path / "train.csv", 300, seed=0)
    X_test, _ = write_csv(tmp_path / "test.csv", 50, seed=1)
    assert train.main(["--data", str(tmp_path / "train.csv"), "--target", "species", "--standardize",
                       "--backend", "numpy", "--epochs", "3", "--hidden", "16", "--quiet",
                       "--save", str(tmp_path / "m.npz")]) == 0
    assert export_cli.main([str(tmp_path / "m.npz"), str(tmp_path / "m.onnx")]) == 0
    model = MLP.load(tmp_path / "m.npz")
    assert model.mean is not None and model.classes.tolist() == ["setosa", "versicolor", "virginica"]
    labels, probabilities, metadata = run_onnx(tmp_path / "m.onnx", X_test)
    np.testing.assert_allclose(probabilities, model.predict_proba(X_test), atol=1e-5, rtol=0)
    assert labels.tolist() == model.predict(X_test).tolist()
    assert set(labels.tolist()) <= {"setosa", "versicolor", "virginica"}
    assert json.loads(metadata["classes"]) == ["setosa", "versicolor", "virginica"]
    assert json.loads(metadata["feature_names"]) == ["length", "width", "depth"] and metadata["target"] == "species"
    ops = [node.op_type for node in onnx.load(tmp_path / "m.onnx").graph.node]
    assert ops[:2] == ["Sub", "Div"] and ops[-2:] == ["ArgMax", "Gather"]


@pytest.mark.parametrize("classes", [np.array([3, 7, 11]), np.array([-0.5, 0.5, 2.0])])
def test_numeric_labels_come_out_as_numbers(tmp_path, classes):
    model = MLP([4, 6, 3], seed=2)
    model.classes = classes
    fastmlp.export_onnx(model, tmp_path / "n.onnx")
    X = np.random.default_rng(0).standard_normal((20, 4)).astype(np.float32)
    labels, probabilities, _ = run_onnx(tmp_path / "n.onnx", X)
    np.testing.assert_allclose(probabilities, model.predict_proba(X), atol=1e-5, rtol=0)
    np.testing.assert_array_equal(labels, model.predict(X))


def test_without_onnx_the_command_says_how_to_install_it(tmp_path, monkeypatch, capsys):
    import builtins

    MLP([2, 2], seed=0).save(tmp_path / "m.npz")
    real_import = builtins.__import__

    def no_onnx(name, *args, **kwargs):
        if name == "onnx" or name.startswith("onnx."):
            raise ImportError("No module named 'onnx'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_onnx)
    assert export_cli.main([str(tmp_path / "m.npz"), str(tmp_path / "m.onnx")]) == 1
    err = capsys.readouterr().err
    assert err == ('fastmlp export: error: exporting to ONNX needs the onnx package, which is not installed: '
                   'pip install "fastmlp[onnx]"\n')
    assert not (tmp_path / "m.onnx").exists()
