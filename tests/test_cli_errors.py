"""How `python -m fastmlp.train` fails: usage errors exit 2, runtime errors exit 1 with one line
(the traceback only with --debug), Ctrl-C exits 130, and no output is ever left half-written."""

import json
import os
import signal
import subprocess
import sys

import pytest

from fastmlp import MLP, available_backends, datasets
from fastmlp.cli.train import PROG, main


def run_cli(*args, **kwargs):
    return subprocess.run([sys.executable, "-m", "fastmlp.train", *args], capture_output=True, text=True,
                          timeout=120, **kwargs)


@pytest.mark.parametrize(
    "args, message",
    [
        (["--seed", "-1"], "--seed: must be an integer >= 0"),
        (["--seed", "1.5"], "--seed: must be an integer >= 0, got '1.5'"),
        (["--lr", "1e300"], "--lr: must be a finite number > 0"),
        (["--hidden", "x"], "--hidden: must be an integer >= 1, got 'x'"),
        (["--lr", "fast"], "--lr: must be a finite number > 0"),
        (["--momentum", "high"], "--momentum: must be in [0, 1), got 'high'"),
        (["--dataset", "cifar"], "invalid choice: 'cifar'"),
        (["--no-such-option"], "unrecognized arguments: --no-such-option"),
    ],
)
def test_more_bad_arguments_exit_2_with_one_usage_error_line(args, message, capsys):
    with pytest.raises(SystemExit) as exc:
        main(args)
    err = capsys.readouterr().err.strip().splitlines()
    assert exc.value.code == 2
    assert len(err) == 1 and err[0].startswith(f"{PROG}: error:") and message in err[0]
    assert err[0].endswith(f"(see {PROG} --help)") and "invalid" not in err[0].replace("invalid choice", "")


def test_data_not_found_speaks_in_flags_and_lists_the_places_one_per_line(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("FASTMLP_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setitem(datasets.BUNDLED_DIRS, "fashion-mnist", [tmp_path / "nothing-here"])
    assert main(["--no-download", "--epochs", "1", "--dataset", "fashion-mnist"]) == 1
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines[0].startswith(f"{PROG}: error: fashion-mnist not found, and --no-download forbids downloading it.")
    assert lines[1] == f"  - system copy: {tmp_path / 'nothing-here'} (folder does not exist)"
    assert lines[2].startswith("  - user cache: ")
    assert "--data-dir DIR" in lines[3] and "apt-get install dataset-fashion-mnist" in lines[3]
    assert not any("download=" in line or "data_dir=" in line for line in lines)


def test_a_data_dir_without_the_files_names_the_flags(tmp_path, capsys):
    assert main(["--data-dir", str(tmp_path), "--no-download", "--epochs", "1"]) == 1
    err = capsys.readouterr().err
    assert err == (f"{PROG}: error: --data-dir {tmp_path} does not hold the mnist files (missing "
                   "train-images-idx3-ubyte[.gz], train-labels-idx1-ubyte[.gz], t10k-images-idx3-ubyte[.gz], "
                   "t10k-labels-idx1-ubyte[.gz]); put the four IDX files there, or leave out --no-download to "
                   "download them into it\n")


@pytest.fixture
def corrupt_data_dir(tiny_mnist_dir, tmp_path):
    """The tiny dataset with its test labels cut short."""
    folder = tmp_path / "corrupt"
    folder.mkdir()
    for path in tiny_mnist_dir.iterdir():
        (folder / path.name).write_bytes(path.read_bytes())
    labels = folder / "t10k-labels-idx1-ubyte.gz"
    labels.write_bytes(labels.read_bytes()[:-12])
    return folder


def test_a_runtime_error_exits_1_with_one_line_and_no_traceback(corrupt_data_dir):
    result = run_cli("--data-dir", str(corrupt_data_dir), "--epochs", "1")
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert result.stderr.startswith(f"{PROG}: error:") and "t10k-labels-idx1-ubyte.gz" in result.stderr


def test_debug_shows_the_traceback_of_a_runtime_error(corrupt_data_dir):
    result = run_cli("--data-dir", str(corrupt_data_dir), "--epochs", "1", "--debug")
    assert result.returncode == 1
    assert "Traceback (most recent call last)" in result.stderr and "DatasetError" in result.stderr


def test_an_unexpected_error_is_one_line_naming_its_type(monkeypatch, tiny_mnist_dir, capsys):
    def broken(*args, **kwargs):
        raise RuntimeError("something unforeseen")

    monkeypatch.setattr("fastmlp.cli.train.load_mnist", broken)
    assert main(["--data-dir", str(tiny_mnist_dir)]) == 1
    err = capsys.readouterr().err
    assert err == f"{PROG}: error: RuntimeError: something unforeseen (run with --debug for the traceback)\n"


@pytest.mark.parametrize("backend", available_backends())
def test_ctrl_c_during_training_exits_130_with_one_line_and_keeps_the_old_outputs(backend, tiny_mnist_dir, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    old_model = MLP([784, 8, 10], seed=5)
    old_model.save(out / "m.npz")
    (out / "m.json").write_text('{"old": true}\n')
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    process = subprocess.Popen(
        [sys.executable, "-m", "fastmlp.train", "--backend", backend, "--data-dir", str(tiny_mnist_dir),
         "--epochs", "100000", "--hidden", "8", "--save", str(out / "m.npz"), "--metrics-json", str(out / "m.json")],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"},
        # A shell's background job ignores SIGINT and its children inherit that; Ctrl-C must reach this one.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        for line in process.stdout:  # training has started once the first epoch is reported
            if line.startswith("epoch "):
                break
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=60)
    finally:
        process.kill()
    assert process.returncode == 130
    assert err == f"{PROG}: interrupted\n"
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # old files intact, no temp file


def test_a_metrics_write_interrupted_midway_leaves_the_old_file_and_no_temp_file(tiny_mnist_dir, tmp_path,
                                                                                 monkeypatch, capsys):
    path = tmp_path / "m.json"
    path.write_text('{"old": true}\n')

    def dump_then_interrupt(obj, f, **kwargs):
        f.write('{"test_accuracy": ')
        raise KeyboardInterrupt

    monkeypatch.setattr(json, "dump", dump_then_interrupt)
    code = main(["--backend", "numpy", "--data-dir", str(tiny_mnist_dir), "--epochs", "1", "--hidden", "8",
                 "--quiet", "--metrics-json", str(path)])
    assert code == 130 and capsys.readouterr().err == f"{PROG}: interrupted\n"
    assert path.read_text() == '{"old": true}\n'
    assert [p.name for p in tmp_path.iterdir()] == ["m.json"]


def test_a_reader_that_stops_early_ends_the_cli_quietly(tiny_mnist_dir):
    # As with `python -m fastmlp.train | head -1`: the first line is read, then the pipe closes.
    # 3000 epoch lines are ~300 kB, more than a pipe holds, so writing must meet the closed end.
    proc = subprocess.Popen([sys.executable, "-m", "fastmlp.train", "--backend", "numpy", "--data-dir",
                             str(tiny_mnist_dir), "--epochs", "3000", "--hidden", "4"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.readline()
    proc.stdout.close()
    stderr = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 141
    assert stderr == ""
