"""Per-machine tuning of the SIMD tile (fastmlp.runtime.tuning, `fastmlp tune`): what is chosen, kept, read back and
said. The children's timings are stood in for where only the choice is tested: never a speed asserted."""

import json
import subprocess

import pytest

from fastmlp.cli import tune as tune_cli
from fastmlp.kernels import tiles
from fastmlp.runtime import tuning

CPU, FEATURES = "znver3", "+avx2,+fma"
RUNNABLE = ["avx2", "sse"]


@pytest.fixture
def folder(tmp_path, monkeypatch):
    """A fresh tuning folder, the only one; no FASTMLP_TILE nor FASTMLP_TUNE from the caller's environment."""
    monkeypatch.setattr(tuning, "tuning_folders", lambda: [tmp_path / "tuning"])
    monkeypatch.delenv(tuning.ENV_TILE, raising=False)
    monkeypatch.delenv(tuning.ENV_TUNE, raising=False)
    return tmp_path / "tuning"


def timings(monkeypatch, step_us):
    """Stand in for the children: each tile takes step_us[tile] (an exception: raised; a list: its values in turn,
    one a measurement); returns the tiles asked for."""
    asked = []

    def measure(tile, cache_dir, timeout_s):
        asked.append(tile)
        assert cache_dir.name == f"numba-{tile}" and timeout_s > 0  # a Numba cache of its own, the budget left
        value = step_us[tile].pop(0) if isinstance(step_us[tile], list) else step_us[tile]
        if isinstance(value, BaseException):
            raise value
        return value

    monkeypatch.setattr(tuning, "measure_in_child", measure)
    return asked


def test_first_use_tunes_once_says_so_in_one_line_and_keeps_the_choice(folder, monkeypatch, capsys):
    asked = timings(monkeypatch, {"avx2": 100.0, "sse": 80.0})
    assert tuning.tile_choice(CPU, FEATURES, "avx2", RUNNABLE) == ("sse", "tuned on this machine")
    assert asked == ["avx2", "sse", "sse", "avx2"]  # the built-in tile first, then the candidates again in reverse
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and "tuning the SIMD kernels for this CPU (znver3), once" in err[0]
    stored = tuning.stored_choice(CPU, FEATURES)
    assert stored["tile"] == "sse" and stored["step_us"] == {"avx2": 100.0, "sse": 80.0}
    # Later imports read the choice: no measuring, nothing said.
    assert tuning.tile_choice(CPU, FEATURES, "avx2", RUNNABLE) == ("sse", "tuned on this machine")
    assert asked == ["avx2", "sse", "sse", "avx2"] and capsys.readouterr().err == ""
    assert not list(folder.glob("*.lock"))


def test_a_choice_is_kept_per_cpu_features_and_version(folder, monkeypatch):
    timings(monkeypatch, {"avx2": 100.0, "sse": 80.0})
    tuning.tune(CPU, FEATURES, "avx2", RUNNABLE, tuning.writable_folder())
    assert tuning.stored_choice(CPU, FEATURES)["tile"] == "sse"
    assert tuning.stored_choice("haswell", FEATURES) is None
    assert tuning.stored_choice(CPU, "+avx2,+fma,+avx512f") is None
    monkeypatch.setattr(tuning, "_version", lambda: "99.0")
    assert tuning.stored_choice(CPU, FEATURES) is None


def test_the_built_in_tile_stays_unless_another_one_is_clearly_faster(folder, monkeypatch):
    timings(monkeypatch, {"avx2": 100.0, "sse": 99.0})  # within the noise margin
    assert tuning.measure_choice(CPU, FEATURES, "avx2", RUNNABLE, folder)["tile"] == "avx2"


def test_each_candidate_counts_its_faster_pass_so_a_slow_spell_does_not_decide(folder, monkeypatch):
    # The built-in tile's first pass slowed by the machine (130 against 100): in one pass sse would have won.
    asked = timings(monkeypatch, {"avx2": [130.0, 100.0], "sse": [99.0, 99.5]})
    choice = tuning.measure_choice(CPU, FEATURES, "avx2", RUNNABLE, folder)
    assert asked == ["avx2", "sse", "sse", "avx2"]
    assert choice["step_us"] == {"avx2": 100.0, "sse": 99.0} and choice["tile"] == "avx2"  # within the margin
    # A later pass that fails or runs out of time keeps the candidate's first measurement.
    timings(monkeypatch, {"avx2": [100.0, ChildProcessError("exit 1: boom")],
                          "sse": [80.0, subprocess.TimeoutExpired("python", 3.0)]})
    choice = tuning.measure_choice(CPU, FEATURES, "avx2", RUNNABLE, folder)
    assert choice["step_us"] == {"avx2": 100.0, "sse": 80.0} and choice["tile"] == "sse" and choice["notes"] == []


def test_a_candidate_that_fails_or_runs_out_of_time_is_left_out(folder, monkeypatch):
    timings(monkeypatch, {"avx2": 100.0, "sse": subprocess.TimeoutExpired("python", 12.0)})
    choice = tuning.measure_choice(CPU, FEATURES, "avx2", RUNNABLE, folder)
    assert choice["tile"] == "avx2" and choice["step_us"] == {"avx2": 100.0}
    assert choice["notes"] == ["sse: left out (did not finish within 12 s)"]
    timings(monkeypatch, {"avx2": ChildProcessError("exit 1: boom"), "sse": 50.0})
    choice = tuning.measure_choice(CPU, FEATURES, "avx2", RUNNABLE, folder)
    assert choice["tile"] == "avx2" and choice["notes"] == ["avx2: left out (exit 1: boom)"]  # no evidence to switch


def test_the_budget_bounds_the_tuning(folder, monkeypatch):
    asked = timings(monkeypatch, {"avx2": 100.0, "sse": 50.0})
    choice = tuning.measure_choice(CPU, FEATURES, "avx2", RUNNABLE, folder, budget_s=0.5)
    assert asked == [] and choice["tile"] == "avx2"
    assert choice["notes"] == [f"{t}: not measured, the 0 s budget was spent" for t in ("avx2", "sse")]


def test_fastmlp_tile_overrides_and_a_wrong_name_is_refused(folder, monkeypatch):
    asked = timings(monkeypatch, {"avx2": 100.0, "sse": 80.0})
    monkeypatch.setenv(tuning.ENV_TILE, "sse")
    assert tuning.tile_choice(CPU, FEATURES, "avx2", RUNNABLE) == ("sse", "set by FASTMLP_TILE")
    monkeypatch.setenv(tuning.ENV_TILE, "avx512")
    with pytest.raises(ValueError, match=r"FASTMLP_TILE=avx512: this CPU \(znver3\) runs the tiles avx2, sse"):
        tuning.tile_choice(CPU, FEATURES, "avx2", RUNNABLE)
    assert asked == []


def test_no_tuning_when_switched_off_or_with_one_candidate(folder, monkeypatch, capsys):
    asked = timings(monkeypatch, {"avx2": 100.0, "sse": 80.0})
    assert tuning.tile_choice("x86-64", "", "sse", ["sse"]) == ("sse", "the only tile this CPU runs")
    monkeypatch.setenv(tuning.ENV_TUNE, "0")
    assert tuning.tile_choice(CPU, FEATURES, "avx2", RUNNABLE) == ("avx2", "built-in table (FASTMLP_TUNE=0)")
    assert asked == [] and capsys.readouterr().err == ""


def test_a_read_only_install_uses_the_built_in_table_and_says_so_in_one_line(tmp_path, monkeypatch, capsys):
    read_only = tmp_path / "read-only"
    read_only.mkdir()
    read_only.chmod(0o555)
    monkeypatch.setattr(tuning, "tuning_folders", lambda: [read_only / "tuning"])
    monkeypatch.setattr(tuning.os, "access", lambda path, mode: False)  # as a non-root user sees it
    monkeypatch.delenv(tuning.ENV_TILE, raising=False)
    monkeypatch.delenv(tuning.ENV_TUNE, raising=False)
    asked = timings(monkeypatch, {"avx2": 100.0, "sse": 80.0})
    assert tuning.tile_choice(CPU, FEATURES, "avx2", RUNNABLE) == ("avx2", "built-in table (read-only install)")
    err = capsys.readouterr().err.splitlines()
    assert asked == [] and len(err) == 1 and "using the built-in tile table" in err[0]


def test_another_process_tuning_leaves_this_one_with_the_built_in_tile(folder, monkeypatch):
    asked = timings(monkeypatch, {"avx2": 100.0, "sse": 80.0})
    folder.mkdir(parents=True)
    (folder / (tuning._file_name(CPU, FEATURES, tuning._version()) + ".lock")).touch()
    choice = tuning.tune(CPU, FEATURES, "avx2", RUNNABLE, folder)
    assert choice["tile"] == "avx2" and asked == [] and tuning.stored_choice(CPU, FEATURES) is None


def test_the_tile_in_use_is_one_this_cpu_runs():
    builtin = tiles.select_tile(*tiles.target_cpu())
    assert tiles.TILE.vw <= builtin.vw and tiles.TILE_SOURCE


def test_fastmlp_tune_measures_keeps_and_prints_the_choice(folder, monkeypatch, capsys, tmp_path):
    timings(monkeypatch, {"avx512": 70.0, "avx2": 100.0, "sse": 80.0})
    path = tmp_path / "choice.json"
    assert tune_cli.main(["--budget", "20", "--json", str(path)]) == 0
    out = capsys.readouterr().out
    cpu, features = tiles.target_cpu()
    stored = tuning.stored_choice(cpu, features)
    assert json.loads(path.read_text()) == stored
    assert f"chosen: {stored['tile']}" in out and f"kept in {folder}" in out


def test_fastmlp_tune_refuses_a_bad_budget(capsys):
    with pytest.raises(SystemExit) as exc:
        tune_cli.main(["--budget", "0"])
    assert exc.value.code == 2 and "--budget: must be > 0 seconds, got 0" in capsys.readouterr().err


def test_a_tuning_child_times_the_steps_of_the_tile_it_is_given(tmp_path):
    # The one real child: compiles the packed kernels for the sse tile (any x86-64 CPU runs it) in a cache of its own.
    us = tuning.measure_in_child("sse", tmp_path / "numba-sse", timeout_s=900)
    assert us > 0
    assert any(tmp_path.joinpath("numba-sse").rglob("*.nbi"))  # compiled into the child's own cache


def test_a_tuning_that_cannot_be_kept_falls_back_to_the_built_in_tile_in_one_line(folder, monkeypatch, capsys):
    timings(monkeypatch, {"avx2": 100.0, "sse": 80.0})

    def full_disk(choice, where):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(tuning, "store_choice", full_disk)
    choice = tuning.tile_choice(CPU, FEATURES, "avx2", RUNNABLE)
    assert choice == ("avx2", "built-in table (the tuning could not be kept)")
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 2 and "No space left on device" in err[1]  # the line saying it tunes, then this one
