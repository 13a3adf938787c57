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
cannot, every `cached_njit` function compiles in memory only (each run compiles again, ~10 s), and
one warning line says so and names `NUMBA_CACHE_DIR`, the fix.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable
from typing import Any

from numba import njit

__all__ = ["CACHE", "JitCacheWarning", "cached_njit"]


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

NO_CACHE_MESSAGE = (
    f"Numba finds no writable folder to cache fastmlp's compiled kernels (next to {os.path.dirname(__file__)} "
    "or in the home folder), so they are compiled again in every run (~10 s); "
    "set NUMBA_CACHE_DIR to a writable folder to keep them"
)

if not CACHE:
    # warn_explicit without a source line to quote: the message is one line on stderr.
    warnings.warn_explicit(NO_CACHE_MESSAGE, JitCacheWarning, filename="fastmlp", lineno=0, module="fastmlp")


def cached_njit(function: Callable[..., Any] | None = None, **options: Any) -> Any:
    """`numba.njit(**options, cache=CACHE)`; use as `@cached_njit` or `@cached_njit(nogil=True)`.

    Typed Any (a Numba dispatcher, or the decorator that makes one): the Python side of the kernels is
    typed where it wraps them, fastmlp.checked_kernels.
    """
    if "cache" in options:
        raise TypeError("cached_njit decides the cache itself; use numba.njit for an explicit cache=")
    decorate = njit(cache=CACHE, **options)
    return decorate if function is None else decorate(function)
