"""The SIMD kernels on packed weights against their NumPy one-liners, on shapes that hit every edge:
rows, columns and depth that are not multiples of the tile, sizes of 1, widths up to 300."""

import itertools

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from numba import njit
from numba.core.errors import TypingError

from fastmlp import checked_kernels as ck
from fastmlp import kernels
from fastmlp.kernels import PANEL_WIDTH, TILE_ROWS, reference
from fastmlp.kernels.reference import assert_close
from fastmlp.kernels.tiles import TILES, select_tile

pytestmark = pytest.mark.kernels  # run again per ISA and with bounds checks by .ci/run

EDGE_SIZES = sorted({1, 2, TILE_ROWS - 1, TILE_ROWS, TILE_ROWS + 1, PANEL_WIDTH - 1, PANEL_WIDTH, PANEL_WIDTH + 1,
                     2 * PANEL_WIDTH + 3, 300})


def f32(rng, *shape):
    return rng.standard_normal(shape, dtype=np.float32)


def packed(W):
    """W in the packed layout, as kernels.reference writes it in NumPy."""
    return reference.packed(np.asarray(W, np.float32))


def test_the_packed_layout_is_panels_of_panel_width_columns_padded_with_zeros():
    W = np.arange(3 * (PANEL_WIDTH + 2), dtype=np.float32).reshape(3, PANEL_WIDTH + 2)
    P = packed(W)
    assert P.shape == (2, 3, PANEL_WIDTH) == kernels.packed_shape(3, PANEL_WIDTH + 2)
    np.testing.assert_array_equal(P[0], W[:, :PANEL_WIDTH])
    np.testing.assert_array_equal(P[1, :, :2], W[:, PANEL_WIDTH:])
    assert not P[1, :, 2:].any()
    back = np.empty_like(W)
    kernels.unpack_weights_into(back, P)
    np.testing.assert_array_equal(back, W)


@settings(max_examples=40, deadline=None)
@given(m=st.sampled_from(EDGE_SIZES), k=st.sampled_from(EDGE_SIZES), n=st.sampled_from(EDGE_SIZES),
       seed=st.integers(0, 2**16))
def test_forward_kernels_match_numpy(m, k, n, seed):
    rng = np.random.default_rng(seed)
    A, W, b = f32(rng, m, k), f32(rng, k, n), f32(rng, n)
    P = packed(W)
    Z = np.full((m, n), np.nan, np.float32)
    kernels.packed_matmul_into(Z, A, P)
    terms = np.abs(A) @ np.abs(W) + np.abs(b)
    assert_close(Z, A @ W, terms=terms)
    kernels.packed_matmul_bias_into(Z, A, P, b)
    assert_close(Z, A @ W + b, terms=terms)
    kernels.packed_matmul_bias_relu_into(Z, A, P, b)
    expected = np.maximum(A @ W + b, 0)
    assert_close(Z, expected, terms=terms)
    assert np.all(Z[A @ W + b < -1e-5 * terms] == 0)  # clearly negative: ReLU'd to exactly 0



@pytest.mark.parametrize("k, n, m", [(128, 64, 2 * TILE_ROWS + 3), (3 * PANEL_WIDTH + 5, 10, 1), (2, 33, 5)])
def test_forward_part_sums_over_a_range_of_k_the_product_of_those_columns_and_rows(k, n, m):
    # The numba backend's training sums layer 1 in two parts (fastmlp/backends/numba/layer1.py): forward_part's
    # k0:k1 reads A's columns and W's packed rows k0:k1 only, and the whole range is the call without them.
    rng = np.random.default_rng(k + n)
    A, W, b = f32(rng, m, k + 3)[:, :k], f32(rng, k, n), f32(rng, n)  # A a strided view
    P = packed(W)
    whole = np.full((m, n), np.nan, np.float32)
    kernels.packed.forward_part(whole, A, P, b, whole, kernels.packed.BIAS, 0, m, 0, P.shape[0])
    again = np.full((m, n), np.nan, np.float32)
    kernels.packed.forward_part(again, A, P, b, again, kernels.packed.BIAS, 0, m, 0, P.shape[0], 0, k)
    np.testing.assert_array_equal(again, whole)
    for k0, k1 in ((0, k // 2), (k // 2, k), (1, k), (k - 1, k)):
        part = np.full((m, n), np.nan, np.float32)
        kernels.packed.forward_part(part, A, P, b, part, kernels.packed.STORE, 0, m, 0, P.shape[0], k0, k1)
        assert_close(part, A[:, k0:k1] @ W[k0:k1], terms=np.abs(A[:, k0:k1]) @ np.abs(W[k0:k1]))


def test_a_wide_layer_runs_in_groups_of_panels_with_the_same_bits_as_a_panel_at_a_time():
    """W_0 of 784-1024-...: its panels (3.2 MB) do not fit L2, so the forward runs them in groups
    (packed._FORWARD_GROUP_BYTES); each panel's product is the same, bit for bit, as on its own."""
    from fastmlp.kernels.packed import _FORWARD_GROUP_BYTES

    rng = np.random.default_rng(5)
    k, n, m = 784, 1000, 2 * TILE_ROWS + 3
    assert k * PANEL_WIDTH * 4 * kernels.panel_count(n) > 2 * _FORWARD_GROUP_BYTES  # three groups or more
    A, W, b = f32(rng, m, k), f32(rng, k, n), f32(rng, n)
    P = packed(W)
    Z = np.full((m, n), np.nan, np.float32)
    kernels.packed_matmul_bias_relu_into(Z, A, P, b)
    assert_close(Z, np.maximum(A @ W + b, 0), terms=np.abs(A) @ np.abs(W) + np.abs(b))
    for p in (0, P.shape[0] // 2, P.shape[0] - 1):  # one panel alone: one group
        cols = slice(p * PANEL_WIDTH, min(n, (p + 1) * PANEL_WIDTH))
        alone = np.empty((m, cols.stop - cols.start), np.float32)
        kernels.packed_matmul_bias_relu_into(alone, A, np.ascontiguousarray(P[p : p + 1]), b[cols])
        np.testing.assert_array_equal(Z[:, cols], alone)

@settings(max_examples=40, deadline=None)
@given(m=st.sampled_from(EDGE_SIZES), k=st.sampled_from(EDGE_SIZES), n=st.sampled_from(EDGE_SIZES),
       seed=st.integers(0, 2**16))
def test_input_gradient_kernel_matches_numpy(m, k, n, seed):
    rng = np.random.default_rng(seed)
    dZ, W, A = f32(rng, m, n), f32(rng, k, n), np.maximum(f32(rng, m, k), 0)
    dA = np.full((m, k), np.nan, np.float32)
    kernels.packed_matmul_relu_mask_into(dA, dZ, packed(np.ascontiguousarray(W.T)), A)
    assert_close(dA, (dZ @ W.T) * (A > 0), terms=np.abs(dZ) @ np.abs(W.T))
    assert np.all(dA[A == 0] == 0)


@settings(max_examples=40, deadline=None)
@given(m=st.sampled_from(EDGE_SIZES), k=st.sampled_from(EDGE_SIZES), n=st.sampled_from(EDGE_SIZES),
       wd=st.sampled_from([0.0, 1e-3]), seed=st.integers(0, 2**16))
@example(m=32, k=1, n=1, wd=1e-3, seed=3394)  # Nesterov's W + mu v - lr g cancelling to 0.3 % of W: 2.7e-5 of it
def test_update_kernels_match_the_formulas_of_optim(m, k, n, wd, seed):
    rng = np.random.default_rng(seed)
    A, dZ, W, V = f32(rng, m, k), f32(rng, m, n), f32(rng, k, n), f32(rng, k, n)
    lr, mu = np.float32(0.05), np.float32(0.9)
    g = A.T @ dZ + np.float32(wd) * W
    # The magnitudes summed into each result (float32 rounds at their scale; W + V can cancel to far less).
    g_terms = np.abs(A.T) @ np.abs(dZ) + np.float32(wd) * np.abs(W)
    v_terms = mu * np.abs(V) + lr * g_terms
    w_terms = np.abs(W) + (1 + mu) * v_terms + lr * g_terms
    P = packed(W)
    kernels.packed_sgd_update_inplace(P, A, dZ, lr, wd)
    assert_close(P, packed(W - lr * g), terms=packed(w_terms))
    for nesterov in (False, True):
        P, PV = packed(W), packed(V)
        kernels.packed_momentum_update_inplace(P, PV, A, dZ, lr, mu, wd, nesterov)
        v = mu * V - lr * g
        assert_close(PV, packed(v), terms=packed(v_terms))
        assert_close(P, packed(W + (mu * v - lr * g if nesterov else v)), terms=packed(w_terms))
        assert not P[-1, :, (n - 1) % PANEL_WIDTH + 1:].any()  # the padding stays zero



@pytest.mark.parametrize("n", [PANEL_WIDTH, 10])  # whole panels (the hot loop), and a partial one
@pytest.mark.parametrize("nesterov", [False, True])
def test_momentum_tiles_flush_subnormal_velocities_as_the_reference_does(n, nesterov):
    """A velocity that decays below the smallest normal float becomes 0, before W uses it (fastmlp/optim.py):
    exactly where reference.momentum_update makes it 0, and W as the reference's."""
    tiny = np.finfo(np.float32).tiny
    rng = np.random.default_rng(3)
    k, m = 2 * TILE_ROWS + 1, 5
    A, dZ, W = f32(rng, m, k), f32(rng, m, n), f32(rng, k, n)
    A[:, : TILE_ROWS + 1] = 0  # those weights get no gradient: their velocities only decay
    V = f32(rng, k, n)
    V[: TILE_ROWS + 1] = rng.choice(np.array([1.2e-38, -1.25e-38, 2e-38, 1.1e-38, 0, 1e-30], np.float32),
                                    (TILE_ROWS + 1, n))  # x 0.9: subnormal, subnormal, normal, already subnormal
    lr, mu = np.float32(0.05), np.float32(0.9)
    W_ref, V_ref = W.copy(), V.copy()
    reference.momentum_update_decayed(W_ref, V_ref, A.T @ dZ, lr, mu, 0.0, nesterov)
    P, PV = packed(W), packed(V)
    kernels.packed_momentum_update_inplace(P, PV, A, dZ, lr, mu, 0.0, nesterov)
    V_new = np.empty_like(V)
    kernels.unpack_weights_into(V_new, PV)
    assert (V_ref == 0).sum() > (V == 0).sum()  # the case is there: some velocities were flushed
    np.testing.assert_array_equal(V_new == 0, V_ref == 0)
    assert np.all((V_new == 0) | (np.abs(V_new) >= tiny))
    assert_close(V_new, V_ref)
    assert_close(P, packed(W_ref))
    # the elementwise kernel (biases) too
    W2, V2 = W.copy(), V.copy()
    kernels.momentum_update_inplace(W2, V2, A.T @ dZ, lr, mu, 0.0, nesterov)
    np.testing.assert_array_equal(V2 == 0, V_ref == 0)
    assert_close(V2, V_ref)
    assert_close(W2, W_ref)


def adam_reference(W, M, S, G, lr, beta1, beta2, eps, wd, t, decoupled):
    """kernels.reference's Adam step t in float64 (AdamW: W decayed apart from g); returns (W, M, S)."""
    W, M, S, G = (np.array(a, np.float64) for a in (W, M, S, G))
    if decoupled:
        reference.adamw_update(W, M, S, G, lr, beta1, beta2, eps, wd, t)
    else:
        reference.adam_update(W, M, S, G + wd * W, lr, (beta1, beta2), eps, t)
    return W, M, S


@settings(max_examples=40, deadline=None)
@given(m=st.sampled_from(EDGE_SIZES), k=st.sampled_from(EDGE_SIZES), n=st.sampled_from(EDGE_SIZES),
       wd=st.sampled_from([0.0, 1e-2]), t=st.sampled_from([1, 2, 1000]), decoupled=st.booleans(),
       seed=st.integers(0, 2**16))
def test_adam_kernel_matches_the_formulas_of_optim(m, k, n, wd, t, decoupled, seed):
    rng = np.random.default_rng(seed)
    A, dZ, W, M = f32(rng, m, k), f32(rng, m, n), f32(rng, k, n), f32(rng, k, n)
    S = np.abs(f32(rng, k, n))  # a second moment is >= 0
    lr, beta1, beta2, eps = 1e-3, 0.9, 0.999, 1e-8
    P, PM, PS = packed(W), packed(M), packed(S)
    kernels.packed_adam_update_inplace(P, PM, PS, A, dZ, lr, beta1, beta2, eps, wd, t, decoupled)
    W_ref, M_ref, S_ref = adam_reference(W, M, S, A.T @ dZ, lr, beta1, beta2, eps, wd, t, decoupled)
    # M = b1 M + (1 - b1) g can cancel: at the scale of its terms (S's are all >= 0)
    m_terms = beta1 * np.abs(M) + (1 - beta1) * (np.abs(A.T) @ np.abs(dZ) + (0 if decoupled else wd * np.abs(W)))
    assert_close(PM, packed(M_ref.astype(np.float32)), terms=packed(m_terms.astype(np.float32)))
    assert_close(PS, packed(S_ref.astype(np.float32)))
    # W moves by about lr: judge the step entry by entry, at the scale of the terms it is made of
    # (M = b1 M + (1 - b1) g may cancel), beside W's own float32 rounding.
    G = (A.T @ dZ).astype(np.float64) + (0 if decoupled else wd * W)
    denom = np.sqrt(S_ref / (1 - beta2**t)) + eps
    terms = lr * (beta1 * np.abs(M) + (1 - beta1) * np.abs(G)) / (1 - beta1**t) / denom
    error = packed(np.float32(W_ref)) - P
    assert np.all(np.abs(error) <= 1e-4 * packed(terms) + 2 * np.spacing(np.abs(packed(W))))
    for a in (P, PM, PS):
        assert not a[-1, :, (n - 1) % PANEL_WIDTH + 1:].any()  # the padding and its moments stay zero


def test_adam_flushes_subnormal_moments_to_zero_in_the_kernel_and_the_reference_alike():
    # Weight rows whose inputs are all 0 get g = 0: their moments only decay, by beta1 and beta2.
    from fastmlp.kernels.reference import adam_update

    tiny = np.finfo(np.float32).tiny
    rng = np.random.default_rng(0)
    k, n = 2 * TILE_ROWS + 3, PANEL_WIDTH + 5
    A, dZ, W = f32(rng, 6, k), f32(rng, 6, n), f32(rng, k, n)
    A[:, :TILE_ROWS + 1] = 0
    M, S = f32(rng, k, n), np.abs(f32(rng, k, n))
    M[:TILE_ROWS + 1] = np.where(rng.random((TILE_ROWS + 1, n)) < 0.5, 1.2e-38, -1e-30)  # 0.9x: subnormal, or not
    S[:TILE_ROWS + 1] = np.where(rng.random((TILE_ROWS + 1, n)) < 0.5, 1.1e-38, 1e-30)  # 1.1e-38 is subnormal
    P, PM, PS = packed(W), packed(M), packed(S)
    kernels.packed_adam_update_inplace(P, PM, PS, A, dZ, 1e-3, 0.9, 0.999, 1e-8, 0.0, 3, False)
    assert np.float32(1.2e-38) * np.float32(0.5) != 0  # the kernel left this thread's float modes as they were
    W_ref, M_ref, S_ref = W.copy(), M.copy(), S.copy()
    adam_update(W_ref, M_ref, S_ref, A.T @ dZ, np.float32(1e-3), (0.9, 0.999), 1e-8, 3)
    decayed = slice(0, TILE_ROWS + 1)
    for moment, ref, start in ((PM, M_ref, M), (PS, S_ref, S)):
        back = np.empty_like(W)
        kernels.unpack_weights_into(back, moment)
        flushed = np.abs(start[decayed]) < 1e-37
        assert flushed.any() and not flushed.all()
        assert not back[decayed][flushed].any() and not ref[decayed][flushed].any()
        assert np.all(np.abs(back[decayed][~flushed]) > tiny) and np.all(np.abs(ref[decayed][~flushed]) > tiny)
        assert_close(back, ref)


def test_adam_steps_by_lr_on_its_first_step_and_its_arguments_leave_plain_sgd_bit_identical():
    # Step 1 of Adam is lr * sign(g) wherever |g| >> eps: the bias correction at work.
    rng = np.random.default_rng(0)
    A, dZ, W = f32(rng, 8, 5), f32(rng, 8, 3), f32(rng, 5, 3)
    P = packed(W)
    kernels.packed_adam_update_inplace(P, packed(np.zeros_like(W)), packed(np.zeros_like(W)), A, dZ, 0.01, 0.9,
                                       0.999, 1e-8, 0.0, 1, False)
    back = np.empty_like(W)
    kernels.unpack_weights_into(back, P)
    np.testing.assert_allclose(back - W, -0.01 * np.sign(A.T @ dZ), rtol=1e-4)
    P1, P2 = packed(W), packed(W)
    kernels.packed_sgd_update_inplace(P1, A, dZ, 0.05, 1e-3)
    kernels.packed.update_part(P2, P2, A, dZ, 8, 0, 5, 0, P2.shape[0], 0.05, 0.0, 1e-3, kernels.packed.PLAIN_SGD,
                               P2, 0.9, 1e-8, 1.0, 1.0)  # Adam's arguments, ignored by plain SGD
    np.testing.assert_array_equal(P1, P2)


@pytest.mark.parametrize("rule", ["sgd", "momentum", "adam"])
def test_updating_weight_rows_in_parts_matches_updating_them_at_once_bit_for_bit(rule):
    # The numba backend's workers each update a share of W's rows (k0:k1, not a multiple of the
    # tile's rows); a tile at the end of a share reads columns of A from the share before it
    # (packed._first_column) and must leave that share's rows alone. Each entry of the gradient is
    # summed over the batch in the same order however the rows are split, so the bits agree.
    rng = np.random.default_rng(1)
    K, N, n = 3 * TILE_ROWS + 2, PANEL_WIDTH + 3, 9
    A, dZ, W, M = f32(rng, n, K), f32(rng, n, N), f32(rng, K, N), f32(rng, K, N)
    S = np.abs(f32(rng, K, N))
    code = {"sgd": kernels.packed.PLAIN_SGD, "momentum": kernels.packed.NESTEROV, "adam": kernels.packed.ADAM}[rule]
    c1, c2 = kernels.packed.adam_corrections(0.9, 0.999, 3)
    results = []
    for cuts in ((0, K), (0, TILE_ROWS + 1, 2 * TILE_ROWS - 1, K), (0, 1, K)):
        P, PV, PS = packed(W), packed(M), packed(S)
        for k0, k1 in itertools.pairwise(cuts):
            kernels.packed.update_part(P, PV, A, dZ, n, k0, k1, 0, P.shape[0], 0.05, 0.9, 1e-3, code, PS, 0.999, 1e-8,
                                       c1, c2)
        results.append((P, PV, PS))
    for parts in results[1:]:
        for whole, part in zip(results[0], parts):
            np.testing.assert_array_equal(part, whole)


@pytest.mark.parametrize("rule", ["sgd", "momentum", "adam"])
def test_dz_in_column_panels_updates_to_the_same_bits_as_dz_row_major(rule):
    # The numba backend's layer-0 update reads dZ_0 in column panels (panels_from_rows_into), its
    # padding zero; each entry of the gradient is the same sum in the same order.
    rng = np.random.default_rng(3)
    K, N, n = 2 * TILE_ROWS + 3, 2 * PANEL_WIDTH + 5, 11  # a partial last panel
    A, dZ, W, M = f32(rng, n, K), f32(rng, n, N), f32(rng, K, N), f32(rng, K, N)
    S = np.abs(f32(rng, K, N))
    code = {"sgd": kernels.packed.PLAIN_SGD, "momentum": kernels.packed.NESTEROV, "adam": kernels.packed.ADAM}[rule]
    c1, c2 = kernels.packed.adam_corrections(0.9, 0.999, 3)
    DP = np.zeros((kernels.panel_count(N), n + 4, PANEL_WIDTH), dtype=np.float32)  # room for more rows
    kernels.packed.panels_from_rows_into(DP, dZ, 0, 5)
    kernels.packed.panels_from_rows_into(DP, dZ, 5, n)
    np.testing.assert_array_equal(DP[:, :n].transpose(1, 0, 2).reshape(n, -1)[:, :N], dZ)
    results = []
    for D in (dZ, DP):
        P, PV, PS = packed(W), packed(M), packed(S)
        kernels.packed.update_part(P, PV, A, D, n, 0, K, 0, P.shape[0], 0.05, 0.9, 1e-3, code, PS, 0.999, 1e-8, c1, c2)
        results.append((P, PV, PS))
    for row_major, panels in zip(*results):
        np.testing.assert_array_equal(panels, row_major)


@pytest.mark.parametrize("K, N", [(1, 1), (TILE_ROWS, PANEL_WIDTH - 1), (2 * PANEL_WIDTH, 3 * PANEL_WIDTH),
                                  (2 * PANEL_WIDTH + 5, PANEL_WIDTH + 3), (64, 10), (130, 64)])
@pytest.mark.parametrize("part", ["all", "aligned", "unaligned", "short"])
def test_transposing_packed_rows_writes_those_rows_of_w_t_packed_and_nothing_else(K, N, part):
    # The numba step rewrites W_l.T (read by the backward pass) from the rows of W_l a worker updated:
    # blocks of the vector width in registers, the edges element by element. Every bit is a copy.
    from fastmlp.kernels.packed import VECTOR_WIDTH as V

    rng = np.random.default_rng(K * 1000 + N)
    W = f32(rng, K, N)
    k0, k1 = {"all": (0, K), "aligned": (min(V, K), min(3 * V, K)), "unaligned": (min(3, K), min(K, 2 * V + 5)),
              "short": (K // 2, K // 2 + 1)}[part]
    k0, k1 = min(k0, k1), max(k0, k1)
    PT = np.full(kernels.packed_shape(N, K), 7.0, dtype=np.float32)
    kernels.packed.transpose_packed_into(PT, packed(W), k0, k1)
    expected = packed(np.ascontiguousarray(W.T))
    # Entry (p, n, j) of PT holds W.T[n, p * PANEL_WIDTH + j]: written for k0 <= k < k1, and for the padding
    # past K when k1 = K.
    k = np.arange(PT.shape[0] * PANEL_WIDTH).reshape(PT.shape[0], 1, PANEL_WIDTH) + np.zeros(PT.shape, dtype=int)
    written = (k >= k0) & ((k < k1) | ((k1 == K) & (k >= K)))
    np.testing.assert_array_equal(PT[written], expected[written])
    assert (PT[~written] == 7.0).all()


@pytest.mark.parametrize("kind", ["bias_relu", "relu_mask"])
def test_the_forward_tile_writes_the_same_bits_into_column_panels_and_nothing_else(kind):
    # The numba step's backward pass writes dZ_0 straight into its column panels (forward_part_into_panels),
    # which the layer-0 update reads: each row's values those of forward_part, the padding columns past n and
    # the rows outside r0:r1 untouched.
    rng = np.random.default_rng(5)
    m, k, n = 3 * TILE_ROWS + 1, PANEL_WIDTH + 3, 2 * PANEL_WIDTH + 5  # a partial last panel
    A, P, b, mask = f32(rng, m, k), packed(f32(rng, k, n)), f32(rng, n), f32(rng, m, n)
    code = {"bias_relu": kernels.packed.BIAS_RELU, "relu_mask": kernels.packed.RELU_MASK}[kind]
    r0, r1 = 2, m - 1
    C = np.zeros((m, n), dtype=np.float32)
    kernels.packed.forward_part(C, A, P, b, mask, code, r0, r1, 0, P.shape[0])
    CP = np.full((P.shape[0], m + 2, PANEL_WIDTH), 7.0, dtype=np.float32)
    kernels.packed.forward_part_into_panels(CP, n, A, P, b, mask, code, r0, r1, 0, P.shape[0])
    np.testing.assert_array_equal(CP[:, r0:r1].transpose(1, 0, 2).reshape(r1 - r0, -1)[:, :n], C[r0:r1])
    written = np.zeros(CP.shape, dtype=bool)
    written[:, r0:r1] = np.arange(P.shape[0] * PANEL_WIDTH).reshape(P.shape[0], 1, PANEL_WIDTH) < n
    assert (CP[~written] == 7.0).all()


@pytest.mark.parametrize("n", [0, 1, 7, 64, 300])
@pytest.mark.parametrize("c0, c1", [(0, 2 * PANEL_WIDTH + 5), (3, PANEL_WIDTH - 1), (PANEL_WIDTH, 2 * PANEL_WIDTH + 5),
                                    (PANEL_WIDTH - 2, PANEL_WIDTH + 2), (4, 4)])
def test_column_sums_of_panels_are_a_row_by_row_float32_sum_and_touch_only_their_columns(n, c0, c1):
    # The bias gradient of the numba backend's step: each column summed from row 0 down in float32, as the
    # scalar loop before it (the same bits whatever the vector width), into out[c0:c1] alone.
    from fastmlp.kernels.panel_sums import panel_column_sums_into

    rng = np.random.default_rng(n + 7 * c0)
    N = 2 * PANEL_WIDTH + 5  # a partial last panel
    dZ = f32(rng, n, N) * np.float32(1e3) ** rng.integers(-2, 3, (n, N)).astype(np.float32)  # sums that round
    DP = np.zeros((kernels.panel_count(N), n + 4, PANEL_WIDTH), dtype=np.float32)
    DP[:, n:] = 9.0  # rows past n: never summed
    kernels.packed.panels_from_rows_into(DP, dZ, 0, n)
    expected = np.zeros(N, dtype=np.float32)
    for row in dZ:
        expected += row
    out = np.full(N, -1.0, dtype=np.float32)
    panel_column_sums_into(out, DP, n, c0, c1)
    np.testing.assert_array_equal(out[c0:c1], expected[c0:c1])
    assert (out[:c0] == -1.0).all() and (out[c1:] == -1.0).all()


def test_a_batch_too_long_for_l2_updates_panel_by_panel_to_the_same_result():
    # Past _PANEL_GROUP_BYTES of dZ's panel columns (half of L2), update_part takes W's panels in groups (one, here):
    # another order of the tiles, the same arithmetic for each entry.
    rng = np.random.default_rng(2)
    n, K, N = kernels.packed._PANEL_GROUP_BYTES // (4 * PANEL_WIDTH) + 3, TILE_ROWS + 1, 2 * PANEL_WIDTH + 3
    A, dZ, W = f32(rng, n, K), f32(rng, n, N), f32(rng, K, N)
    P = packed(W)
    kernels.packed_sgd_update_inplace(P, A, dZ, 0.05, 1e-3)
    lr, wd = np.float32(0.05), np.float32(1e-3)
    assert_close(P, packed(W - lr * (A.T @ dZ + wd * W)), terms=packed(np.abs(W) + lr * (np.abs(A.T) @ np.abs(dZ))))


@pytest.mark.parametrize("rule", ["sgd", "momentum", "nesterov"])
def test_a_sum_over_many_rows_cut_in_ranges_gives_the_bits_of_one_pass(rule):
    # Past SUM_CHUNK_ROWS rows, a whole panel's tile sums the batch in ranges of rows, carrying its
    # accumulators between them; a partial panel's tile sums it in one pass. The same columns in both
    # panels must come out with the same bits.
    rng = np.random.default_rng(4)
    n, K, N = 2 * kernels.packed.SUM_CHUNK_ROWS + 5, 2 * TILE_ROWS + 1, PANEL_WIDTH + 3
    A, dZ, W, V = f32(rng, n, K), f32(rng, n, N), f32(rng, K, N), f32(rng, K, N)
    for M in (dZ, W, V):
        M[:, PANEL_WIDTH:] = M[:, :3]  # the partial panel repeats the whole one's first columns
    code = {"sgd": kernels.packed.PLAIN_SGD, "momentum": kernels.packed.MOMENTUM,
            "nesterov": kernels.packed.NESTEROV}[rule]
    P, PV = packed(W), packed(V)
    kernels.packed.update_part(P, PV, A, dZ, n, 1, K, 0, P.shape[0], 0.05, 0.9, 1e-3, code, P, 0.0, 0.0, 0.0, 0.0)
    np.testing.assert_array_equal(P[1, 1:, :3], P[0, 1:, :3])
    np.testing.assert_array_equal(PV[1, 1:, :3], PV[0, 1:, :3])
    np.testing.assert_array_equal(P[:, 0], packed(W)[:, 0])  # row 0 is not in 1:K
    lr, wd = np.float32(0.05), np.float32(1e-3)
    if rule == "sgd":
        assert_close(P[:, 1:], packed(W - lr * (A.T @ dZ + wd * W))[:, 1:],
                     terms=packed(np.abs(W) + lr * (np.abs(A.T) @ np.abs(dZ)))[:, 1:])


def test_tiles_follow_the_instruction_set_numba_compiles_for():
    assert select_tile("znver5", "+avx512f,+avx2,+fma") == TILES["avx512"]
    assert select_tile("skylake-avx512", "") == TILES["avx512"]
    assert select_tile("znver5", "-avx512f,+avx2,+fma") == TILES["avx2"]
    assert select_tile("haswell", "+avx2,+fma") == TILES["avx2"]
    assert select_tile("generic", "") == TILES["sse"]
    for tile in TILES.values():
        assert tile.registers == (32 if tile.vw == 16 else 16)
        assert tile.mr * tile.nv + tile.nv + 1 <= tile.registers  # accumulators, B vectors, a broadcast
    assert PANEL_WIDTH == kernels.packed.TILE.nr and TILE_ROWS == kernels.packed.TILE.mr


def test_a_non_contiguous_array_is_refused_when_the_kernel_compiles():
    # An outside test once saw matmul_into(big[:, ::2], A, B) overwrite big[:, 1] silently.
    big = np.zeros((4, 6), np.float32)
    A, B = np.ones((4, 3), np.float32), np.ones((3, 3), np.float32)
    with pytest.raises(TypingError, match="not C-contiguous"):
        kernels.matmul_into(big[:, ::2], A, B)
    with pytest.raises(TypingError, match="not C-contiguous"):
        kernels.packed_matmul_into(big[:, ::2], A, packed(B))
    with pytest.raises(TypingError, match="not C-contiguous"):
        kernels.bias_relu_forward_inplace(big.T, np.zeros(4, np.float32))
    assert not big.any()


@njit
def user_dense_relu(X, P, b):
    Z = np.empty((X.shape[0], b.shape[0]), dtype=np.float32)
    kernels.packed_matmul_bias_relu_into(Z, X, P, b)
    return Z


def test_packed_kernels_are_callable_from_user_njit_code():
    rng = np.random.default_rng(0)
    X, W, b = f32(rng, 9, 7), f32(rng, 7, 5), f32(rng, 5)
    assert_close(user_dense_relu(X, packed(W), b), np.maximum(X @ W + b, 0))


def test_checked_packed_kernels_refuse_a_wrongly_packed_matrix_by_name():
    rng = np.random.default_rng(0)
    A, W = f32(rng, 4, 6), f32(rng, 6, 5)
    Z = np.empty((4, 5), np.float32)
    with pytest.raises(ValueError, match="P must be W packed"):
        ck.packed_matmul_into(Z, A, np.zeros((1, 5, PANEL_WIDTH), np.float32))
    with pytest.raises(ValueError, match="P must have the packed shape"):
        ck.pack_weights_into(np.zeros((1, 5, PANEL_WIDTH), np.float32), W)
    with pytest.raises(ValueError, match="same number of rows"):
        ck.packed_sgd_update_inplace(packed(W), A, f32(rng, 3, 5), 0.1, 0.0)
    with pytest.raises(ValueError, match="weight_decay must be >= 0"):
        ck.packed_sgd_update_inplace(packed(W), A, f32(rng, 4, 5), 0.1, -1.0)
    with pytest.raises(ValueError, match="PT must be W.T packed"):
        ck.packed_matmul_relu_mask_into(np.empty((4, 6), np.float32), Z, packed(W), np.ones((4, 6), np.float32))
    P = packed(W)
    ck.packed_matmul_into(Z, A, P)
    assert_close(Z, A @ W)
    V = packed(np.zeros_like(W))
    ck.packed_momentum_update_inplace(P, V, A, Z[:, :5], 0.1, 0.9, 0.0, True)
    with pytest.raises(ValueError, match="V must not share memory with P"):
        ck.packed_momentum_update_inplace(P, P, A, Z, 0.1, 0.9, 0.0, False)
    M, S = packed(np.zeros_like(W)), packed(np.zeros_like(W))
    ck.packed_adam_update_inplace(P, M, S, A, Z, 1e-3, 0.9, 0.999, 1e-8, 0.0, 1, False)
    with pytest.raises(ValueError, match="S must not share memory with M"):
        ck.packed_adam_update_inplace(P, M, M, A, Z, 1e-3, 0.9, 0.999, 1e-8, 0.0, 1, False)
    with pytest.raises(ValueError, match="beta2 must be in \\[0, 1\\)"):
        ck.packed_adam_update_inplace(P, M, S, A, Z, 1e-3, 0.9, 1.0, 1e-8, 0.0, 1, False)
    with pytest.raises(ValueError, match="eps must be > 0"):
        ck.packed_adam_update_inplace(P, M, S, A, Z, 1e-3, 0.9, 0.999, 0.0, 0.0, 1, False)
    with pytest.raises(ValueError, match="step must be an integer >= 1"):
        ck.packed_adam_update_inplace(P, M, S, A, Z, 1e-3, 0.9, 0.999, 1e-8, 0.0, 0, False)


@pytest.mark.parametrize("N", [1, PANEL_WIDTH, 2 * PANEL_WIDTH + 3])
def test_panel_differs_sees_every_bit_of_every_column_and_nothing_else(N):
    from fastmlp.kernels.packed import panel_differs

    rng = np.random.default_rng(N)
    K = 9
    W = f32(rng, K, N)
    P = packed(W)
    for p in range(P.shape[0]):
        assert not panel_differs(P[p], W, p)
        for k, j in ((0, 0), (K - 1, min(PANEL_WIDTH, N - p * PANEL_WIDTH) - 1)):
            col = p * PANEL_WIDTH + j
            edited = W.copy()
            edited[k, col] = np.nextafter(edited[k, col], np.inf)  # the last bit
            assert panel_differs(P[p], edited, p)
            assert not any(panel_differs(P[q], edited, q) for q in range(P.shape[0]) if q != p)
        Q = P[p].copy()
        if N - p * PANEL_WIDTH < PANEL_WIDTH:  # a padding lane that is not +0.0
            Q[3, PANEL_WIDTH - 1] = -0.0
            assert panel_differs(Q, W, p)
