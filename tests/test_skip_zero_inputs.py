"""The kernels' SKIP_ZERO_INPUTS flag (what the training step's layer 0 runs): the same bits as the kernels without it,
on inputs with many zeros, on edges of the tiles, and on rows or columns with no zero at all; and the skip is real (a
weight row that only zero inputs meet is never read)."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fastmlp.kernels import PANEL_WIDTH, TILE_ROWS, reference
from fastmlp.kernels import packed as pk
from fastmlp.kernels.reference import assert_close

pytestmark = pytest.mark.kernels  # run again per ISA and with bounds checks by .ci/run

SIZES = sorted({1, 2, TILE_ROWS - 1, TILE_ROWS, TILE_ROWS + 1, 2 * TILE_ROWS + 3, 61, 130, 300})


def sparse(rng, shape, zeros):
    """float32 values of which a fraction `zeros` are 0.0, in runs along rows (as pixels are), some -0.0."""
    A = rng.standard_normal(shape, dtype=np.float32)
    A[rng.random(shape) < zeros] = 0.0
    if A.shape[1] > 4:  # whole runs of zero columns, and a few negative zeros
        A[:, : A.shape[1] // 4] = 0.0
        A[rng.random(shape) < 0.01] = -0.0
    return A


def same_bits(x, y):
    """Equal bit for bit, but for the sign of a zero (a sum that skips a 0 * w term may end on +0 where it ended on
    -0)."""
    return np.array_equal(np.where(x == 0, 0, x).view(np.int32), np.where(y == 0, 0, y).view(np.int32), equal_nan=True)


@settings(max_examples=60, deadline=None)
@given(m=st.sampled_from(SIZES), k=st.sampled_from(SIZES), n=st.sampled_from([1, 10, PANEL_WIDTH, 100, 128]),
       zeros=st.sampled_from([0.0, 0.5, 0.81, 0.97, 1.0]), kind=st.sampled_from([pk.STORE, pk.BIAS, pk.BIAS_RELU]),
       seed=st.integers(0, 2**16))
def test_forward_part_skipping_zeros_gives_the_same_bits(m, k, n, zeros, kind, seed):
    rng = np.random.default_rng(seed)
    A, W = sparse(rng, (m, k), zeros), rng.standard_normal((k, n), dtype=np.float32)
    b = rng.standard_normal(n, dtype=np.float32)
    P = reference.packed(W)
    dense, skipping = np.full((m, n), np.nan, np.float32), np.full((m, n), np.nan, np.float32)
    pk.forward_part(dense, A, P, b, dense, kind, 0, m, 0, P.shape[0])
    pk.forward_part(skipping, A, P, b, skipping, kind | pk.SKIP_ZERO_INPUTS, 0, m, 0, P.shape[0])
    assert same_bits(skipping, dense)
    expected = A @ W + (b if kind != pk.STORE else 0)
    assert_close(skipping, np.maximum(expected, 0) if kind == pk.BIAS_RELU else expected,
                 terms=np.abs(A) @ np.abs(W) + np.abs(b))


@pytest.mark.parametrize("r0, r1, p0, k0, k1", [(3, 29, 0, 0, -1), (8, 16, 1, 0, -1), (0, 40, 0, 5, 77),
                                                (0, 40, 1, 64, -1)])
def test_forward_part_skipping_zeros_writes_only_its_part(r0, r1, p0, k0, k1):
    rng = np.random.default_rng(7)
    A, W, b = sparse(rng, (40, 100), 0.8), rng.standard_normal((100, 70), dtype=np.float32), np.zeros(70, np.float32)
    P = reference.packed(W)
    dense, skipping = np.full((40, 70), 5.0, np.float32), np.full((40, 70), 5.0, np.float32)
    for C, flag in ((dense, 0), (skipping, pk.SKIP_ZERO_INPUTS)):
        pk.forward_part(C, A, P, b, C, pk.STORE | flag, r0, r1, p0, P.shape[0], k0, k1)
    assert same_bits(skipping, dense)
    assert (skipping[:r0] == 5.0).all() and (skipping[r1:] == 5.0).all()


def test_forward_part_skipping_zeros_keeps_nan_and_inf_inputs():
    A = np.zeros((TILE_ROWS + 3, 50), np.float32)
    A[1, 7], A[TILE_ROWS + 2, 30] = np.nan, np.inf
    W = np.ones((50, 20), np.float32)
    C = np.zeros((A.shape[0], 20), np.float32)
    P = reference.packed(W)
    pk.forward_part(C, A, P, C[0], C, pk.STORE | pk.SKIP_ZERO_INPUTS, 0, A.shape[0], 0, P.shape[0])
    assert np.isnan(C[1]).all() and np.isposinf(C[TILE_ROWS + 2]).all()
    assert not C[[0, 2, TILE_ROWS + 1]].any()


def test_forward_part_skipping_zeros_never_reads_a_weight_row_that_only_zeros_meet():
    """An inf in W's row k times a column k of zeros: inf * 0 = NaN in every sum that reads it. Skipped, it is never
    read; without the flag it is (the flag is not a no-op). A third of the columns zero: a tile with more than 7/8 of
    its columns listed runs over all of them."""
    rng = np.random.default_rng(3)
    A = rng.random((2 * TILE_ROWS, 64), dtype=np.float32)
    A[:, 1::3] = 0.0
    W = rng.standard_normal((64, 40), dtype=np.float32)
    W[10] = np.inf
    P = reference.packed(W)
    C = np.zeros((A.shape[0], 40), np.float32)
    pk.forward_part(C, A, P, C[0], C, pk.STORE | pk.SKIP_ZERO_INPUTS, 0, A.shape[0], 0, P.shape[0])
    Wk = W.copy()
    Wk[10] = 0
    assert_close(C, A @ Wk, terms=np.abs(A) @ np.abs(Wk))
    pk.forward_part(C, A, P, C[0], C, pk.STORE, 0, A.shape[0], 0, P.shape[0])
    assert np.isnan(C).all()


def _updated(rule, A, dZ, W, V, n, k0, k1, p0, p1):
    P = reference.packed(W)
    Vp = reference.packed(V)
    pk.update_part(P, Vp, A, dZ, n, k0, k1, p0, p1, 0.05, 0.9, 0.001, rule, P, 0.0, 0.0, 0.0, 0.0)
    return P, Vp


@settings(max_examples=60, deadline=None)
@given(n=st.sampled_from([1, 2, TILE_ROWS + 1, 61, 128, 129, 300]), k=st.sampled_from([3, TILE_ROWS, 50, 100]),
       width=st.sampled_from([10, PANEL_WIDTH, 100, 128]), zeros=st.sampled_from([0.0, 0.6, 0.81, 0.97, 1.0]),
       rule=st.sampled_from([pk.PLAIN_SGD, pk.MOMENTUM, pk.NESTEROV]), seed=st.integers(0, 2**16))
def test_update_part_skipping_zeros_gives_the_same_bits(n, k, width, zeros, rule, seed):
    rng = np.random.default_rng(seed)
    A, dZ = sparse(rng, (n, k), zeros), rng.standard_normal((n, width), dtype=np.float32)
    W, V = rng.standard_normal((k, width), dtype=np.float32), rng.standard_normal((k, width), dtype=np.float32)
    panels = -(-width // PANEL_WIDTH)
    P, Vp = _updated(rule, A, dZ, W, V, n, 0, k, 0, panels)
    Ps, Vs = _updated(rule | pk.SKIP_ZERO_INPUTS, A, dZ, W, V, n, 0, k, 0, panels)
    assert same_bits(Ps, P) and same_bits(Vs, Vp)


@pytest.mark.parametrize("n, k0, k1, p0, p1", [(64, 8, 40, 0, 4), (64, 0, 100, 1, 3), (300, 16, 96, 2, 4),
                                               (300, 0, 100, 0, 4)])
def test_update_part_skipping_zeros_updates_only_its_part(n, k0, k1, p0, p1):
    rng = np.random.default_rng(11)
    A, dZ = sparse(rng, (n, 100), 0.8), rng.standard_normal((n, 128), dtype=np.float32)
    W, V = rng.standard_normal((100, 128), dtype=np.float32), rng.standard_normal((100, 128), dtype=np.float32)
    P, Vp = _updated(pk.NESTEROV, A, dZ, W, V, n, k0, k1, p0, p1)
    Ps, Vs = _updated(pk.NESTEROV | pk.SKIP_ZERO_INPUTS, A, dZ, W, V, n, k0, k1, p0, p1)
    assert same_bits(Ps, P) and same_bits(Vs, Vp)
    untouched = np.ones(P.shape, bool)
    untouched[p0:p1, k0:k1] = False
    assert (Ps[untouched] == reference.packed(W)[untouched]).all()


@pytest.mark.parametrize("n", [64, 300])
def test_update_part_skipping_zeros_never_reads_a_gradient_row_that_only_zeros_meet(n):
    """A NaN in a row of dZ whose inputs are all zero: NaN * 0 = NaN in every weight it would reach; skipped, W
    stays finite and equal to the update without that row (the flag is not a no-op). A third of the rows zero: a sum
    with more than 7/8 of its rows listed runs over all of them."""
    rng = np.random.default_rng(5)
    A, dZ = rng.random((n, 64), dtype=np.float32), rng.standard_normal((n, 64), dtype=np.float32)
    A[1::3] = 0.0
    dZ[1 + 3 * (n // 6)] = np.nan
    W, V = rng.standard_normal((64, 64), dtype=np.float32), np.zeros((64, 64), np.float32)
    panels = pk.panel_count(64)  # every panel, whatever the tile's width
    Ps, _ = _updated(pk.PLAIN_SGD | pk.SKIP_ZERO_INPUTS, A, dZ, W, V, n, 0, 64, 0, panels)
    keep = np.arange(n) != 1 + 3 * (n // 6)
    P, _ = _updated(pk.PLAIN_SGD, np.ascontiguousarray(A[keep]), np.ascontiguousarray(dZ[keep]), W, V, n - 1, 0, 64,
                    0, panels)
    assert np.isfinite(Ps).all()
    assert_close(Ps, P, terms=np.abs(P) + 1)
    Pd, _ = _updated(pk.PLAIN_SGD, A, dZ, W, V, n, 0, 64, 0, panels)
    assert np.isnan(Pd).all()


def test_adam_ignores_the_flag():
    rng = np.random.default_rng(2)
    A, dZ = sparse(rng, (64, 50), 0.8), rng.standard_normal((64, 40), dtype=np.float32)
    W = rng.standard_normal((50, 40), dtype=np.float32)
    results = []
    for flag in (0, pk.SKIP_ZERO_INPUTS):
        P = reference.packed(W)
        M, S = np.zeros_like(P), np.zeros_like(P)
        c1, c2 = pk.adam_corrections(0.9, 0.999, 1)
        pk.update_part(P, M, A, dZ, 64, 0, 50, 0, P.shape[0], 0.01, 0.9, 0.0, pk.ADAM | flag, S, 0.999, 1e-8, c1, c2)
        results.append((P, M, S))
    for dense, skipping in zip(*results):
        assert same_bits(skipping, dense)


def test_after_a_dense_tile_the_next_tiles_run_unlisted_then_listing_resumes():
    """A tile whose listing finds it dense is followed by UNLISTED_AFTER_DENSE tiles over all their columns (data
    with few zeros pays for one listing in eight); the tile after them is listed again. Seen through a weight row
    of inf that only zero inputs meet: read (NaN) by the unlisted tiles only."""
    tiles = pk.UNLISTED_AFTER_DENSE + 2
    rng = np.random.default_rng(9)
    A = 1 + rng.random((tiles * TILE_ROWS, 48), dtype=np.float32)
    A[TILE_ROWS:, 1::3] = 0.0  # every tile but the first: a third of its columns zero
    W = rng.standard_normal((48, 16), dtype=np.float32)
    W[1] = np.inf
    P = reference.packed(W)
    C = np.zeros((A.shape[0], 16), np.float32)
    pk.forward_part(C, A, P, C[0], C, pk.STORE | pk.SKIP_ZERO_INPUTS, 0, A.shape[0], 0, P.shape[0])
    by_tile = [np.isnan(C[t * TILE_ROWS:(t + 1) * TILE_ROWS]).all() for t in range(tiles)]
    assert by_tile == [False] + [True] * pk.UNLISTED_AFTER_DENSE + [False]
    assert np.isposinf(C[:TILE_ROWS]).any() or np.isneginf(C[:TILE_ROWS]).any()  # the dense tile: inf * 1.x
