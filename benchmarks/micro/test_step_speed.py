"""pytest-benchmark: one SGD step (forward, backward, update) per backend on an MNIST batch of 128.

Run with `python -m pytest benchmarks/micro`.
"""

import pytest

from fastmlp import MLP, get_backend
from fastmlp.bench import LAYER_SIZES, LR, load_data

BATCH_SIZE = 128


@pytest.fixture(scope="module")
def batch():
    X, y = load_data(BATCH_SIZE)
    return X.to_float32(), y


@pytest.mark.parametrize("backend", ["numpy", "numba"])
def test_sgd_step(benchmark, batch, backend):
    X, y = batch
    model, trainer_backend = MLP(LAYER_SIZES, seed=0), get_backend(backend)
    trainer_backend.sgd_step(model, X, y, LR)  # compiles outside the timing
    benchmark.group = f"sgd step at batch {BATCH_SIZE}"
    benchmark(trainer_backend.sgd_step, model, X, y, LR)
