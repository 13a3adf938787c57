"""How many worker threads the numba backend's epoch runs on, and how they run it.

The count: the BLAS thread count (OPENBLAS_NUM_THREADS, threadpoolctl, --threads), at most the usable
CPUs, no more than a batch gives MIN_ROWS_PER_WORKER rows each nor than the first layer has panels,
and, unless the caller fixed it, no more than the cores other processes leave free (`FreeCores`).
"""

import threading

from ...kernels.packed import packed_shape
from ...runtime.barrier import abort_barrier, barrier_aborted
from ...runtime.blas_threads import blas_thread_count, usable_cpus
from ..base import epoch_ranges

# A worker takes at least this many rows of a batch: below it, the barriers of each step cost
# more than the rows' share of the work saves (so batch 32 runs on at most 2 workers).
MIN_ROWS_PER_WORKER = 16
# How long the CPU load is watched before the worker count follows it (see FreeCores).
LOAD_WINDOW_SECONDS = 1.0


def training_threads():
    """Threads `train_epoch` uses by default: the BLAS thread count, at most the usable CPUs.

    So OPENBLAS_NUM_THREADS, threadpoolctl's limits and the CLI's --blas-threads set it.
    """
    return max(1, min(blas_thread_count(), usable_cpus()))


def epoch_workers(threads, batch_rows, layer_sizes):
    """Workers an epoch runs on: `threads`, but no more than a batch gives MIN_ROWS_PER_WORKER rows
    each, nor than the first layer has panels (each worker owns whole panels of W_0)."""
    panels = packed_shape(layer_sizes[0], layer_sizes[1])[0]
    return max(1, min(threads, batch_rows // MIN_ROWS_PER_WORKER, panels))


def run_chunks(run, n, batch_size, progress, barrier):
    """Worker 0's part of the epoch on this thread: one nopython call, or ~50 with progress."""
    total = 0.0
    for begin, end in epoch_ranges(n, batch_size, progress):
        total += run(0, begin, end)
        if barrier_aborted(barrier):
            break
        if progress is not None:
            progress(end - begin)
    return total

def run_workers(run, workers, n, batch_size, progress, barrier):
    """Workers 1.. on threads of their own over the whole epoch, worker 0 here; returns the summed loss.

    If any of them fails (or progress raises, or Ctrl-C arrives between chunks), the barrier
    is aborted so the others stop at their next meeting, and the first error is raised.
    """
    totals, errors = [0.0] * workers, []

    def helper(t):
        try:
            totals[t] = run(t, 0, n)
        except BaseException as exc:  # handed to the caller's thread below
            errors.append(exc)
            abort_barrier(barrier)

    threads = [threading.Thread(target=helper, args=(t,), name=f"fastmlp-worker-{t}", daemon=True)
               for t in range(1, workers)]
    try:
        for thread in threads:
            thread.start()
        totals[0] = run_chunks(run, n, batch_size, progress, barrier)
    except BaseException:
        abort_barrier(barrier)
        raise
    finally:
        for thread in threads:
            if thread.ident is not None:  # started
                thread.join()
    if errors:
        raise errors[0]
    return sum(totals)
