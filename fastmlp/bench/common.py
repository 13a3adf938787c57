"""What every part of the benchmark shares: the net, batch sizes, inputs and run lengths; the backends and
data it measures; a timer; a child process."""

import json
import os
import subprocess
import sys
import time

from ..backends import BackendError, get_backend
from ..inputs import take_rows
from .blas_report import blas_threads
from .torch_yardstick import TorchBackend, torch_available

PROG = "python -m fastmlp.bench"
LAYER_SIZES = (784, 128, 64, 10)
BATCH_SIZES = (32, 64, 128, 1024)
INPUTS = ("float32", "pixels")
LR = 0.1
WARMUP_EPOCHS = 2
LATE_EARLY_PAIRS = 5
SETTLE_SECONDS = 0.3  # longer than OpenBLAS worker threads spin after their last call
FULL = {"epochs": 12, "samples": None}  # None: all MNIST training samples
QUICK = {"epochs": 4, "samples": 4000}
MNIST_TRAIN_SAMPLES = 60000
TORCH_INSTALL = "pip install torch==2.13.0"


def make_backend(name, threads=None):
    """The backend called name: "numpy", "numba", or "torch" (with `threads` threads, default BLAS's)."""
    if name != "torch":
        return get_backend(name)
    if not torch_available():
        raise BackendError(f"backend 'torch' needs PyTorch: {TORCH_INSTALL}")
    return TorchBackend(threads or blas_threads())


def load_data(samples=None):
    """The first `samples` MNIST training images (all when None) as Pixels, and their labels."""
    from ..datasets import load_mnist

    X, y, _, _ = load_mnist(as_pixels=True)
    if samples is not None:
        X, y = take_rows(X, slice(samples)), y[:samples]
    return X, y


def load_test_data():
    """The MNIST test images as Pixels, and their labels."""
    from ..datasets import load_mnist

    _, _, X_test, y_test = load_mnist(as_pixels=True)
    return X_test, y_test


def input_data(pixels, kind):
    """The training input of kind "pixels" (uint8, scaled at the gather) or "float32" (scaled up front)."""
    return pixels if kind == "pixels" else pixels.to_float32()


def timed(fn, *args, **kwargs):
    start = time.perf_counter()
    fn(*args, **kwargs)
    return time.perf_counter() - start


def run_child(call, env=None, module="children"):
    """Run `fastmlp.bench.<module>.<call>` in a fresh Python process; returns the JSON object it printed last.

    The child runs the SIMD tile this process runs (FASTMLP_TILE): with a Numba cache of its own
    (the compile times) it would otherwise tune again, and time that too.
    """
    from ..kernels.tiles import TILE

    env = dict(os.environ if env is None else env)
    env.setdefault("FASTMLP_TILE", TILE.name)
    proc = subprocess.run([sys.executable, "-c", f"import fastmlp.bench.{module} as b; b.{call}"],
                          capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise ChildProcessError(f"measurement process {call} failed (exit {proc.returncode}): {last}")
    return json.loads(proc.stdout.strip().splitlines()[-1])
