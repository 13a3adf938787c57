"""How many threads BLAS uses, and running BLAS single-threaded from one thread.

The numba backend trains on one worker thread per core, each calling BLAS, which must then
run single-threaded. OpenBLAS (what NumPy's and SciPy's wheels bundle) offers
`openblas_set_num_threads_local`, which does not stop and restart its thread pool as a
process-wide change does; where a BLAS lacks it, threadpoolctl limits the whole process.
"""

from __future__ import annotations

import ctypes
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from threadpoolctl import ThreadpoolController

from ..inputs import check_positive_int

# threadpoolctl carries no type information: its controller and limits are Any here.
_controller: Any = None
_controller_has_kernels = False
_local_setters: tuple[Callable[[int], int], ...] | None = None


def blas_controller() -> Any:
    """threadpoolctl's handle on the BLAS libraries loaded: NumPy's, and SciPy's once the kernels that
    call it are imported (listed again then). The numpy backend never imports Numba for it."""
    global _controller, _controller_has_kernels, _local_setters
    kernels_loaded = f"{__package__}.kernels" in sys.modules
    if _controller is None or (kernels_loaded and not _controller_has_kernels):
        _controller = ThreadpoolController().select(user_api="blas")
        _controller_has_kernels = kernels_loaded
        _local_setters = None
    return _controller


def blas_thread_count() -> int:
    """The largest thread count among the BLAS libraries loaded, at least 1."""
    return max([lib["num_threads"] for lib in blas_controller().info()], default=1)


def usable_cpu_ids() -> set[int]:
    """The numbers of the CPUs this process may run on (its affinity mask; every CPU where there is none)."""
    try:
        return os.sched_getaffinity(0)
    except AttributeError:  # not on Linux
        return set(range(os.cpu_count() or 1))


def usable_cpus() -> int:
    """CPUs this process may use: its affinity mask, and a container's CPU quota.

    `docker run --cpus 1` or a Kubernetes CPU limit sets a cgroup quota while the affinity mask
    still shows every core of the host; threads beyond the quota only wait for each other's
    time slices. loky (joblib's process pool) counts both: cgroup v2's /sys/fs/cgroup/cpu.max,
    else v1's cpu.cfs_quota_us / cpu.cfs_period_us, a fractional quota rounded up (1.5 CPUs: 2),
    and LOKY_MAX_CPU_COUNT where it is set. It reads these files at every call (~0.1 ms).
    """
    from loky import cpu_count  # ~0.1 s to import: only once a thread count is needed

    return max(1, min(len(usable_cpu_ids()), cpu_count()))


def thread_local_setters() -> tuple[Callable[[int], int], ...]:
    """`openblas_set_num_threads_local` of every BLAS loaded, or () if one of them lacks it."""
    global _local_setters
    blas_controller()  # lists SciPy's BLAS too once the kernels are loaded
    if _local_setters is None:
        setters: list[Callable[[int], int]] = []
        for lib in blas_controller().lib_controllers:
            setter = getattr(ctypes.CDLL(lib.filepath), "openblas_set_num_threads_local", None)
            if lib.internal_api != "openblas" or setter is None:
                setters = []
                break
            setter.argtypes, setter.restype = [ctypes.c_int], ctypes.c_int
            setters.append(setter)
        _local_setters = tuple(setters)
    return _local_setters


def one_blas_thread_here(threads: int = 1) -> bool:
    """Make BLAS calls from this thread single-threaded (or `threads`), where OpenBLAS allows it
    (True), until `single_threaded_blas` in the thread that started this one ends. Else does nothing (False)."""
    for set_local in thread_local_setters():
        set_local(threads)
    return bool(thread_local_setters())


_process_limit: Any = None  # the threadpoolctl limit set_blas_threads_here falls back on


def set_blas_threads_here(threads: int | None) -> None:
    """From now on, BLAS calls from this thread run on `threads` threads (None: BLAS's own count again).

    Through openblas_set_num_threads_local where every BLAS loaded has it (cheap: call it per
    step if need be); else through threadpoolctl, for the whole process.
    """
    global _process_limit
    if thread_local_setters():
        for set_local in thread_local_setters():
            set_local(0 if threads is None else threads)
        return
    if _process_limit is not None:
        _process_limit.restore_original_limits()
        _process_limit = None
    if threads is not None:
        _process_limit = blas_controller().limit(limits=threads, user_api="blas")


@contextmanager
def blas_threads_limited(threads: int = 1) -> Iterator[None]:
    """Within the block, BLAS calls made by this thread run on `threads` threads (default one).

    The recipe for your own @njit code that calls fastmlp's gemm kernels on a machine busy with
    other work, where BLAS's spinning threads would wait for each other (such a loop ran tens of
    times slower than single-threaded; docs/results.md)::

        with fastmlp.kernels.blas_threads_limited():
            my_training_loop(...)

    Mechanism as for `single_threaded_blas`, whose general form this is.
    """
    threads = check_positive_int(threads, "threads")
    import scipy.linalg.cython_blas  # noqa: F401  the kernels' BLAS (SciPy's) must be loaded to be limited

    if one_blas_thread_here(threads):
        try:
            yield
        finally:
            for set_local in thread_local_setters():
                set_local(0)
    else:
        with blas_controller().limit(limits=threads, user_api="blas"):
            yield


@contextmanager
def single_threaded_blas() -> Iterator[None]:
    """Within the block, BLAS calls made by this thread run on one thread.

    Through OpenBLAS's openblas_set_num_threads_local where every BLAS loaded has it: no thread
    pool is stopped and restarted, as OpenBLAS does on each process-wide change (a Ctrl-C test
    that switched the process-wide count back and forth every few milliseconds hung once; the
    cause was not found, and this takes that churn away). Depending on the build that count
    holds for this thread or for the process; on leaving, 0 puts the process-wide count back in
    force (the value the call returns is the count in effect, not whether one was set). Else
    the process-wide count is limited through threadpoolctl.
    """
    with blas_threads_limited(1):
        yield
