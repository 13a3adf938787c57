"""Every backend's public edge refuses bad input with an error that names the problem."""

import numpy as np
import pytest

from fastmlp import MLP, Pixels, available_backends, get_backend

BACKENDS = available_backends()
MODEL_SIZES = [6, 5, 3]


def good_batch(n=4):
    rng = np.random.default_rng(0)
    return rng.normal(size=(n, 6)).astype(np.float32), rng.integers(0, 3, n)


@pytest.fixture(params=BACKENDS)
def backend(request):
    return get_backend(request.param)


@pytest.mark.parametrize(
    "X, error, match",
    [
        (np.zeros((4, 5), np.float32), ValueError, "X must have 6 columns"),
        (np.zeros(6, np.float32), ValueError, "X must be 2-D"),
        (np.zeros((2, 4, 6), np.float32), ValueError, "X must be 2-D"),
        (np.zeros((0, 6), np.float32), ValueError, "X is empty"),
        (np.full((4, 6), np.nan, np.float32), ValueError, "NaN or inf"),
        (np.full((4, 6), np.inf), ValueError, "NaN or inf"),
        (np.full((4, 6), 1e300), ValueError, "too large for float32"),
        (np.array([["a"] * 6] * 4), TypeError, "X must hold real numbers"),
        (np.zeros((4, 6), bool), TypeError, "X must hold real numbers"),
        (np.zeros((4, 6), complex), TypeError, "X must hold real numbers"),
    ],
    ids=["width", "1-D", "3-D", "empty", "nan", "inf", "overflow", "strings", "bool", "complex"],
)
def test_bad_features_are_refused(backend, X, error, match):
    _, y = good_batch(len(X) if X.ndim > 1 else 4)
    model = MLP(MODEL_SIZES, seed=0)
    with pytest.raises(error, match=match):
        backend.forward(model, X)
    with pytest.raises(error, match=match):
        backend.loss_and_grads(model, X, y)


def _finite_cases(rows, cols):
    """(name, X) float32 arrays of rows x cols: finite ones, and ones with NaN or infinities at random places."""
    rng = np.random.default_rng(rows)
    base = rng.normal(size=(rows, cols)).astype(np.float32)
    cases = [("finite", base), ("huge but finite", np.full((rows, cols), 3e38, np.float32)),
             ("huge of both signs", np.where(rng.random((rows, cols)) < 0.5, 3e38, -3e38).astype(np.float32))]
    planted = (("nan", [np.nan]), ("inf", [np.inf]), ("-inf", [-np.inf]), ("inf and -inf", [np.inf, -np.inf]))
    for name, values in planted:
        X = base.copy()
        for value in values:
            X[rng.integers(rows), rng.integers(cols)] = value
        cases.append((name, X))
    X = base.copy()  # +inf and -inf in one row: its sum is NaN, not an infinity
    X[rows // 2, :2] = [np.inf, -np.inf]
    cases.append(("inf and -inf in one row", X))
    X = np.full((rows, cols), 3e38, np.float32)  # an overflowing sum hides nothing: the NaN is still found
    X[-1, -1] = np.nan
    cases.append(("nan among huge values", X))
    return cases


@pytest.mark.parametrize("rows, cols", [(3, 5), (100, 784), (2000, 33)])
def test_all_finite_agrees_with_numpys_elementwise_test(rows, cols):
    from fastmlp.inputs import all_finite

    for name, X in _finite_cases(rows, cols):
        assert all_finite(X) == bool(np.isfinite(X).all()), name


@pytest.mark.parametrize(
    "y, error, match",
    [
        ([0, 1, 3, 2], ValueError, r"class indices in \[0, 3\)"),
        ([0, -1, 1, 2], ValueError, r"class indices in \[0, 3\)"),
        ([0.0, 1.0, 2.0, 1.0], TypeError, "integer class indices"),
        ([[0], [1], [2], [1]], ValueError, "y must be 1-D"),
        ([0, 1, 2], ValueError, "3 labels but X has 4 samples"),
        ([True, False, True, True], TypeError, "integer class indices"),
    ],
    ids=["too-large", "negative", "float", "2-D", "length", "bool"],
)
def test_bad_labels_are_refused(backend, y, error, match):
    X, _ = good_batch()
    model = MLP(MODEL_SIZES, seed=0)
    with pytest.raises(error, match=match):
        backend.loss_and_grads(model, X, np.array(y))
    with pytest.raises(error, match=match):
        backend.sgd_step(model, X, np.array(y), 0.1)
    with pytest.raises(error, match=match):
        backend.train_epoch(model, X, np.array(y), batch_size=2, lr=0.1, rng=np.random.default_rng(0))


@pytest.mark.parametrize("lr", [0, -0.1, float("nan"), float("inf")])
def test_bad_learning_rates_are_refused(backend, lr):
    X, y = good_batch()
    with pytest.raises(ValueError, match="lr must be finite and > 0"):
        backend.sgd_step(MLP(MODEL_SIZES), X, y, lr)


def test_train_epoch_needs_a_generator_and_a_positive_batch_size(backend):
    X, y = good_batch()
    with pytest.raises(TypeError, match="numpy.random.Generator"):
        backend.train_epoch(MLP(MODEL_SIZES), X, y, batch_size=2, lr=0.1, rng=0)
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        backend.train_epoch(MLP(MODEL_SIZES), X, y, batch_size=0, lr=0.1, rng=np.random.default_rng(0))


def test_replaced_or_reshaped_parameters_are_refused_before_any_kernel_runs(backend):
    X, y = good_batch()
    model = MLP(MODEL_SIZES)
    model.weights[0] = model.weights[0].astype(np.float64)
    with pytest.raises(ValueError, match=r"model.weights\[0\] must be a float32 array of shape \(6, 5\)"):
        backend.sgd_step(model, X, y, 0.1)
    model = MLP(MODEL_SIZES)
    model.biases[1] = np.zeros(4, np.float32)
    with pytest.raises(ValueError, match=r"model.biases\[1\]"):
        backend.forward(model, X)
    model = MLP(MODEL_SIZES)
    model.weights[1] = np.asfortranarray(model.weights[1])
    with pytest.raises(ValueError, match="C-contiguous"):
        backend.sgd_step(model, X, y, 0.1)


def test_other_real_dtypes_and_non_contiguous_arrays_are_converted_correctly(backend):
    X, y = good_batch(6)
    model = MLP(MODEL_SIZES, seed=1)
    expected = backend.forward(model, X)
    wide = np.zeros((6, 12), np.float64)
    wide[:, ::2] = X
    np.testing.assert_allclose(backend.forward(model, wide[:, ::2]), expected, rtol=1e-6)
    ints = np.arange(36).reshape(6, 6) % 3
    np.testing.assert_allclose(backend.forward(model, ints), backend.forward(model, ints.astype(np.float32)))


@pytest.mark.parametrize(
    "make, error, match",
    [
        (lambda: Pixels(np.zeros((3, 4), np.float32)), TypeError, "uint8"),
        (lambda: Pixels(np.zeros(4, np.uint8)), ValueError, "2-D"),
        (lambda: Pixels(np.zeros((3, 4), np.uint8), scale=0), ValueError, "scale"),
    ],
)
def test_bad_pixels_are_refused(make, error, match):
    with pytest.raises(error, match=match):
        make()


def test_take_rows_keeps_pixels_uint8_and_indexes_arrays():
    from fastmlp.inputs import take_rows

    data = np.arange(12, dtype=np.uint8).reshape(4, 3)
    rows = take_rows(Pixels(data, 0.5), [3, 1])
    assert isinstance(rows, Pixels) and rows.scale == 0.5
    np.testing.assert_array_equal(rows.data, data[[3, 1]])
    X = data.astype(np.float32)
    np.testing.assert_array_equal(take_rows(X, slice(1, 3)), X[1:3])
