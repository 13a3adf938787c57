"""One case per public kernel, with its NumPy equivalent from `fastmlp.kernels.reference`: the operands
at a batch size, the kernel call and the reference call (the asv and pytest-benchmark suites time both)."""

from collections.abc import Callable
from functools import cached_property
from typing import NamedTuple

import numpy as np

from .. import kernels
from ..inputs import Pixels
from ..kernels import reference
from .common import MNIST_TRAIN_SAMPLES


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

        def normal(*shape: int) -> np.ndarray:
            return rng.standard_normal(shape, dtype=np.float32)

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
        self.P0, self.VP0, self.SP0 = reference.packed(self.W0), reference.packed(self.V0), reference.packed(self.S0)
        self.PT1 = reference.packed(np.ascontiguousarray(np.transpose(self.W1)))  # W1.T packed, for the input gradient
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
                            lambda: reference.softmax(o.Z3)),
        "softmax_xent_backward_inplace": (lambda: k.softmax_xent_backward_inplace(o.Z3, o.labels), "Z3",
                                          lambda: reference.softmax_xent_grad(o.Z3, o.labels)),
        # the first half of the batch's rows, as one of two worker threads computes them
        "softmax_xent_backward_rows_inplace": (
            lambda: k.softmax_xent_backward_rows_inplace(o.Z3[: len(o.Z3) // 2], o.labels, len(o.Z3)), "Z3",
            lambda: np.concatenate([reference.softmax_xent_grad(o.Z3, o.labels)[: len(o.Z3) // 2],
                                    o.Z3[len(o.Z3) // 2 :]])),
        "bias_grad": (lambda: k.bias_grad(o.dZ1, o.db1), "db1", lambda: o.dZ1.sum(axis=0)),
        "sgd_update_inplace": (lambda: k.sgd_update_inplace(o.W0, o.dW0, o.lr), "W0",
                               lambda: np.subtract(o.W0, o.lr * o.dW0, out=o.W0)),
        "momentum_gemm_update_inplace": (
            lambda: k.momentum_gemm_update_inplace(o.V0, o.A0, o.dZ1, o.lr, o.momentum), "V0",
            lambda: np.subtract(o.momentum * o.V0, o.lr * (o.A0.T @ o.dZ1), out=o.V0)),
        "momentum_apply_inplace": (lambda: k.momentum_apply_inplace(o.W0, o.V0, o.lr * o.weight_decay), "W0",
                                   lambda: reference.momentum_apply(o.W0, o.V0, o.lr * o.weight_decay)),
        "momentum_update_inplace": (
            lambda: k.momentum_update_inplace(o.W0, o.V0, o.dW0, o.lr, o.momentum, o.weight_decay, True), "W0",
            lambda: reference.momentum_update_decayed(o.W0, o.V0, o.dW0, o.lr, o.momentum, o.weight_decay, True)),
        "gather_rows": (lambda: k.gather_rows(o.out, o.images, o.rows), "out", lambda: o.images[o.rows]),
        "gather_rows_scaled": (lambda: k.gather_rows_scaled(o.out, o.pixels, o.rows, scale), "out",
                               lambda: Pixels(o.pixels, scale)[o.rows]),
        "gather_labels": (lambda: k.gather_labels(o.out_labels, o.all_labels, o.rows), "out_labels",
                          lambda: o.all_labels[o.rows]),
        "pack_weights_into": (lambda: k.pack_weights_into(o.P0, o.W0), "P0", lambda: reference.packed(o.W0)),
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
            lambda: reference.packed(o.W0 - o.lr * (o.A0.T @ o.dZ1 + o.weight_decay * o.W0))),
        "packed_momentum_update_inplace": (
            lambda: k.packed_momentum_update_inplace(o.P0, o.VP0, o.A0, o.dZ1, o.lr, o.momentum, o.weight_decay, True),
            "P0", lambda: reference.packed(reference.momentum_update_decayed(
                o.W0, o.V0, o.A0.T @ o.dZ1, o.lr, o.momentum, o.weight_decay, True))),
        "packed_adam_update_inplace": (  # AdamW at step 10, V0 as the first moment, S0 the second
            lambda: k.packed_adam_update_inplace(o.P0, o.VP0, o.SP0, o.A0, o.dZ1, o.lr, o.momentum, o.beta2, o.eps,
                                                 o.weight_decay, 10, True),
            "P0", lambda: reference.packed(reference.adamw_update(o.W0, o.V0, o.S0, o.A0.T @ o.dZ1, o.lr, o.momentum,
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
