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
    export_onnx         write a model as an ONNX graph (the onnx extra)
    tabular             CSV / .npz data files: load_table, load_features (fastmlp.datasets.tabular)

kernels, checked_kernels, testing and export_onnx load at their first use (`fastmlp.kernels.X`
works after `import fastmlp`), so that `import fastmlp` compiles and imports no more than it needs.
"""

import importlib
from typing import Any

from . import datasets
from ._version import __version__
from .backends import BackendError, available_backends, get_backend
from .estimator import MLPClassifier
from .inputs import Pixels
from .model import MLP, ModelFileError
from .trainer import History, Trainer, TrainingDivergedError

__all__ = [
    "MLP", "MLPClassifier", "ModelFileError", "Trainer", "History", "TrainingDivergedError", "Pixels",
    "get_backend", "available_backends", "BackendError", "datasets", "__version__",
    "export_onnx",
]

# Loaded at first use: importing them pulls in Numba's compiled kernels (or onnx), which `import fastmlp`
# alone does not need.
_LAZY_MODULES = {"kernels": "kernels", "checked_kernels": "checked_kernels", "testing": "testing",
                 "tabular": "datasets.tabular"}


def __getattr__(name: str) -> Any:
    if name in _LAZY_MODULES:
        return importlib.import_module(f"{__name__}.{_LAZY_MODULES[name]}")  # the import also sets it as an attribute
    if name == "export_onnx":
        from .cli.export import export_onnx

        return export_onnx
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
