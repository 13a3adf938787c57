"""python -m fastmlp.sweep on real Dask LocalClusters (worker processes on 127.0.0.1), on the tiny synthetic dataset."""

import argparse
import json
import os
import signal
import subprocess
import sys

import distributed
import joblib
import numpy as np
import pytest
from sklearn.model_selection import GridSearchCV

from fastmlp import MLP, MLPClassifier, cli
from fastmlp.datasets import load_mnist
from fastmlp.sweep.cli import build_parser, main, parse_arguments
from fastmlp.sweep.grid import configurations, grid_values
from fastmlp.sweep.trial import TRIAL_STARTED, run_trial

TRIAL_KEYS = {"config", "status", "test_accuracy", "test_loss", "val_accuracy", "val_loss", "train_s",
              "epochs_trained", "best_epoch", "error", "worker", "loaded_data", "compile_s", "retries",
              "lost_workers"}
# Small and quick: the reference backend (nothing to compile) on a 32-16 net.
QUICK = ["--backend", "numpy", "--hidden", "32x16", "--epochs", "2"]


def local_cluster(n_workers):
    return distributed.LocalCluster(n_workers=n_workers, threads_per_worker=1, processes=True, host="127.0.0.1",
                                    dashboard_address=None, scheduler_kwargs={"dashboard_address": "127.0.0.1:0"},
                                    silence_logs=50)


@pytest.fixture(scope="module")
def cluster():
    with local_cluster(2) as cluster:
        assert cluster.scheduler_address.startswith("tcp://127.0.0.1:")
        yield cluster


@pytest.fixture
def sweep(cluster, tiny_mnist_dir, tmp_path, capsys):
    """Run the sweep CLI against the shared cluster; returns (exit status, stdout, stderr, the JSON)."""

    def run(*args, scheduler=cluster.scheduler_address):
        out = tmp_path / "sweep.json"
        where = ["--scheduler", scheduler] if scheduler else []
        status = main([*where, "--data-dir", str(tiny_mnist_dir), "--json", str(out), *args])
        captured = capsys.readouterr()
        return status, captured.out, captured.err, json.loads(out.read_text()) if out.exists() else None

    return run


def test_a_grid_runs_every_combination_and_ranks_them_by_test_accuracy(sweep):
    status, out, err, document = sweep(*QUICK, "--lr", "0.02", "0.1", "--batch-size", "32", "64")
    assert status == 0, err
    trials = document["trials"]
    assert sorted((t["config"]["lr"], t["config"]["batch_size"]) for t in trials) == [
        (0.02, 32), (0.02, 64), (0.1, 32), (0.1, 64)]
    assert all(t["status"] == "ok" and 0 <= t["test_accuracy"] <= 1 for t in trials)
    assert document["sweep"]["swept"] == ["batch_size", "lr"] and document["sweep"]["sorted_by"] == "test_accuracy"
    assert [line[:5] for line in out.splitlines() if line.startswith("[")] == ["[1/4]", "[2/4]", "[3/4]", "[4/4]"]
    table = out[out.index("best first"):].splitlines()[2:6]
    accuracies = [float(line.split()[3].rstrip("%")) for line in table]
    assert accuracies == sorted(accuracies, reverse=True)
    best = max(trials, key=lambda t: (t["test_accuracy"], -t["test_loss"]))
    assert document["best"] == best
    # Data loaded at most once per worker process, whatever ran on it before.
    loads = [t["worker"] for t in trials if t["loaded_data"]]
    assert len(loads) == len(set(loads))


def test_the_json_holds_one_record_per_trial_in_the_documented_schema(sweep):
    status, _, err, document = sweep(*QUICK, "--lr", "0.05", "1e30")
    assert status == 0, err
    assert set(document) == {"sweep", "trials", "best", "groups_over_seeds"}
    for trial in document["trials"]:
        assert set(trial) == TRIAL_KEYS
        assert set(trial["config"]) == {"backend", "hidden", "epochs", "batch_size", "lr", "momentum", "nesterov",
                                        "optimizer", "weight_decay", "schedule", "step_size", "gamma", "seed", "init",
                                        "val_size", "patience", "dataset"}
        assert trial["status"] in ("ok", "failed") and trial["worker"].startswith("tcp://127.0.0.1:")
        assert trial["retries"] == 0 and trial["lost_workers"] == []
        if trial["status"] == "ok":
            assert trial["error"] is None and isinstance(trial["train_s"], float)
            assert isinstance(trial["test_accuracy"], float) and isinstance(trial["test_loss"], float)
        else:
            assert trial["test_accuracy"] is None and isinstance(trial["error"], str)


def test_a_failing_trial_is_recorded_with_its_one_line_error_and_the_others_finish(sweep):
    status, out, err, document = sweep(*QUICK, "--lr", "0.05", "1e30", "--momentum", "0")
    assert status == 0, err
    by_lr = {t["config"]["lr"]: t for t in document["trials"]}
    assert by_lr[0.05]["status"] == "ok"
    failed = by_lr[1e30]
    assert failed["status"] == "failed"
    assert failed["error"].startswith("TrainingDivergedError: training diverged in epoch 1")
    assert "\n" not in failed["error"]
    assert "failed: TrainingDivergedError" in out


def test_every_trial_failing_exits_1(sweep):
    status, _, err, document = sweep(*QUICK, "--lr", "1e30", "--momentum", "0")
    assert status == 1 and err.strip() == "python -m fastmlp.sweep: error: every trial failed"
    assert document["trials"][0]["status"] == "failed" and document["best"] is None


def test_resume_skips_the_ok_trials_and_reruns_the_failed_ones(sweep, tmp_path):
    status, _, err, first = sweep(*QUICK, "--lr", "0.05", "0.1")
    assert status == 0, err
    # Make the 0.1 trial look failed, as after a lost cluster: --resume must train it again.
    saved = tmp_path / "sweep.json"
    first["trials"] = [dict(t, status="failed", error="KilledWorker: lost") if t["config"]["lr"] == 0.1 else t
                       for t in first["trials"]]
    saved.write_text(json.dumps(first))
    kept = next(t for t in first["trials"] if t["config"]["lr"] == 0.05)

    status, out, err, resumed = sweep(*QUICK, "--lr", "0.05", "0.1", "0.2", "--resume", str(saved))
    assert status == 0, err
    assert "3 trials, 2 to run (1 done in" in out
    assert [line[:5] for line in out.splitlines() if line.startswith("[")] == ["[1/2]", "[2/2]"]
    by_lr = {t["config"]["lr"]: t for t in resumed["trials"]}
    assert len(resumed["trials"]) == 3 and by_lr[0.05] == kept
    assert by_lr[0.1]["status"] == "ok" and by_lr[0.2]["status"] == "ok"


def test_the_json_is_rewritten_complete_after_every_finished_trial(sweep, tmp_path, monkeypatch):
    from fastmlp.sweep.report import Report

    seen = []
    write_json = Report.write_json

    def write_and_read_back(self, path):
        write_json(self, path)
        seen.append([t["status"] for t in json.loads(path.read_text())["trials"]])

    monkeypatch.setattr(Report, "write_json", write_and_read_back)
    status, _, err, _ = sweep(*QUICK, "--lr", "0.02", "0.05", "0.1")
    assert status == 0, err
    assert seen[:3] == [["ok"], ["ok", "ok"], ["ok", "ok", "ok"]]  # then once more at the end
    assert list(tmp_path.glob(".*.tmp")) == []


def test_save_best_after_resume_trains_the_best_resumed_trial_again(sweep, tmp_path, tiny_mnist_dir):
    status, _, err, first = sweep(*QUICK, "--lr", "0.01", "0.1")
    assert status == 0, err
    path = tmp_path / "best.npz"
    status, out, err, _ = sweep(*QUICK, "--lr", "0.01", "0.1", "--resume", str(tmp_path / "sweep.json"),
                                "--save-best", str(path))
    assert status == 0, err
    assert "2 trials, 0 to run" in out and "training the best trial again" in out
    *_, X_test, y_test = load_mnist(tiny_mnist_dir)
    assert float((MLP.load(path).predict(X_test) == y_test).mean()) == first["best"]["test_accuracy"]


def test_resume_of_a_file_that_is_not_a_sweep_says_so(sweep, tmp_path):
    bogus = tmp_path / "bogus.json"
    bogus.write_text('{"history": []}')
    status, _, err, _ = sweep(*QUICK, "--resume", str(bogus))
    assert status == 1
    assert err.startswith(f"python -m fastmlp.sweep: error: --resume {bogus}: not a sweep's JSON")


def test_validation_size_ranks_by_validation_accuracy(sweep):
    status, out, err, document = sweep(*QUICK, "--lr", "0.02", "0.1", "--val-size", "0.2")
    assert status == 0, err
    assert document["sweep"]["sorted_by"] == "val_accuracy"
    assert all(0 <= t["val_accuracy"] <= 1 for t in document["trials"])
    assert document["best"]["val_accuracy"] == max(t["val_accuracy"] for t in document["trials"])
    assert "val acc" in out


def test_ensemble_averages_the_probabilities_of_each_configurations_seeds(sweep, tiny_mnist_dir):
    status, out, err, document = sweep(*QUICK, "--seed", "0", "1", "--ensemble")
    assert status == 0, err
    (group,) = document["groups_over_seeds"]
    assert sorted(group["seeds"]) == [0, 1] and sorted(group["ensemble"]["seeds"]) == [0, 1]
    # The same two trials trained here, single-threaded as on a worker, give the same probabilities.
    source = {"dataset": "mnist", "data_dir": str(tiny_mnist_dir), "download": True}
    probabilities = [run_trial("local", t["config"], source, keep_probabilities=True)["test_probabilities"]
                     for t in document["trials"]]
    *_, y_test = load_mnist(tiny_mnist_dir)
    expected = float((np.mean(probabilities, axis=0).argmax(axis=1) == y_test).mean())
    assert group["ensemble"]["test_accuracy"] == expected
    accuracies = [t["test_accuracy"] for t in document["trials"]]
    assert group["test_accuracy_mean"] == pytest.approx(np.mean(accuracies))
    assert group["test_accuracy_min"] == min(accuracies)
    assert "ensemble test acc" in out


def test_save_best_writes_the_model_of_the_best_trial(sweep, tmp_path, tiny_mnist_dir):
    path = tmp_path / "best.npz"
    status, out, err, document = sweep(*QUICK, "--lr", "0.01", "0.1", "--save-best", str(path))
    assert status == 0, err
    model = MLP.load(path)
    *_, X_test, y_test = load_mnist(tiny_mnist_dir)
    assert float((model.predict(X_test) == y_test).mean()) == document["best"]["test_accuracy"]


def test_plot_draws_a_png(sweep, tmp_path):
    path = tmp_path / "sweep.png"
    status, _, err, _ = sweep(*QUICK, "--lr", "0.02", "0.1", "--batch-size", "32", "64", "--plot", str(path))
    assert status == 0, err
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_plot_suffix_that_cannot_be_drawn_fails_before_any_trial(tmp_path, capsys, tiny_mnist_dir):
    status = main(["--scheduler", "tcp://127.0.0.1:1", "--data-dir", str(tiny_mnist_dir),  # never reached
                   "--plot", str(tmp_path / "sweep.gif")])
    err = capsys.readouterr().err
    assert status == 1 and err.count("\n") == 1
    assert err.startswith(f"python -m fastmlp.sweep: error: {tmp_path / 'sweep.gif'}: cannot draw a .gif file")


def test_the_default_local_cluster_loads_the_data_and_compiles_once_per_worker(sweep):
    status, out, err, document = sweep("--backend", "numba", "--hidden", "32x16", "--epochs", "1",
                                       "--seed", "0", "1", "2", "--workers", "1", scheduler=None)
    assert status == 0, err
    assert "1 worker (1 thread each) of a local cluster at tcp://127.0.0.1:" in out
    trials = document["trials"]
    assert [t["status"] for t in trials] == ["ok"] * 3
    assert [t["loaded_data"] for t in trials] == [True, False, False]
    assert [t["compile_s"] is not None for t in trials] == [True, False, False]


def test_a_worker_killed_mid_trial_makes_dask_rerun_the_trial_and_the_retry_is_reported(
        tiny_mnist_dir, tmp_path, capsys):
    killed = []

    def kill_the_first_trials_worker(event):
        _, message = event
        if not killed:
            killed.append(message)
            os.kill(message["pid"], signal.SIGKILL)

    out = tmp_path / "sweep.json"
    with local_cluster(2) as cluster, distributed.Client(cluster) as watcher:
        watcher.subscribe_topic(TRIAL_STARTED, kill_the_first_trials_worker)
        # Long enough (tens of epochs) that the kill lands while the first trial trains.
        status = main(["--scheduler", cluster.scheduler_address, "--data-dir", str(tiny_mnist_dir), "--json", str(out),
                       "--backend", "numpy", "--hidden", "64x32", "--epochs", "40", "--batch-size", "8",
                       "--lr", "0.02", "0.05"])
    stdout = capsys.readouterr().out
    assert status == 0
    trials = json.loads(out.read_text())["trials"]
    assert [t["status"] for t in trials] == ["ok", "ok"]
    (retried,) = [t for t in trials if t["retries"]]
    assert retried["retries"] == 1 and retried["lost_workers"] == [killed[0]["worker"]]
    assert retried["worker"] != killed[0]["worker"]
    assert f"(retried 1x: worker {killed[0]['worker']} was lost mid-trial)" in stdout


def test_without_dask_the_sweep_stops_with_an_install_hint(monkeypatch, capsys, tiny_mnist_dir):
    monkeypatch.setitem(sys.modules, "distributed", None)  # import distributed now raises ImportError
    assert main(["--data-dir", str(tiny_mnist_dir), "--epochs", "1"]) == 1
    err = capsys.readouterr().err
    assert err == ('python -m fastmlp.sweep: error: sweeps need Dask distributed, which is not installed: '
                   'pip install "fastmlp[sweep]"\n')


@pytest.mark.parametrize("args, message", [
    (["--workers", "2", "--scheduler", "tcp://127.0.0.1:1"], "--workers sizes the local cluster"),
    (["--ensemble"], "--ensemble averages the trials of several seeds"),
    (["--hidden", "12a"], "argument --hidden: must be layer widths >= 1 joined by x, such as 128x64, got '12a'"),
    (["--lr", "0.1", "-1"], "argument --lr: must be a finite number > 0"),
    (["--lr", "0.1", "0.2", "--random", "3"], "--random 3 asks for more trials than the grid has (2)"),
    (["--patience", "2"], "--patience needs --val-size > 0"),
    (["--and", "--val-size", "0.1"], "--val-size must be the same for every grid"),
])
def test_bad_arguments_exit_2_naming_the_flag(args, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        parse_arguments(args)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert err.startswith("python -m fastmlp.sweep: error: ")
    assert err.endswith(" (see python -m fastmlp.sweep --help)\n")


def test_fastmlp_sweep_is_the_sweep_under_its_own_name(capsys, monkeypatch, tiny_mnist_dir):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["sweep", "--help"])
    assert exit_info.value.code == 0 and capsys.readouterr().out.startswith("usage: fastmlp sweep ")
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["sweep", "--lr", "0.1", "-1"])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err == ("fastmlp sweep: error: argument --lr: must be a finite number > 0 (in float32), "
                                       "got -1 (see fastmlp sweep --help)\n")
    monkeypatch.setitem(sys.modules, "distributed", None)  # a runtime error names the command it ran as, too
    assert cli.main(["sweep", "--data-dir", str(tiny_mnist_dir), "--epochs", "1"]) == 1
    assert capsys.readouterr().err.startswith("fastmlp sweep: error: sweeps need Dask distributed")


def test_python_dash_m_fastmlp_sweep_still_runs():
    result = subprocess.run([sys.executable, "-m", "fastmlp.sweep", "--workers", "0"], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 2
    assert result.stderr == ("python -m fastmlp.sweep: error: argument --workers: must be an integer >= 1, got '0' "
                             "(see python -m fastmlp.sweep --help)\n")


def test_every_option_has_help_and_shows_its_default_once_as_a_value_not_a_list():
    parser = build_parser()
    help_text = parser.format_help()
    for action in parser._actions:
        if isinstance(action, (argparse._HelpAction, argparse._VersionAction)):
            continue
        assert action.help, f"{action.option_strings} has no help"
        shown = parser._get_formatter()._get_help_string(action) or ""
        if action.default is not None and action.default is not False:
            assert shown.count("default:") == 1, f"{action.option_strings}: {shown!r}"
    assert "(default: None)" not in help_text and "(default: [" not in help_text
    assert "(default: 128x64)" in help_text and "(default: 0.05)" in help_text


def test_an_unreachable_scheduler_is_one_line_naming_the_flag(tiny_mnist_dir, capsys, monkeypatch):
    monkeypatch.setattr("fastmlp.sweep.cli.CONNECT_TIMEOUT_S", 2)
    with socket_nobody_listens_on() as port:
        status = main(["--scheduler", f"tcp://127.0.0.1:{port}", "--data-dir", str(tiny_mnist_dir)])
    err = capsys.readouterr().err
    assert status == 1
    assert err.startswith(f"python -m fastmlp.sweep: error: --scheduler tcp://127.0.0.1:{port}: cannot reach")
    assert err.count("\n") == 1


def test_and_adds_a_grid_that_inherits_the_options_before_it():
    _, configs = parse_arguments(["--seed", "0", "1", "--epochs", "5", "--and", "--hidden", "32x16",
                                  "--weight-decay", "5e-4"])
    assert [(c["hidden"], c["epochs"], c["weight_decay"], c["seed"]) for c in configs] == [
        ([128, 64], 5, 0.0, 0), ([128, 64], 5, 0.0, 1), ([32, 16], 5, 5e-4, 0), ([32, 16], 5, 5e-4, 1)]


def test_random_draws_the_same_distinct_trials_of_the_grid_every_time():
    args, _ = parse_arguments(["--lr", "0.01", "0.02", "0.05", "0.1", "--batch-size", "16", "32", "64"])
    grid = grid_values(args, args.grid_dests)
    everything = configurations([grid])
    drawn = configurations([grid], sample=5, seed=3)
    assert len(everything) == 12 and len(drawn) == 5
    assert all(config in everything for config in drawn)
    assert len({(c["lr"], c["batch_size"]) for c in drawn}) == 5
    assert configurations([grid], sample=5, seed=3) == drawn


def test_momentum_0_turns_nesterov_off_as_train_does():
    _, configs = parse_arguments(["--momentum", "0", "0.9"])
    assert [(c["momentum"], c["nesterov"]) for c in configs] == [(0.0, False), (0.9, True)]


def test_mlpclassifier_in_gridsearchcv_on_a_dask_cluster(cluster):
    """scikit-learn's grid search, its fits sent to Dask workers through joblib's dask backend.

    backend="numba", which the workers compile once each; a fitted numba-backed MLPClassifier
    pickles, so the fitted best estimator also travels to a worker and predicts there.
    """
    X, y = _blobs()
    search = GridSearchCV(
        MLPClassifier((16,), backend="numba", max_iter=5, random_state=0, batch_size=16),
        {"learning_rate_init": [0.001, 0.1]}, cv=2)
    with distributed.Client(cluster) as client, joblib.parallel_config(backend="dask"):
        with distributed.get_task_stream(client) as tasks:
            search.fit(X, y)
    assert len(tasks.data) >= 4  # the 2 x 2 fits ran as Dask tasks, on the workers
    assert search.best_params_ == {"learning_rate_init": 0.1}
    assert search.best_score_ > 0.9 > search.cv_results_["mean_test_score"][0]
    with distributed.Client(cluster) as client:
        on_a_worker = client.submit(search.best_estimator_.predict, X, pure=False).result()
    np.testing.assert_array_equal(on_a_worker, search.predict(X))


def _blobs():
    rng = np.random.default_rng(0)
    centres = rng.normal(0, 4, (3, 10))
    y = rng.integers(0, 3, 300)
    return (centres[y] + rng.normal(0, 1, (300, 10))).astype(np.float32), y


class socket_nobody_listens_on:
    """A free loopback port, held bound but not listening, so a connection to it is refused."""

    def __enter__(self):
        import socket

        self.socket = socket.socket()
        self.socket.bind(("127.0.0.1", 0))
        return self.socket.getsockname()[1]

    def __exit__(self, *exc):
        self.socket.close()


def test_optimizer_is_swept_with_adams_learning_rate_unless_lr_is_given():
    from fastmlp.sweep.cli import parse_arguments

    _, configs = parse_arguments(["--optimizer", "sgd", "adam", "--epochs", "1"])
    by_optimizer = {c["optimizer"]: c for c in configs}
    assert set(by_optimizer) == {"sgd", "adam"}
    assert by_optimizer["sgd"]["lr"] == 0.05 and by_optimizer["sgd"]["momentum"] == 0.9
    assert by_optimizer["adam"]["lr"] == 0.001
    assert by_optimizer["adam"]["momentum"] == 0.0 and by_optimizer["adam"]["nesterov"] is False
    _, configs = parse_arguments(["--optimizer", "adamw", "--lr", "0.01"])
    assert [(c["optimizer"], c["lr"]) for c in configs] == [("adamw", 0.01)]


def test_an_adam_trial_trains_with_adam(monkeypatch):
    import fastmlp.sweep.trial as trial
    from fastmlp import Pixels

    rng = np.random.default_rng(0)
    X = Pixels(rng.integers(0, 256, size=(64, 16), dtype=np.uint8))
    y = rng.integers(0, 3, size=64)
    config = {"backend": "numpy", "hidden": [8], "epochs": 1, "batch_size": 16, "lr": 1e-3, "momentum": 0.0,
              "nesterov": False, "weight_decay": 0.0, "schedule": "none", "step_size": 10, "gamma": 0.1,
              "seed": 0, "init": "he", "val_size": 0.0, "patience": None, "optimizer": "adam"}
    made = []
    real = trial.Trainer

    def spy(*args, **kwargs):
        made.append(kwargs.get("optimizer"))
        return real(*args, **kwargs)

    monkeypatch.setattr(trial, "Trainer", spy)
    result = trial._train(config, (X, y, X, y), {}, False, False)
    assert made == ["adam"] and 0 <= result["test_accuracy"] <= 1
