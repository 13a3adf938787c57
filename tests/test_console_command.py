"""The `fastmlp` command and what every fastmlp CLI shares: subcommands, one-line usage errors, help
showing each default, plural and label fixes, and --plot in the format its suffix names."""

import argparse
import subprocess
import sys

import pytest

from fastmlp import bench, cli, sweep
from fastmlp.bench import blas_report
from fastmlp.cli import evaluate, export, predict, train, tune

PARSERS = {"train": train.build_parser, "evaluate": evaluate.build_parser, "predict": predict.build_parser,
           "export": export.build_parser, "bench": bench.build_parser, "sweep": sweep.build_parser,
           "tune": tune.build_parser}


def test_every_subcommand_is_listed_and_each_has_a_parser():
    assert set(cli.SUBCOMMANDS) == set(PARSERS)


@pytest.mark.parametrize("name", sorted(PARSERS))
def test_fastmlp_subcommand_help_is_the_subcommands_own(name, capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main([name, "--help"])
    assert exc.value.code == 0
    assert capsys.readouterr().out.startswith(f"usage: fastmlp {name} ")


def test_fastmlp_help_lists_the_subcommands_and_an_unknown_one_is_one_usage_line(capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["--help"])
    out = capsys.readouterr().out
    assert exc.value.code == 0 and all(f"{name}:" in out for name in cli.SUBCOMMANDS)
    with pytest.raises(SystemExit) as exc:
        cli.main(["fit"])
    err = capsys.readouterr().err.strip().splitlines()
    assert exc.value.code == 2 and len(err) == 1 and "invalid choice: 'fit'" in err[0]


def test_python_dash_m_fastmlp_runs_the_command():
    result = subprocess.run([sys.executable, "-m", "fastmlp", "evaluate", "--model"], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 2
    assert result.stderr == ("fastmlp evaluate: error: argument --model: expected one argument "
                             "(see fastmlp evaluate --help)\n")


def test_a_runtime_error_names_the_fastmlp_subcommand(tmp_path, capsys):
    assert cli.main(["evaluate", "--model", str(tmp_path / "missing.npz")]) == 1
    assert capsys.readouterr().err.startswith("fastmlp evaluate: error: model file not found")


@pytest.mark.parametrize("name", sorted(PARSERS))
def test_every_option_has_help_and_shows_its_default_once(name):
    parser = PARSERS[name]()
    help_text = parser.format_help()
    for action in parser._actions:
        if isinstance(action, (argparse._HelpAction, argparse._VersionAction)):
            continue
        assert action.help, f"{name} {action.option_strings or action.dest} has no help"
        shown = parser._get_formatter()._get_help_string(action) or ""
        if action.default is not None and action.default is not False:
            assert shown.count("default:") == 1, f"{name} {action.option_strings}: {shown!r}"
    assert "(default: None)" not in help_text and "(default: False)" not in help_text


def test_hidden_with_no_width_trains_without_a_hidden_layer(tiny_mnist_dir, capsys):
    assert train.main(["--data-dir", str(tiny_mnist_dir), "--backend", "numpy", "--epochs", "1", "--hidden"]) == 0
    out = capsys.readouterr().out
    assert "net 784-10," in out


def test_one_epoch_is_singular_and_numpy_reports_no_compile_time(tiny_mnist_dir, capsys):
    assert train.main(["--data-dir", str(tiny_mnist_dir), "--backend", "numpy", "--epochs", "1", "--hidden", "8",
                       "--schedule", "step", "--step-size", "1"]) == 0
    out = capsys.readouterr().out
    assert "(loss " in out and ", 1 epoch, " in out and "1 epochs" not in out
    assert "every 1 epoch)" in out and "compiled in" not in out


def test_numba_reports_its_compile_time(tiny_mnist_dir, capsys):
    assert train.main(["--data-dir", str(tiny_mnist_dir), "--epochs", "2", "--hidden", "8"]) == 0
    out = capsys.readouterr().out
    assert "compiled in" in out and ", 2 epochs, " in out


def test_plot_writes_the_format_its_suffix_names_and_refuses_an_unknown_one(tiny_mnist_dir, tmp_path, capsys):
    pytest.importorskip("matplotlib")
    pytest.importorskip("PIL")
    args = ["--data-dir", str(tiny_mnist_dir), "--backend", "numpy", "--epochs", "1", "--hidden", "8"]
    assert train.main([*args, "--plot", str(tmp_path / "curves.jpg")]) == 0
    assert (tmp_path / "curves.jpg").read_bytes()[:3] == b"\xff\xd8\xff"  # JPEG's start-of-image marker
    capsys.readouterr()
    assert train.main([*args, "--plot", str(tmp_path / "curves.gif")]) == 1
    captured = capsys.readouterr()
    assert "cannot draw a .gif file; use one of .png, .jpg" in captured.err and "epoch" not in captured.out
    assert not (tmp_path / "curves.gif").exists()


def test_bench_labels_numpys_and_scipys_blas():
    import scipy.linalg  # noqa: F401  (loads SciPy's BLAS, as the numba kernels do)

    lines = bench.blas_info()
    owners = {line.split(":")[0] for line in lines}
    assert owners <= {"NumPy's BLAS (numpy backend)", "SciPy's BLAS (numba kernels)", "PyTorch's BLAS", "BLAS"}
    assert any(line.startswith("NumPy's BLAS") for line in lines)
    assert (blas_report._blas_owner("/x/site-packages/scipy.libs/libscipy_openblas-1.so")
            == "SciPy's BLAS (numba kernels)")
    assert (blas_report._blas_owner("/x/site-packages/numpy.libs/libscipy_openblas64_.so")
            == "NumPy's BLAS (numpy backend)")
