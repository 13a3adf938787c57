"""`@cached_njit`: Numba's `@njit(cache=True)`, or without the cache where Numba has nowhere to keep it.

Every fastmlp module compiles its functions with it instead of `njit(cache=True)`:

    from ._jit import cached_njit

    @cached_njit                    # as @njit(cache=True)
    def f(x): ...

    @cached_njit(nogil=True)        # as @njit(nogil=True, cache=True)
    def g(x): ...

Installed non-editable into a folder nobody may write (a system site, a container's venv) and run
by a user with no writable home, Numba finds no folder for its cache and `@njit(cache=True)`
raises `RuntimeError: cannot cache function ...: no locator available` at import. Whether it can
is decided once, at the import of this module, by decorating a function of this file (all of
fastmlp's source lives in the same package folder, so one probe answers for every module): if it
cannot, every `cached_njit` function compiles in memory only (each run compiles again, which takes tens of seconds), and
one warning line says so and names `NUMBA_CACHE_DIR`, the fix.

Numba keys a cached function by its own bytecode and invalidates it when its own file changes,
not when a function it calls, or the LLVM IR an intrinsic emits, changes in another file: after
an edit to `kernels/simd_ir.py` alone, every cached caller kept running the old microkernels.
So `cached_njit` functions use `SourceKeyedCache`, whose key also holds a hash of every fastmlp
source file that holds compiled code (`compiled_sources_hash`): an edit to any of them compiles
every kernel again, once, and an install (whose files never change) always finds its cache.
"""

from __future__ import annotations

import functools
import hashlib
import os
import platform
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from numba import njit
from numba.core.caching import FunctionCache

__all__ = ["CACHE", "JitCacheWarning", "SourceKeyedCache", "cached_njit", "compiled_sources_hash"]


class JitCacheWarning(UserWarning):
    """Numba cannot cache fastmlp's compiled code here, so it compiles it again in every process."""


def _probe() -> int:  # pragma: no cover - only ever decorated, never called
    return 0


def _numba_can_cache() -> bool:
    """Whether Numba finds a writable cache folder for functions defined in fastmlp's source files."""
    try:
        njit(cache=True)(_probe)  # looks for a cache locator at decoration; compiles nothing
    except RuntimeError:
        return False
    return True


CACHE = _numba_can_cache()

# Whether this is an x86 machine: the SIMD kernels and the barrier use x86-only instructions there
# (the MXCSR's flush-to-zero modes, `pause`) and portable code elsewhere.
X86 = platform.machine().lower() in ("x86_64", "amd64", "i386", "i686")

NO_CACHE_MESSAGE = (
    f"Numba finds no writable folder to cache fastmlp's compiled kernels (next to {os.path.dirname(__file__)} "
    "or in the home folder), so they are compiled again in every run (tens of seconds); "
    "set NUMBA_CACHE_DIR to a writable folder to keep them"
)

if not CACHE:
    # warn_explicit without a source line to quote: the message is one line on stderr.
    warnings.warn_explicit(NO_CACHE_MESSAGE, JitCacheWarning, filename="fastmlp", lineno=0, module="fastmlp")


# A source file holds compiled code when it names one of these (its kernels, or the IR they emit).
_COMPILED_CODE_MARKERS = (b"cached_njit", b"@intrinsic", b"llvmlite")


@functools.cache
def compiled_sources_hash() -> str:
    """sha256 over the fastmlp source files that hold compiled code (paths and contents);
    computed once, at the first cache lookup."""
    package = Path(__file__).parent.parent  # fastmlp/, this file being fastmlp/runtime/jit.py
    digest = hashlib.sha256()
    for path in sorted(package.rglob("*.py")):
        source = path.read_bytes()
        if any(marker in source for marker in _COMPILED_CODE_MARKERS):
            digest.update(path.relative_to(package).as_posix().encode() + b"\0" + source)
    return digest.hexdigest()


# Choices that shape the compiled code without showing in its source (fastmlp.kernels.tiles puts the SIMD
# tile it chose here): part of the cache key, so that code compiled for another choice is never loaded.
CODE_CHOICES: dict[str, str] = {}


class SourceKeyedCache(FunctionCache):
    """Numba's on-disk cache of one function, keyed also by compiled_sources_hash() (see the module doc) and
    CODE_CHOICES."""

    def _index_key(self, sig: Any, codegen: Any) -> Any:
        return (*super()._index_key(sig, codegen), compiled_sources_hash(), tuple(sorted(CODE_CHOICES.items())))


def cached_njit(function: Callable[..., Any] | None = None, **options: Any) -> Any:
    """`numba.njit(**options, cache=CACHE)`; use as `@cached_njit` or `@cached_njit(nogil=True)`.

    Typed Any (a Numba dispatcher, or the decorator that makes one): the Python side of the kernels is
    typed where it wraps them, fastmlp.checked_kernels.
    """
    if "cache" in options:
        raise TypeError("cached_njit decides the cache itself; use numba.njit for an explicit cache=")

    def decorate(python_function: Callable[..., Any]) -> Any:
        dispatcher = njit(cache=CACHE, **options)(python_function)
        if CACHE:
            dispatcher._cache = SourceKeyedCache(dispatcher.py_func)
        return dispatcher

    return decorate if function is None else decorate(function)
