"""`python -m fastmlp.bench --contention`: what it runs, reads and reports (never how fast)."""

import json

import pytest

from fastmlp import bench
from fastmlp.bench import contention as bench_contention
from fastmlp.bench.contention import SCENARIOS, format_contention, measure_contention, train_command


def test_each_scenario_runs_the_training_cli_and_reads_its_train_seconds(tiny_mnist_dir, monkeypatch):
    monkeypatch.setattr(bench_contention, "HOG_HEAD_START_S", 0.0)
    rows = measure_contention(["numpy"], epochs=1, data_dir=tiny_mnist_dir)
    (row,) = rows
    assert row["backend"] == "numpy" and set(row["seconds"]) == set(SCENARIOS)
    assert all(seconds > 0 for seconds in row["seconds"].values())
    for scenario in SCENARIOS:
        assert row["ratios"][scenario] == pytest.approx(row["seconds"][scenario] / row["seconds"]["alone"])


def test_the_runs_are_the_default_recipe_with_only_epochs_and_outputs_changed(tmp_path):
    command = train_command("numba", 3, tmp_path / "m.json", threads=2)
    assert command[1:3] == ["-m", "fastmlp.train"]
    options = [arg for arg in command[3:] if arg.startswith("--")]
    assert options == ["--backend", "--epochs", "--quiet", "--no-download", "--metrics-json", "--threads"]


def test_a_failing_training_run_is_reported_with_its_last_error_line(tmp_path):
    empty = tmp_path / "no-data"
    empty.mkdir()
    with pytest.raises(ChildProcessError, match="failed"):
        measure_contention(["numpy"], epochs=1, data_dir=empty)


def test_the_table_gives_each_scenario_and_ratio_and_says_whether_the_target_is_met():
    rows = [{"backend": "numpy", "seconds": {"alone": 2.0, "two at once": 4.2, "beside a CPU hog": 6.0},
             "ratios": {"alone": 1.0, "two at once": 2.1, "beside a CPU hog": 3.0}}]
    config = {"mode": "quick", "epochs": 1, "repeats": 1, "threads": None,
              "machine": {"usable_cpus": 2, "loadavg_1min": 0.5}}
    text = format_contention(rows, config)
    assert "numpy" in text and "4.20 s (x2.10)" in text and "6.00 s (x3.00)" in text
    assert "worst ratio x3.00: ABOVE" in text


def test_bench_contention_flag_prints_the_table_and_writes_json(monkeypatch, tmp_path, capsys):
    calls = []

    def fake_measure(backends, **kwargs):
        calls.append((list(backends), kwargs))
        return [{"backend": b, "seconds": dict.fromkeys(SCENARIOS, 1.0), "ratios": dict.fromkeys(SCENARIOS, 1.0)}
                for b in backends]

    monkeypatch.setattr(bench_contention, "measure_contention", fake_measure)
    assert bench.main(["--contention", "--quick", "--threads", "1", "--json", str(tmp_path / "c.json")]) == 0
    (backends, kwargs), = calls
    assert backends == ["numpy", "numba"] and kwargs["epochs"] == 1 and kwargs["threads"] == 1
    out = capsys.readouterr().out
    assert "two at once" in out and "within the x2.5 target" in out
    assert json.loads((tmp_path / "c.json").read_text())["config"]["epochs"] == 1



def test_contention_with_torch_alone_exits_1_naming_the_backends(capsys):
    assert bench.main(["--contention", "--backends", "torch"]) == 1
    assert "--backends numpy" in capsys.readouterr().err
