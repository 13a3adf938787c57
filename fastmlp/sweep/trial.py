"""What a Dask worker runs for `python -m fastmlp.sweep`: one trial, one configuration trained and evaluated.

A worker process keeps what every trial would otherwise redo: the dataset, loaded once per
process from the source the sweep names (the same folder, the embedded copy or the cache on
every machine; nothing is shipped from the client), and the compiled kernels (`warm_up` once per
backend and net depth). A trial trains on one thread: a Dask worker runs one trial per worker
thread, so one single-threaded worker per core keeps every core busy without oversubscription.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
from threadpoolctl import threadpool_limits

from ..backends import get_backend
from ..datasets import Labels, load_mnist, train_val_split
from ..inputs import Pixels
from ..model import MLP
from ..trainer import Trainer

if TYPE_CHECKING:
    from distributed import Worker

    from .grid import Config

TRIAL_STARTED = "fastmlp-sweep-trial-started"  # the Dask event topic a trial logs as it starts
N_CLASSES = 10  # as fastmlp.train: every dataset it loads has ten classes

Source = dict[str, Any]  # {"dataset", "data_dir", "download"}: where every worker finds the data
Data = tuple[Pixels, Labels, Pixels, Labels]  # X_train, y_train, X_test, y_test

# (dataset, data_dir, download) -> (X_train, y_train, X_test, y_test) of this process
_datasets: dict[tuple[str, str | None, bool], Data] = {}
_compiled: set[tuple[str, int]] = set()  # (backend, depth) warmed up in this process


def run_trial(key: str, config: Config, source: Source, *, keep_model: bool = False,
              keep_probabilities: bool = False) -> dict[str, Any]:
    """Train `config` on the data of `source`; return its result dict, never raising for the trial's own errors.

    config: the training options of one trial (the `dest` names of `fastmlp.train`'s options);
    source: {"dataset", "data_dir", "download"}. The result has status "ok" (accuracies, losses,
    seconds; the MLP as "model" with keep_model, the test probabilities with keep_probabilities)
    or "failed" with `error`, the exception on one line. Worker loss is not caught here: Dask
    reruns the trial elsewhere, and the start event of each attempt lets the client count them.
    """
    worker = _current_worker()
    if worker is not None:
        worker.log_event(TRIAL_STARTED, {"key": key, "worker": worker.address, "pid": os.getpid()})
    result: dict[str, Any] = {"worker": worker.address if worker is not None else None, "loaded_data": False,
                              "compile_s": None}
    try:
        data, result["loaded_data"] = _dataset(source)
        with threadpool_limits(1, user_api="blas"):
            result.update(_train(config, data, result, keep_model, keep_probabilities))
        result["status"] = "ok"
    except Exception as exc:
        result.update(status="failed", error=one_line_error(exc))
    return result


def ensemble_accuracy(source: Source, probabilities: Sequence[npt.NDArray[np.float32]]) -> float:
    """Test accuracy of the mean of several trials' test probabilities (each float32 (n_test, classes))."""
    (_, _, _, y_test), _ = _dataset(source)
    mean = np.mean(probabilities, axis=0)
    return float((mean.argmax(axis=1) == y_test).mean())


def one_line_error(exc: BaseException) -> str:
    """'Type: message' on one line, as the sweep's table and JSON show a failed trial."""
    return f"{type(exc).__name__}: {' '.join(str(exc).split())}"


def _train(config: Config, data: Data, result: dict[str, Any], keep_model: bool,
           keep_probabilities: bool) -> dict[str, Any]:
    X_train, y_train, X_test, y_test = data
    val_size = config["val_size"]
    if val_size > 0:
        X_train, y_train, X_val, y_val = train_val_split(X_train, y_train, val_size, config["seed"])
    model = MLP([X_train.shape[1], *config["hidden"], N_CLASSES], init=config["init"], seed=config["seed"])
    backend = get_backend(config["backend"])
    if (config["backend"], len(model.layer_sizes)) not in _compiled:
        result["compile_s"] = backend.warm_up(model, pixels=True)
        _compiled.add((config["backend"], len(model.layer_sizes)))
    trainer = Trainer(model, backend, lr=config["lr"], batch_size=config["batch_size"], seed=config["seed"],
                      momentum=config["momentum"], nesterov=config["nesterov"],
                      weight_decay=config["weight_decay"], schedule=config["schedule"],
                      step_size=config["step_size"], gamma=config["gamma"],
                      optimizer=config.get("optimizer", "sgd"))  # older sweeps' JSON has no optimizer: SGD
    history = trainer.fit(X_train, y_train, epochs=config["epochs"],
                          validation_data=(X_val, y_val) if val_size > 0 else None, patience=config["patience"])
    test_loss, test_accuracy = trainer.evaluate(X_test, y_test)
    metrics: dict[str, Any] = {"test_accuracy": test_accuracy, "test_loss": test_loss,
               "val_accuracy": None, "val_loss": None,
               "train_s": sum(history.column("seconds")), "epochs_trained": len(history),
               "best_epoch": history.best_epoch, "error": None}
    if val_size > 0:
        metrics["val_loss"], metrics["val_accuracy"] = trainer.evaluate(X_val, y_val)
    if keep_model:
        metrics["model"] = model
    if keep_probabilities:
        metrics["test_probabilities"] = model.predict_proba(X_test)
    return metrics


def _dataset(source: Source) -> tuple[Data, bool]:
    """(the four arrays, whether this call loaded them): loaded on a process's first call, then kept."""
    key = (source["dataset"], source["data_dir"], source["download"])
    if key in _datasets:
        return _datasets[key], False
    _datasets[key] = load_mnist(source["data_dir"], download=source["download"], dataset=source["dataset"],
                                as_pixels=True, progress=False)
    return _datasets[key], True


def _current_worker() -> Worker | None:
    """The Dask worker running this call, or None outside one (a trial run directly, as in a debugger)."""
    try:
        from distributed import get_worker

        return get_worker()
    except (ImportError, ValueError):
        return None

