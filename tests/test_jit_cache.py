"""Numba's cache of fastmlp's kernels follows edits to any file that holds compiled code.

Numba alone keys a cached function by its own bytecode and file: an edit to the LLVM IR of
`kernels/simd_ir.py` left every cached caller running the old microkernels. Each case runs a
copy of the package in a fresh process and reads whether a cached kernel was loaded or compiled.
"""

import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import pytest

import fastmlp
from fastmlp.runtime.jit import CACHE, compiled_sources_hash

PACKAGE = Path(fastmlp.__file__).parent

# Loads (or compiles) one cached kernel of packed.py; prints "hit" or "miss".
PROBE = textwrap.dedent("""
    import sys
    sys.path.insert(0, sys.argv[1])
    import fastmlp
    assert fastmlp.__file__.startswith(sys.argv[1]), fastmlp.__file__
    from fastmlp.kernels.packed import panel_count
    panel_count(40)
    stats = panel_count.stats
    print("hit" if sum(stats.cache_hits.values()) else "miss" if sum(stats.cache_misses.values()) else "none")
""")


def _probe(root):
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_CACHE_DIR"}
    out = subprocess.run([sys.executable, "-c", PROBE, str(root)], capture_output=True, text=True, env=env,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


@pytest.mark.skipif(not CACHE, reason="Numba has no writable cache folder here (the read-only install tests cover it)")
def test_an_edit_to_the_ir_module_alone_compiles_its_callers_again_and_other_edits_do_not():
    root = Path(tempfile.mkdtemp(prefix="fastmlp-cache-"))
    try:
        shutil.copytree(PACKAGE, root / "fastmlp", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        assert _probe(root) == "miss"  # a fresh copy compiles
        assert _probe(root) == "hit"  # and then loads from its cache
        with open(root / "fastmlp" / "cli" / "plot.py", "a") as f:  # no compiled code in it
            f.write("\n# an edit\n")
        assert _probe(root) == "hit"
        with open(root / "fastmlp" / "kernels" / "simd_ir.py", "a") as f:  # packed.py itself is unchanged
            f.write("\n# an edit\n")
        assert _probe(root) == "miss"
        assert _probe(root) == "hit"
    finally:
        shutil.rmtree(root, ignore_errors=True)


def test_the_hash_covers_the_ir_module_and_the_kernels_and_not_pure_python():
    # Recompute what compiled_sources_hash reads, file by file, to name the files it covers.
    from fastmlp.runtime import jit as _jit
    covered = {p.relative_to(PACKAGE).as_posix() for p in PACKAGE.rglob("*.py")
               if any(m in p.read_bytes() for m in _jit._COMPILED_CODE_MARKERS)}
    assert {"kernels/simd_ir.py", "kernels/packed.py", "kernels/tiles.py", "runtime/barrier.py",
            "backends/numba/step.py"} <= covered
    assert "plot.py" not in covered and "train.py" not in covered
    assert len(compiled_sources_hash()) == 64


def test_the_benchmark_scripts_cache_their_nopython_code_as_the_kernels_do():
    # A benchmark's own @njit(cache=True) function is keyed by its file alone, and went on running fastmlp's
    # kernels as they were when it was cached: benchmarks/profile_fused_step.py measured the update tile before
    # a change to it. cached_njit's key holds every kernel source (this module's first test).
    from test_read_only_install import CACHED_NJIT

    benchmarks = Path(__file__).parent.parent / "benchmarks"
    scripts = sorted(benchmarks.rglob("*.py"))
    assert scripts, f"no benchmark scripts under {benchmarks}"
    offenders = [p.relative_to(benchmarks).as_posix() for p in scripts if CACHED_NJIT.search(p.read_text())]
    assert offenders == [], "benchmarks: use fastmlp.runtime.jit.cached_njit instead of njit(cache=True)"
