"""`python -m fastmlp.evaluate` and `python -m fastmlp.predict` on a model trained on tiny synthetic digits."""

import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
from conftest import write_idx

from fastmlp import MLP, Pixels, Trainer
from fastmlp.cli.evaluate import confusion_matrix, format_report, precision_recall
from fastmlp.cli.evaluate import main as evaluate_main
from fastmlp.cli.predict import load_images
from fastmlp.cli.predict import main as predict_main
from fastmlp.datasets import load_mnist


@pytest.fixture(scope="module")
def trained(tiny_mnist_dir, tmp_path_factory):
    """(model path, test pixels uint8 (n, 784), test labels) of a net that learned the synthetic digits."""
    X, y, X_test, y_test = load_mnist(tiny_mnist_dir, download=False, as_pixels=True)
    model = MLP([784, 16, 10], seed=0)
    Trainer(model, "numpy", seed=0).fit(X, y, epochs=3)
    path = tmp_path_factory.mktemp("model") / "m.npz"
    model.save(path)
    return path, X_test.data, y_test


def test_confusion_matrix_counts_true_rows_against_predicted_columns():
    matrix = confusion_matrix([0, 0, 1, 2, 2, 2], [0, 1, 1, 2, 2, 0], 3)
    np.testing.assert_array_equal(matrix, [[1, 1, 0], [0, 1, 0], [1, 0, 2]])
    precision, recall = precision_recall(matrix)
    np.testing.assert_allclose(precision, [1 / 2, 1 / 2, 1])
    np.testing.assert_allclose(recall, [1 / 2, 1, 2 / 3])


def test_precision_of_a_never_predicted_class_is_zero_not_nan():
    precision, recall = precision_recall(confusion_matrix([0, 1], [0, 0], 3))
    assert np.isfinite(precision).all() and precision[1] == precision[2] == 0 and recall[2] == 0


def test_confusion_matrix_refuses_labels_out_of_range():
    with pytest.raises(ValueError, match=r"y_pred must be class indices in \[0, 2\)"):
        confusion_matrix([0, 1], [0, 5], 2)


def test_report_lists_every_class_and_the_matrix_rows():
    lines = format_report(np.array([[5, 1], [0, 4]]), ["cat", "dog"])
    assert lines[1].startswith("0 cat") and "83.33%" in lines[1] and "100.00%" in lines[1]
    assert lines[-2].split() == ["0", "5", "1"] and lines[-1].split() == ["1", "0", "4"]


def test_evaluate_prints_accuracy_report_and_draws_the_matrix(trained, tiny_mnist_dir, tmp_path, capsys):
    model_path, _, y_test = trained
    code = evaluate_main(["--model", str(model_path), "--data-dir", str(tiny_mnist_dir),
                          "--plot", str(tmp_path / "cm.png")])
    out = capsys.readouterr().out
    assert code == 0
    accuracy = float(out.split("test accuracy ")[1].split("%")[0])
    assert accuracy > 90
    lines = out.splitlines()
    matrix_rows = lines[lines.index("confusion matrix (rows: true class, columns: predicted class)") + 2:][:10]
    counts = np.array([[int(v.replace(",", "")) for v in row.split()[1:]] for row in matrix_rows])
    np.testing.assert_array_equal(counts.sum(axis=1), np.bincount(y_test, minlength=10))
    assert counts.trace() / counts.sum() == pytest.approx(accuracy / 100, abs=1e-4)
    assert (tmp_path / "cm.png").read_bytes()[:4] == b"\x89PNG"


def test_evaluate_refuses_a_model_of_other_shape_with_exit_1(tiny_mnist_dir, tmp_path, capsys):
    MLP([100, 10]).save(tmp_path / "small.npz")
    code = evaluate_main(["--model", str(tmp_path / "small.npz"), "--data-dir", str(tiny_mnist_dir)])
    err = capsys.readouterr().err
    assert code == 1 and "does not fit mnist" in err and err.count("\n") == 1


def test_evaluate_missing_model_exits_1_and_missing_argument_exits_2(tmp_path, capsys):
    assert evaluate_main(["--model", str(tmp_path / "none.npz"), "--no-download"]) == 1
    assert "model file not found" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        evaluate_main([])
    assert exc.value.code == 2


def predicted(capsys):
    """The (label, class, probability) of each line predict printed."""
    rows = [line.split() for line in capsys.readouterr().out.splitlines()]
    assert all(r[1] == "class" and r[3] == "probability" for r in rows)
    return [(r[0], int(r[2]), float(r[4])) for r in rows]


def test_predict_reads_idx_npy_and_png_alike(trained, tmp_path, capsys):
    from PIL import Image

    model_path, pixels, y_test = trained
    expected = MLP.load(model_path).predict(pixels[:4] / np.float32(255))
    write_idx(tmp_path / "images-idx3-ubyte", pixels[:4].reshape(4, 28, 28), gz=False)
    np.save(tmp_path / "flat.npy", pixels[:4])
    np.save(tmp_path / "float.npy", pixels[:4].reshape(4, 28, 28) / np.float32(255))
    Image.fromarray(pixels[0].reshape(28, 28)).resize((84, 84), Image.Resampling.NEAREST).save(tmp_path / "big.png")
    Image.fromarray(255 - pixels[0].reshape(28, 28)).save(tmp_path / "paper.png")

    inputs = ["images-idx3-ubyte", "flat.npy", "float.npy"]
    assert predict_main(["--model", str(model_path), *(str(tmp_path / name) for name in inputs)]) == 0
    rows = predicted(capsys)
    assert [label.rsplit("/", 1)[1] for label, _, _ in rows[:4]] == [f"images-idx3-ubyte[{i}]" for i in range(4)]
    for k in range(3):
        assert [c for _, c, _ in rows[4 * k : 4 * k + 4]] == expected.tolist()
    assert all(0.1 <= p <= 1 for _, _, p in rows)

    assert predict_main(["--model", str(model_path), str(tmp_path / "big.png")]) == 0
    (label, c, _), = predicted(capsys)
    assert label.endswith("big.png") and c == expected[0]
    assert predict_main(["--model", str(model_path), "--invert", str(tmp_path / "paper.png")]) == 0
    assert predicted(capsys)[0][1] == expected[0]


def test_load_images_scales_like_training_and_inverts():
    pixels = np.arange(784, dtype=np.int64).reshape(28, 28).astype(np.uint8)
    features = load_images_from(pixels)
    np.testing.assert_array_equal(features, Pixels(pixels.reshape(1, 784)).to_float32())
    np.testing.assert_array_equal(load_images_from(pixels, invert=True),
                                  Pixels(255 - pixels.reshape(1, 784)).to_float32())


def load_images_from(array, **kwargs):
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "a.npy"
        np.save(path, array)
        return load_images(path, 784, **kwargs)


@pytest.mark.parametrize(
    "array, error, match",
    [
        (np.zeros((3, 100), np.uint8), ValueError, r"expected images of 784 pixels .* got shape \(3, 100\)"),
        (np.full((1, 784), 2.0, np.float32), ValueError, r"float pixels must lie in \[0, 1\]"),
        *[(np.where(np.arange(784) == 300, bad, 0.5).reshape(1, 784), ValueError, r"float pixels must lie in \[0, 1\]")
          for bad in (np.nan, np.inf, -np.inf, 1e300)],  # 1e300 overflows float32 to inf
        (np.zeros((1, 784), np.int32), TypeError, "integer pixels must be uint8"),
        (np.zeros((1, 784), bool), TypeError, "expected pixel values"),
    ],
)
def test_load_images_refuses_what_it_cannot_scale(array, error, match):
    with pytest.raises(error, match=match):
        load_images_from(array)


def test_predict_errors_exit_1_with_one_line(trained, tmp_path, capsys):
    model_path = trained[0]
    (tmp_path / "note.png").write_text("not an image")
    for bad in (tmp_path / "missing-idx3-ubyte", tmp_path / "note.png"):
        assert predict_main(["--model", str(model_path), str(bad)]) == 1
        err = capsys.readouterr().err
        assert err.startswith("python -m fastmlp.predict: error:") and err.count("\n") == 1


def test_predict_png_without_pillow_names_the_extra(trained, tmp_path, capsys, monkeypatch):
    (tmp_path / "d.png").write_bytes(b"")
    monkeypatch.setitem(sys.modules, "PIL", None)
    assert predict_main(["--model", str(trained[0]), str(tmp_path / "d.png")]) == 1
    assert 'needs Pillow, which is not installed: pip install "fastmlp[plot]"' in capsys.readouterr().err


@pytest.mark.parametrize("module", ["fastmlp.evaluate", "fastmlp.predict"])
def test_commands_run_as_modules_and_show_help(module):
    result = subprocess.run([sys.executable, "-m", module, "--help"], capture_output=True, text=True)
    assert result.returncode == 0 and "--model" in result.stdout


def test_debug_shows_the_traceback_instead_of_one_line(trained, tmp_path):
    with pytest.raises(FileNotFoundError):
        predict_main(["--model", str(trained[0]), "--debug", str(tmp_path / "missing.npy")])
    with pytest.raises(FileNotFoundError):
        evaluate_main(["--model", str(tmp_path / "none.npz"), "--debug"])
