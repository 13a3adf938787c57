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
them. Inference sums layer 1 in one chain (`fastmlp.kernels.serving`, step.forward_probs_inplace): the last
bits may differ from training's forward.
"""

import numpy as np

from ...kernels.packed import PANEL_WIDTH, STORE, forward_part
from ...runtime.jit import cached_njit


@cached_njit(inline="always")
def layer1_cut(P0, P1):
    """k at which a training step cuts layer 1's sum over k in two (the module doc), W_0 and W_1 packed in P0 and P1:
    after the columns of acts[0] in the first half of layer 0's panels, those that worker 0 of two computes."""
    return min((P0.shape[0] // 2) * PANEL_WIDTH, P1.shape[1])


@cached_njit(inline="always")
def layer1_part_into(half, A0, P0, P1, h, r0, r1):
    """Part h (0 or 1) of layer 1's sum over k for rows r0:r1: A0[:, k] @ W_1[k] (A0 = acts[0], W_1 packed in P1) for
    k below layer1_cut(P0, P1), or from it on; overwrites those rows of half (rows, N_1)."""
    cut = np.int64(layer1_cut(P0, P1))
    k0, k1 = (np.int64(0), cut) if h == 0 else (cut, np.int64(P1.shape[1]))
    forward_part(half, A0, P1, half[0], half, np.int64(STORE), r0, r1, np.int64(0), P1.shape[0], k0, k1)


@cached_njit(inline="always")
def layer1_from_halves(out, halves, bias, relu, r0, r1):
    """Rows r0:r1 of layer 1's output from the two parts of its sum (halves[0], halves[1]: layer1_part_into):
    (part 0 + part 1) + bias, ReLU'd if relu (a hidden layer); overwrites those rows of out. Every split of a
    step computes layer 1 so, whoever computes each part: the same bits."""
    zero = np.float32(0.0)
    h0, h1 = halves[0], halves[1]
    for i in range(r0, r1):
        for j in range(bias.shape[0]):
            z = (h0[i, j] + h1[i, j]) + bias[j]
            out[i, j] = z if z > zero or not relu else zero
