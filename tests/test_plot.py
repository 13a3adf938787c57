"""--plot and fastmlp.plot: PNGs that open, written atomically, and a one-line error without matplotlib."""

import sys

import numpy as np
import pytest

from fastmlp import MLP, Trainer
from fastmlp.cli.plot import PlotUnavailableError, plot_confusion_matrix, plot_learning_curves
from fastmlp.cli.train import main

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def read_png(path):
    from matplotlib.image import imread

    assert path.read_bytes()[:8] == PNG_MAGIC
    return imread(path)


@pytest.fixture
def history():
    rng = np.random.default_rng(0)
    X, y = rng.random((60, 4), dtype=np.float32), rng.integers(0, 3, 60)
    return Trainer(MLP([4, 5, 3], seed=0), "numpy").fit(X, y, epochs=3, validation_data=(X, y))


def test_learning_curves_png_has_two_panels_worth_of_pixels(history, tmp_path):
    plot_learning_curves(history, tmp_path / "curves.png", title="t", best_epoch=2)
    image = read_png(tmp_path / "curves.png")
    assert image.shape[1] > 2 * image.shape[0] * 0.9  # two side-by-side panels: wide
    assert image.std() > 0.05  # something is drawn
    assert [p.name for p in tmp_path.iterdir()] == ["curves.png"]  # no temp file left


def test_learning_curves_without_validation_still_draw(tmp_path):
    rng = np.random.default_rng(0)
    X, y = rng.random((20, 4), dtype=np.float32), rng.integers(0, 3, 20)
    history = Trainer(MLP([4, 3], seed=0), "numpy").fit(X, y, epochs=2)
    plot_learning_curves(history, tmp_path / "c.png")
    assert read_png(tmp_path / "c.png").ndim == 3


def test_confusion_matrix_png_is_drawn(tmp_path):
    matrix = np.array([[50, 2, 0], [1, 40, 9], [0, 0, 30]])
    plot_confusion_matrix(matrix, tmp_path / "cm.png", class_names=["a", "bb", "ccc"])
    assert read_png(tmp_path / "cm.png").std() > 0.05


def test_a_failed_save_leaves_no_file_behind(history, tmp_path, monkeypatch):
    from matplotlib.figure import Figure

    def broken_savefig(self, *args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(Figure, "savefig", broken_savefig)
    with pytest.raises(OSError, match="disk full"):
        plot_learning_curves(history, tmp_path / "curves.png")
    assert list(tmp_path.iterdir()) == []


def test_plotting_without_matplotlib_names_the_extra(history, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # makes `import matplotlib` fail
    with pytest.raises(PlotUnavailableError, match=r'pip install "fastmlp\[plot\]"'):
        plot_learning_curves(history, tmp_path / "curves.png")


def test_cli_plot_writes_the_learning_curves(tiny_mnist_dir, tmp_path, capsys):
    code = main(["--backend", "numpy", "--data-dir", str(tiny_mnist_dir), "--epochs", "2", "--hidden", "16",
                 "--plot", str(tmp_path / "curves.png")])
    assert code == 0
    assert "learning curves drawn in" in capsys.readouterr().out
    assert read_png(tmp_path / "curves.png").shape[0] > 100


def test_cli_plot_without_matplotlib_exits_1_before_training(tiny_mnist_dir, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    code = main(["--backend", "numpy", "--data-dir", str(tiny_mnist_dir), "--epochs", "1",
                 "--plot", str(tmp_path / "curves.png")])
    captured = capsys.readouterr()
    assert code == 1
    assert captured.err.count("\n") == 1
    assert captured.err.startswith("python -m fastmlp.train: error: plotting needs matplotlib")
    assert "epoch" not in captured.out and not (tmp_path / "curves.png").exists()


def test_cli_plot_into_a_missing_folder_exits_1(tiny_mnist_dir, tmp_path, capsys):
    code = main(["--data-dir", str(tiny_mnist_dir), "--plot", str(tmp_path / "no" / "c.png")])
    assert code == 1 and "--plot" in capsys.readouterr().err
