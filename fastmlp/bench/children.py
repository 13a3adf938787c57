"""Measurements that need a process of their own: peak RSS per backend and input, and compile time
with a cold and a warm Numba cache."""

import json
import os
import resource
import sys
import tempfile
import time

import numpy as np

from ..backends import get_backend
from ..inputs import Pixels
from ..model import MLP
from ..trainer import Trainer
from .common import (
    INPUTS,
    LAYER_SIZES,
    LR,
    input_data,
    load_data,
    make_backend,
    run_child,
)


def _peak_rss_bytes():
    """The process's peak RSS: Linux's resettable VmHWM, else `ru_maxrss` (the peak since the start)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    scale = 1 if sys.platform == "darwin" else 1024  # ru_maxrss is in bytes on macOS, KiB on Linux
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale


def _reset_peak_rss():
    """Lower the peak RSS to the current RSS (Linux >= 4.0); False where the kernel does not allow it."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def report_peak_rss(backend, kind, batch_sizes, samples, threads, layer_sizes=LAYER_SIZES):
    """In a fresh process: print as JSON the peak RSS of loading the data, then of training one epoch per batch size
    (the net of layer_sizes).

    Loading MNIST peaks above what training needs; the peak is reset after it, so that the
    training peak (data held, JIT compilation and scratch buffers included) is training's own.
    """
    pixels, y = load_data(samples)
    data = input_data(pixels, kind)
    trainer_backend = make_backend(backend, threads)
    loading = _peak_rss_bytes()
    reset = _reset_peak_rss()
    for batch_size in batch_sizes:
        Trainer(MLP(layer_sizes, seed=0), trainer_backend, lr=LR, batch_size=batch_size).fit(data, y, epochs=1)
    print(json.dumps({"training_peak_bytes": _peak_rss_bytes(), "loading_peak_bytes": loading, "reset": reset}))


def report_compile_seconds(inputs=INPUTS):
    """In a fresh process: print as JSON the seconds to import the numba backend and to compile its epoch."""
    start = time.perf_counter()
    backend = get_backend("numba")
    imported = time.perf_counter()
    X = Pixels(np.zeros((2, LAYER_SIZES[0]), dtype=np.uint8))
    for kind in inputs:
        backend.train_epoch(MLP(LAYER_SIZES, seed=0), input_data(X, kind), np.zeros(2, dtype=np.int64),
                            batch_size=1, lr=LR, rng=np.random.default_rng(0))
    print(json.dumps({"import_s": imported - start, "compile_s": time.perf_counter() - imported}))




def compile_seconds_in_child(cache_dir, inputs=INPUTS):
    """Compile seconds of the numba training epoch in a fresh process whose Numba cache is cache_dir."""
    env = dict(os.environ, NUMBA_CACHE_DIR=str(cache_dir))
    return run_child(f"report_compile_seconds({tuple(inputs)!r})", env)["compile_s"]


def measure_compile():
    """{'numba_cold_s', 'numba_warm_s'}: compile from an empty Numba cache, then load from it."""
    with tempfile.TemporaryDirectory(prefix="fastmlp-numba-cache-") as cache_dir:
        cold = compile_seconds_in_child(cache_dir)
        warm = compile_seconds_in_child(cache_dir)
    return {"numba_cold_s": cold, "numba_warm_s": warm}


def measure_peak_rss(backend_names, inputs, batch_sizes, samples, threads, layer_sizes=LAYER_SIZES):
    """One {'backend', 'input', 'training_peak_mb', 'loading_peak_mb', 'reset'} per pair, each from its own process.

    One process at a time: side by side, their BLAS threads would fight over the cores and the
    small-batch epochs would crawl.
    """
    results = []
    for backend in backend_names:
        for kind in inputs:
            report = run_child(
                f"report_peak_rss({backend!r}, {kind!r}, {tuple(batch_sizes)!r}, {samples!r}, {threads!r}, "
                f"{tuple(layer_sizes)!r})")
            results.append({"backend": backend, "input": kind,
                            "training_peak_mb": report["training_peak_bytes"] / 2**20,
                            "loading_peak_mb": report["loading_peak_bytes"] / 2**20, "reset": report["reset"]})
    return results
