"""`MLPClassifier`: fastmlp behind scikit-learn's estimator conventions, without depending on scikit-learn.

The conventions kept: `__init__` stores its arguments unchanged and does nothing else
(validation happens in `fit`), `get_params`/`set_params` follow the `__init__` signature, so
`sklearn.base.clone`, grid searches and `cross_val_score` work; `fit` and `partial_fit` return
self; fitted attributes end in an underscore; labels may be any sortable values (`classes_`).
Input errors use scikit-learn's wording ("Reshape your data", "Unknown label type: continuous",
"X has 3 features, but MLPClassifier is expecting 4 features as input"), so that code and people
used to scikit-learn recognise them, and scikit-learn's conformance checks accept them.

fastmlp never imports scikit-learn. When scikit-learn is already imported (so its user wants its
classes), NotFittedError and DataConversionWarning are raised as subclasses of both fastmlp's
and scikit-learn's class of the same name, so that `except sklearn.exceptions.NotFittedError`
catches them too.
"""

from __future__ import annotations

import inspect
import numbers
import sys
import warnings
from collections.abc import Sequence
from typing import Any, cast

import numpy as np
import numpy.typing as npt

from .backends import BackendError, get_backend
from .backends.base import BackendBase
from .inputs import check_features, check_positive_float, check_positive_int
from .model import INITS, MLP
from .optim import SCHEDULES, AdamMoments, Velocity, check_adam_options, check_sgd_options
from .trainer import Trainer, TrainingDivergedError


class NotFittedError(ValueError, AttributeError):
    """The estimator is used before `fit` (the same bases as scikit-learn's NotFittedError)."""


class DataConversionWarning(UserWarning):
    """The input was converted in a way the caller may not expect (y of shape (n, 1) raveled)."""


_SKLEARN_FLAVOURED: dict[type, type] = {}


def _flavoured(cls: type) -> type:
    """cls, or a subclass of it and of scikit-learn's class of the same name if scikit-learn is imported."""
    exceptions = sys.modules.get("sklearn.exceptions")
    theirs = getattr(exceptions, cls.__name__, None)
    if theirs is None:
        return cls
    if cls not in _SKLEARN_FLAVOURED:
        # Pickled (from a worker process to its parent, say) as fastmlp's own class, which any
        # process can import; this one exists only where scikit-learn was imported.
        reduce = lambda self: (cls, self.args)  # noqa: E731
        _SKLEARN_FLAVOURED[cls] = type(cls.__name__, (cls, theirs), {"__module__": cls.__module__,
                                                                     "__doc__": cls.__doc__, "__reduce__": reduce})
    return _SKLEARN_FLAVOURED[cls]


class MLPClassifier:
    """A multilayer perceptron classifier trained with fastmlp's minibatch SGD.

    hidden_layer_sizes: widths of the ReLU hidden layers (an int for one layer, () for none);
    backend: "numba" or "numpy", or a backend object such as
    `fastmlp.backends.numba_fused.Backend(threads=1)`; learning_rate_init: the SGD learning rate;
    batch_size; max_iter: epochs that `fit` trains (`partial_fit` trains one); random_state: None
    or an int seeding the initial weights and the shuffling; momentum, nesterov, weight_decay and
    schedule ("none", "step", "cosine") as in `fastmlp.Trainer`; init: "he" or "normal";
    verbose prints one line per epoch.
    solver: "sgd" or "adam" (Trainer's optimizer="adam", weight_decay as its L2 term), with
    beta_1, beta_2 and epsilon, scikit-learn's names and defaults; momentum and nesterov are
    SGD's and must stay at their defaults with "adam". The default solver stays "sgd", unlike
    scikit-learn's "adam": this estimator has always trained with SGD and its default
    learning_rate_init=0.1 is an SGD rate (Adam wants about 1e-3), so changing it would change
    every existing caller's results.

    Its defaults are scikit-learn-like and plain (batch_size=32, learning_rate_init=0.1, no momentum,
    a constant rate, max_iter=10); they are not the recipe of `fastmlp train`, which trains with
    batch 64, lr 0.05, Nesterov momentum 0.9 and a cosine schedule (98 % on MNIST in 10 epochs). The
    recipe as an estimator: `MLPClassifier((128, 64), batch_size=64, learning_rate_init=0.05,
    momentum=0.9, nesterov=True, schedule="cosine")`; with solver="adam", learning_rate_init=1e-3.

    Fitted attributes: classes_ (sorted labels), n_features_in_, feature_names_in_ (when X was a
    DataFrame with string column names), model_ (the `fastmlp.MLP`), loss_curve_ (train loss per
    epoch), n_iter_ (epochs trained). A fit or partial_fit that raises, a diverged one included,
    leaves the estimator as it was before the call.
    """

    _estimator_type = "classifier"  # how scikit-learn < 1.6 recognises a classifier

    classes_: np.ndarray
    n_features_in_: int
    feature_names_in_: np.ndarray
    model_: MLP
    loss_curve_: list[float]
    n_iter_: int

    def __init__(self, hidden_layer_sizes: int | Sequence[int] = (128, 64), *, backend: str | BackendBase = "numba",
                 learning_rate_init: float = 0.1, batch_size: int = 32, max_iter: int = 10,
                 random_state: int | None = None, momentum: float = 0.0, nesterov: bool = False,
                 weight_decay: float = 0.0, schedule: str = "none", init: str = "he", verbose: bool = False,
                 solver: str = "sgd", beta_1: float = 0.9, beta_2: float = 0.999, epsilon: float = 1e-8) -> None:
        self.hidden_layer_sizes = hidden_layer_sizes
        self.backend = backend
        self.learning_rate_init = learning_rate_init
        self.batch_size = batch_size
        self.max_iter = max_iter
        self.random_state = random_state
        self.momentum = momentum
        self.nesterov = nesterov
        self.weight_decay = weight_decay
        self.schedule = schedule
        self.init = init
        self.verbose = verbose
        self.solver = solver
        self.beta_1 = beta_1
        self.beta_2 = beta_2
        self.epsilon = epsilon

    # --- parameters --------------------------------------------------------------------------

    @classmethod
    def _param_names(cls) -> list[str]:
        return sorted(name for name in inspect.signature(cls.__init__).parameters if name != "self")

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        """The `__init__` arguments as a dict (deep is accepted for scikit-learn; nothing is nested)."""
        return {name: getattr(self, name) for name in self._param_names()}

    def set_params(self, **params: Any) -> MLPClassifier:
        """Set `__init__` arguments by name; returns self. Takes effect at the next `fit`."""
        valid = self._param_names()
        for name, value in params.items():
            if name not in valid:
                raise ValueError(f"invalid parameter {name!r} for MLPClassifier; valid parameters: {', '.join(valid)}")
            setattr(self, name, value)
        return self

    def __repr__(self) -> str:
        defaults = {name: p.default for name, p in inspect.signature(type(self).__init__).parameters.items()}
        changed = [f"{name}={value!r}" for name, value in self.get_params().items()
                   if repr(value) != repr(defaults[name])]
        return f"MLPClassifier({', '.join(changed)})"

    def __sklearn_tags__(self) -> Any:
        # Only scikit-learn (>= 1.6) calls this, so it is already imported; fastmlp never needs it.
        from sklearn.utils import ClassifierTags, Tags, TargetTags

        return Tags(estimator_type="classifier", target_tags=TargetTags(required=True),
                    classifier_tags=ClassifierTags())

    def __sklearn_is_fitted__(self) -> bool:
        return hasattr(self, "model_")

    def _checked_params(self) -> dict[str, Any]:
        """The `__init__` arguments validated, with errors naming them; raises ValueError / TypeError."""
        hidden: Any = self.hidden_layer_sizes
        if isinstance(hidden, numbers.Integral) and not isinstance(hidden, bool):
            hidden = [hidden]
        try:
            hidden = list(hidden)
        except TypeError:
            raise TypeError(f"hidden_layer_sizes must be an int or a sequence of ints, got {hidden!r}") from None
        for i, size in enumerate(hidden):
            if isinstance(size, bool) or not isinstance(size, numbers.Integral) or size < 1:
                raise ValueError(f"hidden_layer_sizes[{i}] must be an int >= 1, got {size!r}")
        seed = self.random_state
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0):
            raise ValueError(f"random_state must be None or an int >= 0, got {seed!r}")
        if isinstance(self.backend, BackendBase):
            backend = self.backend
        elif isinstance(self.backend, str):
            try:
                backend = get_backend(self.backend)
            except BackendError as exc:
                raise BackendError(f"MLPClassifier: {exc}") from None  # exc names the backend already
        else:
            raise TypeError(f"backend must be 'numpy', 'numba' or a fastmlp backend, got {self.backend!r}")
        solver = self._solver_options()  # first: with solver='adam', momentum and nesterov are not SGD's to check
        momentum, nesterov, weight_decay = check_sgd_options(self.momentum, self.nesterov, self.weight_decay)
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {SCHEDULES}, got {self.schedule!r}")
        if self.init not in INITS:
            raise ValueError(f"init must be one of {INITS}, got {self.init!r}")
        return {"hidden": [int(h) for h in hidden], "seed": seed, "backend": backend,
                "lr": check_positive_float(self.learning_rate_init, "learning_rate_init"),
                "batch_size": check_positive_int(self.batch_size, "batch_size"),
                "max_iter": check_positive_int(self.max_iter, "max_iter"),
                "momentum": momentum, "nesterov": nesterov, "weight_decay": weight_decay, **solver}

    # --- training ----------------------------------------------------------------------------

    def fit(self, X: npt.ArrayLike, y: npt.ArrayLike) -> MLPClassifier:
        """Train a new network for max_iter epochs on (X, y); returns self.

        If it raises (bad input, or a TrainingDivergedError), the estimator is left as it was.
        """
        params = self._checked_params()
        X, names = _check_X(X)
        y = _check_y(y, len(X))
        classes = _classes(y)
        trainer = self._new_trainer(params, classes, X.shape[1])
        _fit_naming_our_parameters(trainer, X, _encode(classes, y), params["max_iter"], bool(self.verbose))
        self._set_fitted(trainer, classes, names)
        return self

    def partial_fit(self, X: npt.ArrayLike, y: npt.ArrayLike, classes: npt.ArrayLike | None = None) -> MLPClassifier:
        """Train one epoch on (X, y), continuing from the previous call; returns self.

        The first call needs `classes`, every label that will ever be seen. If it raises (bad
        input, or a TrainingDivergedError), the estimator is left as it was before the call.
        """
        if not hasattr(self, "model_"):
            params = self._checked_params()
            X, names = _check_X(X)
            y = _check_y(y, len(X))
            if classes is None:
                raise ValueError("classes must be given on the first call to partial_fit: every label to expect")
            all_classes = _classes(_check_y(classes, None, "classes"))
            trainer = self._new_trainer(params, all_classes, X.shape[1])
            _fit_naming_our_parameters(trainer, X, _encode(all_classes, y), 1, bool(self.verbose))
            self._set_fitted(trainer, all_classes, names)
            return self
        X = self._check_X_fitted(X)
        y = _check_y(y, len(X))
        if classes is not None and not np.array_equal(_classes(_check_y(classes, None, "classes")), self.classes_):
            raise ValueError(f"classes {np.unique(np.asarray(classes)).tolist()} differ from those of the first "
                             f"call to partial_fit, {self.classes_.tolist()}")
        y_index = _encode(self.classes_, y)
        trainer = self._trainer
        _make_writable(trainer)  # after joblib.load(..., mmap_mode="r") the parameters are read-only
        saved = _TrainerState(trainer)
        try:
            _fit_naming_our_parameters(trainer, X, y_index, 1, bool(self.verbose))
        except BaseException:
            saved.restore(trainer)
            raise
        self.loss_curve_ = trainer.history.column("train_loss")
        self.n_iter_ = len(self.loss_curve_)
        return self

    def _solver_options(self) -> dict[str, Any]:
        """Trainer's optimizer, betas and eps from solver, beta_1, beta_2, epsilon, checked under these names."""
        if self.solver not in ("sgd", "adam"):
            raise ValueError(f"solver must be 'sgd' or 'adam', got {self.solver!r}")
        betas, eps = check_adam_options((self.beta_1, self.beta_2), self.epsilon, names=("beta_1", "beta_2", "epsilon"))
        if self.solver == "adam" and (self.momentum or self.nesterov):
            raise ValueError(f"momentum and nesterov are options of solver='sgd', not 'adam' (got momentum="
                             f"{self.momentum!r}, nesterov={self.nesterov!r}): beta_1 and beta_2 take their place")
        return {"optimizer": self.solver, "betas": betas, "eps": eps}

    def _new_trainer(self, params: dict[str, Any], classes: np.ndarray, n_features: int) -> Trainer:
        if len(classes) < 2:
            raise ValueError(f"MLPClassifier needs samples of at least 2 classes; y holds {len(classes)} class: "
                             f"{classes.tolist()}")
        model = MLP([n_features, *params["hidden"], len(classes)], init=self.init, seed=params["seed"])
        return Trainer(model, params["backend"], lr=params["lr"], batch_size=params["batch_size"], seed=params["seed"],
                       momentum=params["momentum"], nesterov=params["nesterov"],
                       weight_decay=params["weight_decay"], schedule=self.schedule, optimizer=params["optimizer"],
                       betas=params["betas"], eps=params["eps"])

    def _set_fitted(self, trainer: Trainer, classes: np.ndarray, names: np.ndarray | None) -> None:
        """Set every fitted attribute at once, after training succeeded."""
        self._trainer = trainer
        self.classes_ = classes
        self.n_features_in_ = trainer.model.n_features
        if names is not None:
            self.feature_names_in_ = names
        elif hasattr(self, "feature_names_in_"):
            del self.feature_names_in_
        self.model_ = trainer.model
        self.loss_curve_ = trainer.history.column("train_loss")
        self.n_iter_ = len(self.loss_curve_)

    # --- prediction --------------------------------------------------------------------------

    def predict_proba(self, X: npt.ArrayLike) -> np.ndarray:
        """Class probabilities, float32 (n, len(classes_)), columns in the order of classes_.

        Whichever backend trained the model, by fastmlp.inference: a row's probabilities are the same
        bits whatever its position in X and whatever the other rows (scikit-learn's sample-order check).
        """
        X = self._check_X_fitted(X)
        return self.model_.predict_proba(X)

    def predict(self, X: npt.ArrayLike) -> np.ndarray:
        """The most probable label of each row of X."""
        index = self.predict_proba(X).argmax(axis=1)
        return self.classes_[index]

    def score(self, X: npt.ArrayLike, y: npt.ArrayLike, sample_weight: npt.ArrayLike | None = None) -> float:
        """Mean accuracy of predict(X) against y (weighted by sample_weight if given)."""
        predicted = self.predict(X)
        weights = None if sample_weight is None else np.asarray(sample_weight, dtype=np.float64)
        return float(np.average(predicted == _check_y(y, len(predicted)), weights=weights))

    def _check_X_fitted(self, X: Any) -> np.ndarray:
        """X checked against what fit saw: fitted at all, the number of features, their names."""
        if not hasattr(self, "model_"):
            raise _flavoured(NotFittedError)(
                "This MLPClassifier instance is not fitted yet. Call 'fit' or 'partial_fit' with appropriate "
                "arguments before using this estimator.")
        X, names = _check_X(X)
        fitted_names = getattr(self, "feature_names_in_", None)
        if names is not None and fitted_names is None:
            warnings.warn("X has feature names, but MLPClassifier was fitted without feature names", UserWarning,
                          stacklevel=3)
        elif names is None and fitted_names is not None:
            warnings.warn("X does not have valid feature names, but MLPClassifier was fitted with feature names",
                          UserWarning, stacklevel=3)
        elif names is not None and fitted_names is not None and not np.array_equal(names, fitted_names):
            unseen = [n for n in names if n not in set(fitted_names)]
            missing = [n for n in fitted_names if n not in set(names)]
            message = "The feature names should match those that were passed during fit.\n"
            if unseen:
                message += f"Feature names unseen at fit time: {unseen[:5]}\n"
            if missing:
                message += f"Feature names seen at fit time, yet now missing: {missing[:5]}\n"
            if not unseen and not missing:
                message += "Feature names must be in the same order as they were in fit.\n"
            raise ValueError(message)
        if X.shape[1] != self.n_features_in_:
            raise ValueError(f"X has {X.shape[1]} features, but MLPClassifier is expecting {self.n_features_in_} "
                             f"features as input.")
        return X


def _check_X(X: Any) -> tuple[np.ndarray, np.ndarray | None]:
    """(X as float32 (n, features), its feature names or None), refused in scikit-learn's words."""
    if type(X).__module__.startswith("scipy.sparse"):
        raise TypeError("sparse input is not supported by MLPClassifier: pass a dense array (X.toarray())")
    names = None
    if hasattr(X, "columns") and hasattr(X, "to_numpy"):  # a pandas DataFrame, without importing pandas
        columns = list(X.columns)
        if columns and all(isinstance(c, str) for c in columns):
            names = np.asarray(columns, dtype=object)
        try:
            X = X.to_numpy(dtype=np.float64, na_value=np.nan)  # nullable Int64/Float64 columns too
        except (TypeError, ValueError) as exc:
            raise type(exc)(f"X must hold numbers: {exc}") from None
    X = np.asarray(X)
    if X.dtype == object:
        try:
            X = X.astype(np.float64)
        except (TypeError, ValueError) as exc:
            raise type(exc)(f"X must hold numbers: {exc}") from None
    if np.iscomplexobj(X):
        raise ValueError(f"Complex data not supported by MLPClassifier: X has dtype {X.dtype}")
    if X.ndim < 2:
        raise ValueError(f"Expected a 2-D array (samples, features), got a {X.ndim}-D array of shape {X.shape} "
                         "instead. Reshape your data either using array.reshape(-1, 1) if your data has a single "
                         "feature or array.reshape(1, -1) if it contains a single sample.")
    if X.ndim > 2:
        raise ValueError(f"Found array with dim {X.ndim}, while dim <= 2 is required by MLPClassifier.")
    for count, what in ((X.shape[0], "sample"), (X.shape[1], "feature")):
        if count == 0:
            raise ValueError(f"Found array with 0 {what}(s) (shape={X.shape}) while a minimum of 1 is required "
                             f"by MLPClassifier.")
    if X.dtype == np.bool_:
        X = X.astype(np.float32)
    return cast(np.ndarray, check_features(X, X.shape[1])), names  # an array in, an array out


def _check_y(y: Any, n_samples: int | None, name: str = "y") -> np.ndarray:
    """Labels as a 1-D array of n_samples; refuses continuous targets with scikit-learn's wording."""
    if y is None:
        raise ValueError(f"MLPClassifier requires {name} to be passed, but the target {name} is None.")
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] == 1 and name == "y":
        warnings.warn("A column-vector y was passed when a 1d array was expected. Please change the shape of y "
                      "to (n_samples,), for example using ravel().", _flavoured(DataConversionWarning), stacklevel=3)
        y = y.ravel()
    if y.ndim != 1:
        raise ValueError(f"{name} should be a 1d array (one label per sample), got an array of shape {y.shape} "
                         "instead.")
    if n_samples is not None and len(y) != n_samples:
        raise ValueError(f"{name} has {len(y)} labels but X has {n_samples} samples")
    values = y
    if y.dtype == object:
        if all(isinstance(v, numbers.Real) and not isinstance(v, bool) for v in y):
            values = np.asarray(y.tolist(), dtype=np.float64)
        elif not all(isinstance(v, str) for v in y):
            kinds = sorted({type(v).__name__ for v in y})
            raise ValueError(f"Unknown label type: {name} mixes {', '.join(kinds)}; labels must be all numbers or "
                             "all strings")
    if np.iscomplexobj(values):
        raise ValueError(f"Complex data not supported by MLPClassifier: {name} has dtype {values.dtype}")
    if np.issubdtype(values.dtype, np.floating):
        if not np.isfinite(values).all():
            raise ValueError(f"{name} contains NaN or inf")
        if (values != np.round(values)).any():
            raise ValueError(f"Unknown label type: continuous. MLPClassifier is a classifier, which expects discrete "
                             f"classes, and {name} holds non-integer values (a regression target?)")
    return y


def _classes(y: np.ndarray) -> np.ndarray:
    return np.unique(y)


def _encode(classes: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Class indices of the labels y; raises on a label not in classes."""
    index = np.clip(np.searchsorted(classes, y), 0, len(classes) - 1)
    unknown = classes[index] != y
    if unknown.any():
        raise ValueError(f"y holds labels not among classes_ {classes.tolist()}: {np.unique(y[unknown]).tolist()[:10]}")
    return index


def _fit_naming_our_parameters(trainer: Trainer, X: np.ndarray, y_index: np.ndarray, epochs: int,
                               verbose: bool) -> None:
    """trainer.fit, its divergence error speaking of learning_rate_init (the Trainer's is lr)."""
    try:
        trainer.fit(X, y_index, epochs=epochs, verbose=verbose)
    except TrainingDivergedError as exc:
        raise TrainingDivergedError(str(exc).replace("learning rate than", "learning_rate_init than")) from None


def _make_writable(trainer: Trainer) -> None:
    """Replace read-only parameters, velocities and moments (memory-mapped by joblib) by writable copies, in place."""
    arrays = [trainer.model.weights, trainer.model.biases]
    if trainer.velocity is not None:
        arrays += [trainer.velocity.weights, trainer.velocity.biases]
    if trainer.moments is not None:
        arrays += [trainer.moments.first.weights, trainer.moments.first.biases, trainer.moments.second.weights,
                   trainer.moments.second.biases]
    for group in arrays:
        for i, a in enumerate(group):
            if not a.flags.writeable:
                group[i] = np.array(a, dtype=np.float32, order="C")


class _TrainerState:
    """What one more epoch changes in a Trainer: parameters, velocity (or Adam's moments), shuffling state, history."""

    def __init__(self, trainer: Trainer) -> None:
        self.params = [p.copy() for p in trainer.model.weights + trainer.model.biases]
        velocity: Velocity | None = trainer.velocity
        self.velocity = None if velocity is None else [v.copy() for v in velocity.weights + velocity.biases]
        moments: AdamMoments | None = trainer.moments
        self.moments = None if moments is None else (
            [a.copy() for state in (moments.first, moments.second) for a in state.weights + state.biases], moments.step)
        self.rng_state = trainer.rng.bit_generator.state
        self.epochs = len(trainer.history)

    def restore(self, trainer: Trainer) -> None:
        for param, saved in zip(trainer.model.weights + trainer.model.biases, self.params):
            param[...] = saved
        if trainer.velocity is not None and self.velocity is not None:
            for v, saved in zip(trainer.velocity.weights + trainer.velocity.biases, self.velocity):
                v[...] = saved
        if trainer.moments is not None and self.moments is not None:
            state = trainer.moments
            current = [a for s in (state.first, state.second) for a in s.weights + s.biases]
            for a, saved in zip(current, self.moments[0]):
                a[...] = saved
            state.step = self.moments[1]
        trainer.rng.bit_generator.state = self.rng_state
        del trainer.history.epochs[self.epochs:]

