"""`python -m fastmlp.train` end to end on a tiny synthetic dataset, and its errors."""

import json
import subprocess
import sys

import numpy as np
import pytest

from fastmlp import MLP, available_backends
from fastmlp.cli.train import main


@pytest.mark.parametrize("backend", available_backends())
def test_cli_trains_prints_a_line_per_epoch_and_writes_its_outputs(tiny_mnist_dir, tmp_path, capsys, backend):
    code = main(["--backend", backend, "--data-dir", str(tiny_mnist_dir), "--epochs", "3", "--hidden", "32",
                 "--batch-size", "16", "--save", str(tmp_path / "m.npz"),
                 "--metrics-json", str(tmp_path / "m.json")])
    out = capsys.readouterr().out.splitlines()
    assert code == 0
    epoch_lines = [line for line in out if line.startswith("epoch ")]
    assert [line.split()[1] for line in epoch_lines] == ["1/3", "2/3", "3/3"]
    assert all("test acc" in line and "samples/s" in line for line in epoch_lines)

    metrics = json.loads((tmp_path / "m.json").read_text())
    assert metrics["test_accuracy"] > 0.9
    assert [h["epoch"] for h in metrics["history"]] == [1, 2, 3]
    assert set(metrics["history"][0]) == {"epoch", "train_loss", "val_loss", "val_accuracy", "seconds",
                                          "samples_per_s", "lr"}
    assert metrics["config"]["backend"] == backend and metrics["config"]["hidden"] == [32]
    assert any(line.startswith(f"test accuracy {100 * metrics['test_accuracy']:.2f}%") for line in out)

    model = MLP.load(tmp_path / "m.npz")
    assert model.layer_sizes == (784, 32, 10)


def test_cli_holds_out_a_validation_split_and_quiet_prints_only_the_result(tiny_mnist_dir, capsys):
    code = main(["--backend", "numpy", "--data-dir", str(tiny_mnist_dir), "--epochs", "1", "--val-size", "0.2",
                 "--quiet"])
    out = capsys.readouterr().out.splitlines()
    assert code == 0
    assert len(out) == 1 and out[0].startswith("test accuracy")


def test_cli_same_seed_gives_the_same_model(tiny_mnist_dir, tmp_path, capsys):
    for name in ("a.npz", "b.npz"):
        assert main(["--backend", "numpy", "--data-dir", str(tiny_mnist_dir), "--epochs", "1", "--quiet",
                     "--seed", "3", "--save", str(tmp_path / name)]) == 0
    a, b = MLP.load(tmp_path / "a.npz"), MLP.load(tmp_path / "b.npz")
    for x, z in zip(a.weights, b.weights):
        np.testing.assert_array_equal(x, z)


@pytest.mark.parametrize(
    "args, message",
    [
        (["--backend", "cuda"], "invalid choice: 'cuda'"),
        (["--epochs", "0"], "--epochs: must be an integer >= 1"),
        (["--batch-size", "x"], "--batch-size: must be an integer >= 1, got 'x'"),
        (["--lr", "-1"], "--lr: must be a finite number > 0"),
        (["--lr", "nan"], "--lr: must be a finite number > 0"),
        (["--val-size", "1.5"], "--val-size: must be a fraction"),
        (["--hidden", "0"], "--hidden: must be an integer >= 1"),
        (["--init", "zeros"], "invalid choice: 'zeros'"),
        (["--momentum", "1"], "--momentum: must be in [0, 1)"),
        (["--weight-decay", "-1"], "--weight-decay: must be a finite number >= 0"),
        (["--schedule", "linear"], "invalid choice: 'linear'"),
        (["--step-size", "0"], "--step-size: must be an integer >= 1"),
        (["--gamma", "2"], "--gamma: must be in (0, 1]"),
        (["--patience", "0", "--val-size", "0.1"], "--patience: must be an integer >= 1"),
        (["--patience", "3"], "--patience needs --val-size > 0"),
        (["--optimizer", "rmsprop"], "invalid choice: 'rmsprop'"),
        (["--optimizer", "adam", "--beta1", "1"], "--beta1: must be in [0, 1)"),
        (["--optimizer", "adam", "--beta2", "-0.5"], "--beta2: must be in [0, 1)"),
        (["--optimizer", "adam", "--eps", "0"], "--eps: must be a finite number > 0"),
        (["--optimizer", "adamw", "--eps", "1e-60"], "--eps: must be a finite number > 0 (in float32)"),
        (["--optimizer", "adam", "--momentum", "0.9"], "--momentum is an SGD option: --optimizer adam takes --beta1"),
        (["--optimizer", "adamw", "--nesterov"], "--nesterov is an SGD option: --optimizer adamw"),
        (["--optimizer", "adam", "--no-nesterov"], "--nesterov is an SGD option"),
        (["--beta2", "0.99"], "--beta2 is an Adam option: give --optimizer adam or adamw with it"),
    ],
)
def test_bad_arguments_exit_2_with_one_usage_error_line(args, message, capsys):
    with pytest.raises(SystemExit) as exc:
        main(args)
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0] and err[0].startswith("python -m fastmlp.train: error:")


def test_missing_data_dir_with_no_download_exits_1_with_one_line(tmp_path, capsys):
    code = main(["--data-dir", str(tmp_path), "--no-download", "--epochs", "1"])
    err = capsys.readouterr().err
    assert code == 1
    assert len(err.strip().splitlines()) == 1 and err.startswith("python -m fastmlp.train: error:")


def test_unwritable_save_fails_before_training_with_exit_1(tiny_mnist_dir, tmp_path, capsys):
    code = main(["--data-dir", str(tiny_mnist_dir), "--save", str(tmp_path / "no" / "such" / "m.npz")])
    captured = capsys.readouterr()
    assert code == 1
    assert "does not exist" in captured.err and "epoch" not in captured.out


def test_module_runs_as_a_script_and_shows_help():
    result = subprocess.run([sys.executable, "-m", "fastmlp.train", "--help"], capture_output=True, text=True)
    assert result.returncode == 0
    assert "--backend {numpy,numba}" in result.stdout and "--metrics-json" in result.stdout


def test_cli_default_recipe_is_nesterov_momentum_with_a_cosine_schedule_and_momentum_0_is_plain_sgd(
        tiny_mnist_dir, capsys):
    assert main(["--backend", "numpy", "--data-dir", str(tiny_mnist_dir), "--epochs", "1", "--hidden", "8"]) == 0
    assert "batch 64, lr 0.05 cosine, momentum 0.9 (Nesterov)," in capsys.readouterr().out
    assert main(["--backend", "numpy", "--data-dir", str(tiny_mnist_dir), "--epochs", "1", "--hidden", "8",
                 "--no-nesterov"]) == 0
    assert "lr 0.05 cosine, momentum 0.9, seed 0" in capsys.readouterr().out
    assert main(["--backend", "numpy", "--data-dir", str(tiny_mnist_dir), "--epochs", "1", "--hidden", "8",
                 "--momentum", "0", "--schedule", "none", "--batch-size", "32", "--lr", "0.1"]) == 0
    assert "batch 32, lr 0.1, seed 0" in capsys.readouterr().out


def test_dataset_switch_finds_fashion_mnist_where_the_system_ships_it(tiny_mnist_dir, tmp_path, capsys, monkeypatch):
    from fastmlp import datasets
    from fastmlp.cli.evaluate import main as evaluate_main

    monkeypatch.delenv("FASTMLP_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setitem(datasets.BUNDLED_DIRS, "fashion-mnist", [tiny_mnist_dir])
    monkeypatch.setitem(datasets.BUNDLED_DIRS, "mnist", [tmp_path / "empty"])
    code = main(["--backend", "numpy", "--dataset", "fashion-mnist", "--no-download", "--epochs", "1",
                 "--hidden", "16", "--save", str(tmp_path / "f.npz")])
    out = capsys.readouterr().out
    assert code == 0 and "fashion-mnist 600 train / 100 test" in out
    assert evaluate_main(["--model", str(tmp_path / "f.npz"), "--dataset", "fashion-mnist", "--no-download"]) == 0
    assert "9 Ankle boot" in capsys.readouterr().out
    assert main(["--dataset", "mnist", "--no-download", "--epochs", "1"]) == 1
    assert "mnist not found" in capsys.readouterr().err


@pytest.mark.parametrize("backend", available_backends())
def test_cli_momentum_schedule_and_weight_decay_reach_the_trainer(tiny_mnist_dir, tmp_path, capsys, backend):
    code = main(["--backend", backend, "--data-dir", str(tiny_mnist_dir), "--epochs", "3", "--hidden", "16",
                 "--lr", "0.04", "--momentum", "0.9", "--nesterov", "--weight-decay", "1e-4", "--schedule", "step",
                 "--step-size", "2", "--gamma", "0.5", "--metrics-json", str(tmp_path / "m.json")])
    out = capsys.readouterr().out
    assert code == 0
    assert "lr 0.04 step (x0.5 every 2 epochs), momentum 0.9 (Nesterov), weight decay 0.0001" in out
    metrics = json.loads((tmp_path / "m.json").read_text())
    assert [h["lr"] for h in metrics["history"]] == pytest.approx([0.04, 0.04, 0.02])
    assert metrics["test_accuracy"] > 0.9


def test_cli_patience_stops_early_and_keeps_the_best_epoch(tiny_mnist_dir, tmp_path, capsys):
    # A rate this high makes the validation loss bounce, so early stopping has something to do.
    code = main(["--backend", "numpy", "--data-dir", str(tiny_mnist_dir), "--epochs", "30", "--hidden", "16",
                 "--lr", "1", "--val-size", "0.3", "--patience", "2", "--metrics-json", str(tmp_path / "m.json")])
    out = capsys.readouterr().out
    metrics = json.loads((tmp_path / "m.json").read_text())
    history = metrics["history"]
    val_losses = [h["val_loss"] for h in history]
    assert code == 0 and len(history) < 30
    best = metrics["best_epoch"]
    assert val_losses[best - 1] == min(val_losses) and len(history) - best == 2
    assert f"kept the parameters of epoch {best}" in out


def test_blas_threads_limits_blas_during_the_run_only(monkeypatch, tiny_mnist_dir):
    from threadpoolctl import threadpool_info

    import fastmlp.cli.train

    def blas_threads():
        return {i["filepath"]: i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"}

    before = blas_threads()
    seen = []
    monkeypatch.setattr(fastmlp.cli.train, "run", lambda args: seen.append(blas_threads()))
    assert main(["--data-dir", str(tiny_mnist_dir), "--blas-threads", "1"]) == 0
    assert seen and set(seen[0].values()) == {1}
    assert blas_threads() == before


def test_blas_threads_must_be_positive(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--blas-threads", "0"])
    assert exit_info.value.code == 2
    assert "--blas-threads" in capsys.readouterr().err


@pytest.mark.parametrize("quiet", [False, True])
def test_cli_says_compiling_only_while_numba_really_compiles(monkeypatch, capsys, tiny_mnist_dir, quiet):
    # A warm-up that compiles a new function (a real compilation, as on a cold cache) is announced on
    # stderr while it compiles, unless --quiet; one that finds everything compiled says nothing.
    from numba import njit

    from fastmlp.backends.numba import backend as numba_fused

    said_during = []
    real_warm_up = numba_fused.Backend.warm_up

    def compiling_warm_up(self, *args, **kwargs):
        njit(lambda x: x + 1)(1)  # a fresh function: Numba compiles it, never from a cache
        said_during.append(capsys.readouterr().err)
        return real_warm_up(self, *args, **kwargs)

    monkeypatch.setattr(numba_fused.Backend, "warm_up", compiling_warm_up)
    args = ["--data-dir", str(tiny_mnist_dir), "--backend", "numba", "--epochs", "1"] + ["--quiet"] * quiet
    assert main(args) == 0
    message = "compiling the numba kernels"
    assert said_during and (message in said_during[0]) != quiet

    monkeypatch.setattr(numba_fused.Backend, "warm_up", real_warm_up)
    assert main(args) == 0  # everything this net needs is compiled in this process now
    assert "compiling" not in capsys.readouterr().err


@pytest.mark.parametrize("backend", available_backends())
def test_cli_adam_ignores_the_sgd_defaults_and_reaches_the_trainer(tiny_mnist_dir, tmp_path, capsys, backend):
    # The default recipe's momentum 0.9 and Nesterov are not "given": --optimizer adam alone must run.
    code = main(["--backend", backend, "--data-dir", str(tiny_mnist_dir), "--epochs", "2", "--hidden", "16",
                 "--optimizer", "adam", "--metrics-json", str(tmp_path / "m.json")])
    out = capsys.readouterr().out
    assert code == 0
    assert "batch 64, adam, lr 0.001 cosine, betas 0.9 0.999, eps 1e-08, seed 0" in out
    metrics = json.loads((tmp_path / "m.json").read_text())
    assert metrics["config"]["optimizer"] == "adam" and metrics["config"]["lr"] == 0.001
    assert metrics["config"]["momentum"] == 0.0 and metrics["config"]["nesterov"] is False
    assert metrics["test_accuracy"] > 0.8
    code = main(["--backend", backend, "--data-dir", str(tiny_mnist_dir), "--epochs", "1", "--hidden", "16",
                 "--optimizer", "adamw", "--lr", "0.002", "--beta1", "0.8", "--beta2", "0.99", "--eps", "1e-6",
                 "--weight-decay", "0.01"])
    assert code == 0
    assert "adamw, lr 0.002 cosine, betas 0.8 0.99, eps 1e-06, weight decay 0.01, seed 0" in capsys.readouterr().out
