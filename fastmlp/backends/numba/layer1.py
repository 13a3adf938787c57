"""Layer 1's sum over k in two parts: how every training step of the numba backend computes layer 1's output.

    Z_1 = (A_0[:, :cut] @ W_1[:cut] + A_0[:, cut:] @ W_1[cut:]) + b_1,  A_1 = max(Z_1, 0)

each part a chain of FMAs of its own (the tile's sum over its k), cut at `layer1_cut`: after the columns of
A_0 = acts[0] in the first half of layer 0's panels, which are those that worker 0 of two computes in a step
split by panels (fastmlp/backends/numba/step.py). So two workers can each multiply the columns of A_0 they
computed by the matching rows of W_1, for every row of the batch, and add the two parts (layer 1 split by k);
and because one worker, or workers splitting the batch by rows, compute the same two parts and add them in the
same order, the weights still come out bit-identical whatever the worker count. Only the nets whose upper layers
may be replicated are summed so (threads.upper_layers_small: a property of the net, never of the worker count);
for the others (784-1024-1024-10's 1M-weight W_1), the parts' elementwise pass would cost and no step splits
them. Inference sums layer 1 in one chain (`fastmlp.kernels.serving`, batch.forward_probs_inplace): the last
bits may differ from training's forward.
"""

import numpy as np

from ...kernels.elementwise import sum_parts_bias_rows_into
from ...kernels.packed import BIAS, BIAS_RELU, PANEL_WIDTH, SKIP_ZERO_INPUTS, STORE
from ...runtime.jit import cached_njit
from .step_kernels import forward_part


@cached_njit(inline="always")
def layer1_cut(P0, n0):
    """k at which a training step cuts layer 1's sum over k in two (the module doc), W_0 packed in P0 and n0 its
    columns: after the columns of acts[0] in the first half of layer 0's panels, those that worker 0 of two
    computes. Part 0 is acts[0][:, :cut] @ W_1[:cut], part 1 acts[0][:, cut:] @ W_1[cut:] (forward_part's range
    k0:k1, STORE). Each step computes it once (an inlined call costs the cold start at each call site)."""
    return np.int64(min((P0.shape[0] // 2) * PANEL_WIDTH, n0))


@cached_njit(inline="always")
def training_forward_rows(packed, biases, x, acts, first, r0, r1, halves, cut, parts_ready):
    """Layers first.. forward of rows r0:r1 as a training step computes them: step.forward_rows, but where halves
    (2, rows, N_1; overwritten) has rows, layer 1's sum in its two parts (cut: layer1_cut) into it, then
    (part 0 + part 1) + bias, ReLU'd (below 0 -> 0; elementwise.sum_parts_bias_rows_into). parts_ready: the
    parts are there already (layer 1 split by k: computed in phase A), only add them. Two calls of forward_part,
    one for both parts and one for every other layer (each call site costs the cold start a copy of its glue)."""
    L = len(packed)
    for l in range(first, L):
        out = acts[l]
        if l == 1 and halves.shape[1] > 0:
            for h in range(0 if parts_ready else 2):
                forward_part(halves[h], acts[0], packed[l], biases[l], halves[h], np.int64(STORE), r0, r1, np.int64(0),
                             packed[l].shape[0], np.int64(0) if h == 0 else cut,
                             cut if h == 0 else np.int64(packed[l].shape[1]))
            sum_parts_bias_rows_into(out, halves[0], halves[1], biases[l], l < L - 1, r0, r1)
        else:
            # Layer 0's input, a data batch, often has many zeros (MNIST's pixels): its sums skip them.
            forward_part(out, x if l == 0 else acts[l - 1], packed[l], biases[l], out,
                         np.int64((BIAS_RELU if l < L - 1 else BIAS) | (SKIP_ZERO_INPUTS if l == 0 else 0)), r0, r1,
                         np.int64(0), packed[l].shape[0], np.int64(0), np.int64(-1))
