"""fastmlp installed where nobody may write, run by a user with no writable home: it must still train.

The package is copied (as a non-editable install lays it out) into a folder left read-only, and
run as the unprivileged user `nobody` (`setpriv`, when the tests run as root) with HOME unset and
no NUMBA_CACHE_DIR, so Numba finds no folder for its cache. As another user than root, the same
user runs it with a read-only HOME: root would ignore the permissions, a normal user cannot.
"""

import os
import re
import shutil
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import pytest

import fastmlp
from fastmlp.runtime.jit import CACHE, JitCacheWarning, cached_njit

PACKAGE = Path(fastmlp.__file__).parent
NOBODY = 65534
# Every module compiles with cached_njit: one njit(cache=True) left would fail the import of
# fastmlp in a read-only install.
CACHED_NJIT = re.compile(r"^\s*@(numba\.)?n?jit\([^)]*cache\s*=\s*True", re.MULTILINE)  # a decorator line


def test_cached_njit_compiles_with_or_without_options_and_caches_where_numba_can():
    @cached_njit
    def double(x):
        return 2 * x

    @cached_njit(nogil=True)
    def triple(x):
        return 3 * x

    assert (double(2), triple(2)) == (4, 6)
    assert triple.targetoptions["nogil"]
    for function in (double, triple):  # Numba's dispatcher holds a NullCache unless caching is on
        assert (type(function._cache).__name__ != "NullCache") == CACHE


def test_no_module_compiles_with_a_hard_coded_cache():
    offenders = [p.relative_to(PACKAGE.parent).as_posix() for p in sorted(PACKAGE.rglob("*.py"))
                 if CACHED_NJIT.search(p.read_text())]
    assert offenders == [], "use fastmlp.runtime.jit.cached_njit instead of njit(cache=True)"


def test_cached_njit_refuses_an_explicit_cache_option():
    with pytest.raises(TypeError, match="cache"):
        cached_njit(cache=True)


def _read_only_copy():
    """The package copied into a fresh world-readable folder, then made read-only; returns the folder."""
    root = Path(tempfile.mkdtemp(prefix="fastmlp-readonly-"))
    shutil.copytree(PACKAGE, root / "fastmlp", ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.nbi", "*.nbc"))
    for folder, _dirs, files in os.walk(root):
        for name in files:
            os.chmod(Path(folder, name), 0o444)
        os.chmod(folder, 0o555)
    return root


def _writable_again(root):
    for folder, _dirs, _files in os.walk(root):
        os.chmod(folder, 0o755)


@pytest.fixture
def run_read_only():
    """run(script) -> CompletedProcess: the script run by a user who cannot write the package nor a cache."""
    root = _read_only_copy()
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("NUMBA_CACHE") and k not in ("HOME", "XDG_CACHE_HOME")}
    env["PYTHONPATH"] = str(root)
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    if os.geteuid() == 0:
        setpriv = shutil.which("setpriv")
        if setpriv is None:
            pytest.skip("running as root without setpriv: cannot become an unprivileged user to test this")
        prefix = [setpriv, f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups"]
    else:
        home = Path(tempfile.mkdtemp(prefix="fastmlp-readonly-home-"))
        os.chmod(home, 0o555)
        env["HOME"] = str(home)
        prefix = []

    def run(script):
        header = f"import sys; sys.path.insert(0, {str(root)!r})\n"
        return subprocess.run(prefix + [sys.executable, "-c", header + textwrap.dedent(script)], cwd=root, env=env,
                              capture_output=True, text=True, timeout=600)

    yield run
    _writable_again(root)
    shutil.rmtree(root, ignore_errors=True)


def _check_no_cache_run(result, root_marker="fastmlp-readonly-"):
    assert result.returncode == 0, result.stderr
    assert root_marker in result.stdout  # the copy ran, not the tree the tests import
    warning_lines = [line for line in result.stderr.splitlines() if JitCacheWarning.__name__ in line]
    assert len(warning_lines) == 1 and "NUMBA_CACHE_DIR" in warning_lines[0], result.stderr


def test_read_only_install_trains_with_the_numpy_backend_and_says_how_to_cache(run_read_only):
    result = run_read_only("""
        import numpy as np
        import fastmlp
        from fastmlp import MLP, Trainer
        from fastmlp.runtime.jit import CACHE
        from fastmlp.runtime.barrier import barrier_state, barrier_wait
        assert not CACHE
        assert barrier_wait(barrier_state(), 1)  # compiled, in memory only
        rng = np.random.default_rng(0)
        X, y = rng.random((64, 8), dtype=np.float32), rng.integers(0, 3, 64)
        Trainer(MLP([8, 6, 3]), "numpy", batch_size=16).fit(X, y, epochs=1)
        print(fastmlp.__file__)
    """)
    _check_no_cache_run(result)


def test_read_only_install_trains_with_the_numba_backend(run_read_only):
    result = run_read_only("""
        import numpy as np
        import fastmlp
        import fastmlp.kernels
        from fastmlp import MLP, Trainer
        rng = np.random.default_rng(0)
        X, y = rng.random((64, 8), dtype=np.float32), rng.integers(0, 3, 64)
        Trainer(MLP([8, 6, 3]), "numba", batch_size=16).fit(X, y, epochs=1)
        print(fastmlp.__file__)
    """)
    _check_no_cache_run(result)
