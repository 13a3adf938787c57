"""PyTorch CPU as a yardstick: the same net, weights and batches, a plain float32 training loop."""

import importlib.util

from ..backends.base import BackendBase
from ..inputs import Pixels


class TorchBackend(BackendBase):
    """PyTorch CPU as a yardstick: a plain float32 autograd + `torch.optim.SGD` loop (momentum and weight decay too),
    or `torch.optim.Adam` / `AdamW` for optimizer="adam" / "adamw".

    Its parameters are `torch.from_numpy` views of the model's own arrays, so it trains the
    model in place exactly like the fastmlp backends, from the same weights, in the same batch
    order (`rng.permutation`). Only the benchmark uses it; torch is imported on construction.
    """

    name = "torch"

    def __init__(self, threads):
        import torch

        self.torch = torch
        torch.set_num_threads(threads)

    def _params(self, model):
        return [self.torch.from_numpy(a).requires_grad_() for pair in zip(model.weights, model.biases) for a in pair]

    def _logits(self, params, A):
        torch = self.torch
        for W, b in zip(params[0:-2:2], params[1:-2:2]):
            A = torch.relu(torch.addmm(b, A, W))
        return torch.addmm(params[-1], A, params[-2])

    def _step(self, optimizer, params, A, labels):
        loss = self.torch.nn.functional.cross_entropy(self._logits(params, A), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        return loss.item()

    def _forward(self, model, X):
        with self.torch.no_grad():
            return self.torch.softmax(self._logits(self._params(model), self.torch.from_numpy(X)), dim=1).numpy()

    def _loss_and_grads(self, model, X, y):
        params = self._params(model)
        loss = self.torch.nn.functional.cross_entropy(self._logits(params, self.torch.from_numpy(X)),
                                                      self.torch.from_numpy(y))
        loss.backward()
        grads = [p.grad.numpy() for p in params]
        return loss.item(), grads[0::2], grads[1::2]

    def _optimizer(self, params, lr, momentum=0.0, nesterov=False, weight_decay=0.0, velocity=None, optimizer="sgd",
                   betas=None, eps=None, moments=None):
        """`torch.optim.SGD` over params; with momentum, its buffers are views of the fastmlp Velocity
        (torch's form v = mu v + g, W -= lr v: the same steps as fastmlp's at a constant lr).
        Adam / AdamW: torch's moments are views of the fastmlp AdamMoments, its step count from it.
        weight_decay applies to the weights alone (torch's default would decay the biases too)."""
        groups = [{"params": params[0::2]}, {"params": params[1::2], "weight_decay": 0.0}]
        if moments is not None:
            kind = self.torch.optim.AdamW if optimizer == "adamw" else self.torch.optim.Adam
            adam = kind(groups, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay)
            first = [a for pair in zip(moments.first.weights, moments.first.biases) for a in pair]
            second = [a for pair in zip(moments.second.weights, moments.second.biases) for a in pair]
            for p, m, s in zip(params, first, second):
                adam.state[p] = {"step": self.torch.tensor(float(moments.step)), "exp_avg": self.torch.from_numpy(m),
                                 "exp_avg_sq": self.torch.from_numpy(s)}
            return adam
        optimizer = self.torch.optim.SGD(groups, lr=lr, momentum=momentum, nesterov=nesterov,
                                         weight_decay=weight_decay)
        if velocity is not None:
            buffers = [b for pair in zip(velocity.weights, velocity.biases) for b in pair]
            for p, buffer in zip(params, buffers):
                optimizer.state[p]["momentum_buffer"] = self.torch.from_numpy(buffer)
        return optimizer

    def _sgd_step(self, model, X, y, lr, **sgd):
        params = self._params(model)
        optimizer = self._optimizer(params, lr, **sgd)
        loss = self._step(optimizer, params, self.torch.from_numpy(X), self.torch.from_numpy(y))
        if sgd.get("moments") is not None:
            sgd["moments"].step += 1
        return loss

    def _train_epoch(self, model, X, y, batch_size, lr, rng, progress=None, **sgd):
        torch = self.torch
        params = self._params(model)
        optimizer = self._optimizer(params, lr, **sgd)
        data = torch.from_numpy(X.data if isinstance(X, Pixels) else X)
        labels = torch.from_numpy(y)
        order = torch.from_numpy(rng.permutation(len(y)))
        total = 0.0
        for start in range(0, len(order), batch_size):
            rows = order[start : start + batch_size]
            A = data[rows]
            if isinstance(X, Pixels):  # the scale applied at the gather, as Pixels[rows] does
                A = A.to(torch.float32).mul_(X.scale)
            total += self._step(optimizer, params, A, labels[rows]) * len(rows)
        if progress is not None:
            progress(len(y))
        if sgd.get("moments") is not None:
            sgd["moments"].step += len(range(0, len(order), batch_size))
        return total / len(y)


def torch_available():
    """Whether PyTorch can be imported here (checked without importing it)."""
    return importlib.util.find_spec("torch") is not None
