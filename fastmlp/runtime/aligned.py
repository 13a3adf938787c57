"""Arrays whose data starts on a page, and so on a cache line, on pages of their own: the buffers the SIMD kernels
read a vector at a time, and that the numba backend's workers write.

NumPy's allocator starts large arrays 16 bytes into a page, so a packed row of 64 bytes (one AVX-512
vector, two AVX2 ones) would straddle two cache lines and every such load touch both. An array made
here starts on a PAGE boundary instead, a CACHE_LINE boundary too; its rows then start on a cache line wherever
the row length in bytes is a multiple of it (the packed layout's rows always are).

    aligned_empty(shape, dtype)   uninitialised, like np.empty (each of these on pages of its own, below)
    aligned_zeros(shape, dtype)   zeros, like np.zeros
    aligned_copy(a)               a C-contiguous copy of a
    on_cache_line(a)              whether a's data starts on a line

Each is a view of a larger uint8 buffer (a page or two more), which it keeps alive; it is C-contiguous, writable
and owns nothing else, so it pickles, saves and copies like any array.

Each also has pages of its own: its data starts on a PAGE boundary and shares no page with another
array's. A core's hardware prefetchers fetch ahead within a 4 KB page, so where two arrays, each written
by another of the numba backend's workers, shared one (the workers' input buffers side by side, a worker's
scratch arrays next to the other's), one core's stream of reads or writes could pull lines the other core
owns into its own cache, and the owner take them back at its next write: on cores of different dies, a
round trip of 350-430 ns each. On a 2-core AMD EPYC Zen 5 whose two vCPUs were at times on different dies,
two-worker epochs at batch 32 ran 1.01x and 1.04x faster (two runs) with every array on pages of its own
while the vCPUs were far apart, unchanged (0.995-1.001x) while near, and unchanged at batch 64 on float32
data (docs/results.md). A small array costs a page or two of memory.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import numpy.typing as npt

CACHE_LINE = 64  # bytes; also the width of an AVX-512 vector
PAGE = 4096  # bytes: the span within which a hardware prefetcher fetches ahead


def aligned_empty(shape: int | tuple[int, ...], dtype: npt.DTypeLike = np.float32) -> np.ndarray[Any, Any]:
    """An uninitialised C-contiguous array whose data starts on a CACHE_LINE boundary, on pages of its own."""
    return _aligned(shape, dtype, np.empty)


def aligned_zeros(shape: int | tuple[int, ...], dtype: npt.DTypeLike = np.float32) -> np.ndarray[Any, Any]:
    """A C-contiguous array of zeros whose data starts on a CACHE_LINE boundary, on pages of its own (pages never
    written cost no memory, as with np.zeros)."""
    return _aligned(shape, dtype, np.zeros)


def _aligned(shape: int | tuple[int, ...], dtype: npt.DTypeLike,
             allocate: Callable[..., np.ndarray[Any, Any]]) -> np.ndarray[Any, Any]:
    """The array of that shape and dtype in a uint8 buffer from allocate (np.empty or np.zeros) that holds whole
    pages for it: its data from the first PAGE boundary in the buffer, its last page whole in the buffer too."""
    dtype = np.dtype(dtype)
    shape = (shape,) if isinstance(shape, (int, np.integer)) else tuple(shape)
    nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    pages = -(-nbytes // PAGE)
    buffer = allocate((pages + 1) * PAGE, dtype=np.uint8)
    start = -buffer.ctypes.data % PAGE
    return buffer[start : start + nbytes].view(dtype).reshape(shape)


def on_cache_line(a: np.ndarray[Any, Any]) -> bool:
    """Whether a's data starts on a CACHE_LINE boundary (kernels.rowmajor.on_cache_lines: the same test in
    nopython code, for every row of W)."""
    return a.ctypes.data % CACHE_LINE == 0


def aligned_copy(a: npt.ArrayLike, dtype: npt.DTypeLike | None = None) -> np.ndarray[Any, Any]:
    """A C-contiguous copy of a (converted to dtype, if given) whose data starts on a CACHE_LINE boundary, on
    pages of its own."""
    a = np.asarray(a, dtype=dtype)
    copy = aligned_empty(a.shape, a.dtype)
    copy[...] = a
    return copy
