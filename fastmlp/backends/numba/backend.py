"""The numba backend: fastmlp's own SIMD kernels (fastmlp.kernels.packed) run whole epochs in nopython code.

    step     the step and the epoch in nopython code, and the design of a step on several workers
    batch    one batch outside an epoch: its logits, probabilities, loss and gradients
    layer1   layer 1's sum over k in two parts, as every training step computes it (split by k on two workers)
    buffers  the packed parameters and a batch's scratch arrays
    pixels   float32 inputs that are bytes times 1/255, trained on as those bytes
    threads  how many workers an epoch runs on, and how they run it
    timeline where a step's time goes inside the epoch (StepTimeline: the cycle counter at its phases)
    backend  the Backend: packs, runs, unpacks, and serialises its callers (this module)

One instance may be used by many threads at once: `forward` (fastmlp.inference) and
`loss_and_grads` share no buffer, and `sgd_step` / `train_epoch` take turns on the instance's
packed buffers and workspaces (`_epoch_lock`), so each call computes what it would alone.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

from ...inference import probabilities
from ...inference.threads import run_parts
from ...inputs import FloatArray, Pixels, check_positive_int
from ...kernels.packed import ADAM, ADAMW, MOMENTUM, NESTEROV, PANEL_WIDTH, PLAIN_SGD, unpack_weights_into  # noqa: F401
from ...runtime.barrier import barrier_aborted, barrier_state
from ...runtime.blas_threads import single_threaded_blas, usable_cpus
from ...runtime.thread_policy import CpuLoad, free_cores, others_running
from ..base import BackendBase, Labels, Progress, WholeSteps
from . import threads as threads_module
from .batch import forward_logits_inplace, forward_probs_inplace, loss_and_grads_into  # noqa: F401
from .buffers import _Packed, _Workspace, activation_buffer, packed_weights, upper_copies
from .pixels import PIXEL_EPOCHS, exact_pixels
from .step import part_of, step_worker, train_batches_worker  # noqa: F401
from .threads import LOAD_WINDOW_SECONDS, epoch_workers, run_chunks, run_workers, step_splits, training_threads
from .timeline import EpochShape, StepTimeline

if TYPE_CHECKING:
    from ...model import MLP
    from ...optim import AdamMoments, Velocity

T = TypeVar("T")

_MAX_WORKSPACES = 4
# An evaluation's forward (`_evaluation_logits`) takes this many rows at a time: a block of float32 inputs (784
# wide: 0.8 MB) stays in L2 for layer 0's panels, and Pixels are converted a block at a time, as the forward reads
# them.
EVALUATION_ROWS = 256


def _logits_part_into(logits: FloatArray, X: FloatArray | Pixels, sizes: tuple[int, ...],
                      packed: tuple[FloatArray, ...], biases: tuple[FloatArray, ...], r0: int, r1: int) -> bool:
    """logits[r0:r1] = the logits of X[r0:r1], EVALUATION_ROWS rows at a time through activation buffers of this
    call's own (Pixels converted to float32 a block at a time, as the forward reads them). Releases the GIL
    in the forward: `Backend._evaluation_logits` runs its parts on threads at once."""
    rows = min(EVALUATION_ROWS, r1 - r0)
    acts = tuple(activation_buffer(sizes, l, rows) for l in range(len(biases)))
    for start in range(r0, r1, rows):
        x = X[start : min(start + rows, r1)]  # Pixels: these rows as float32
        forward_logits_inplace(packed, biases, x, acts)
        logits[start : start + len(x)] = acts[-1][: len(x)]
    return True


class Backend(BackendBase):
    """The fused backend. `train_epoch` runs on up to `threads` worker threads (default `training_threads()`).

    The workers are fastmlp's own threads: no BLAS runs in a step. Without `threads`, an epoch
    also uses no more workers than the cores that other processes left free during the last one
    (`_free_threads`). Their number is also capped by `epoch_workers` (MIN_ROWS_PER_WORKER rows
    of a batch each, MIN_FLOPS_PER_WORKER of a step each), so more cores than a batch can use
    leave the extra ones idle rather than slowing every step. Results depend on the worker count
    (the order of float32 sums), never on timing: the same count gives bit-identical runs, and a
    fixed `threads` gives the same bits under any load.

    `timeline`: a `StepTimeline` (fastmlp/backends/numba/timeline.py) that the epochs stamp their steps into,
    phase by phase and worker by worker, or None (the default) for none; it never changes the results.
    """

    name = "numba"

    def __init__(self, threads: int | None = None) -> None:
        if threads is not None:
            threads = check_positive_int(threads, "threads")
        self.threads = threads
        self._workspaces: OrderedDict[tuple[tuple[int, ...], int], _Workspace] = OrderedDict()
        self._packed: OrderedDict[tuple[int, ...], _Packed] = OrderedDict()
        self._epoch_lock = threading.Lock()  # one epoch at a time: the workers share the workspace
        self._load: CpuLoad | None = None  # the CPU load during epochs, read by `_free_threads` when threads is None
        self._free_cores: int | None = None
        self._evaluation_threads: int | None = None  # the threads the last epoch could use (before its batch's cap)
        self.timeline: StepTimeline | None = None

    @staticmethod
    def _cached(cache: OrderedDict[Any, T], key: Any, make: Callable[[], T]) -> T:
        value = cache.get(key)
        if value is None:
            value = cache[key] = make()
            while len(cache) > _MAX_WORKSPACES:
                cache.popitem(last=False)
        else:
            cache.move_to_end(key)
        return value

    def _workspace(self, layer_sizes: Sequence[int], rows: int) -> _Workspace:
        return self._cached(self._workspaces, (tuple(layer_sizes), rows), lambda: _Workspace(layer_sizes, rows))

    def _packed_params(self, model: MLP, velocity: Velocity | None = None,
                       moments: AdamMoments | None = None) -> _Packed:
        """The model's parameters packed (see `_Packed`), loaded from the model now; under `_epoch_lock` only."""
        packed = self._cached(self._packed, tuple(model.layer_sizes), lambda: _Packed(model.layer_sizes))
        packed.load(model, velocity, moments)
        return packed

    def _forward(self, model: MLP, X: FloatArray) -> FloatArray:
        # Straight off model.weights (the same bits as the packed forward_probs_inplace): nothing shared.
        probs = probabilities(model.weights, model.biases, X)
        assert probs is not None  # None only for NaN or inf, which the public method has refused
        return probs

    def _evaluation_logits(self, model: MLP, X: FloatArray | Pixels) -> FloatArray:
        """The logits of X's rows through the training forward tiles (the bits of `forward` before its softmax),
        off packed copies of the model's weights made for this call: no buffer of an epoch is touched, so no lock
        is taken. No BLAS: a Trainer's evaluation between two epochs leaves no BLAS thread spinning into the next
        one. The rows are cut into parts of whole EVALUATION_ROWS blocks, one a thread (`threads`, else as many
        as the last epoch could use, at most the usable CPUs), the first on the calling thread; the parts meet only
        at the end (no barrier, nothing spins), and a row's logits do not depend on the cut."""
        sizes = model.layer_sizes
        packed, biases = packed_weights(model), tuple(model.biases)
        logits = np.empty((len(X), sizes[-1]), dtype=np.float32)
        blocks = -(-len(X) // EVALUATION_ROWS)
        cpus = usable_cpus()
        parts = min(blocks, cpus, self.threads or self._evaluation_threads or cpus)
        cuts = [min(len(X), blocks * p // parts * EVALUATION_ROWS) for p in range(parts + 1)]
        run_parts(_logits_part_into, [(logits, X, sizes, packed, biases, cuts[p], cuts[p + 1]) for p in range(parts)])
        return logits

    def _loss_and_grads(self, model: MLP, X: FloatArray, y: Labels) -> tuple[float, list[FloatArray], list[FloatArray]]:
        packed = _Packed(model.layer_sizes)  # its own: the call allocates its gradients anyway
        packed.load(model, None)
        ws = _Workspace(model.layer_sizes, len(X))
        grads = tuple(np.zeros_like(P) for P in packed.weights)
        db = [np.empty_like(b) for b in model.biases]
        loss = loss_and_grads_into(packed.weights, packed.transposed, tuple(model.biases), X, y, ws.acts, ws.deltas,
                                   grads, tuple(db))
        dW = [np.empty_like(W) for W in model.weights]
        for W, G in zip(dW, grads):
            unpack_weights_into(W, G)
        return float(loss), dW, db

    @staticmethod
    def _update_rule(model: MLP, packed: _Packed, momentum: float | None, nesterov: bool, velocity: Velocity | None,
                     optimizer: str = "sgd", betas: tuple[float, float] | None = None, eps: float | None = None,
                     moments: AdamMoments | None = None) -> tuple[Any, ...]:
        """The rule and its state for the step: (rule, velocity_w, velocity_b, second_w, second_b, momentum
        or beta1, beta2, eps, Adam's step count so far). Slots a rule never reads hold the parameters."""
        weights, biases = packed.weights, tuple(model.biases)
        if optimizer in ("adam", "adamw"):
            assert moments is not None and betas is not None and eps is not None  # the public methods check them
            return (ADAMW if optimizer == "adamw" else ADAM, packed.velocity(), tuple(moments.first.biases),
                    packed.second_moments(), tuple(moments.second.biases), np.float32(betas[0]), np.float32(betas[1]),
                    np.float32(eps), moments.step)
        zero = np.float32(0.0)
        if not momentum:
            return PLAIN_SGD, weights, biases, weights, biases, zero, zero, zero, 0
        assert velocity is not None  # the public methods make one for momentum
        return (NESTEROV if nesterov else MOMENTUM, packed.velocity(), tuple(velocity.biases), weights, biases,
                np.float32(momentum), zero, zero, 0)

    def _sgd_step(self, model: MLP, X: FloatArray, y: Labels, lr: float, momentum: float | None = None,
                  nesterov: bool = False, weight_decay: float = 0.0, velocity: Velocity | None = None,
                  optimizer: str = "sgd", betas: tuple[float, float] | None = None, eps: float | None = None,
                  moments: AdamMoments | None = None) -> float:
        with self._epoch_lock:
            ws = self._workspace(model.layer_sizes, len(X))
            packed = self._packed_params(model, velocity, moments)
            (rule, velocity_w, velocity_b, second_w, second_b, mu, beta2, eps32,
             steps) = self._update_rule(model, packed, momentum, nesterov, velocity, optimizer, betas, eps, moments)
            ws.labels[:] = y
            try:
                loss, _ = step_worker(0, 1, barrier_state(), packed.weights, packed.transposed, velocity_w,
                                      tuple(model.biases), velocity_b, X, ws.labels, len(X), np.float32(lr), mu,
                                      np.float32(weight_decay), rule, ws.acts, ws.deltas, ws.db, second_w, second_b,
                                      beta2, eps32, steps + 1, ws.delta_panels, None, ws.layer1_halves)
            finally:
                packed.store(model, velocity if rule in (MOMENTUM, NESTEROV) else None, moments)
                if moments is not None:
                    moments.step += 1
        return float(loss) / len(X)

    def _train_epoch(self, model: MLP, X: FloatArray | Pixels, y: Labels, batch_size: int, lr: float,
                     rng: np.random.Generator, progress: Progress | None = None, **sgd: Any) -> float:
        return self._epoch(model, X, y, batch_size, lr, rng, progress, **sgd)

    def _epoch(self, model: MLP, X: FloatArray | Pixels, y: Labels, batch_size: int, lr: float,
               rng: np.random.Generator, progress: Progress | None = None, momentum: float | None = None,
               nesterov: bool = False, weight_decay: float = 0.0, velocity: Velocity | None = None,
               optimizer: str = "sgd", betas: tuple[float, float] | None = None, eps: float | None = None,
               moments: AdamMoments | None = None) -> float:
        if isinstance(X, Pixels):
            data, scale = X.data, np.float32(X.scale)
        else:
            data, scale = X, np.float32(1.0)  # x * 1.0f is exact: one gather kernel serves both
        rows = min(batch_size, len(data))
        order = rng.permutation(len(data))
        with self._epoch_lock:  # _free_threads' readings are the instance's too
            self._evaluation_threads = self.threads or self._free_threads()
            workers = epoch_workers(self._evaluation_threads, rows, model.layer_sizes)
            ws = self._workspace(model.layer_sizes, rows)
            packed = self._packed_params(model, velocity, moments)
            (rule, velocity_w, velocity_b, second_w, second_b, mu, beta2, eps32,
             steps) = self._update_rule(model, packed, momentum, nesterov, velocity, optimizer, betas, eps, moments)
            biases = tuple(model.biases)
            # Each worker's parameters: the model's (packed), or with the upper layers replicated, for workers
            # 1.. copies of them past layer 0 (worker 0's are the ones unpacked into the model).
            split_key = (tuple(model.layer_sizes), rows, workers, data.dtype.str, rule)  # what sets their speeds
            splits = step_splits(workers, rows, model.layer_sizes, data.shape[1] * data.itemsize)
            split = threads_module.SPLITS.next_split(split_key, splits)
            replicated = split.replicated
            inputs = ws.inputs_for(workers, split.private_inputs)
            state = (packed.weights, packed.transposed, velocity_w, biases, velocity_b, second_w, second_b)
            # Replicated on two workers, layer 1 is split by k instead (step.py's module doc): W_1, W_1.T and their
            # velocity or moments shared, each worker updating the rows that match its panels of W_0; b_1 and the
            # layers above copied.
            layer1_by_k = threads_module.layer1_split_by_k(replicated, workers)
            first_copied = (2, 2, 2, 1, 1, 2, 1) if layer1_by_k else (1,) * len(state)  # weights from W_2, biases b_1
            states: list[tuple[Any, ...]] = [state]
            for _ in range(1, workers):
                copies: dict[int, FloatArray] = {}
                states.append(tuple(upper_copies(arrays, copies, first) if replicated else arrays
                                    for arrays, first in zip(state, first_copied)))
            spaces = ws.worker_workspaces(workers) if replicated else [ws] * workers
            timeline = self.timeline
            stamps = None if timeline is None else timeline.start(
                EpochShape(batch_size, workers, replicated, split.private_inputs), -(-len(order) // batch_size))

            done = [0]  # the end of worker 0's last range of steps, all of them taken

            def run(t: int, begin: int, end: int) -> float:
                weights, transposed, vel_w, own_biases, vel_b, sec_w, sec_b = states[t]
                space = spaces[t]
                total = train_batches_worker(
                    t, workers, barrier, weights, transposed, vel_w, own_biases, vel_b, data, scale, y, order, begin,
                    end, batch_size, np.float32(lr), mu, np.float32(weight_decay), rule, inputs, space.acts,
                    space.deltas, space.db, space.labels, sec_w, sec_b, beta2, eps32, steps + 1, space.delta_panels,
                    space.acts_odd() if replicated else space.acts, replicated, stamps,
                    ws.layer1_halves if layer1_by_k else space.layer1_halves, layer1_by_k)
                if t == 0 and not barrier_aborted(barrier):  # a range cut short (a worker failed) is not counted
                    done[0] = end
                    whole.step_done()  # a Ctrl-C that came meanwhile: raised once its steps are counted
                return total

            barrier = barrier_state()
            load = self._load if self.threads is None else None  # other work counted while the epoch runs
            if load is not None:
                load.resume()
            try:
                with WholeSteps() as whole:
                    if workers == 1:
                        total = run_chunks(run, len(order), batch_size, progress, barrier)
                    else:
                        began = time.perf_counter()
                        total = run_workers(run, workers, len(order), batch_size, progress, barrier)
                        seconds = time.perf_counter() - began
                        threads_module.SPLITS.record(split_key, split, seconds / len(order), len(splits), seconds)
            finally:
                if load is not None:
                    load.pause()
                if timeline is not None:
                    timeline.stop()
                packed.store(model, velocity if rule in (MOMENTUM, NESTEROV) else None, moments)
                if moments is not None:  # the steps taken: an interrupted epoch stops between ranges
                    moments.step += -(-done[0] // batch_size)
            return total / len(data)

    def _free_threads(self) -> int:
        """`training_threads()`, but no more than the cores other work leaves free.

        Two workers that meet at a barrier twice a step wait for each other's time slice
        when another process holds one of the two cores (several times as long as alone beside a
        CPU-bound process; docs/results.md); one worker per free core shares fairly. Two
        readings: until a first window has passed, the threads of other processes runnable as
        the epoch starts (a short training sees the job beside it at once); then the cores they
        kept busy over the last LOAD_WINDOW_SECONDS of this backend's epochs (which also sees one
        that runs now and then). The time between epochs is left out: work that runs only while
        ours waits (another process's epochs taking turns with ours) takes no core from them.
        The window's reading is renewed at most
        once a window: /proc/stat counts in 10 ms ticks, and over one 0.1 s epoch it misjudged an
        idle machine as a third busy.
        """
        if self._load is None:
            self._load, self._free_cores = CpuLoad(paused=True), None  # watched while epochs run (`_epoch`)
        load = self._load
        if load.watched_seconds() >= LOAD_WINDOW_SECONDS:
            # A core counts as taken once others keep it busy half the time: on an idle VM,
            # interrupts and steal time read as a fraction of a core, and numpy's stricter
            # threshold (a quarter) took a worker away from a whole training now and then.
            self._free_cores = free_cores(load.others_busy(), load.cpus, free_share=0.5)
        threads = training_threads()
        if self._free_cores is not None:
            return min(threads, self._free_cores)
        # Until the first window is read: these readings, just before the workers start, cost an
        # idle machine's short epochs measurably when they were taken before every epoch.
        running = others_running()
        return threads if running is None else min(threads, max(1, load.cpus - running))

    def between_epochs(self) -> AbstractContextManager[object]:
        """Run BLAS single-threaded for the work between epochs: a Trainer's evaluation (whose forward,
        `_evaluation_logits`, calls no BLAS; its log-softmax and argmax are NumPy's) and whatever else runs there.

        After a multi-threaded call an OpenBLAS thread spins for ~0.1 s, and would take a core
        from the start of the next epoch, whose workers need both.
        """
        return single_threaded_blas()

    def training_inputs(self, X: FloatArray | Pixels, epochs: int) -> FloatArray | Pixels:
        """X, or float32 X whose every entry is a byte times 1/255 as `Pixels` of those bytes (the same float32
        rows: the same bits) for PIXEL_EPOCHS epochs or more, which read a quarter of the bytes a batch
        (fastmlp/backends/numba/pixels.py). Anything but a C-contiguous 2-D float32 array comes back as it is,
        to be validated where it is trained on."""
        if (epochs < PIXEL_EPOCHS or not isinstance(X, np.ndarray) or X.dtype != np.float32 or X.ndim != 2
                or not X.flags.c_contiguous):
            return X
        pixels = exact_pixels(X, parts=self.threads or usable_cpus())
        return X if pixels is None else pixels

    def warm_up(self, model: MLP, *, pixels: bool = False, momentum: bool = False) -> float:
        """Compile (or load from Numba's cache) the epoch and evaluation functions for nets of model's depth; returns
        seconds.

        Compiled code depends only on the depth and the input dtype, so a tiny net of the same depth does.
        One compiled function serves plain SGD, momentum, Nesterov, weight decay, Adam and AdamW, so
        momentum is accepted for compatibility and changes nothing.
        """
        from ...model import MLP

        tiny = MLP((2,) * len(model.layer_sizes), seed=0)
        X = Pixels(np.zeros((2, 2), dtype=np.uint8)) if pixels else np.zeros((2, 2), dtype=np.float32)
        start = time.perf_counter()
        backend = Backend(threads=1)
        backend.train_epoch(tiny, X, np.zeros(2, dtype=np.int64), batch_size=1, lr=0.01, rng=np.random.default_rng(0))
        backend._evaluation_logits(tiny, X)  # a Trainer's evaluation between epochs
        return time.perf_counter() - start
