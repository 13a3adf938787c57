"""Outputs are never half-written: the atomic writer, and MLP.save interrupted midway."""

import os
import stat

import numpy as np
import pytest

from fastmlp import MLP
from fastmlp.runtime.atomic import atomic_write


@pytest.mark.parametrize("interruption", [OSError("disk full"), KeyboardInterrupt()], ids=["error", "ctrl-c"])
def test_a_write_interrupted_midway_keeps_the_old_file_and_leaves_no_temp_file(tmp_path, interruption):
    path = tmp_path / "out.bin"
    path.write_bytes(b"old content")
    with pytest.raises(type(interruption)):
        with atomic_write(path) as f:
            f.write(b"new, but only half")
            raise interruption
    assert path.read_bytes() == b"old content"
    assert os.listdir(tmp_path) == ["out.bin"]


def test_a_completed_write_replaces_the_file_with_the_usual_permissions(tmp_path):
    path = tmp_path / "out.txt"
    path.write_text("old")
    with atomic_write(path, "w", encoding="utf-8") as f:
        f.write("new ✓")
    assert path.read_text(encoding="utf-8") == "new ✓"
    assert os.listdir(tmp_path) == ["out.txt"]
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask  # not mkstemp's 0600


def test_the_temp_file_lives_beside_the_target_until_the_rename(tmp_path):
    path = tmp_path / "out.bin"
    with atomic_write(path) as f:
        assert os.path.dirname(f.name) == str(tmp_path) and not path.exists()


def test_errors_name_the_target_not_the_temp_file(tmp_path):
    with pytest.raises(FileNotFoundError, match=str(tmp_path / "no" / "out.bin")):
        with atomic_write(tmp_path / "no" / "out.bin"):
            pass
    with pytest.raises(IsADirectoryError, match="is a folder"):
        with atomic_write(tmp_path):
            pass


@pytest.mark.parametrize("interruption", [ValueError("serializer failed"), KeyboardInterrupt()],
                         ids=["error", "ctrl-c"])
def test_model_save_interrupted_midway_keeps_the_old_model(tmp_path, monkeypatch, interruption):
    path = tmp_path / "m.npz"
    MLP([3, 2], seed=0).save(path)
    before = path.read_bytes()

    def savez_then_fail(f, **arrays):
        f.write(b"PK\x03\x04 half an archive")
        raise interruption

    monkeypatch.setattr(np, "savez", savez_then_fail)
    with pytest.raises(type(interruption)):
        MLP([3, 2], seed=1).save(path)
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["m.npz"]
