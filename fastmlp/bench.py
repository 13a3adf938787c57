"""Training speed of the backends against the gemm floor and the roofline: `python -m fastmlp.bench`.

All speeds are samples/s measured in one interleaved run, epoch by epoch: each backend (numpy,
numba, and PyTorch CPU when it is installed) trains one epoch through `Trainer.fit`, then the
gemm floor runs one epoch, because this kind of machine drifts by tens of percent between runs:
only the ratios within a run mean anything. Every backend starts from the same initial weights
and sees the same batches (the Trainer's seeded shuffle).

- steady state: median over the epochs after the first two, from the seconds the History
  records; JIT compilation is done before the first timed epoch.
- vs floor, vs numpy: the median over the steady epochs of each epoch's ratio to the floor's (or
  numpy's) epoch of the same round, taken seconds apart: the machine's drift, tens of percent
  over a run, cancels out of these, while it does not out of a ratio of two medians.
- gemm floor: the step's sgemm calls alone (three forward; per layer the weight gradient and,
  except for the first layer, the input gradient: eight for 784-128-64-10) with NumPy
  `np.matmul(..., out=...)` at the epoch's batch shapes, on preallocated operands.
- roofline: the GFLOP/s of one large square sgemm divided by the FLOPs of a sample's step, those
  of the floor's gemms: 2 * (3 * sum(fan_in * fan_out) - 784 * 128) = 454 kFLOP for 784-128-64-10.
- late/early: whether the trained state itself trains slower (subnormal floats are the usual
  cause). The model as the run leaves it (late) and as it was after the first two epochs (early)
  each train one more epoch, from copies, on the same batches, back to back, LATE_EARLY_PAIRS
  times: the median of early seconds / late seconds. Comparing epochs minutes apart in the run's
  history instead measured the machine's drift (0.86-1.19 for states that train at the same
  speed side by side).
- peak RSS: a process's high-water mark cannot be split between backends that share it, so each
  (backend, input) trains one epoch per batch size in a process of its own; it reports the peak
  of loading the data, then resets the peak (Linux) and reports training's.
- optimizers (numba only): one step's cost per optimiser at batch 64, plain SGD, Nesterov
  momentum, Adam and AdamW in interleaved rounds, as ratios to SGD's (fastmlp/bench_optimizers.py).
- compile: a fresh process compiles the numba backend's training epoch for float32 and Pixels
  inputs with an empty NUMBA_CACHE_DIR (cold), then a second one loads it from that cache (warm).

Every backend's turn starts after a short pause: NumPy and SciPy wheels each bundle their own
OpenBLAS (PyTorch its own threads), whose worker threads spin for ~0.1 s after a call, and a run
started while another library's threads still spin loses tens of milliseconds to the
oversubscribed cores. Runs of the same library follow each other without a pause.
"""

import argparse
import importlib.util
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from functools import cached_property
from pathlib import Path
from typing import Callable, NamedTuple

import numpy as np
from threadpoolctl import threadpool_info
from tqdm import tqdm

from . import bench_contention, kernels
from .backends import BackendError, get_backend
from .backends.base import BackendBase
from .backends.numpy_ref import adam_update, log_softmax, momentum_update
from .bench_optimizers import BATCH_SIZE as OPTIMIZER_BATCH_SIZE
from .bench_optimizers import measure_optimizer_steps
from .bench_recipe import describe_recipe, measure_recipe, recipe_options
from .inputs import Pixels
from .model import MLP
from .trainer import Trainer

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


def flops_per_sample(layer_sizes=LAYER_SIZES):
    """FLOPs of one sample's gemms: forward, dW and dA per layer, but no dA for the input layer."""
    return 2 * (3 * sum(a * b for a, b in zip(layer_sizes[:-1], layer_sizes[1:])) - layer_sizes[0] * layer_sizes[1])


def roofline(layer_sizes=LAYER_SIZES, n=2048, repeats=5):
    """{'sgemm_gflops', 'flops_per_sample', 'samples_per_s'} from the best of `repeats` n x n sgemms."""
    rng = np.random.default_rng(0)
    A, B = (rng.standard_normal((n, n), dtype=np.float32) for _ in range(2))
    C = np.empty((n, n), dtype=np.float32)
    np.matmul(A, B, out=C)
    best = min(_timed(np.matmul, A, B, out=C) for _ in range(repeats))
    gflops = 2 * n**3 / best / 1e9
    fps = flops_per_sample(layer_sizes)
    return {"sgemm_gflops": gflops, "flops_per_sample": fps, "samples_per_s": gflops * 1e9 / fps}


def report_roofline():
    """In a fresh process: print `roofline()` as JSON (see `native_roofline`)."""
    print(json.dumps(roofline()))


def native_roofline():
    """`roofline()` in a process without OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE, or None if neither is set.

    Some machines here set them (older OpenBLAS builds crash or compute wrong on their CPUs), and
    a current OpenBLAS then runs that core type's kernels: Haswell's AVX2 where the CPU has
    AVX-512, half the FMA width. The roofline as configured is the yardstick of the table; this
    one says what the hardware itself allows.
    """
    names = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")
    if not any(name in os.environ for name in names):
        return None
    env = {key: value for key, value in os.environ.items() if key not in names}
    return run_child("report_roofline()", env)


class GemmFloor:
    """The sgemm calls of one training step with `np.matmul(..., out=...)` on preallocated operands."""

    def __init__(self, layer_sizes, batch_size, seed=0):
        rng = np.random.default_rng(seed)
        pairs = list(zip(layer_sizes[:-1], layer_sizes[1:]))
        self.weights = [rng.standard_normal(shape, dtype=np.float32) for shape in pairs]
        self.grads = [np.empty(shape, dtype=np.float32) for shape in pairs]
        self.acts = [rng.standard_normal((batch_size, s), dtype=np.float32) for s in layer_sizes]
        self.deltas = [rng.standard_normal((batch_size, s), dtype=np.float32) for s in layer_sizes]

    def step(self, n):
        """The step's gemms on the first n rows of the batch buffers."""
        acts = [a[:n] for a in self.acts]
        deltas = [d[:n] for d in self.deltas]
        for l, W in enumerate(self.weights):
            np.matmul(acts[l], W, out=acts[l + 1])
        for l in reversed(range(len(self.weights))):
            np.matmul(acts[l].T, deltas[l + 1], out=self.grads[l])
            if l > 0:
                np.matmul(deltas[l + 1], self.weights[l].T, out=deltas[l])

    def epoch_seconds(self, n_samples, batch_size):
        """Seconds for the gemms of one epoch of n_samples, the last partial batch included."""
        start = time.perf_counter()
        for first in range(0, n_samples, batch_size):
            self.step(min(batch_size, n_samples - first))
        return time.perf_counter() - start


class KernelCase(NamedTuple):
    """A kernel of `fastmlp.kernels` and its NumPy counterpart as zero-argument calls on shared operands.

    `fused()` runs the kernel, which overwrites `output`; `numpy()` returns the same quantity
    computed as the reference backend writes it (allocating its result).
    """

    fused: Callable[[], object]
    numpy: Callable[[], np.ndarray]
    output: np.ndarray


class _Operands:
    """Random float32 operands shaped as in a training step of the 784-128-64-10 net at batch n."""

    def __init__(self, n, seed=0, n_images=MNIST_TRAIN_SAMPLES):
        rng = np.random.default_rng(seed)
        normal = lambda *shape: rng.standard_normal(shape, dtype=np.float32)
        self.A0, self.W0, self.dW0 = normal(n, 784), normal(784, 128), normal(784, 128)
        self.Z1, self.b1, self.dZ1, self.db1 = normal(n, 128), normal(128), normal(n, 128), np.empty(128, np.float32)
        self.A1 = np.maximum(normal(n, 128), 0)  # a ReLU output: about half zeros, as the mask sees it
        self.W1, self.dZ2 = normal(128, 64), normal(n, 64)
        self.Z3, self.b3, self.labels = normal(n, 10), normal(10), rng.integers(0, 10, n)
        self.rows = rng.permutation(n_images)[:n]
        self.out = np.empty((n, 784), np.float32)
        self.out_labels = np.empty(n, np.int64)
        self.V0 = normal(784, 128)  # a momentum velocity shaped like W0
        self.lr = np.float32(1e-4)  # repeated in-place updates must not overflow W
        self.momentum, self.weight_decay = np.float32(0.9), np.float32(5e-4)
        self.S0 = self.V0 * self.V0  # an Adam second moment shaped like W0 (>= 0)
        self.beta2, self.eps = np.float32(0.999), np.float32(1e-8)
        self.P0, self.VP0, self.SP0 = _packed_numpy(self.W0), _packed_numpy(self.V0), _packed_numpy(self.S0)
        self.PT1 = _packed_numpy(np.ascontiguousarray(np.transpose(self.W1)))  # W1.T packed, for the input gradient
        self._rng, self._n_images = rng, n_images

    @cached_property
    def pixels(self):  # an MNIST-sized source, so that a shuffled gather misses the caches as in training
        return self._rng.integers(0, 256, (self._n_images, 784), dtype=np.uint8)

    @cached_property
    def images(self):
        return self.pixels * np.float32(1 / 255)

    @cached_property
    def all_labels(self):
        return self._rng.integers(0, 10, self._n_images)


def _packed_numpy(W):
    """W (K, N) in the packed layout of fastmlp.kernels.packed, as NumPy writes it."""
    K, N = W.shape
    width = kernels.PANEL_WIDTH
    panels = -(-N // width)
    padded = np.zeros((K, panels * width), np.float32)
    padded[:, :N] = W
    return np.ascontiguousarray(padded.reshape(K, panels, width).transpose(1, 0, 2))


def _softmax_xent_grad_numpy(Z, y):
    """(softmax(Z) - onehot(y)) / n, as the reference backend computes it."""
    dZ = np.exp(log_softmax(Z))
    dZ[np.arange(len(y)), y] -= 1
    return dZ / np.float32(len(y))


def _momentum_apply_numpy(W, V, decay_step):
    """V -= decay_step * W, then W += V: what the reference backend's decayed momentum step does to W."""
    V -= decay_step * W
    W += V
    return W


def _momentum_update_numpy(W, V, G, lr, momentum, weight_decay, nesterov):
    """The reference backend's momentum step on W with velocity V and gradient G; returns W."""
    momentum_update(W, V, G + weight_decay * W, lr, momentum, nesterov)
    return W


def _adamw_update_numpy(W, M, S, G, lr, beta1, beta2, eps, weight_decay, t):
    """The reference backend's AdamW step t on W with moments M, S and gradient G; returns W."""
    W -= lr * weight_decay * W
    adam_update(W, M, S, G, lr, (beta1, beta2), eps, t)
    return W


def _kernel_cases(o):
    k = kernels
    scale = np.float32(1 / 255)
    return {  # name: (fused call, the operand it overwrites, NumPy counterpart)
        "matmul_into": (lambda: k.matmul_into(o.Z1, o.A0, o.W0), "Z1", lambda: o.A0 @ o.W0),
        "matmul_bt_into": (lambda: k.matmul_bt_into(o.Z1, o.dZ2, o.W1), "Z1", lambda: o.dZ2 @ o.W1.T),
        "matmul_at_into": (lambda: k.matmul_at_into(o.dW0, o.A0, o.dZ1), "dW0", lambda: o.A0.T @ o.dZ1),
        "sgd_gemm_update_inplace": (lambda: k.sgd_gemm_update_inplace(o.W0, o.A0, o.dZ1, o.lr), "W0",
                                    lambda: np.subtract(o.W0, o.lr * (o.A0.T @ o.dZ1), out=o.W0)),
        "bias_forward_inplace": (lambda: k.bias_forward_inplace(o.Z3, o.b3), "Z3", lambda: o.Z3 + o.b3),
        "bias_relu_forward_inplace": (lambda: k.bias_relu_forward_inplace(o.Z1, o.b1), "Z1",
                                      lambda: np.maximum(o.Z1 + o.b1, np.float32(0))),
        "relu_backward_inplace": (lambda: k.relu_backward_inplace(o.dZ1, o.A1), "dZ1", lambda: o.dZ1 * (o.A1 > 0)),
        "relu_backward_bias_grad_inplace": (lambda: k.relu_backward_bias_grad_inplace(o.dZ1, o.A1, o.db1), "db1",
                                            lambda: (o.dZ1 * (o.A1 > 0)).sum(axis=0)),
        "softmax_inplace": (lambda: k.softmax_inplace(o.Z3), "Z3",
                            lambda: np.exp(log_softmax(o.Z3))),
        "softmax_xent_backward_inplace": (lambda: k.softmax_xent_backward_inplace(o.Z3, o.labels), "Z3",
                                          lambda: _softmax_xent_grad_numpy(o.Z3, o.labels)),
        # the first half of the batch's rows, as one of two worker threads computes them
        "softmax_xent_backward_rows_inplace": (
            lambda: k.softmax_xent_backward_rows_inplace(o.Z3[: len(o.Z3) // 2], o.labels, len(o.Z3)), "Z3",
            lambda: np.concatenate([_softmax_xent_grad_numpy(o.Z3, o.labels)[: len(o.Z3) // 2], o.Z3[len(o.Z3) // 2 :]])),
        "bias_grad": (lambda: k.bias_grad(o.dZ1, o.db1), "db1", lambda: o.dZ1.sum(axis=0)),
        "sgd_update_inplace": (lambda: k.sgd_update_inplace(o.W0, o.dW0, o.lr), "W0",
                               lambda: np.subtract(o.W0, o.lr * o.dW0, out=o.W0)),
        "momentum_gemm_update_inplace": (
            lambda: k.momentum_gemm_update_inplace(o.V0, o.A0, o.dZ1, o.lr, o.momentum), "V0",
            lambda: np.subtract(o.momentum * o.V0, o.lr * (o.A0.T @ o.dZ1), out=o.V0)),
        "momentum_apply_inplace": (lambda: k.momentum_apply_inplace(o.W0, o.V0, o.lr * o.weight_decay), "W0",
                                   lambda: _momentum_apply_numpy(o.W0, o.V0, o.lr * o.weight_decay)),
        "momentum_update_inplace": (
            lambda: k.momentum_update_inplace(o.W0, o.V0, o.dW0, o.lr, o.momentum, o.weight_decay, True), "W0",
            lambda: _momentum_update_numpy(o.W0, o.V0, o.dW0, o.lr, o.momentum, o.weight_decay, True)),
        "gather_rows": (lambda: k.gather_rows(o.out, o.images, o.rows), "out", lambda: o.images[o.rows]),
        "gather_rows_scaled": (lambda: k.gather_rows_scaled(o.out, o.pixels, o.rows, scale), "out",
                               lambda: Pixels(o.pixels, scale)[o.rows]),
        "gather_labels": (lambda: k.gather_labels(o.out_labels, o.all_labels, o.rows), "out_labels",
                          lambda: o.all_labels[o.rows]),
        "pack_weights_into": (lambda: k.pack_weights_into(o.P0, o.W0), "P0", lambda: _packed_numpy(o.W0)),
        "unpack_weights_into": (lambda: k.unpack_weights_into(o.dW0, o.P0), "dW0", lambda: o.W0.copy()),
        "packed_matmul_into": (lambda: k.packed_matmul_into(o.Z1, o.A0, o.P0), "Z1", lambda: o.A0 @ o.W0),
        "packed_matmul_bias_into": (lambda: k.packed_matmul_bias_into(o.Z1, o.A0, o.P0, o.b1), "Z1",
                                    lambda: o.A0 @ o.W0 + o.b1),
        "packed_matmul_bias_relu_into": (lambda: k.packed_matmul_bias_relu_into(o.Z1, o.A0, o.P0, o.b1), "Z1",
                                         lambda: np.maximum(o.A0 @ o.W0 + o.b1, np.float32(0))),
        "packed_matmul_relu_mask_into": (lambda: k.packed_matmul_relu_mask_into(o.Z1, o.dZ2, o.PT1, o.A1), "Z1",
                                         lambda: (o.dZ2 @ o.W1.T) * (o.A1 > 0)),
        "packed_sgd_update_inplace": (
            lambda: k.packed_sgd_update_inplace(o.P0, o.A0, o.dZ1, o.lr, o.weight_decay), "P0",
            lambda: _packed_numpy(o.W0 - o.lr * (o.A0.T @ o.dZ1 + o.weight_decay * o.W0))),
        "packed_momentum_update_inplace": (
            lambda: k.packed_momentum_update_inplace(o.P0, o.VP0, o.A0, o.dZ1, o.lr, o.momentum, o.weight_decay, True),
            "P0", lambda: _packed_numpy(_momentum_update_numpy(o.W0, o.V0, o.A0.T @ o.dZ1, o.lr, o.momentum,
                                                               o.weight_decay, True))),
        "packed_adam_update_inplace": (  # AdamW at step 10, V0 as the first moment, S0 the second
            lambda: k.packed_adam_update_inplace(o.P0, o.VP0, o.SP0, o.A0, o.dZ1, o.lr, o.momentum, o.beta2, o.eps,
                                                 o.weight_decay, 10, True),
            "P0", lambda: _packed_numpy(_adamw_update_numpy(o.W0, o.V0, o.S0, o.A0.T @ o.dZ1, o.lr, o.momentum,
                                                            o.beta2, o.eps, o.weight_decay, 10))),
        "argmax_rows_into": (lambda: k.argmax_rows_into(o.out_labels, o.Z3), "out_labels", lambda: o.Z3.argmax(axis=1)),
    }


# Every public kernel but gemm_inplace, the general sgemm the three matmul kernels and the SGD gemm wrap.
KERNELS = tuple(_kernel_cases(None))


def kernel_case(name: str, batch_size: int, seed: int = 0) -> KernelCase:
    """The `KernelCase` of kernel `name` (one of KERNELS) on the default net's shapes at this batch size.

    In-place kernels are meant to be called repeatedly on the same operands: their cost does not
    depend on the values, which stay finite.
    """
    if name not in KERNELS:
        raise ValueError(f"unknown kernel {name!r}; choose one of {', '.join(KERNELS)}")
    operands = _Operands(batch_size, seed)
    fused, output, reference = _kernel_cases(operands)[name]
    return KernelCase(fused, reference, getattr(operands, output))


class TorchBackend(BackendBase):
    """PyTorch CPU as a yardstick: a plain float32 autograd + `torch.optim.SGD` loop (momentum and weight decay too),
    or `torch.optim.Adam` / `AdamW` for optimizer="adam" / "adamw".

    Its parameters are `torch.from_numpy` views of the model's own arrays, so it trains the
    model in place exactly like the fastmlp backends, from the same weights, in the same batch
    order (`rng.permutation`). Only the benchmark uses it; torch is imported on construction.
    """

    name = "torch"

    def __init__(self, threads):
        import torch

        self.torch = torch
        torch.set_num_threads(threads)

    def _params(self, model):
        return [self.torch.from_numpy(a).requires_grad_() for pair in zip(model.weights, model.biases) for a in pair]

    def _logits(self, params, A):
        torch = self.torch
        for W, b in zip(params[0:-2:2], params[1:-2:2]):
            A = torch.relu(torch.addmm(b, A, W))
        return torch.addmm(params[-1], A, params[-2])

    def _step(self, optimizer, params, A, labels):
        loss = self.torch.nn.functional.cross_entropy(self._logits(params, A), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        return loss.item()

    def _forward(self, model, X):
        with self.torch.no_grad():
            return self.torch.softmax(self._logits(self._params(model), self.torch.from_numpy(X)), dim=1).numpy()

    def _loss_and_grads(self, model, X, y):
        params = self._params(model)
        loss = self.torch.nn.functional.cross_entropy(self._logits(params, self.torch.from_numpy(X)),
                                                      self.torch.from_numpy(y))
        loss.backward()
        grads = [p.grad.numpy() for p in params]
        return loss.item(), grads[0::2], grads[1::2]

    def _optimizer(self, params, lr, momentum=0.0, nesterov=False, weight_decay=0.0, velocity=None, optimizer="sgd",
                   betas=None, eps=None, moments=None):
        """`torch.optim.SGD` over params; with momentum, its buffers are views of the fastmlp Velocity
        (torch's form v = mu v + g, W -= lr v: the same steps as fastmlp's at a constant lr).
        Adam / AdamW: torch's moments are views of the fastmlp AdamMoments, its step count from it.
        weight_decay applies to the weights alone (torch's default would decay the biases too)."""
        groups = [{"params": params[0::2]}, {"params": params[1::2], "weight_decay": 0.0}]
        if moments is not None:
            kind = self.torch.optim.AdamW if optimizer == "adamw" else self.torch.optim.Adam
            adam = kind(groups, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay)
            first = [a for pair in zip(moments.first.weights, moments.first.biases) for a in pair]
            second = [a for pair in zip(moments.second.weights, moments.second.biases) for a in pair]
            for p, m, s in zip(params, first, second):
                adam.state[p] = {"step": self.torch.tensor(float(moments.step)), "exp_avg": self.torch.from_numpy(m),
                                 "exp_avg_sq": self.torch.from_numpy(s)}
            return adam
        optimizer = self.torch.optim.SGD(groups, lr=lr, momentum=momentum, nesterov=nesterov,
                                         weight_decay=weight_decay)
        if velocity is not None:
            buffers = [b for pair in zip(velocity.weights, velocity.biases) for b in pair]
            for p, buffer in zip(params, buffers):
                optimizer.state[p]["momentum_buffer"] = self.torch.from_numpy(buffer)
        return optimizer

    def _sgd_step(self, model, X, y, lr, **sgd):
        params = self._params(model)
        optimizer = self._optimizer(params, lr, **sgd)
        loss = self._step(optimizer, params, self.torch.from_numpy(X), self.torch.from_numpy(y))
        if sgd.get("moments") is not None:
            sgd["moments"].step += 1
        return loss

    def _train_epoch(self, model, X, y, batch_size, lr, rng, progress=None, **sgd):
        torch = self.torch
        params = self._params(model)
        optimizer = self._optimizer(params, lr, **sgd)
        data = torch.from_numpy(X.data if isinstance(X, Pixels) else X)
        labels = torch.from_numpy(y)
        order = torch.from_numpy(rng.permutation(len(y)))
        total = 0.0
        for start in range(0, len(order), batch_size):
            rows = order[start : start + batch_size]
            A = data[rows]
            if isinstance(X, Pixels):  # the scale applied at the gather, as Pixels[rows] does
                A = A.to(torch.float32).mul_(X.scale)
            total += self._step(optimizer, params, A, labels[rows]) * len(rows)
        if progress is not None:
            progress(len(y))
        if sgd.get("moments") is not None:
            sgd["moments"].step += len(range(0, len(order), batch_size))
        return total / len(y)


def torch_available():
    """Whether PyTorch can be imported here (checked without importing it)."""
    return importlib.util.find_spec("torch") is not None


def blas_threads() -> int:
    """The thread count of the BLAS libraries loaded (NumPy's and SciPy's OpenBLAS), at least 1."""
    return max([i["num_threads"] for i in threadpool_info() if i.get("user_api") == "blas"], default=1)


def blas_info() -> list[str]:
    """The BLAS libraries loaded and their thread counts, as threadpoolctl reports them, each named by the
    package that loaded it: NumPy's (the numpy backend's matmuls) or SciPy's (the sgemm of fastmlp.kernels)."""
    return [f"{_blas_owner(i.get('filepath', ''))}: {i.get('internal_api')} {i.get('version')} "
            f"{i.get('num_threads')} threads ({i.get('prefix')})"
            for i in threadpool_info() if i.get("user_api") == "blas"]


_BLAS_OWNERS = {"numpy": "NumPy's BLAS (numpy backend)", "scipy": "SciPy's BLAS (numba kernels)",
                "torch": "PyTorch's BLAS"}


def _blas_owner(filepath: str) -> str:
    """Which package a BLAS library belongs to, from the folder it was loaded from (numpy.libs/, scipy.libs/)."""
    for part in reversed(Path(filepath).parts[:-1]):
        owner = _BLAS_OWNERS.get(part.split(".")[0].lower())
        if owner:
            return owner
    return "BLAS"


def make_backend(name, threads=None):
    """The backend called name: "numpy", "numba", or "torch" (with `threads` threads, default BLAS's)."""
    if name != "torch":
        return get_backend(name)
    if not torch_available():
        raise BackendError(f"backend 'torch' needs PyTorch: {TORCH_INSTALL}")
    return TorchBackend(threads or blas_threads())


def load_data(samples=None):
    """The first `samples` MNIST training images (all when None) as Pixels, and their labels."""
    from .datasets import load_mnist

    X, y, _, _ = load_mnist(as_pixels=True)
    if samples is not None:
        X, y = Pixels(X.data[:samples], X.scale), y[:samples]
    return X, y


def load_test_data():
    """The MNIST test images as Pixels, and their labels."""
    from .datasets import load_mnist

    _, _, X_test, y_test = load_mnist(as_pixels=True)
    return X_test, y_test


def input_data(pixels, kind):
    """The training input of kind "pixels" (uint8, scaled at the gather) or "float32" (scaled up front)."""
    return pixels if kind == "pixels" else pixels.to_float32()


def warm_up_backends(backends, data, y, batch_sizes, seed=0):
    """Train one short epoch per backend, input and batch size: JIT compilation and first allocations."""
    n = min(len(y), 2 * max(batch_sizes))
    for backend in backends.values():
        for X in data.values():
            subset = Pixels(X.data[:n], X.scale) if isinstance(X, Pixels) else X[:n]
            for batch_size in batch_sizes:
                Trainer(MLP(LAYER_SIZES, seed=seed), backend, lr=LR, batch_size=batch_size,
                        seed=seed).fit(subset, y[:n], epochs=1)


def late_over_early(backend, early, late, X, y, batch_size, seed=0):
    """Throughput of the model state `late` over that of `early`: one epoch of a copy of each on the
    same batches, back to back (order alternating), LATE_EARLY_PAIRS times; the median ratio."""
    ratios = []
    for pair in range(LATE_EARLY_PAIRS):
        seconds = {}
        for name in ("early", "late") if pair % 2 == 0 else ("late", "early"):
            model = (early if name == "early" else late).copy()
            rng = np.random.default_rng([seed, pair])
            start = time.perf_counter()
            backend.train_epoch(model, X, y, batch_size=batch_size, lr=LR, rng=rng)
            seconds[name] = time.perf_counter() - start
        ratios.append(seconds["early"] / seconds["late"])
    return float(np.median(ratios))


def epochwise_ratio(rates, baseline_rates):
    """Median over the steady epochs of rates[e] / baseline_rates[e]: each epoch against the baseline's
    epoch of the same round, seconds apart, so that the machine's drift over the run cancels out."""
    ratios = np.asarray(rates[WARMUP_EPOCHS:]) / np.asarray(baseline_rates[WARMUP_EPOCHS:])
    return float(np.median(ratios))


def measure_training(backends, data, y, *, batch_sizes=BATCH_SIZES, epochs=FULL["epochs"], seed=0, progress=None):
    """One row per (batch size, backend, input) with its steady-state samples/s and the ratios.

    backends maps names to backends, data maps input kinds to training inputs. Each row holds
    samples_per_s, floor_samples_per_s, vs_floor, vs_numpy (the same input on the numpy backend,
    when it runs), late_over_early and epoch_samples_per_s. progress(message) is called per epoch.
    """
    if epochs < WARMUP_EPOCHS + 2:
        raise ValueError(f"epochs must be >= {WARMUP_EPOCHS + 2} to compare early and late epochs, got {epochs}")
    n = len(y)
    init = MLP(LAYER_SIZES, seed=seed)
    rows = []
    for batch_size in batch_sizes:
        runs = [(name, kind) for name in backends for kind in data]
        trainers = {run: Trainer(init.copy(), backends[run[0]], lr=LR, batch_size=batch_size, seed=seed)
                    for run in runs}
        floor = GemmFloor(LAYER_SIZES, min(batch_size, n), seed)
        floor_rates, early = [], {}
        for epoch in range(epochs):
            if epoch == WARMUP_EPOCHS:
                early = {run: trainer.model.copy() for run, trainer in trainers.items()}
            for name in backends:
                time.sleep(SETTLE_SECONDS)
                for kind in data:
                    trainers[name, kind].fit(data[kind], y, epochs=1)
            time.sleep(SETTLE_SECONDS)
            floor_rates.append(n / floor.epoch_seconds(n, batch_size))
            if progress:
                progress(f"batch {batch_size} epoch {epoch + 1}/{epochs}")
        floor_rate = float(np.median(floor_rates[WARMUP_EPOCHS:]))
        rates = {run: np.asarray(trainers[run].history.column("samples_per_s")) for run in runs}
        steady = {run: float(np.median(r[WARMUP_EPOCHS:])) for run, r in rates.items()}
        late_early = {}
        for run in runs:
            time.sleep(SETTLE_SECONDS)
            late_early[run] = late_over_early(backends[run[0]], early[run], trainers[run].model, data[run[1]], y,
                                              batch_size, seed)
        for run in runs:
            rate = rates[run]
            numpy_rate = rates.get(("numpy", run[1]))
            rows.append({
                "batch_size": batch_size, "backend": run[0], "input": run[1],
                "samples_per_s": steady[run], "floor_samples_per_s": floor_rate,
                "vs_floor": epochwise_ratio(rate, floor_rates),
                "vs_numpy": epochwise_ratio(rate, numpy_rate) if numpy_rate is not None else None,
                "late_over_early": late_early[run],
                "epoch_samples_per_s": rate.tolist(), "floor_epoch_samples_per_s": floor_rates,
            })
    return rows


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


def report_peak_rss(backend, kind, batch_sizes, samples, threads):
    """In a fresh process: print as JSON the peak RSS of loading the data, then of training one epoch per batch size.

    Loading MNIST peaks above what training needs; the peak is reset after it, so that the
    training peak (data held, JIT compilation and scratch buffers included) is training's own.
    """
    pixels, y = load_data(samples)
    data = input_data(pixels, kind)
    trainer_backend = make_backend(backend, threads)
    loading = _peak_rss_bytes()
    reset = _reset_peak_rss()
    for batch_size in batch_sizes:
        Trainer(MLP(LAYER_SIZES, seed=0), trainer_backend, lr=LR, batch_size=batch_size).fit(data, y, epochs=1)
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


def run_child(call, env=None):
    """Run `fastmlp.bench.<call>` in a fresh Python process; returns the JSON object it printed last."""
    proc = subprocess.run([sys.executable, "-c", f"import fastmlp.bench as b; b.{call}"],
                          capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise ChildProcessError(f"measurement process {call} failed (exit {proc.returncode}): {last}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


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


def measure_peak_rss(backend_names, inputs, batch_sizes, samples, threads):
    """One {'backend', 'input', 'training_peak_mb', 'loading_peak_mb', 'reset'} per pair, each from its own process.

    One process at a time: side by side, their BLAS threads would fight over the cores and the
    small-batch epochs would crawl.
    """
    results = []
    for backend in backend_names:
        for kind in inputs:
            report = run_child(f"report_peak_rss({backend!r}, {kind!r}, {tuple(batch_sizes)!r}, {samples!r}, {threads!r})")
            results.append({"backend": backend, "input": kind, "training_peak_mb": report["training_peak_bytes"] / 2**20,
                            "loading_peak_mb": report["loading_peak_bytes"] / 2**20, "reset": report["reset"]})
    return results


def format_table(header, lines, left=1):
    """An aligned text table: the first `left` columns left-aligned, the others right-aligned."""
    widths = [max(len(h), *(len(line[i]) for line in lines)) for i, h in enumerate(header)]

    def fmt(cells):
        return "  ".join(c.ljust(w) if i < left else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))

    return "\n".join([fmt(header), fmt(["-" * w for w in widths])] + [fmt(line) for line in lines])


def format_report(report):
    """The whole report of `run` as text: a header, the throughput table, then memory and compile time."""
    c, roof = report["config"], report["roofline"]
    out = [
        f"fastmlp bench ({c['mode']}): MNIST {c['samples']:,} training samples"
        + (" (a subset)" if c["subset"] else "") + f", net {'-'.join(map(str, c['layer_sizes']))}, "
        f"SGD lr {c['lr']}, {c['epochs']} epochs per run, backends {', '.join(c['backends'])}",
        *c["blas"],
    ]
    if "torch" in c["backends"]:
        out.append(f"torch {c['torch_version']}: {c['torch_threads']} threads (the BLAS thread count)")
    out += [
        f"roofline: {roof['sgemm_gflops']:.1f} GFLOP/s sgemm 2048^3 / {roof['flops_per_sample'] / 1e3:.0f} "
        f"kFLOP per sample = {roof['samples_per_s']:,.0f} samples/s"
        + (f" (OPENBLAS_CORETYPE={os.environ.get('OPENBLAS_CORETYPE', '')} is set: without it, as the hardware "
           f"allows, {roof['native']['sgemm_gflops']:.1f} GFLOP/s = {roof['native']['samples_per_s']:,.0f} "
           f"samples/s, the 'vs native' column)" if "native" in roof else ""),
        f"steady state = median of epochs {WARMUP_EPOCHS + 1}-{c['epochs']}; vs floor, vs numpy = median of same-round "
        f"epoch ratios; late/early = the final state's epoch speed over that after epoch {WARMUP_EPOCHS}, "
        f"{LATE_EARLY_PAIRS} back-to-back pairs; floor = the step's gemms alone",
        "",
        format_table(
            ["batch", "backend", "input", "samples/s", "floor/s", "vs floor", "vs roofline"]
            + (["vs native"] if "native" in roof else []) + ["vs numpy", "late/early"],
            [[str(r["batch_size"]), r["backend"], r["input"], f"{r['samples_per_s']:,.0f}",
              f"{r['floor_samples_per_s']:,.0f}", f"{r['vs_floor']:.2f}", f"{r['vs_roofline']:.2f}"]
             + ([f"{r['vs_native_roofline']:.2f}"] if "native" in roof else [])
             + ["-" if r["vs_numpy"] is None else f"{r['vs_numpy']:.2f}", f"{r['late_over_early']:.2f}"]
             for r in report["rows"]], left=3),
        "",
        f"peak RSS, one process per row: loading the data, then training one epoch at each batch size "
        f"{', '.join(map(str, c['batch_sizes']))}"
        + ("" if all(m["reset"] for m in report["peak_rss"]) else " (peak not resettable here: training includes loading)"),
        format_table(["backend", "input", "training peak MiB", "loading peak MiB"],
                     [[m["backend"], m["input"], f"{m['training_peak_mb']:,.0f}", f"{m['loading_peak_mb']:,.0f}"]
                      for m in report["peak_rss"]], left=2),
    ]
    if report.get("recipe"):
        options, epochs, hidden = recipe_options()
        recipe_epochs = report["recipe"][0]["epochs"]
        out += ["", f"the CLI's default recipe ({describe_recipe(options, recipe_epochs, hidden)}), Pixels input, "
                    f"once per backend through Trainer.fit; vs numba = numba's training seconds over the row's",
                format_table(["backend", "train s", "test accuracy", "vs numba"],
                             [[r["backend"], f"{r['train_s']:.2f}", f"{100 * r['test_accuracy']:.2f} %",
                               "-" if r["vs_numba"] is None else f"{r['vs_numba']:.2f}"]
                              for r in report["recipe"]])]
    if report.get("optimizers"):
        out += ["", f"one step's cost per optimiser, numba backend, batch {OPTIMIZER_BATCH_SIZE}, Pixels input: "
                    f"epochs interleaved round by round; vs = median of same-round ratios",
                format_table(["optimizer", "us per step", "vs sgd", "vs sgd nesterov"],
                             [[r["optimizer"], f"{r['step_us']:,.0f}", f"{r['vs_sgd']:.3f}",
                               f"{r['vs_sgd_nesterov']:.3f}"] for r in report["optimizers"]])]
    if report["compile"]:
        comp = report["compile"]
        out += ["", f"numba compile of the training epoch (float32 and pixels inputs), in a fresh process: "
                    f"cold cache {comp['numba_cold_s']:.2f} s, warm cache {comp['numba_warm_s']:.2f} s"]
    return "\n".join(out)


def run(args, progress_bar=None):
    """Measure everything args ask for; returns the report (a JSON-ready dict)."""
    names = list(args.backends)
    threads = blas_threads()
    backends = {name: make_backend(name, threads) for name in names}
    pixels, y = load_data(args.samples)
    data = {kind: input_data(pixels, kind) for kind in args.inputs}
    bar = progress_bar if progress_bar is not None else tqdm(disable=True)

    def step(message):
        bar.set_description(message, refresh=False)
        bar.update()

    compile_times = None
    if "numba" in names:
        bar.set_description("numba compile, cold and warm cache")
        compile_times = measure_compile()
        step("numba compile")
    bar.set_description("peak RSS, one process per backend and input")
    peak_rss = measure_peak_rss(names, args.inputs, args.batch_sizes, args.samples, threads)
    step("peak RSS")
    warm_up_backends(backends, data, y, args.batch_sizes, args.seed)
    time.sleep(SETTLE_SECONDS)
    roof = roofline()
    native = native_roofline()
    if native is not None:
        roof["native"] = native
    step("warm-up and roofline")
    rows = measure_training(backends, data, y, batch_sizes=args.batch_sizes, epochs=args.epochs, seed=args.seed,
                            progress=step)
    for r in rows:
        r["vs_roofline"] = r["samples_per_s"] / roof["samples_per_s"]
        if native is not None:
            r["vs_native_roofline"] = r["samples_per_s"] / native["samples_per_s"]
    bar.set_description("the CLI's default recipe, once per backend")
    recipe = measure_recipe(backends, pixels, y, *load_test_data(), epochs=None if not args.quick else WARMUP_EPOCHS,
                            seed=args.seed, settle_seconds=SETTLE_SECONDS)
    step("recipe")
    optimizers = None
    if "numba" in names:
        bar.set_description("one step per optimiser, numba backend")
        optimizers = measure_optimizer_steps(backends["numba"], pixels, y, rounds=args.epochs,
                                             settle_seconds=SETTLE_SECONDS)
        step("optimizers")
    config = {"mode": "quick" if args.quick else "full", "samples": len(y), "subset": len(y) < MNIST_TRAIN_SAMPLES, "epochs": args.epochs,
              "batch_sizes": list(args.batch_sizes), "backends": names, "inputs": list(args.inputs),
              "layer_sizes": list(LAYER_SIZES), "lr": LR, "seed": args.seed, "blas": blas_info(),
              "warmup_epochs": WARMUP_EPOCHS}
    if "torch" in backends:
        config["torch_version"] = backends["torch"].torch.__version__
        config["torch_threads"] = backends["torch"].torch.get_num_threads()
    return {"config": config, "roofline": roof, "compile": compile_times, "peak_rss": peak_rss, "rows": rows,
            "recipe": recipe, "optimizers": optimizers}


def _timed(fn, *args, **kwargs):
    start = time.perf_counter()
    fn(*args, **kwargs)
    return time.perf_counter() - start


def _int_at_least(minimum):
    """An argparse type: an integer >= minimum, else a message naming both."""

    def parse(text):
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be an integer, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be an integer >= {minimum}, got {text}")
        return value

    return parse


_positive_int = _int_at_least(1)
_non_negative_int = _int_at_least(0)


def _epochs(text):
    value = _positive_int(text)
    if value < WARMUP_EPOCHS + 2:
        raise argparse.ArgumentTypeError(f"must be >= {WARMUP_EPOCHS + 2} (two warm-up epochs, then at least "
                                         f"one early and one late), got {text}")
    return value


def build_parser(prog: str = PROG) -> argparse.ArgumentParser:
    from .cli import new_parser

    parser = new_parser(
        prog,
        description="Measure training throughput (samples/s) of the numpy and numba backends, and PyTorch CPU "
                    "when installed, against the gemm floor and the sgemm roofline, in one interleaved run; "
                    "plus late/early epoch ratio, peak RSS and numba compile time. Prints a table.",
    )
    parser.add_argument("--quick", action="store_true",
                        help=f"a short run: {QUICK['epochs']} epochs on the first {QUICK['samples']:,} samples "
                             f"(default: {FULL['epochs']} epochs on all 60,000)")
    parser.add_argument("--epochs", type=_epochs, help="epochs per backend, input and batch size (default: "
                        f"{FULL['epochs']}, {QUICK['epochs']} with --quick)")
    parser.add_argument("--samples", type=_positive_int, metavar="N",
                        help=f"train on the first N MNIST samples (default: all 60,000, {QUICK['samples']:,} with --quick)")
    parser.add_argument("--batch-sizes", type=_positive_int, nargs="+", default=list(BATCH_SIZES), metavar="N",
                        help=f"batch sizes to measure (default: {' '.join(map(str, BATCH_SIZES))})")
    parser.add_argument("--backends", nargs="+", choices=["numpy", "numba", "torch"],
                        help="backends to measure (default: numpy numba, and torch when it is installed)")
    parser.add_argument("--inputs", nargs="+", choices=INPUTS, default=list(INPUTS),
                        help="float32: images scaled up front; pixels: uint8 scaled at the gather (fastmlp.Pixels) "
                             f"(default: {' '.join(INPUTS)})")
    parser.add_argument("--seed", type=_non_negative_int, default=0, help="seed of the initial weights and the shuffling")
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write the full report as JSON")
    parser.add_argument("--plot", type=Path, metavar="PATH",
                        help="also draw samples/s against batch size, with the gemm floor and the roofline, as a "
                             "PNG (needs matplotlib: the plot extra)")
    bench_contention.add_arguments(parser, _positive_int)
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error")
    return parser


def main(argv: Sequence[str] | None = None, *, prog: str = PROG) -> int:
    from ._atomic import atomic_write
    from .plot import plot_throughput, require_matplotlib
    from .train import check_output_path, run_reporting_errors

    args = build_parser(prog).parse_args(argv)
    mode = QUICK if args.quick else FULL
    args.epochs = args.epochs or mode["epochs"]
    args.samples = args.samples or mode["samples"]
    args.backends = args.backends or ["numpy", "numba"] + (["torch"] * torch_available())
    for name in ("backends", "inputs", "batch_sizes"):  # each once, in the order given
        setattr(args, name, list(dict.fromkeys(getattr(args, name))))

    def check_output_then_measure():
        check_output_path(args.json, "--json")
        if args.contention:
            return bench_contention.report(args)
        check_output_path(args.plot, "--plot")
        if args.plot:
            require_matplotlib()
        steps = 2 * ("numba" in args.backends) + 3 + len(args.batch_sizes) * args.epochs
        # A bar on a terminal only (disable=None): in a log, its redraws are noise.
        with tqdm(total=steps, desc="fastmlp bench", unit="step", file=sys.stderr, leave=False, disable=None) as bar:
            report = run(args, bar)
        print(format_report(report), flush=True)
        if args.json:
            with atomic_write(args.json, "w", encoding="utf-8") as f:
                f.write(json.dumps(report, indent=2) + "\n")
            print(f"report written to {args.json}")
        if args.plot:
            plot_throughput(report, args.plot)
            print(f"plot written to {args.plot}")

    return run_reporting_errors(prog, check_output_then_measure, debug=args.debug)


if __name__ == "__main__":
    sys.exit(main())
