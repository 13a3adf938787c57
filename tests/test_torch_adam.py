"""Adam and AdamW against PyTorch's own (`torch.optim.Adam` / `AdamW`), step by step; skipped without torch.

torch is the optional oracle here: the same steps from the same parameters, its moments views of
fastmlp's (bench.TorchBackend), compared after every step by `fastmlp.testing` as strictly as two
fastmlp backends are.
"""

import numpy as np
import pytest

from fastmlp import MLP, Trainer, get_backend
from fastmlp.optim import AdamMoments
from fastmlp.testing import assert_backends_equivalent

torch = pytest.importorskip("torch")
from fastmlp.bench import TorchBackend  # noqa: E402  (only with torch)

ADAM_CASES = [
    {"optimizer": "adam"},
    {"optimizer": "adam", "weight_decay": 1e-2, "betas": (0.8, 0.99), "eps": 1e-6},
    {"optimizer": "adamw", "weight_decay": 1e-2},
]


@pytest.mark.parametrize("backend", ["numpy", "numba"])
@pytest.mark.parametrize("adam", ADAM_CASES, ids=lambda o: "-".join(f"{k}={v}" for k, v in o.items()))
def test_adam_steps_match_torch_optim_step_by_step(backend, adam):
    rng = np.random.default_rng(0)
    model = MLP([784, 64, 32, 10], seed=0)
    X, y = rng.random((256, 784), dtype=np.float32), rng.integers(0, 10, 256)
    errors = assert_backends_equivalent(model, X, y, backends=(backend, TorchBackend(1)), steps=30, batch_size=32,
                                        lr=1e-3, **adam)
    assert errors["trajectory"] <= 1e-4


def test_torch_keeps_its_moments_in_fastmlps_buffers_and_counts_steps_like_fastmlp():
    rng = np.random.default_rng(1)
    X, y = rng.random((96, 20), dtype=np.float32), rng.integers(0, 4, 96)
    trainers = [Trainer(MLP([20, 16, 4], seed=1), b, lr=1e-2, batch_size=32, optimizer="adamw", weight_decay=1e-2)
                for b in (get_backend("numpy"), TorchBackend(1))]
    for trainer in trainers:
        trainer.fit(X, y, epochs=2)
    numpy_moments, torch_moments = (t.moments for t in trainers)
    assert isinstance(torch_moments, AdamMoments) and numpy_moments.step == torch_moments.step == 6
    for a, b in zip(numpy_moments.second.weights + numpy_moments.first.biases,
                    torch_moments.second.weights + torch_moments.first.biases):
        np.testing.assert_allclose(b, a, rtol=1e-3, atol=1e-3 * np.abs(a).max())
