"""The L2 size the kernels block by: read from sysfs, a safe default where it cannot be."""

from fastmlp.kernels import packed
from fastmlp.runtime import jit
from fastmlp.runtime.cpu_caches import DEFAULT_L2_BYTES, l2_bytes


def _cache_folder(tmp_path, entries):
    for i, (level, kind, size) in enumerate(entries):
        index = tmp_path / f"index{i}"
        index.mkdir()
        (index / "level").write_text(f"{level}\n")
        (index / "type").write_text(f"{kind}\n")
        (index / "size").write_text(f"{size}\n")
    return tmp_path


def test_the_l2_size_is_read_from_the_cpus_cache_entries(tmp_path):
    folder = _cache_folder(tmp_path, [(1, "Data", "48K"), (1, "Instruction", "32K"), (2, "Unified", "2048K"),
                                      (3, "Unified", "491520K")])
    assert l2_bytes(folder) == 2 << 20


def test_an_unreadable_or_odd_cache_folder_gives_the_default(tmp_path):
    assert l2_bytes(tmp_path / "missing") == DEFAULT_L2_BYTES
    assert l2_bytes(_cache_folder(tmp_path, [(1, "Data", "32K"), (2, "Unified", "lots")])) == DEFAULT_L2_BYTES


def test_the_update_blocks_by_half_of_this_machines_l2_and_numbas_cache_is_keyed_by_it():
    assert packed._PANEL_GROUP_BYTES == l2_bytes() // 2
    assert jit.CODE_CHOICES["panel_group_bytes"] == str(packed._PANEL_GROUP_BYTES)
