"""Every public entry point refuses each kind of bad argument with the documented exception type
and a message naming the argument (backends' X and y: test_inputs.py; kernels: test_checked_kernels.py)."""

import numpy as np
import pytest

from fastmlp import MLP, BackendError, ModelFileError, Trainer, get_backend
from fastmlp.datasets import DatasetError, load_mnist, read_idx, train_val_split
from fastmlp.testing import assert_backends_equivalent


def model():
    return MLP([6, 5, 3], seed=0)


def batch(n=8):
    rng = np.random.default_rng(0)
    return rng.random((n, 6), dtype=np.float32), rng.integers(0, 3, n)


def fit(**kwargs):
    return Trainer(model(), "numpy").fit(*batch(), **kwargs)


def epoch(**kwargs):
    args = dict(batch_size=4, lr=0.1, rng=np.random.default_rng(0)) | kwargs
    return get_backend("numpy").train_epoch(model(), *batch(), **args)


def nan_model():
    m = model()
    m.weights[0][0, 0] = np.nan
    return m


CASES = {
    # entry point / kind: (call, exception, words the message must contain)
    "get_backend unknown": (lambda: get_backend("cuda"), BackendError, "unknown backend 'cuda'"),
    "train_epoch batch_size bool": (lambda: epoch(batch_size=True), TypeError, "batch_size must be an integer"),
    "train_epoch batch_size float": (lambda: epoch(batch_size=2.5), TypeError, "batch_size must be an integer"),
    "train_epoch lr str": (lambda: epoch(lr="0.1"), TypeError, "lr must be a number"),
    "train_epoch lr nan": (lambda: epoch(lr=float("nan")), ValueError, "lr must be finite and > 0"),
    "train_epoch lr overflows float32": (lambda: epoch(lr=1e39), ValueError, "lr must be finite and > 0 (in float32)"),
    "train_epoch lr underflows float32": (lambda: epoch(lr=1e-50),
                                          ValueError, "lr must be finite and > 0 (in float32)"),
    "train_epoch progress": (lambda: epoch(progress=3), TypeError, "progress must be callable"),
    "sgd_step lr bool": (lambda: get_backend("numpy").sgd_step(model(), *batch(), True),
                         TypeError, "lr must be a number"),
    "MLP too few sizes": (lambda: MLP([784]), ValueError, "layer_sizes needs at least 2 entries"),
    "MLP zero width": (lambda: MLP([784, 0, 10]), ValueError, "layer_sizes[1] must be an int >= 1, got 0"),
    "MLP negative width": (lambda: MLP([784, -3, 10]), ValueError, "layer_sizes[1] must be an int >= 1"),
    "MLP float width": (lambda: MLP([784, 2.5, 10]), ValueError, "layer_sizes[1] must be an int >= 1, got 2.5"),
    "MLP bool width": (lambda: MLP([784, True, 10]), ValueError, "layer_sizes[1] must be an int >= 1, got True"),
    "MLP str width": (lambda: MLP([784, "64", 10]), ValueError, "layer_sizes[1] must be an int >= 1, got '64'"),
    "MLP sizes not a sequence": (lambda: MLP(784), TypeError, "layer_sizes must be a sequence of ints"),
    "MLP unknown init": (lambda: MLP([4, 2], init="xavier"), ValueError, "init must be one of ('he', 'normal')"),
    "MLP init not str": (lambda: MLP([4, 2], init=["he"]), ValueError, "init must be one of"),
    "MLP negative seed": (lambda: MLP([4, 2], seed=-1), ValueError, "seed must be None or an integer >= 0, got -1"),
    "MLP float seed": (lambda: MLP([4, 2], seed=1.5), TypeError, "seed must be None or an integer >= 0, got float"),
    "MLP bool seed": (lambda: MLP([4, 2], seed=True), TypeError, "seed must be None or an integer >= 0, got bool"),
    "predict wrong width": (lambda: model().predict(np.zeros((2, 5))), ValueError, "X must have 6 columns"),
    "predict NaN": (lambda: model().predict(np.full((2, 6), np.nan)), ValueError, "X contains NaN or inf"),
    "predict scalar": (lambda: model().predict(3.0), ValueError, "X must be 2-D"),
    "predict empty": (lambda: model().predict(np.zeros((0, 6))), ValueError, "X is empty"),
    "predict strings": (lambda: model().predict([["a"] * 6]), TypeError, "X must hold real numbers"),
    "predict_proba batch_size 0": (lambda: model().predict_proba(np.zeros((2, 6)), batch_size=0), ValueError,
                                   "batch_size must be >= 1"),
    "save path not a path": (lambda: model().save(3), TypeError, "path must be a str or os.PathLike, got int"),
    "save NaN model": (lambda: nan_model().save("unused.npz"), ValueError, "model.weights[0] contains NaN or inf"),
    "load path not a path": (lambda: MLP.load(None), TypeError, "path must be a str or os.PathLike"),
    "load missing file": (lambda: MLP.load("/no/such/model.npz"), FileNotFoundError, "/no/such/model.npz"),
    "Trainer unknown backend": (lambda: Trainer(model(), "cuda"), BackendError, "unknown backend 'cuda'"),
    "Trainer backend not a name": (lambda: Trainer(model(), 3), TypeError, "backend must be a backend name"),
    "Trainer model not an MLP": (lambda: Trainer("mlp", "numpy"), TypeError, "model must be a fastmlp.MLP"),
    "Trainer lr nan": (lambda: Trainer(model(), "numpy", lr=float("nan")), ValueError, "lr must be finite and > 0"),
    "Trainer lr str": (lambda: Trainer(model(), "numpy", lr="0.1"), TypeError, "lr must be a number"),
    "Trainer batch_size 0": (lambda: Trainer(model(), "numpy", batch_size=0), ValueError, "batch_size must be >= 1"),
    "Trainer batch_size bool": (lambda: Trainer(model(), "numpy", batch_size=True),
                                TypeError, "batch_size must be an integer"),
    "Trainer seed str": (lambda: Trainer(model(), "numpy", seed="0"), TypeError, "seed must be None or an integer"),
    "fit epochs 0": (lambda: fit(epochs=0), ValueError, "epochs must be >= 1"),
    "fit epochs float": (lambda: fit(epochs=1.5), TypeError, "epochs must be an integer"),
    "fit validation not a pair": (lambda: fit(epochs=1, validation_data=3), TypeError,
                                  "validation data must be a pair"),
    "fit validation labels out of range": (lambda: fit(epochs=1, validation_data=(np.zeros((2, 6)), [0, 3])),
                                           ValueError, r"validation y must be class indices in [0, 3)"),
    "fit on_epoch_end": (lambda: fit(epochs=1, on_epoch_end=3), TypeError, "on_epoch_end must be callable"),
    "evaluate mismatched lengths": (lambda: Trainer(model(), "numpy").evaluate(np.zeros((3, 6)), [0, 1]),
                                    ValueError, "validation y has 2 labels but X has 3 samples"),
    "load_mnist unknown dataset": (lambda: load_mnist(dataset="cifar"), ValueError, "unknown dataset 'cifar'"),
    "read_idx missing file": (lambda: read_idx("/no/such/file.idx"), FileNotFoundError, "/no/such/file.idx"),
    "split val_size 0": (lambda: train_val_split(*batch(), 0.0, 0),
                         ValueError, "val_size as a fraction must be in (0, 1)"),
    "split val_size nan": (lambda: train_val_split(*batch(), float("nan"), 0), ValueError, "val_size as a fraction"),
    "split val_size bool": (lambda: train_val_split(*batch(), True, 0), TypeError, "val_size must be a fraction"),
    "split val_size str": (lambda: train_val_split(*batch(), "0.1", 0), TypeError, "val_size must be a fraction"),
    "split count too large": (lambda: train_val_split(*batch(), 8, 0),
                              ValueError, "val_size as a count must be in [1, 7]"),
    "split negative seed": (lambda: train_val_split(*batch(), 0.5, -1),
                            ValueError, "seed must be None or an integer >= 0"),
    "split mismatched lengths": (lambda: train_val_split(np.zeros((8, 6)), np.zeros(7, int), 0.5, 0), ValueError,
                                 "X has 8 samples but y has 7 labels"),
    "split 2-D labels": (lambda: train_val_split(np.zeros((8, 6)), np.zeros((8, 1), int), 0.5, 0), ValueError,
                         "y must be 1-D labels"),
    "split empty": (lambda: train_val_split(np.zeros((0, 6)), np.zeros(0, int), 0.5, 0), ValueError,
                    "X has 0 samples; a split needs at least 2"),
    "testing steps negative": (lambda: assert_backends_equivalent(model(), *batch(), backends=("numpy", "numpy"),
                                                                  steps=-1),
                               ValueError, "steps must be an integer >= 0"),
    "testing rtol nan": (lambda: assert_backends_equivalent(model(), *batch(), backends=("numpy", "numpy"),
                                                            rtol=float("nan")),
                         ValueError, "rtol must be a finite number >= 0"),
    "testing one backend": (lambda: assert_backends_equivalent(model(), *batch(), backends=("numpy",)), ValueError,
                            "backends must be a pair"),
    "testing unknown backend": (lambda: assert_backends_equivalent(model(), *batch(), backends=("numpy", "jax")),
                                BackendError, "unknown backend 'jax'"),
    "testing lr 0": (lambda: assert_backends_equivalent(model(), *batch(), backends=("numpy", "numpy"), lr=0),
                     ValueError, "lr must be finite and > 0"),
    "testing labels float": (lambda: assert_backends_equivalent(model(), batch()[0], np.zeros(8)), TypeError,
                             "y must hold integer class indices"),
}


@pytest.mark.parametrize("kind", CASES)
def test_bad_arguments_are_refused_naming_the_argument(kind):
    call, error, words = CASES[kind]
    with pytest.raises(error) as info:
        call()
    assert words in str(info.value)


def test_a_corrupt_dataset_file_is_a_dataset_error_naming_it(tmp_path):
    path = tmp_path / "labels.idx"
    path.write_bytes(b"\x00\x00\x08\x01\x00\x00\x00\x05abc")
    with pytest.raises(DatasetError, match="labels.idx: truncated, 3 data bytes"):
        read_idx(path)


def test_a_model_file_that_is_not_a_model_is_a_model_file_error(tmp_path):
    path = tmp_path / "m.npz"
    path.write_bytes(b"plain text")
    with pytest.raises(ModelFileError, match="m.npz is not a readable fastmlp model"):
        MLP.load(path)
