"""`MLPClassifier`: fastmlp behind scikit-learn's estimator conventions, without depending on scikit-learn.

The conventions kept: `__init__` stores its arguments unchanged and does nothing else
(validation happens in `fit`), `get_params`/`set_params` follow the `__init__` signature, so
`sklearn.base.clone`, grid searches and `cross_val_score` work; `fit` and `partial_fit` return
self; fitted attributes end in an underscore; labels may be any sortable values (`classes_`).
"""

import inspect
import numbers

import numpy as np

from .inputs import check_features
from .model import MLP
from .trainer import Trainer


class NotFittedError(ValueError, AttributeError):
    """The estimator is used before `fit` (the same bases as scikit-learn's NotFittedError)."""


class MLPClassifier:
    """A multilayer perceptron classifier trained with fastmlp's minibatch SGD.

    hidden_layer_sizes: widths of the ReLU hidden layers (an int for one layer);
    backend: "numba" or "numpy"; learning_rate_init: the SGD learning rate; batch_size;
    max_iter: epochs that `fit` trains (`partial_fit` trains one); random_state: None or an
    int seeding the initial weights and the shuffling; momentum, nesterov, weight_decay and
    schedule ("none", "step", "cosine") as in `fastmlp.Trainer`; init: "he" or "normal";
    verbose prints one line per epoch.

    Fitted attributes: classes_ (sorted labels), n_features_in_, model_ (the `fastmlp.MLP`),
    loss_curve_ (train loss per epoch), n_iter_ (epochs trained).
    """

    _estimator_type = "classifier"  # how scikit-learn < 1.6 recognises a classifier

    def __init__(self, hidden_layer_sizes=(128, 64), *, backend="numba", learning_rate_init=0.1, batch_size=32,
                 max_iter=10, random_state=None, momentum=0.0, nesterov=False, weight_decay=0.0, schedule="none",
                 init="he", verbose=False):
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

    # --- parameters --------------------------------------------------------------------------

    @classmethod
    def _param_names(cls):
        return sorted(name for name in inspect.signature(cls.__init__).parameters if name != "self")

    def get_params(self, deep=True):
        """The `__init__` arguments as a dict (deep is accepted for scikit-learn; nothing is nested)."""
        return {name: getattr(self, name) for name in self._param_names()}

    def set_params(self, **params):
        """Set `__init__` arguments by name; returns self. Takes effect at the next `fit`."""
        valid = self._param_names()
        for name, value in params.items():
            if name not in valid:
                raise ValueError(f"invalid parameter {name!r} for MLPClassifier; valid parameters: {', '.join(valid)}")
            setattr(self, name, value)
        return self

    def __repr__(self):
        defaults = {name: p.default for name, p in inspect.signature(type(self).__init__).parameters.items()}
        changed = [f"{name}={value!r}" for name, value in self.get_params().items() if repr(value) != repr(defaults[name])]
        return f"MLPClassifier({', '.join(changed)})"

    def __sklearn_tags__(self):
        # Only scikit-learn (>= 1.6) calls this, so it is already imported; fastmlp never needs it.
        from sklearn.utils import ClassifierTags, Tags, TargetTags

        return Tags(estimator_type="classifier", target_tags=TargetTags(required=True),
                    classifier_tags=ClassifierTags())

    # --- training ----------------------------------------------------------------------------

    def fit(self, X, y):
        """Train a new network for max_iter epochs on (X, y); returns self."""
        X = _as_2d(X)
        y = _as_labels(y, len(X))
        self._start(np.unique(y), X.shape[1])
        self._train(X, self._encode(y), self.max_iter)
        return self

    def partial_fit(self, X, y, classes=None):
        """Train one epoch on (X, y), continuing from the previous call; returns self.

        The first call needs `classes`, every label that will ever be seen.
        """
        X = _as_2d(X)
        y = _as_labels(y, len(X))
        if not hasattr(self, "classes_"):
            if classes is None:
                raise ValueError("classes must be given on the first call to partial_fit: every label to expect")
            self._start(np.unique(_as_labels(classes, None, "classes")), X.shape[1])
        elif classes is not None and not np.array_equal(np.unique(np.asarray(classes)), self.classes_):
            raise ValueError(f"classes {np.unique(np.asarray(classes)).tolist()} differ from those of the first "
                             f"call to partial_fit, {self.classes_.tolist()}")
        self._train(X, self._encode(y), 1)
        return self

    def _start(self, classes, n_features):
        """A fresh network and trainer for these classes and features."""
        if len(classes) < 2:
            raise ValueError(f"a classifier needs at least 2 classes, got {classes.tolist()}")
        hidden = self.hidden_layer_sizes
        hidden = [hidden] if isinstance(hidden, numbers.Integral) else list(hidden)
        seed = self.random_state
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0):
            raise ValueError(f"random_state must be None or an int >= 0, got {seed!r}")
        model = MLP([n_features, *hidden, len(classes)], init=self.init, seed=seed)
        self._trainer = Trainer(model, self.backend, lr=self.learning_rate_init, batch_size=self.batch_size,
                                seed=seed, momentum=self.momentum, nesterov=self.nesterov,
                                weight_decay=self.weight_decay, schedule=self.schedule)
        self.classes_ = classes
        self.n_features_in_ = n_features
        self.model_ = model

    def _train(self, X, y_index, epochs):
        X = check_features(X, self.n_features_in_)
        self._trainer.fit(X, y_index, epochs=epochs, verbose=bool(self.verbose))
        self.loss_curve_ = self._trainer.history.column("train_loss")
        self.n_iter_ = len(self.loss_curve_)

    def _encode(self, y):
        """Class indices of the labels y; raises on a label not in classes_."""
        index = np.clip(np.searchsorted(self.classes_, y), 0, len(self.classes_) - 1)
        unknown = self.classes_[index] != y
        if unknown.any():
            raise ValueError(f"y holds labels not among classes_ {self.classes_.tolist()}: "
                             f"{np.unique(y[unknown]).tolist()[:10]}")
        return index

    # --- prediction --------------------------------------------------------------------------

    def predict_proba(self, X):
        """Class probabilities, float32 (n, len(classes_)), columns in the order of classes_."""
        if not hasattr(self, "model_"):
            raise NotFittedError("this MLPClassifier is not fitted yet: call fit or partial_fit first")
        return self.model_.predict_proba(check_features(_as_2d(X), self.n_features_in_))

    def predict(self, X):
        """The most probable label of each row of X."""
        index = self.predict_proba(X).argmax(axis=1)
        return self.classes_[index]

    def score(self, X, y, sample_weight=None):
        """Mean accuracy of predict(X) against y (weighted by sample_weight if given)."""
        X = _as_2d(X)
        return float(np.average(self.predict(X) == _as_labels(y, len(X)), weights=sample_weight))


def _as_2d(X):
    X = np.asarray(X)
    if X.ndim != 2:
        raise ValueError(f"X must be 2-D (samples, features), got shape {X.shape}")
    return X


def _as_labels(y, n_samples, name="y"):
    y = np.asarray(y)
    if y.ndim != 1:
        raise ValueError(f"{name} must be 1-D (one label per sample), got shape {y.shape}")
    if n_samples is not None and len(y) != n_samples:
        raise ValueError(f"{name} has {len(y)} labels but X has {n_samples} samples")
    return y
