"""The numba backend's step timeline: every point of every step stamped, in order, and not a bit changed."""

import numpy as np
import pytest

from fastmlp import MLP
from fastmlp.backends.numba import backend as numba_fused
from fastmlp.backends.numba import threads as threads_module
from fastmlp.backends.numba.backend import Backend
from fastmlp.backends.numba.step import STAMP_POINTS, STEP_BEGIN, STEP_END
from fastmlp.backends.numba.timeline import PHASES, EpochShape, StepTimeline
from fastmlp.optim import Velocity
from fastmlp.runtime.cycles import read_cycle_counter
from fastmlp.runtime.jit import X86

# Layer 0 wide enough for two panels on any tile, the upper layers small enough to be replicated.
SIZES = (200, 64, 16, 10)
BATCH, SAMPLES = 16, 200  # 13 steps, the last one short


def epoch(backend, n=SAMPLES):
    """The model after one epoch of n random samples from MLP(SIZES, seed=1), momentum on."""
    rng = np.random.default_rng(0)
    X, y = rng.random((n, SIZES[0]), dtype=np.float32), rng.integers(0, SIZES[-1], n)
    model = MLP(SIZES, seed=1)
    backend.train_epoch(model, X, y, batch_size=BATCH, lr=0.05, rng=np.random.default_rng(2), momentum=0.9,
                        velocity=Velocity(model))
    return model


@pytest.mark.parametrize("workers, replicated", [(1, False), (2, False), (2, True), (3, False)])
def test_timeline_stamps_every_point_in_order_and_changes_no_bit(workers, replicated, monkeypatch):
    # The worker count and split forced (the defaults would put this tiny net on one worker); 3 workers on
    # W_0's panels split it by rows where it has fewer than 3 panels (AVX-512's 32 columns).
    monkeypatch.setattr(numba_fused, "epoch_workers", lambda threads, rows, sizes: workers)
    monkeypatch.setattr(threads_module, "SPLITS", threads_module.SplitChooser(forced=replicated))
    plain = epoch(Backend(threads=workers))
    stamped_backend = Backend(threads=workers)
    timeline = stamped_backend.timeline = StepTimeline(skip_first=1)
    stamped = epoch(stamped_backend)

    for a, b in zip(plain.weights + plain.biases, stamped.weights + stamped.biases):
        assert np.array_equal(a, b)
    steps = -(-SAMPLES // BATCH)
    stamps = timeline.stamps
    assert stamps.shape == (workers, steps, STAMP_POINTS)
    private = (replicated and workers > 1) or threads_module.private_inputs(workers, BATCH, SIZES)
    assert timeline.shape == EpochShape(BATCH, workers, replicated and workers > 1, private)
    if X86:  # rdtsc: every point of every step stamped (LLVM gives 0 where a CPU has no counter)
        assert (stamps > 0).all()
    assert (np.diff(stamps, axis=2) >= 0).all(), "a step's points out of order"
    assert (stamps[:, 1:, STEP_BEGIN] >= stamps[:, :-1, STEP_END]).all(), "a step began before the last ended"

    medians = timeline.phase_seconds()
    assert list(medians) == [name for name, _, _ in PHASES] + ["step"]
    assert all(len(seconds) == workers and min(seconds) >= 0 for seconds in medians.values())
    assert max(medians["step"]) > 0
    report = timeline.report()
    assert f"worker {workers - 1}" in report and "layer-0 update" in report


def test_a_timeline_keeps_the_last_epoch_and_reports_too_short_ones(monkeypatch):
    monkeypatch.setattr(numba_fused, "epoch_workers", lambda threads, rows, sizes: 1)
    backend = Backend(threads=1)
    backend.timeline = StepTimeline()
    epoch(backend)
    assert backend.timeline.stamps.shape[1] == -(-SAMPLES // BATCH)
    epoch(backend, n=3 * BATCH)  # three steps: the two skipped and the last leave none
    assert backend.timeline.stamps.shape[1] == 3
    assert backend.timeline.phase_seconds() == {}
    assert "no steps stamped" in backend.timeline.report()
    assert "no steps stamped" in StepTimeline().report()


def test_skip_first_must_not_be_negative():
    with pytest.raises(ValueError, match="skip_first"):
        StepTimeline(skip_first=-1)


def test_the_cycle_counter_runs_forward():
    first = read_cycle_counter()
    assert read_cycle_counter() >= first
    if X86:
        assert first > 0
