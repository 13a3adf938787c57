"""More threads than cores (this machine has 2): the results stay those of the reference.

Only public API (`Backend(threads=N)`, `train_epoch`), so that these hold for any implementation
of the backends' threads. Whether such runs stay fast is measured, not asserted: see
`python -m fastmlp.bench --contention` and "On a busy machine" in README.md.
"""

import os

import numpy as np
import pytest

from fastmlp import MLP, get_backend
from fastmlp.backends import numpy_ref
from fastmlp.backends.numba import backend as numba_fused
from fastmlp.optim import Velocity
from fastmlp.testing import scaled_error

CORES = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def train(backend, batch_size, n=240, sizes=(30, 24, 16, 5)):
    rng = np.random.default_rng(0)
    X, y = rng.random((n, sizes[0]), dtype=np.float32), rng.integers(0, sizes[-1], n)
    model = MLP(sizes, seed=1)
    loss = backend.train_epoch(model, X, y, batch_size=batch_size, lr=0.05, rng=np.random.default_rng(2),
                               momentum=0.9, nesterov=True, velocity=Velocity(model))
    return loss, model


@pytest.mark.parametrize("backend_class", [numba_fused.Backend, numpy_ref.Backend], ids=["numba", "numpy"])
@pytest.mark.parametrize("extra", [1, 2, 6])
@pytest.mark.parametrize("batch_size", [4, 32, 256])  # 4: fewer rows than threads, and 60 batches
def test_more_threads_than_cores_match_the_reference_epoch(backend_class, extra, batch_size):
    loss_ref, ref = train(get_backend("numpy", threads=1), batch_size)
    loss, model = train(backend_class(threads=CORES + extra), batch_size)
    assert loss == pytest.approx(loss_ref, rel=1e-5)
    for p, q in zip(model.weights + model.biases, ref.weights + ref.biases):
        error, where = scaled_error(p, q)
        assert error <= 1e-5, f"threads={CORES + extra}: scaled difference {error:.3g} at {where}"
