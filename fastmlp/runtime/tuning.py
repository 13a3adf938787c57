"""Per-machine tuning: which SIMD tile (fastmlp.kernels.tiles) the kernels use on this CPU, measured here, once.

The built-in table picks a tile from the instruction set alone; on a given CPU a narrower tile can
be faster (a core that splits wide vectors in two, a cache that suits a smaller panel). So on first
use, when fastmlp.kernels.tiles is imported and no choice is stored for this CPU yet, fastmlp
measures every tile this CPU can run and keeps the fastest:

- each candidate in a child process of its own (FASTMLP_TILE=<name>, and a NUMBA_CACHE_DIR of its
  own under the tuning folder, so that no candidate's machine code lands in the user's cache),
  timing a few SGD steps of the default net (784-128-64-10, batch 64) through the public packed
  kernels, after compiling them;
- the candidates one after the other (side by side they would slow each other down), then again in
  the reverse order (PASSES), each keeping its faster pass, all of it within BUDGET_SECONDS; one that
  does not finish in time is left out;
- the choice is stored as JSON per CPU name + LLVM features + fastmlp version, in a tuning
  folder beside Numba's cache (`tuning_folders`: NUMBA_CACHE_DIR, else the user's cache folder),
  and read back at every later import: one small file read.

One line on stderr says that it tunes, once. Where no folder can be written (a read-only install),
the built-in table is used and one line says so. Environment variables:
    FASTMLP_TILE=<name>   use this tile (avx512, avx2, sse), no tuning, no stored choice read
    FASTMLP_TUNE=0        never tune on first use: the stored choice if there is one, else the table
`fastmlp tune` (fastmlp/cli/tune.py) measures again and prints the choice.

Results depend on the tile only through the order of float32 sums, and each tile's kernels sum in
a fixed order: a given choice gives the same bits in every run.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypedDict

from .._version import __version__
from .atomic import atomic_write

ENV_TILE = "FASTMLP_TILE"
ENV_TUNE = "FASTMLP_TUNE"
BUDGET_SECONDS = 30.0
BATCH_SIZE = 64
STEPS = 40  # SGD steps of one timed round
ROUNDS = 5  # timed rounds per candidate; the best counts (other work only ever slows a round down)
MARGIN = 0.03  # another tile must beat the built-in one by this fraction: closer is noise
# Passes over the candidates, the second in the reverse order, each candidate's faster one counting: a slow spell
# of a shared machine (seconds long, longer than a candidate's rounds) then falls on one of a candidate's passes,
# not on all its measurements. With one pass, a 2-core Zen 4 host once timed the built-in avx512 tile at 313.7 us
# a step against avx2's 299.0 and kept avx2, whose training step (one worker, batch 64) is 1.10x avx512's there;
# timed again, 270-274 us against 298-338 (two rounds), and in two passes 270.9 against 296.1.
PASSES = 2
_FOLDER = "fastmlp-tuning"
# What a tuning child runs: its `child_main` times the kernels, which sit in a layer above this one.
CHILD_MODULE = "fastmlp.cli.tune"


class Choice(TypedDict):
    """A stored tuning: the key it answers, the tile chosen and what was measured."""

    cpu: str
    features: str
    version: str
    tile: str
    builtin: str
    step_us: dict[str, float]  # microseconds per SGD step of the default net, per candidate measured
    seconds: float  # how long the tuning took
    notes: list[str]  # candidates left out, and why


def _version() -> str:
    return __version__


def tuning_folders() -> list[Path]:
    """Where a tuning is kept, first choice first, each read in this order: beside Numba's caches.

    NUMBA_CACHE_DIR when it is set (Numba caches everything there); else the user's cache folder
    (XDG_CACHE_HOME or ~/.cache: fastmlp/ beside Numba's numba/), so that one tuning serves every
    install and copy of this fastmlp version on the machine; else the __pycache__ folder of
    fastmlp's package, where Numba caches fastmlp's kernels when it may write there.
    """
    from numba.core import config

    folders = []
    numba_cache = getattr(config, "CACHE_DIR", "")  # NUMBA_CACHE_DIR, as Numba read it
    if numba_cache:
        folders.append(Path(numba_cache) / _FOLDER)
    base = os.environ.get("XDG_CACHE_HOME") or (os.path.join(os.path.expanduser("~"), ".cache")
                                                if os.environ.get("HOME") else "")
    if base:
        folders.append(Path(base) / "fastmlp" / _FOLDER)
    folders.append(Path(__file__).resolve().parent.parent / "__pycache__" / _FOLDER)
    return folders


def writable_folder(folders: Sequence[Path] | None = None) -> Path | None:
    """The first of `folders` (default `tuning_folders()`) that exists or can be made, and can be written; else None."""
    for folder in tuning_folders() if folders is None else folders:
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError:
            continue
        if os.access(folder, os.W_OK | os.X_OK):
            return folder
    return None


def _file_name(cpu: str, features: str, version: str) -> str:
    key = json.dumps([cpu, features, version]).encode()
    return f"tile-{hashlib.sha256(key).hexdigest()[:16]}.json"


def stored_choice(cpu: str, features: str, folders: Sequence[Path] | None = None) -> Choice | None:
    """The tuning stored for this CPU, its features and this fastmlp version, or None."""
    version = _version()
    name = _file_name(cpu, features, version)
    for folder in tuning_folders() if folders is None else folders:
        try:
            choice = json.loads((folder / name).read_text())
        except (OSError, ValueError):
            continue
        if isinstance(choice, dict) and [choice.get(k) for k in ("cpu", "features", "version")] == [
                cpu, features, version] and isinstance(choice.get("tile"), str):
            return choice  # type: ignore[return-value]
    return None


def store_choice(choice: Choice, folder: Path) -> Path:
    """Write the choice into folder (atomically: a reader never sees half a file); returns its path."""
    path = folder / _file_name(choice["cpu"], choice["features"], choice["version"])
    with atomic_write(path, "w", encoding="utf-8") as f:
        f.write(json.dumps(choice, indent=1) + "\n")
    return path


def _say(message: str) -> None:
    print(f"fastmlp: {message}", file=sys.stderr, flush=True)


def tile_choice(cpu: str, features: str, builtin: str, runnable: Sequence[str]) -> tuple[str, str]:
    """(tile name, where the choice came from) for fastmlp.kernels.tiles, at its import.

    builtin: the built-in table's tile for this CPU; runnable: the tiles it can run. In order:
    FASTMLP_TILE; the stored tuning; the built-in tile when it is the only candidate, when
    FASTMLP_TUNE=0, or where nothing can be written (one line says so); else a tuning, now.
    """
    forced = os.environ.get(ENV_TILE, "").strip()
    if forced:
        if forced not in runnable:
            raise ValueError(f"{ENV_TILE}={forced}: this CPU ({cpu}) runs the tiles {', '.join(runnable)}")
        return forced, f"set by {ENV_TILE}"
    stored = stored_choice(cpu, features)
    if stored is not None and stored["tile"] in runnable:
        return stored["tile"], _source(stored)
    if len(runnable) <= 1:
        return builtin, "the only tile this CPU runs"
    if os.environ.get(ENV_TUNE, "").strip().lower() in ("0", "off", "no", "false"):
        return builtin, f"built-in table ({ENV_TUNE}=0)"
    folder = writable_folder()
    if folder is None:
        _say("no writable folder to keep a tuning in (read-only install, no writable home, no NUMBA_CACHE_DIR): "
             "using the built-in tile table")
        return builtin, "built-in table (read-only install)"
    _say(f"tuning the SIMD kernels for this CPU ({cpu}), once: at most {BUDGET_SECONDS:.0f} s "
         f"(FASTMLP_TUNE=0 skips it; `fastmlp tune` measures again)")
    try:
        choice = tune(cpu, features, builtin, runnable, folder)
    except OSError as error:  # the folder went away, or filled up: tuning is an optimisation, never a failure
        _say(f"could not keep the tuning in {folder} ({error}): using the built-in tile table")
        return builtin, "built-in table (the tuning could not be kept)"
    return choice["tile"], _source(choice)


def _source(choice: Choice) -> str:
    """Where a tuned tile came from, in words: a tuning that measured nothing in time chose nothing."""
    if not choice["step_us"]:
        return "built-in table (the tuning measured nothing in time: `fastmlp tune` measures again)"
    return "tuned on this machine"


def tune(cpu: str, features: str, builtin: str, runnable: Sequence[str], folder: Path,
         budget_s: float = BUDGET_SECONDS, progress: Callable[[str], object] | None = None) -> Choice:
    """Measure every runnable tile (children, one at a time, within budget_s), store the choice in folder, return it.

    Another process tuning the same key at the same time (a lock file, younger than twice the
    budget) leaves this one with the built-in tile, unstored.
    """
    version = _version()
    lock = folder / (_file_name(cpu, features, version) + ".lock")
    try:
        fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        try:
            fresh = time.time() - lock.stat().st_mtime < 2 * budget_s
        except OSError:
            fresh = False
        if fresh:
            return {"cpu": cpu, "features": features, "version": version, "tile": builtin, "builtin": builtin,
                    "step_us": {}, "seconds": 0.0, "notes": ["another process is tuning: built-in tile for now"]}
        lock.unlink(missing_ok=True)
        fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    os.close(fd)
    try:
        choice = measure_choice(cpu, features, builtin, runnable, folder, budget_s, progress)
        store_choice(choice, folder)
        return choice
    finally:
        lock.unlink(missing_ok=True)


def measure_choice(cpu: str, features: str, builtin: str, runnable: Sequence[str], folder: Path,
                   budget_s: float = BUDGET_SECONDS, progress: Callable[[str], object] | None = None) -> Choice:
    """Each runnable tile's microseconds per step, the faster of its PASSES (the built-in tile first in the
    first pass, the order reversed in the next), and the choice they make (not stored).

    progress(name) is called before each measurement (name + " again" in the later passes). A candidate that
    fails, or has no time left, in its first pass is left out; in a later pass it keeps its first measurement.
    """
    start = time.perf_counter()
    step_us: dict[str, float] = {}
    left_out: dict[str, str] = {}  # tile: why, in the order found
    order = sorted(runnable, key=lambda n: n != builtin)
    for pass_ in range(PASSES):
        for name in order if pass_ % 2 == 0 else order[::-1]:
            if name in left_out:
                continue
            left = budget_s - (time.perf_counter() - start)
            if left <= 1:
                if name not in step_us:
                    left_out[name] = f"{name}: not measured, the {budget_s:.0f} s budget was spent"
                continue
            if progress is not None:
                progress(name if pass_ == 0 else f"{name} again")
            try:
                us = measure_in_child(name, folder / f"numba-{name}", timeout_s=left)
            except (subprocess.TimeoutExpired, ChildProcessError) as error:
                if name not in step_us:
                    left_out[name] = f"{name}: left out ({_reason(error)})"
                continue
            step_us[name] = min(us, step_us.get(name, us))
    notes = list(left_out.values())
    # Another tile only on evidence: the built-in one measured, and beaten by more than the noise.
    best = builtin
    if builtin in step_us:
        fastest = min(step_us, key=step_us.__getitem__)
        if step_us[fastest] < step_us[builtin] * (1 - MARGIN):
            best = fastest
    return {"cpu": cpu, "features": features, "version": _version(), "tile": best, "builtin": builtin,
            "step_us": step_us, "seconds": time.perf_counter() - start, "notes": notes}


def _reason(error: BaseException) -> str:
    if isinstance(error, subprocess.TimeoutExpired):
        return f"did not finish within {error.timeout:.0f} s"
    return str(error)


def measure_in_child(tile: str, cache_dir: Path, timeout_s: float) -> float:
    """Microseconds per SGD step of the default net with `tile`, in a child process (CHILD_MODULE's child_main)."""
    env = dict(os.environ, **{ENV_TILE: tile, "NUMBA_CACHE_DIR": str(cache_dir)})
    proc = subprocess.run([sys.executable, "-c", f"from {CHILD_MODULE} import child_main; child_main()"],
                          capture_output=True, text=True, env=env, timeout=timeout_s)
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise ChildProcessError(f"exit {proc.returncode}: {last}")
    return float(json.loads(proc.stdout.strip().splitlines()[-1])["step_us"])


def describe(choice: Choice) -> list[str]:
    """A tuning as lines of text: what was measured, and what was chosen."""
    lines = [f"{name}: {us:,.1f} us per step" + (" (built-in)" if name == choice["builtin"] else "")
             for name, us in choice["step_us"].items()]
    lines += choice["notes"]
    if choice["step_us"]:
        lines.append(f"chosen: {choice['tile']} (tuning took {choice['seconds']:.1f} s)")
    else:
        lines.append(f"chosen: {choice['tile']}, the built-in tile: nothing was measured in time")
    return lines
