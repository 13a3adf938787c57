"""The reference backend: vectorized NumPy, float32 throughout, written to read like the maths.

For layers l = 1..L with A_0 = X:
    Z_l = A_{l-1} W_l + b_l,   A_l = relu(Z_l) for l < L,   P = softmax(Z_L)
    loss = mean_i( logsumexp(Z_L[i]) - Z_L[i, y_i] )
Backward, with dZ_L = (P - onehot(y)) / n:
    dW_l = A_{l-1}^T dZ_l,   db_l = sum_i dZ_l[i],   dZ_{l-1} = (dZ_l W_l^T) * [A_{l-1} > 0]
The SGD step, with momentum and weight decay when asked, and Adam's: see fastmlp/optim.py.

BLAS runs on as many threads as the cores other work leaves free (fastmlp/thread_policy.py),
or on `Backend(threads=N)`: alone, more threads make a step faster at any batch size; beside
other work, OpenBLAS's spinning threads made two trainings at once dozens of times slower.
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from typing import TYPE_CHECKING, Any

import numpy as np

from ..inputs import FloatArray, Pixels, check_positive_int
from ..kernels.reference import adam_update, hidden_and_logits, log_softmax, momentum_update
from ..optim import AdamMoments, Velocity
from ..runtime.thread_policy import BlasThreadPolicy
from .base import BackendBase, Labels, Progress, WholeSteps, epoch_chunks

if TYPE_CHECKING:
    from ..model import MLP


def hidden_activations(model: MLP, X: FloatArray) -> tuple[list[FloatArray], FloatArray]:
    """[X, A_1, ..., A_{L-1}] and the logits Z_L of the batch X."""
    return hidden_and_logits(model.weights, model.biases, X)


class Backend(BackendBase):
    """The reference backend. BLAS runs on `threads` threads, or (None) on the cores left free by other work."""

    name = "numpy"

    def __init__(self, threads: int | None = None) -> None:
        self.threads = None if threads is None else check_positive_int(threads, "threads")
        self._policy = BlasThreadPolicy(self.threads)

    # The single-call methods run on a fixed `threads`, else on the caller's BLAS settings: the
    # load is watched over an epoch's loop, not per call.
    def forward(self, model: MLP, X: Any) -> FloatArray:
        """Class probabilities of X through BLAS's sgemm, float32 (n, classes).

        A row's last bits may depend on its position in X and on the batch: BLAS sums a product's
        terms in an order that its edge kernels (the rows past a whole tile), its thread split and
        its kernel set (OPENBLAS_CORETYPE) choose. `MLP.predict_proba` (fastmlp.inference) gives
        every row the same bits wherever it stands.
        """
        with self._fixed_threads():
            return super().forward(model, X)

    def loss_and_grads(self, model: MLP, X: Any, y: Any) -> tuple[float, list[FloatArray], list[FloatArray]]:
        with self._fixed_threads():
            return super().loss_and_grads(model, X, y)

    def sgd_step(self, model: MLP, X: Any, y: Any, lr: float, **sgd: Any) -> float:
        with self._fixed_threads():
            return super().sgd_step(model, X, y, lr, **sgd)

    def _fixed_threads(self) -> AbstractContextManager[Any]:
        return nullcontext() if self.threads is None else self._policy.limited()

    def between_epochs(self) -> AbstractContextManager[Any]:
        """BLAS on the policy's thread count for a Trainer's evaluation, as for the epochs."""
        return self._policy.limited()

    def _forward(self, model: MLP, X: FloatArray) -> FloatArray:
        _, logits = hidden_activations(model, X)
        return np.exp(log_softmax(logits))

    def _loss_and_grads(self, model: MLP, X: FloatArray, y: Labels) -> tuple[float, list[FloatArray], list[FloatArray]]:
        n = len(X)
        activations, logits = hidden_activations(model, X)
        log_probs = log_softmax(logits)
        loss = -log_probs[np.arange(n), y].mean()

        dZ = np.exp(log_probs)
        dZ[np.arange(n), y] -= 1
        dZ /= np.float32(n)
        dW: list[Any] = [None] * len(model.weights)
        db: list[Any] = [None] * len(model.biases)
        for l in reversed(range(len(model.weights))):
            A_prev = activations[l]
            dW[l] = A_prev.T @ dZ
            db[l] = dZ.sum(axis=0)
            if l > 0:
                dZ = (dZ @ model.weights[l].T) * (A_prev > 0)
        return float(loss), dW, db

    def _sgd_step(self, model: MLP, X: FloatArray, y: Labels, lr: float, momentum: float = 0.0, nesterov: bool = False,
                  weight_decay: float = 0.0, velocity: Velocity | None = None, optimizer: str = "sgd",
                  betas: tuple[float, float] | None = None, eps: float | None = None,
                  moments: AdamMoments | None = None) -> float:
        loss, dW, db = self._loss_and_grads(model, X, y)
        lr32 = np.float32(lr)
        if moments is not None and betas is not None and eps is not None:  # sgd_options gives Adam all three
            moments.step += 1
            first, second = moments.first, moments.second
            for l, (W, b, gW, gb) in enumerate(zip(model.weights, model.biases, dW, db)):
                if optimizer == "adamw":
                    W -= lr32 * np.float32(weight_decay) * W  # decoupled: the decay is not part of the gradient
                elif weight_decay:
                    gW += np.float32(weight_decay) * W        # Adam's L2 term, as in torch.optim.Adam
                adam_update(W, first.weights[l], second.weights[l], gW, lr32, betas, eps, moments.step)
                adam_update(b, first.biases[l], second.biases[l], gb, lr32, betas, eps, moments.step)
            return loss
        for l, (W, b, gW, gb) in enumerate(zip(model.weights, model.biases, dW, db)):
            if weight_decay:
                gW += np.float32(weight_decay) * W
            if momentum and velocity is not None:  # sgd_options makes sure momentum comes with one
                momentum_update(W, velocity.weights[l], gW, lr32, momentum, nesterov)
                momentum_update(b, velocity.biases[l], gb, lr32, momentum, nesterov)
            else:
                W -= lr32 * gW
                b -= lr32 * gb
        return loss

    def _train_epoch(self, model: MLP, X: FloatArray | Pixels, y: Labels, batch_size: int, lr: float,
                     rng: np.random.Generator, progress: Progress | None = None, **sgd: Any) -> float:
        total = 0.0
        policy = self._policy
        policy.start()
        try:
            with WholeSteps() as whole:
                for chunk in epoch_chunks(rng.permutation(len(X)), batch_size, progress):
                    for start in range(0, len(chunk), batch_size):
                        policy.apply()  # other work may start or stop mid-epoch
                        batch = chunk[start : start + batch_size]
                        total += self._sgd_step(model, X[batch], y[batch], lr, **sgd) * len(batch)
                        whole.step_done()
                    if progress is not None:
                        progress(len(chunk))
        finally:
            policy.stop()
        return total / len(X)
