"""Float32 inputs that are bytes times 1/255, trained on as those bytes (fastmlp/backends/numba/pixels.py): only
where the bytes give back every value bit for bit, and with the same bits of the trained weights as on X itself."""

import numpy as np
import pytest

from fastmlp import MLP, Pixels, Trainer, get_backend
from fastmlp.backends.numba.pixels import PIXEL_EPOCHS, exact_pixels, pixel_codes_into

SCALE = np.float32(1 / 255)


def pixel_rows(n=97, features=30, seed=0):
    """Random bytes (n, features) and the float32 rows `Pixels` makes of them."""
    codes = np.random.default_rng(seed).integers(0, 256, (n, features), dtype=np.uint8)
    return codes, Pixels(codes).to_float32()


def test_the_codes_of_byte_products_are_those_bytes():
    codes, X = pixel_rows()
    out = np.zeros_like(codes)
    assert pixel_codes_into(out, X, SCALE)
    np.testing.assert_array_equal(out, codes)
    np.testing.assert_array_equal(exact_pixels(X).data, codes)
    assert exact_pixels(X).scale == 1 / 255
    # Another scale: the bytes times it, not those times 1/255.
    Y = codes * np.float32(0.5)
    assert exact_pixels(Y) is None
    np.testing.assert_array_equal(exact_pixels(Y, 0.5).data, codes)


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf, -0.0, -SCALE, 256 * SCALE, 2.0, 0.5 * SCALE,
                                   np.nextafter(SCALE, np.float32(1))])
@pytest.mark.parametrize("row", [0, 50, 96])
def test_any_value_off_the_bytes_grid_keeps_x_as_it_is(value, row):
    _, X = pixel_rows()
    X[row, 7] = value
    assert not pixel_codes_into(np.zeros(X.shape, np.uint8), X, SCALE)
    assert all(exact_pixels(X, parts=parts) is None for parts in (1, 2, 3))


@pytest.mark.parametrize("parts", [2, 3, 97, 500])
def test_the_codes_are_the_same_checked_in_parts_on_threads(parts):
    codes, X = pixel_rows()
    np.testing.assert_array_equal(exact_pixels(X, parts=parts).data, codes)


def test_values_scaled_in_float64_are_bytes_only_where_the_two_roundings_agree():
    """k / 255 in float64 rounded to float32 is float32(k) * float32(1/255) for some k and not others: an array of
    such values is taken as bytes exactly when every one of them agrees."""
    k = np.arange(256)
    divided = (k / 255.0).astype(np.float32)
    agrees = divided == k.astype(np.float32) * SCALE
    assert agrees.any() and not agrees.all()  # both kinds exist: the test below checks each
    for value, same in zip(divided, agrees):
        X = np.full((3, 5), value, np.float32)
        assert (exact_pixels(X) is not None) == same
    assert exact_pixels(divided[agrees].reshape(1, -1)) is not None
    assert exact_pixels(divided.reshape(1, -1)) is None


class Spy:
    """Records the inputs each epoch of a backend got."""

    def __init__(self, backend):
        self.backend, self.seen = backend, []
        self._train_epoch = backend._train_epoch

    def __call__(self, model, X, *args, **kwargs):
        self.seen.append(X)
        return self._train_epoch(model, X, *args, **kwargs)


def fit(X, y, epochs, backend="numba", **fit_options):
    trainer = Trainer(MLP([X.shape[1], 16, 4], seed=0), get_backend(backend).__class__(threads=2), lr=0.05,
                      batch_size=32, momentum=0.9, nesterov=True, seed=0)
    spy = Spy(trainer.backend)
    trainer.backend._train_epoch = spy
    trainer.fit(X, y, epochs=epochs, **fit_options)
    return trainer.model, spy.seen


def assert_same_weights(a, b):
    for u, v in zip(a.weights + a.biases, b.weights + b.biases):
        np.testing.assert_array_equal(u, v)


def test_trainer_fit_trains_on_the_bytes_with_the_same_bits_as_on_x():
    codes, X = pixel_rows(200, 30)
    y = np.random.default_rng(1).integers(0, 4, 200)
    on_bytes, seen = fit(X, y, PIXEL_EPOCHS)
    assert all(isinstance(x, Pixels) for x in seen) and len(seen) == PIXEL_EPOCHS
    np.testing.assert_array_equal(seen[0].data, codes)
    # The same fit reading X itself every epoch (a callback keeps X as it is), and on Pixels given by the caller.
    on_x, seen = fit(X, y, PIXEL_EPOCHS, on_epoch_end=lambda record: None)
    assert all(x is X for x in seen)
    assert_same_weights(on_bytes, on_x)
    assert_same_weights(on_bytes, fit(Pixels(codes), y, PIXEL_EPOCHS)[0])


def test_x_stays_as_it_is_for_fewer_epochs_other_values_and_the_numpy_backend():
    _, X = pixel_rows(200, 30)
    y = np.random.default_rng(1).integers(0, 4, 200)
    assert all(x is X for x in fit(X, y, PIXEL_EPOCHS - 1)[1])
    assert all(x is X for x in fit(X, y, PIXEL_EPOCHS, backend="numpy")[1])
    standardised = (X - X.mean(axis=0)) / (X.std(axis=0) + 1)
    assert all(x is standardised for x in fit(standardised, y, PIXEL_EPOCHS)[1])
    # What the backend is handed unvalidated (the CLI's own data) comes back as it is unless it is such an array.
    backend = get_backend("numba")
    for other in (X.astype(np.float64), np.asfortranarray(X), X[:, ::2], X.ravel(), Pixels(np.zeros((2, 3), np.uint8))):
        assert backend.training_inputs(other, PIXEL_EPOCHS) is other
    assert isinstance(backend.training_inputs(X, PIXEL_EPOCHS), Pixels)


def test_a_callback_that_changes_x_between_epochs_is_seen_by_the_next_epoch():
    _, X = pixel_rows(200, 30)
    y = np.random.default_rng(1).integers(0, 4, 200)
    first = X.copy()

    def halve(record):
        X[:] *= np.float32(0.5)

    halved, seen = fit(X, y, PIXEL_EPOCHS, on_epoch_end=halve)
    assert all(x is X for x in seen)  # each epoch read X's values as they were then
    # Against the same fit whose callback leaves X alone: other weights.
    X[:] = first
    kept, _ = fit(X, y, PIXEL_EPOCHS, on_epoch_end=lambda record: None)
    assert any(not np.array_equal(u, v) for u, v in zip(halved.weights, kept.weights))
