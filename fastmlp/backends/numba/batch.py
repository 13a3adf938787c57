"""One batch outside an epoch, in nopython code, through the step's forward and backward glue (step.py):
its logits (a Trainer's evaluation, `Backend._evaluation_logits`), its probabilities (the bits serving is
tested against) and its loss and gradients (the public `loss_and_grads`). Compiled without Numba's reference
counting, as the step functions are (step.py, "Compiling"): they allocate nothing.
"""

from ...kernels.packed import PLAIN_SGD
from ...runtime.jit import cached_njit
from .step import backward_rows, forward_rows, layer_input
from .step_kernels import softmax_inplace, softmax_xent_backward_rows_inplace, update_part


@cached_njit(_nrt=False, no_cfunc_wrapper=True)
def forward_probs_inplace(packed, biases, x, acts):
    """Class probabilities of the rows of x in acts[-1]; overwrites acts."""
    forward_rows(packed, biases, x, acts, 0, 0, x.shape[0])
    softmax_inplace(acts[len(packed) - 1])


@cached_njit(nogil=True, _nrt=False, no_cfunc_wrapper=True)
def forward_logits_inplace(packed, biases, x, acts):
    """The logits of the rows of x in acts[-1] (forward_probs_inplace before its softmax: an evaluation's
    forward, scored by the caller); overwrites the first x.shape[0] rows of every acts[l]."""
    forward_rows(packed, biases, x, acts, 0, 0, x.shape[0])


@cached_njit(_nrt=False, no_cfunc_wrapper=True)
def loss_and_grads_into(packed, transposed, biases, x, labels, acts, deltas, grads_packed, dbs):
    """Mean loss of the batch x with labels; overwrites acts, deltas, grads_packed (dW_l packed)
    and dbs with the gradients.

    grads_packed must hold zeros: the update kernel with lr = -1 turns a zero W into
    0 + 1 * (A^T dZ), the gradient itself (both steps exact in float32).
    """
    n = x.shape[0]
    L = len(packed)
    forward_rows(packed, biases, x, acts, 0, 0, n)
    loss = softmax_xent_backward_rows_inplace(acts[L - 1], labels, n) / n
    backward_rows(transposed, acts, deltas, 0, n, 1)
    for l in range(L):
        G = grads_packed[l]
        update_part(G, G, layer_input(x, acts, l), deltas[l], n, 0, G.shape[1], 0, G.shape[0], -1.0, 0.0, 0.0,
                    PLAIN_SGD, G, 0.0, 0.0, 0.0, 0.0)
        for j in range(dbs[l].shape[0]):
            dbs[l][j] = 0.0
        for i in range(n):
            for j in range(dbs[l].shape[0]):
                dbs[l][j] += deltas[l][i, j]
    return loss
