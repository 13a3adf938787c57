"""The size of this machine's L2 cache, which the kernels size some of their blocking by.

Read once from Linux's sysfs (/sys/devices/system/cpu/cpu0/cache/index*/: level, type, size), so that
each machine blocks for its own cache, never for that of the machine the code was tuned on. Where it
cannot be read (not Linux, a sandbox hiding sysfs), DEFAULT_L2_BYTES: the smallest L2 a core has among
the x86 CPUs this project meets (AMD Zen 2 and 3), so that the blocking still fits.
"""

from __future__ import annotations

from pathlib import Path

DEFAULT_L2_BYTES = 512 * 1024
_UNITS = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}


def _parse_size(text: str) -> int | None:
    """Bytes of a sysfs cache size ("2048K", "1M", "524288"), or None where it is not one."""
    text = text.strip().upper()
    scale = _UNITS.get(text[-1:], 1)
    digits = text[:-1] if text[-1:] in _UNITS else text
    return int(digits) * scale if digits.isdigit() else None


def l2_bytes(cpu_folder: Path = Path("/sys/devices/system/cpu/cpu0/cache")) -> int:
    """Bytes of the L2 cache (unified or data) of one core, from cpu_folder; DEFAULT_L2_BYTES if unreadable."""
    try:
        for index in sorted(cpu_folder.glob("index*")):
            level = (index / "level").read_text().strip()
            kind = (index / "type").read_text().strip()
            if level == "2" and kind in ("Unified", "Data"):
                size = _parse_size((index / "size").read_text())
                if size:
                    return size
    except (OSError, ValueError):
        pass
    return DEFAULT_L2_BYTES
