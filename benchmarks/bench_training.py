"""Training on the embedded MNIST (never the network): throughput per backend and batch size, peak memory."""

from fastmlp import MLP, Pixels, Trainer
from fastmlp.bench import BATCH_SIZES, LAYER_SIZES, LR, load_data


def _warm_trainer(backend, batch_size, X, y):
    """A Trainer whose backend has compiled and run a short epoch, so that a timed epoch pays neither."""
    n = 2 * batch_size
    Trainer(MLP(LAYER_SIZES, seed=0), backend, lr=LR, batch_size=batch_size).fit(
        Pixels(X.data[:n], X.scale), y[:n], epochs=1)
    return Trainer(MLP(LAYER_SIZES, seed=0), backend, lr=LR, batch_size=batch_size, seed=0)


class Throughput:
    """Samples/s of one epoch over the 60,000 training images (uint8 Pixels, as the CLI trains)."""

    params = [["numpy", "numba"], list(BATCH_SIZES)]
    param_names = ["backend", "batch_size"]
    timeout = 120

    def setup(self, backend, batch_size):
        self.X, self.y = load_data()
        self.trainer = _warm_trainer(backend, batch_size, self.X, self.y)

    def track_samples_per_s(self, backend, batch_size):
        return self.trainer.fit(self.X, self.y, epochs=1)[-1].samples_per_s

    track_samples_per_s.unit = "samples/s"


class EpochMemory:
    """Peak RSS of a process that loads MNIST and trains one epoch at batch 1024 (the most scratch memory)."""

    params = [["numpy", "numba"]]
    param_names = ["backend"]
    timeout = 120

    def setup(self, backend):
        self.X, self.y = load_data()
        self.trainer = _warm_trainer(backend, 1024, self.X, self.y)

    def peakmem_train_epoch(self, backend):
        self.trainer.fit(self.X, self.y, epochs=1)
