"""How many threads BLAS uses, and running BLAS single-threaded from one thread.

The numba backend trains on one worker thread per core, each calling BLAS, which must then
run single-threaded. OpenBLAS (what NumPy's and SciPy's wheels bundle) offers
`openblas_set_num_threads_local`, which does not stop and restart its thread pool as a
process-wide change does; where a BLAS lacks it, threadpoolctl limits the whole process.
"""

import ctypes
import os
from contextlib import contextmanager

from threadpoolctl import ThreadpoolController

_controller = None
_local_setters = None


def blas_controller():
    """threadpoolctl's handle on the BLAS libraries loaded (NumPy's, and SciPy's that the kernels call)."""
    global _controller
    if _controller is None:
        from . import kernels  # noqa: F401  loads SciPy's BLAS before the libraries are listed

        _controller = ThreadpoolController().select(user_api="blas")
    return _controller


def blas_thread_count():
    """The largest thread count among the BLAS libraries loaded, at least 1."""
    return max([lib["num_threads"] for lib in blas_controller().info()], default=1)


def usable_cpus():
    """CPUs this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def thread_local_setters():
    """`openblas_set_num_threads_local` of every BLAS loaded, or () if one of them lacks it."""
    global _local_setters
    if _local_setters is None:
        setters = []
        for lib in blas_controller().lib_controllers:
            setter = getattr(ctypes.CDLL(lib.filepath), "openblas_set_num_threads_local", None)
            if lib.internal_api != "openblas" or setter is None:
                setters = []
                break
            setter.argtypes, setter.restype = [ctypes.c_int], ctypes.c_int
            setters.append(setter)
        _local_setters = tuple(setters)
    return _local_setters


def one_blas_thread_here():
    """Make BLAS calls from this thread single-threaded, where OpenBLAS allows it (True), until
    `single_threaded_blas` in the thread that started this one ends. Else does nothing (False)."""
    for set_local in thread_local_setters():
        set_local(1)
    return bool(thread_local_setters())


@contextmanager
def single_threaded_blas():
    """Within the block, BLAS calls made by this thread run on one thread.

    Through OpenBLAS's openblas_set_num_threads_local where every BLAS loaded has it: no thread
    pool is stopped and restarted, as OpenBLAS does on each process-wide change (a Ctrl-C test
    that switched the process-wide count back and forth every few milliseconds hung once; the
    cause was not found, and this takes that churn away). Depending on the build that count
    holds for this thread or for the process; on leaving, 0 puts the process-wide count back in
    force (the value the call returns is the count in effect, not whether one was set). Else
    the process-wide count is limited through threadpoolctl.
    """
    if one_blas_thread_here():
        try:
            yield
        finally:
            for set_local in thread_local_setters():
                set_local(0)
    else:
        with blas_controller().limit(limits=1, user_api="blas"):
            yield
