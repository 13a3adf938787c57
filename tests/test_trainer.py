"""Trainer: reproducibility, continuation, history, evaluation and its argument checks."""

import numpy as np
import pytest

from fastmlp import MLP, BackendError, Pixels, Trainer, TrainingDivergedError
from fastmlp.backends.base import BackendBase


def blobs(n=300, features=8, classes=3, seed=0):
    """Separable Gaussian blobs: a task a small MLP learns in a few epochs."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 3, (classes, features))
    y = rng.integers(0, classes, n)
    X = (centres[y] + rng.normal(size=(n, features))).astype(np.float32)
    return X, y


def test_fit_learns_separable_blobs_and_records_every_epoch():
    X, y = blobs()
    trainer = Trainer(MLP([8, 16, 3], seed=0), "numpy", lr=0.1, batch_size=16, seed=0)
    history = trainer.fit(X, y, epochs=5, validation_data=(X, y))
    assert [r.epoch for r in history] == [1, 2, 3, 4, 5]
    assert history[-1].train_loss < history[0].train_loss
    assert history[-1].val_accuracy > 0.95
    assert all(r.seconds > 0 and r.samples_per_s > 0 for r in history)
    assert trainer.evaluate(X, y) == pytest.approx((history[-1].val_loss, history[-1].val_accuracy))


def test_same_seed_gives_identical_parameters_and_history():
    X, y = blobs()
    results = []
    for _ in range(2):
        trainer = Trainer(MLP([8, 16, 3], seed=1), "numpy", seed=5)
        trainer.fit(X, y, epochs=2)
        results.append((trainer.model, trainer.history.column("train_loss")))
    (a, la), (b, lb) = results
    assert la == lb
    for x, z in zip(a.weights + a.biases, b.weights + b.biases):
        np.testing.assert_array_equal(x, z)


def test_calling_fit_again_continues_training_as_one_longer_call():
    X, y = blobs()
    once = Trainer(MLP([8, 16, 3], seed=1), "numpy", seed=2)
    once.fit(X, y, epochs=3)
    twice = Trainer(MLP([8, 16, 3], seed=1), "numpy", seed=2)
    twice.fit(X, y, epochs=2)
    history = twice.fit(X, y, epochs=1)
    assert [r.epoch for r in history] == [1, 2, 3]
    for x, z in zip(once.model.weights, twice.model.weights):
        np.testing.assert_array_equal(x, z)


def test_pixels_train_like_the_same_images_as_float32():
    rng = np.random.default_rng(0)
    data = rng.integers(0, 256, (64, 8), dtype=np.uint8)
    y = rng.integers(0, 3, 64)
    a = Trainer(MLP([8, 5, 3], seed=0), "numpy", seed=0)
    b = Trainer(MLP([8, 5, 3], seed=0), "numpy", seed=0)
    a.fit(Pixels(data), y, epochs=1)
    b.fit(data.astype(np.float32) / np.float32(255), y, epochs=1)
    for x, z in zip(a.model.weights, b.model.weights):
        np.testing.assert_allclose(x, z, rtol=1e-5, atol=1e-6)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_a_diverging_loss_stops_training_naming_the_epoch():
    X, y = blobs()
    X *= 1e18
    trainer = Trainer(MLP([8, 16, 3], seed=0), "numpy", lr=1e30)
    with pytest.raises(TrainingDivergedError, match="epoch 1"):
        trainer.fit(X, y, epochs=3)


def test_verbose_prints_one_line_per_epoch(capsys):
    X, y = blobs(n=50)
    Trainer(MLP([8, 4, 3], seed=0), "numpy").fit(X, y, epochs=2, validation_data=(X, y), verbose=True)
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2
    assert lines[0].startswith("epoch 1/2  train loss") and "val acc" in lines[0] and "samples/s" in lines[0]


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"batch_size": 0}, ValueError, "batch_size must be >= 1"),
        ({"batch_size": 2.5}, TypeError, "batch_size must be an integer"),
        ({"lr": 0}, ValueError, "lr must be finite and > 0"),
        ({"lr": float("nan")}, ValueError, "lr must be finite"),
        ({"lr": float("inf")}, ValueError, "lr must be finite"),
        ({"lr": "0.1"}, TypeError, "lr must be a number"),
        ({"backend": "cuda"}, BackendError, "unknown backend 'cuda'"),
    ],
)
def test_bad_trainer_arguments_are_refused(kwargs, error, match):
    kwargs = {"backend": "numpy", **kwargs}
    with pytest.raises(error, match=match):
        Trainer(MLP([8, 3]), **kwargs)


@pytest.mark.parametrize("epochs, error", [(0, ValueError), (-1, ValueError), (1.5, TypeError)])
def test_bad_epochs_are_refused(epochs, error):
    X, y = blobs(n=10)
    with pytest.raises(error, match="epochs"):
        Trainer(MLP([8, 3]), "numpy").fit(X, y, epochs=epochs)


def test_bad_validation_data_is_refused():
    X, y = blobs(n=10)
    with pytest.raises(TypeError, match="pair"):
        Trainer(MLP([8, 3]), "numpy").fit(X, y, epochs=1, validation_data=X)
    with pytest.raises(ValueError, match="validation X must have 8 columns"):
        Trainer(MLP([8, 3]), "numpy").fit(X, y, epochs=1, validation_data=(X[:, :4], y))


def test_schedule_sets_each_epochs_rate_and_records_it():
    X, y = blobs(n=40)
    trainer = Trainer(MLP([8, 4, 3], seed=0), "numpy", lr=0.2, schedule="step", step_size=1, gamma=0.5)
    assert trainer.fit(X, y, epochs=3).column("lr") == pytest.approx([0.2, 0.1, 0.05])


def test_momentum_trainer_keeps_one_velocity_across_fit_calls_and_continues_as_one_call():
    X, y = blobs()
    once = Trainer(MLP([8, 16, 3], seed=1), "numpy", seed=2, momentum=0.9, nesterov=True, weight_decay=1e-3)
    once.fit(X, y, epochs=3)
    twice = Trainer(MLP([8, 16, 3], seed=1), "numpy", seed=2, momentum=0.9, nesterov=True, weight_decay=1e-3)
    twice.fit(X, y, epochs=2)
    twice.fit(X, y, epochs=1)
    for x, z in zip(once.model.weights, twice.model.weights):
        np.testing.assert_array_equal(x, z)
    assert np.abs(once.velocity.weights[0]).max() > 0
    assert Trainer(MLP([8, 3]), "numpy").velocity is None  # plain SGD keeps no velocity


def test_early_stopping_restores_the_best_epoch_into_the_models_own_arrays():
    X, y = blobs(n=200, seed=3)
    X_val, y_val = blobs(n=100, seed=4)
    model = MLP([8, 32, 3], seed=0)
    weights = model.weights[0]
    trainer = Trainer(model, "numpy", lr=2.0, seed=0)  # too high: the validation loss jumps around
    snapshots = []
    history = trainer.fit(X, y, epochs=40, validation_data=(X_val, y_val), patience=3,
                          on_epoch_end=lambda r: snapshots.append(model.weights[0].copy()))
    best = history.best_epoch
    assert history[best - 1].val_loss == min(history.column("val_loss"))
    assert len(history) == best + 3 < 40
    assert model.weights[0] is weights
    np.testing.assert_array_equal(weights, snapshots[best - 1])
    assert trainer.evaluate(X_val, y_val)[0] == pytest.approx(history[best - 1].val_loss)


def test_patience_without_validation_data_is_refused():
    X, y = blobs(n=10)
    with pytest.raises(ValueError, match="patience .* needs validation_data"):
        Trainer(MLP([8, 3]), "numpy").fit(X, y, epochs=2, patience=2)
    with pytest.raises(ValueError, match="patience must be >= 1"):
        Trainer(MLP([8, 3]), "numpy").fit(X, y, epochs=2, patience=0, validation_data=(X, y))


@pytest.mark.parametrize(
    "kwargs, error, match",
    [({"momentum": 1.5}, ValueError, "momentum must be in"), ({"nesterov": True}, ValueError, "needs a momentum"),
     ({"weight_decay": -1}, ValueError, "weight_decay must be >= 0"), ({"schedule": "exp"}, ValueError, "schedule"),
     ({"schedule": "step", "gamma": 0}, ValueError, "gamma")],
)
def test_bad_optimiser_arguments_are_refused(kwargs, error, match):
    with pytest.raises(error, match=match):
        Trainer(MLP([8, 3]), "numpy", **kwargs)


def _blas_threads():
    from threadpoolctl import threadpool_info

    return max(lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas")


@pytest.mark.parametrize("backend, threads", [("numpy", 1), ("numba", None)])
def test_evaluation_between_epochs_runs_on_the_backends_blas_threads_or_none(monkeypatch, backend, threads):
    import fastmlp.backends.numpy_ref  # noqa: F401  imported first: its own forward keeps the real function
    from fastmlp.kernels import reference  # the evaluation's forward (Trainer reads it at each call)

    seen = []
    real = reference.hidden_and_logits

    def spy(weights, biases, X):
        seen.append(_blas_threads())
        return real(weights, biases, X)

    monkeypatch.setattr(reference, "hidden_and_logits", spy)
    rng = np.random.default_rng(0)
    X, y = rng.random((40, 5), dtype=np.float32), rng.integers(0, 3, 40)
    before = _blas_threads()
    trainer = Trainer(MLP([5, 4, 3], seed=0), backend, lr=0.1, batch_size=8, seed=0, threads=threads)
    trainer.fit(X, y, epochs=2, validation_data=(X, y))
    # numba's evaluation calls no BLAS (Backend._evaluation_logits runs the backend's own forward tiles): a spinning
    # thread left by a multi-threaded BLAS call would take a core from the next epoch. numpy's evaluation runs on
    # its training's thread count (its thread policy, here pinned to 1).
    assert seen == ([1, 1] if backend == "numpy" else [])
    assert _blas_threads() == before


class _SlowToCompileBackend(BackendBase):
    """A fake backend on a fake clock: warm_up takes 10 s, an epoch 1 s; it records what happens when."""

    name = "fake"

    def __init__(self, clock):
        self.clock, self.events = clock, []

    def warm_up(self, model, *, pixels=False, momentum=False):
        self.events.append(("warm_up", pixels))
        self.clock.now += 10.0
        return 10.0

    def _train_epoch(self, model, X, y, batch_size, lr, rng, progress=None, **sgd):
        self.events.append(("epoch", isinstance(X, Pixels)))
        self.clock.now += 1.0
        return 0.5


class _Clock:
    now = 0.0

    def __call__(self):
        return self.now


def test_fit_compiles_before_the_first_timed_epoch_so_epoch_seconds_exclude_it(monkeypatch):
    import fastmlp.trainer as trainer_module

    clock = _Clock()
    monkeypatch.setattr(trainer_module.time, "perf_counter", clock)
    backend = _SlowToCompileBackend(clock)
    trainer = Trainer(MLP([8, 3]), backend, batch_size=16)
    X, y = blobs(features=8)
    history = trainer.fit(X, y, epochs=2)
    trainer.fit(X, y, epochs=1)  # already compiled for float32 input: no second warm-up
    trainer.fit(Pixels(np.zeros((len(y), 8), np.uint8)), y, epochs=1)  # a new input kind compiles again
    assert backend.events == [("warm_up", False), ("epoch", False), ("epoch", False), ("epoch", False),
                              ("warm_up", True), ("epoch", True)]
    assert history.column("seconds") == [1.0] * 4
    assert history.compile_seconds == 20.0


def test_every_backend_overrides_the_base_methods_with_their_parameters():
    # Trainer and the public methods call these by name: a backend's own helper of the same name, taking other
    # arguments, would be called with the wrong ones (the PyTorch yardstick's `_logits(params, A)` once was).
    import inspect

    from fastmlp.backends.numba.backend import Backend as NumbaBackend
    from fastmlp.backends.numpy_ref import Backend as NumpyBackend
    from fastmlp.bench.torch_yardstick import TorchBackend  # imports torch only when constructed

    def parameters(function):
        return list(inspect.signature(function).parameters)[:2]  # self and the first, which every hook names

    hooks = {name: member for name, member in vars(BackendBase).items()
             if callable(member) and not name.startswith("__")}
    for backend in (NumpyBackend, NumbaBackend, TorchBackend):
        for name, base in hooks.items():
            own = inspect.getattr_static(backend, name)
            if own is not base and not isinstance(own, staticmethod):
                assert parameters(own) == parameters(base), f"{backend.__name__}.{name} takes other arguments"
