"""The numba backend's buffers: a net's parameters in the packed layout (fastmlp/kernels/packed.py),
and the scratch arrays of a batch. Made once per (layer sizes[, batch rows]) and kept by the backend.

    inputs       (2, batch, sizes[0]) the gathered batch, two of them: batch s uses inputs[s % 2]; or
                                      (2 workers, ...), worker t's batch s in inputs[2 t + s % 2] (`inputs_for`)
    acts[l]      (batch, padded_width(sizes[l+1]))  the output of layer l, in its first sizes[l+1]
                                      columns; acts[L-1] (batch, sizes[L]) the logits (`activation_buffer`)
    deltas[l]    (batch, sizes[l+1])  dZ_l; deltas[L-1] is acts[L-1] (the softmax kernel overwrites
                                      the logits with their gradient)
With the upper layers replicated (fastmlp/backends/numba/step.py), each worker past the first has a
workspace of its own but for acts[0], and acts[0] a second copy for odd steps (`acts_odd`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from ...inputs import FloatArray
from ...kernels.packed import (
    PANEL_WIDTH,
    pack_weights_into,
    packed_shape,
    transpose_packed_into,
    unpack_weights_into,
)
from ...runtime.aligned import PAGE, aligned_copy, aligned_zeros
from .threads import private_inputs, upper_layers_small

if TYPE_CHECKING:
    from ...model import MLP
    from ...optim import AdamMoments, Velocity

Arrays = tuple[FloatArray, ...]  # one array per layer


class _Packed:
    """One net's parameters in the packed layout: W_l, W_l.T (for l >= 1), the velocities and Adam's moments."""

    def __init__(self, layer_sizes: Sequence[int]) -> None:
        shapes = list(zip(layer_sizes[:-1], layer_sizes[1:]))
        # Every packed buffer starts on a cache line, so that no packed row straddles two (runtime/aligned.py).
        self.weights = tuple(aligned_zeros(packed_shape(k, n)) for k, n in shapes)
        # W_0.T is never read (no input gradient for the data): a one-panel stand-in keeps the tuple uniform.
        self.transposed = (aligned_zeros((1, 1, PANEL_WIDTH)),) + tuple(
            aligned_zeros(packed_shape(n, k)) for k, n in shapes[1:])
        self._velocity: Arrays | None = None
        self._second: Arrays | None = None

    def velocity(self) -> Arrays:
        """The packed velocities (Adam: the first moments)."""
        if self._velocity is None:
            self._velocity = tuple(aligned_zeros(P.shape) for P in self.weights)
        return self._velocity

    def second_moments(self) -> Arrays:
        """The packed second moments of Adam."""
        if self._second is None:
            self._second = tuple(aligned_zeros(P.shape) for P in self.weights)
        return self._second

    def _states(self, velocity: Velocity | None,
                moments: AdamMoments | None) -> list[tuple[Arrays, Sequence[FloatArray]]]:
        """(packed buffers, the caller's arrays) pairs of the optimiser state in use."""
        if moments is not None:
            return [(self.velocity(), moments.first.weights), (self.second_moments(), moments.second.weights)]
        return [] if velocity is None else [(self.velocity(), velocity.weights)]

    def load(self, model: MLP, velocity: Velocity | None, moments: AdamMoments | None = None) -> None:
        """Pack the model's weights (and the velocity's, or Adam's moments) into these buffers."""
        for l, W in enumerate(model.weights):
            pack_weights_into(self.weights[l], W)
            if l > 0:
                transpose_packed_into(self.transposed[l], self.weights[l], 0, W.shape[0])
        for packed, arrays in self._states(velocity, moments):
            for P, W in zip(packed, arrays):
                pack_weights_into(P, W)

    def store(self, model: MLP, velocity: Velocity | None, moments: AdamMoments | None = None) -> None:
        """Unpack into the model's own weight arrays (and the velocity's, or Adam's moments)."""
        for W, P in zip(model.weights, self.weights):
            unpack_weights_into(W, P)
        for packed, arrays in self._states(velocity, moments):
            for W, P in zip(arrays, packed):
                unpack_weights_into(W, P)


# Rows of this many bytes (or a multiple) are "aliased": one column of n rows falls in 1 of 8 L1 sets.
_ALIASED_ROW_BYTES = 512
_PAD_FLOATS = 16  # one 64-byte cache line: the padded rows are an odd number of lines apart


def padded_width(width: int) -> int:
    """The row length of the activation buffer of a hidden layer `width` wide: one cache line more where
    width float32s are a multiple of _ALIASED_ROW_BYTES (a 128- or 1024-wide layer), so that a column's
    cache lines spread over all the sets of L1 and L2. At batch 1024, the update of a 1024 x 1024 layer
    reading such padded activations ran at 77 GFLOP/s, unpadded at 48 (one Zen 3 core). The padding is
    never written or read: such a width is a whole number of panels, the kernels run the panels of the
    packed weights, and the tiles read A's first K columns, K from the packed weights."""
    return width + _PAD_FLOATS if (width * 4) % _ALIASED_ROW_BYTES == 0 else width


def activation_buffer(layer_sizes: Sequence[int], l: int, rows: int) -> FloatArray:
    """acts[l] for batches of up to `rows` samples: (rows, padded_width(N_l)) for a hidden layer, (rows, classes)
    for the logits."""
    size = layer_sizes[l + 1]
    return aligned_zeros((rows, padded_width(size) if l < len(layer_sizes) - 2 else size))


def packed_weights(model: MLP) -> Arrays:
    """The model's weights in the packed layout, in buffers of their own (shared with no epoch)."""
    packed = tuple(aligned_zeros(packed_shape(*W.shape)) for W in model.weights)
    for P, W in zip(packed, model.weights):
        pack_weights_into(P, W)
    return packed


class _Workspace:
    """Scratch buffers for batches of up to `rows` samples through a net of `layer_sizes`; `layer0_output`:
    acts[0] shared with another workspace (a worker's own, `worker_workspaces`), which holds the inputs."""

    def __init__(self, layer_sizes: Sequence[int], rows: int, layer0_output: FloatArray | None = None) -> None:
        self.layer_sizes = tuple(layer_sizes)
        self.rows = rows
        self.inputs = _input_buffers(2 if layer0_output is None else 0, rows, layer_sizes[0])
        # Each dZ_l in column panels, as the update's tiles read it front to back (zero padding: the
        # columns past the layer's width).
        self.delta_panels = tuple(aligned_zeros((-(-size // PANEL_WIDTH), rows, PANEL_WIDTH))
                                  for size in layer_sizes[1:])
        # A hidden layer's activations are the next layer's update's A, whose tiles read TILE_ROWS columns of
        # every row: rows a multiple of 512 bytes apart put those n cache lines in few cache sets, which then
        # evict each other before the next panel's tile reads them again. Such rows get one cache line more
        # (never read or written; see padded_width).
        self.acts = tuple(layer0_output if l == 0 and layer0_output is not None else
                          activation_buffer(layer_sizes, l, rows) for l in range(len(layer_sizes) - 1))
        # The hidden deltas need their own buffers because the ReLU mask still reads acts.
        self.deltas = tuple(aligned_zeros((rows, size)) for size in layer_sizes[1:-1]) + (self.acts[-1],)
        self.db = tuple(aligned_zeros(size) for size in layer_sizes[1:])  # a worker's share: few lines shared
        # on pages of its own, as every buffer a worker writes (fastmlp/runtime/aligned.py): split by rows, the workers
        # write their rows' labels into one array; replicated, each into its own, 512 bytes at batch 64
        self.labels = aligned_zeros(rows, np.int64)
        # Layer 1's sum over k in two parts, by step parity (fastmlp/backends/numba/layer1.py), for the nets summed
        # so; no rows for the others (a step then sums layer 1 in one chain).
        self.layer1_halves = aligned_zeros((2, 2, rows if upper_layers_small(layer_sizes) else 0,
                                            layer_sizes[2] if len(layer_sizes) > 2 else 1))
        self._acts_odd: Arrays | None = None
        self._workers: list[_Workspace] = []

    def acts_odd(self) -> Arrays:
        """acts with a second layer-0 output in place of acts[0]: with the upper layers replicated
        (threads.may_replicate_upper), odd steps write it while another worker may still read the step before's."""
        if self._acts_odd is None:
            self._acts_odd = (aligned_zeros(self.acts[0].shape),) + self.acts[1:]
        return self._acts_odd

    def worker_workspaces(self, workers: int) -> list[_Workspace]:
        """This workspace for worker 0, and for each other one a workspace of its own that shares acts[0] (and
        acts_odd()[0]) with this one: with the upper layers replicated, each worker's scratch for every row of
        the batch. Made once, kept."""
        while len(self._workers) < workers - 1:
            worker = _Workspace(self.layer_sizes, self.rows, self.acts[0])
            worker._acts_odd = (self.acts_odd()[0],) + worker.acts[1:]
            self._workers.append(worker)
        return [self, *self._workers[:workers - 1]]

    def inputs_for(self, workers: int, private: bool | None = None) -> FloatArray:
        """The input buffers of an epoch on `workers` workers: two that all of them share, or two per worker
        where each gathers the whole batch (`private`: the epoch's threads.StepSplit; by default where
        threads.private_inputs allows); made once, kept for later epochs."""
        if private is None:
            private = private_inputs(workers, self.rows, self.layer_sizes)
        count = 2 * workers if private else 2
        if len(self.inputs) < count:
            self.inputs = _input_buffers(count, self.rows, self.layer_sizes[0])
        return self.inputs[:count]


def upper_copies(arrays: Arrays, copies: dict[int, FloatArray], first: int = 1) -> Arrays:
    """arrays with each entry from `first` on replaced by a copy of it (a worker's own upper layers), the same copy
    for the same array (`copies`, by id: a rule's unread slots hold the parameters themselves)."""
    own = []
    for a in arrays[first:]:
        if id(a) not in copies:
            copies[id(a)] = aligned_copy(a)
        own.append(copies[id(a)])
    return (*arrays[:first], *own)


def _input_buffers(count: int, rows: int, width: int) -> FloatArray:
    """`count` input buffers of at least `rows` rows of `width` floats, in one array: one type, whatever the
    count, so that Numba compiles the epoch once for every worker count. Each buffer starts on a page and shares
    none with the next (its rows rounded up, the rows past `rows` never read nor written): two workers' buffers
    side by side, one's stream of writes had its core's prefetcher pull the other's first lines into it
    (fastmlp/runtime/aligned.py)."""
    fewest = PAGE // math.gcd(PAGE, width * 4)  # the fewest rows that fill whole pages
    padded = -(-rows // fewest) * fewest
    return aligned_zeros((count, padded, width))
