"""fastmlp: NumPy and Numba kernels for training multilayer perceptrons on the CPU.

Public API:
    MLP                 parameters, predict, save/load          (fastmlp.model)
    Trainer, History    shuffled minibatch SGD or Adam over epochs  (fastmlp.trainer)
    MLPClassifier       a scikit-learn style estimator          (fastmlp.estimator)
    get_backend, available_backends   "numpy" reference and "numba" fused kernels
    Pixels              uint8 images scaled during the batch gather
    datasets            IDX loading, embedded MNIST, verified download
    kernels             public @njit kernels (import fastmlp.kernels)
    checked_kernels     the same kernels for Python callers, arguments checked
    testing             backend equivalence helpers (import fastmlp.testing)
"""

from ._version import __version__

from . import datasets
from .backends import BackendError, available_backends, get_backend
from .estimator import MLPClassifier
from .inputs import Pixels
from .model import MLP, ModelFileError
from .trainer import History, Trainer, TrainingDivergedError

__all__ = [
    "MLP", "MLPClassifier", "ModelFileError", "Trainer", "History", "TrainingDivergedError", "Pixels",
    "get_backend", "available_backends", "BackendError", "datasets", "__version__",
]
