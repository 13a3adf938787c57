"""Same seed and thread count => bit-identical parameters after an epoch, for each backend.

The numba backend is checked at a small and a large batch size. What does change results
(the thread count, the CPU) is described in README.md, "Reproducibility".
"""

import hashlib
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from fastmlp import MLP, Pixels, Trainer, available_backends

CASES = [("numpy", 32)] + [("numba", b) for b in (32, 256) if "numba" in available_backends()]


def make_data():
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (2048, 784)).astype(np.uint8)
    return Pixels(pixels), (pixels[:, 0] % 10).astype(np.int64)


@pytest.fixture(scope="module")
def data():
    return make_data()


def train_one_epoch(backend, batch_size, data, seed):
    model = MLP([784, 128, 64, 10], seed=seed)
    # Both backends' automatic thread counts follow the machine's load, and with them the bits: pin the count.
    Trainer(model, backend, lr=0.05, batch_size=batch_size, seed=seed, threads=2).fit(*data, epochs=1)
    return model


@pytest.mark.parametrize("backend, batch_size", CASES, ids=[f"{b}-batch{n}" for b, n in CASES])
def test_same_seed_gives_bit_identical_parameters_after_an_epoch(backend, batch_size, data):
    first, second = (train_one_epoch(backend, batch_size, data, seed=3) for _ in range(2))
    other = train_one_epoch(backend, batch_size, data, seed=4)
    for a, b in zip(first.weights + first.biases, second.weights + second.biases):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(first.weights[0], other.weights[0])


def parameters_digest(model):
    return hashlib.sha256(b"".join(p.tobytes() for p in model.weights + model.biases)).hexdigest()


def test_a_fresh_process_gets_the_same_bits(data):
    """Buffers land at other addresses in another process; the results must not depend on that."""
    script = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        from test_reproducibility import CASES, make_data, parameters_digest, train_one_epoch
        for backend, batch_size in CASES:
            print(parameters_digest(train_one_epoch(backend, batch_size, make_data(), seed=3)))
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    expected = [parameters_digest(train_one_epoch(backend, batch_size, data, seed=3)) for backend, batch_size in CASES]
    assert result.stdout.split() == expected
