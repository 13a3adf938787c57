"""Adam's step count t after an interrupted epoch counts the steps taken, in both backends.

An epoch interrupted by an exception from the progress callback, or by Ctrl-C, leaves t at the
number of steps whose updates were applied: the next step's bias corrections are then those of
a training that took exactly those steps.
"""

import copy
import os
import signal
import threading

import numpy as np
import pytest

from fastmlp import MLP
from fastmlp.backends import numpy_ref
from fastmlp.backends.numba.backend import Backend as NumbaBackend
from fastmlp.optim import AdamMoments

SIZES = (20, 16, 3)
BATCH = 8


class Stop(Exception):
    pass


def data(n=800, seed=0):
    rng = np.random.default_rng(seed)
    return rng.random((n, SIZES[0]), dtype=np.float32), rng.integers(0, SIZES[-1], n)


def backends():
    return [pytest.param(lambda: numpy_ref.Backend(threads=1), id="numpy"),
            pytest.param(lambda: NumbaBackend(threads=1), id="numba-1"),
            pytest.param(lambda: NumbaBackend(threads=2), id="numba-2")]


@pytest.mark.parametrize("make", backends())
@pytest.mark.parametrize("error", [Stop, KeyboardInterrupt])
@pytest.mark.parametrize("optimizer", ["adam", "adamw"])
def test_an_epoch_stopped_by_its_progress_callback_counts_the_steps_it_took(make, error, optimizer):
    X, y = data()
    model = MLP(SIZES, seed=0)
    moments = AdamMoments(model)
    moments.step = 5  # a training that already took 5 steps
    trained = [0]

    def progress(samples):
        trained[0] += samples
        if trained[0] >= len(X) // 3:
            raise error()

    with pytest.raises(error):
        make().train_epoch(model, X, y, batch_size=BATCH, lr=0.01, rng=np.random.default_rng(0), progress=progress,
                           optimizer=optimizer, moments=moments)
    assert 0 < trained[0] < len(X)
    assert moments.step == 5 + -(-trained[0] // BATCH)


@pytest.mark.parametrize("make", [lambda: numpy_ref.Backend(threads=1), lambda: NumbaBackend(threads=1)],
                         ids=["numpy", "numba"])
def test_ctrl_c_at_any_moment_leaves_t_at_the_steps_whose_updates_were_applied(make):
    """SIGINT at a moment the test does not choose (a timer); then, from the state at the start of the epoch
    it landed in, as many steps as t says, taken one by one on the same batches, give the same parameters and
    moments bit for bit. Tried again (up to 5 times) while the interrupt lands between two epochs, where it
    proves less. Replayed from that epoch's start, not the training's: on a loaded machine the interrupt may
    land hundreds of epochs in, and replaying them all one step at a time took minutes."""
    X, y = data(4000)
    backend = make()
    per_epoch = -(-len(X) // BATCH)
    for attempt in range(5):
        (replay, replay_moments), (model, moments) = interrupted_training(backend, X, y, seed=attempt)
        assert moments.step - replay_moments.step <= 2 * per_epoch
        order = np.random.default_rng(3).permutation(len(X))  # every epoch's, the same each: step s at s % per_epoch
        for s in range(replay_moments.step, moments.step):
            batch = order[(s % per_epoch) * BATCH : (s % per_epoch + 1) * BATCH]
            backend.sgd_step(replay, X[batch], y[batch], lr=0.01, optimizer="adam", moments=replay_moments)
        assert replay_moments.step == moments.step
        for a, b in zip(model.weights + model.biases + moments.first.weights + moments.second.weights,
                        replay.weights + replay.biases + replay_moments.first.weights + replay_moments.second.weights):
            np.testing.assert_array_equal(a, b)
        if moments.step % per_epoch:
            break


def interrupted_training(backend, X, y, seed):
    """((model, moments) at the start of the last epoch begun, (model, moments) at the end) of epochs of Adam on
    X, y (the same order each) until a SIGINT sent 50 ms in lands. Where it lands in the copies of the start
    state, the state kept is the epoch's before: the steps from there are at most two epochs'."""
    model = MLP(SIZES, seed=seed)
    moments = AdamMoments(model)
    backend.train_epoch(model.copy(), X[:16], y[:16], batch_size=BATCH, lr=0.01, rng=np.random.default_rng(0),
                        optimizer="adam", moments=AdamMoments(model))  # compiled before the clock starts
    timer = threading.Timer(0.05, lambda: os.kill(os.getpid(), signal.SIGINT))
    timer.start()
    start = (model.copy(), copy.deepcopy(moments))
    try:
        for _ in range(1000):  # the interrupt lands inside one of these epochs, or between two
            start = (model.copy(), copy.deepcopy(moments))
            backend.train_epoch(model, X, y, batch_size=BATCH, lr=0.01, rng=np.random.default_rng(3),
                                progress=lambda samples: None, optimizer="adam", moments=moments)
        timer.join()
    except KeyboardInterrupt:
        pass
    finally:
        timer.cancel()
    return start, (model, moments)
