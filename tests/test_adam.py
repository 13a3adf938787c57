"""Adam and AdamW through the public edge: Trainer's options and errors, the moments and step count it keeps."""

import numpy as np
import pytest

from fastmlp import MLP, Trainer, get_backend
from fastmlp.backends.numba.backend import Backend as NumbaBackend
from fastmlp.optim import AdamMoments

# .ci/run runs these again per instruction set and with bounds checks (kernels), and under other
# OpenBLAS kernel sets (equivalence).
pytestmark = [pytest.mark.kernels, pytest.mark.equivalence]


def data(n=100, seed=0):
    rng = np.random.default_rng(seed)
    return rng.random((n, 12), dtype=np.float32), rng.integers(0, 3, n)


@pytest.mark.parametrize(
    "options, error, match",
    [
        ({"optimizer": "rmsprop"}, ValueError, r"optimizer must be one of \('sgd', 'adam', 'adamw'\)"),
        ({"optimizer": "adam", "betas": (1.0, 0.999)}, ValueError, r"betas\[0\] must be in \[0, 1\)"),
        ({"optimizer": "adam", "betas": (0.9, -0.1)}, ValueError, r"betas\[1\] must be in \[0, 1\)"),
        ({"optimizer": "adam", "betas": 0.9}, TypeError, r"betas must be a pair \(beta1, beta2\)"),
        ({"optimizer": "adam", "eps": 0.0}, ValueError, "eps must be > 0"),
        ({"optimizer": "adam", "eps": 1e-50}, ValueError, r"eps must be > 0 \(and not 0 in float32\)"),
        ({"optimizer": "adam", "eps": float("nan")}, TypeError, "eps must be a finite number"),
        ({"optimizer": "adam", "momentum": 0.9}, ValueError, "momentum and nesterov are SGD options"),
        ({"optimizer": "adamw", "momentum": 0.5, "nesterov": True}, ValueError, "momentum and nesterov are SGD"),
    ],
)
def test_bad_adam_options_are_refused_by_name(options, error, match):
    with pytest.raises(error, match=match):
        Trainer(MLP([12, 8, 3]), "numpy", lr=1e-3, **options)


def test_sgd_step_with_adam_needs_moments_made_for_the_model():
    X, y = data(8)
    backend = get_backend("numpy")
    with pytest.raises(TypeError, match=r"Adam needs moments=fastmlp.optim.AdamMoments\(model\)"):
        backend.sgd_step(MLP([12, 8, 3]), X, y, 1e-3, optimizer="adam")
    with pytest.raises(ValueError, match="moments were made for layer sizes"):
        backend.sgd_step(MLP([12, 8, 3]), X, y, 1e-3, optimizer="adam", moments=AdamMoments(MLP([12, 4, 3])))


@pytest.mark.parametrize("backend", ["numpy", "numba"])
def test_the_step_count_advances_per_batch_across_fit_calls_and_restarts_with_early_stopping(backend):
    X, y = data(100)
    trainer = Trainer(MLP([12, 8, 3], seed=0), backend, lr=1e-2, batch_size=32, optimizer="adamw",
                      weight_decay=1e-2)
    trainer.fit(X, y, epochs=2)
    assert trainer.velocity is None and trainer.moments.step == 2 * 4  # 4 batches of up to 32 per epoch
    trainer.fit(X, y, epochs=1)
    assert trainer.moments.step == 12
    assert np.any(trainer.moments.first.weights[0]) and np.all(trainer.moments.second.biases[0] >= 0)
    assert np.all(np.isfinite(trainer.moments.first.biases[0]))
    # Early stopping that puts back an earlier epoch's parameters starts Adam afresh, as it does momentum.
    # (A one-sample validation set the training data disagrees with: its loss soon rises.)
    trainer.fit(X, y, epochs=40, validation_data=(X[:1], y[:1] * 0 + 1), patience=1)
    assert trainer.history.best_epoch < trainer.history[-1].epoch
    assert trainer.moments.step == 0 and not np.any(trainer.moments.second.weights[0])


def test_the_fused_epoch_counts_steps_the_same_with_or_without_progress_chunks():
    # With progress the epoch runs in chunks of batches: each chunk must resume Adam's t where the last left it.
    X, y = data(300)
    models = [MLP([12, 8, 3], seed=1) for _ in range(2)]
    moments = [AdamMoments(m) for m in models]
    backend = NumbaBackend(threads=1)
    for model, state, progress in zip(models, moments, (None, lambda n: None)):
        backend.train_epoch(model, X, y, batch_size=4, lr=1e-2, rng=np.random.default_rng(0), progress=progress,
                            optimizer="adam", moments=state)
    assert moments[0].step == moments[1].step == 75
    for a, b in zip(models[0].weights + models[0].biases, models[1].weights + models[1].biases):
        np.testing.assert_array_equal(a, b)


def test_adam_first_step_moves_every_weight_with_a_gradient_by_lr():
    # Bias correction: m^ = g and s^ = g^2 on step 1, so the step is lr * g / (|g| + eps), ~lr * sign(g).
    X, y = data(16)
    for name in ("numpy", "numba"):
        model = MLP([12, 8, 3], seed=2)
        before = [W.copy() for W in model.weights]
        _, dW, _ = get_backend(name).loss_and_grads(model, X, y)
        get_backend(name).sgd_step(model, X, y, 1e-3, optimizer="adam", moments=AdamMoments(model))
        for W, W0, g in zip(model.weights, before, dW):
            big = np.abs(g) > 1e-5
            np.testing.assert_allclose((W - W0)[big], -1e-3 * np.sign(g[big]), rtol=1e-3)


def test_the_fused_bias_step_flushes_subnormal_moments_as_the_reference_does():
    from fastmlp.backends.numba.step import adam_bias_update
    from fastmlp.backends.numpy_ref import adam_update
    from fastmlp.kernels.packed import adam_corrections

    tiny = np.finfo(np.float32).tiny
    g = np.array([0, 0, 0, 0, 0.5], np.float32)  # no gradient: the moments only decay, by beta1 and beta2
    m = np.array([1.2e-38, -1.2e-38, 1e-30, 0, 0.1], np.float32)  # x 0.9: subnormal, subnormal, normal
    s = np.array([1.1e-38, 1e-30, 1.1e-38, 0, 0.2], np.float32)  # 1.1e-38 is subnormal already
    b = np.ones(5, np.float32)
    t, lr, betas, eps = 4, np.float32(1e-3), (0.9, 0.999), 1e-8
    b_ref, m_ref, s_ref = b.copy(), m.copy(), s.copy()
    adam_update(b_ref, m_ref, s_ref, g, lr, betas, eps, t)
    bc1, bc2 = adam_corrections(*betas, t)
    adam_bias_update(b, m, s, g, lr, np.float32(betas[0]), np.float32(betas[1]), np.float32(eps), np.float32(bc1),
                     np.float32(bc2))
    for fused, ref in ((m, m_ref), (s, s_ref)):
        np.testing.assert_array_equal(fused == 0, ref == 0)
        assert np.all((fused == 0) | (np.abs(fused) >= tiny))
    np.testing.assert_array_equal(m == 0, [True, True, False, True, False])
    np.testing.assert_array_equal(s == 0, [True, False, True, True, False])
    np.testing.assert_allclose(b, b_ref, rtol=1e-6)
