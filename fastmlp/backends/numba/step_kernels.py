"""The kernels the numba backend's step functions call, each `unlinked` (fastmlp/runtime/unlinked.py): a step
function's module calls their machine code instead of holding a copy of it that Numba would optimise and
compile again, once for every step function (each net depth and input kind, the timeline's). Every kernel
with a loop of its own; the barrier (a few instructions around atomics) stays linked. Same names, arguments
and results as the kernels themselves (fastmlp.kernels, the public library).
"""

from ...kernels import elementwise, gather, packed, panel_sums
from ...runtime.unlinked import unlinked

forward_part = unlinked(packed.forward_part)
forward_part_into_panels = unlinked(packed.forward_part_into_panels)
update_part = unlinked(packed.update_part)
panels_from_rows_into = unlinked(packed.panels_from_rows_into)
transpose_packed_into = unlinked(packed.transpose_packed_into)
gather_rows_scaled = unlinked(gather.gather_rows_scaled)
softmax_xent_backward_rows_inplace = unlinked(elementwise.softmax_xent_backward_rows_inplace)
softmax_inplace = unlinked(elementwise.softmax_inplace)
gather_labels = unlinked(gather.gather_labels)
sgd_update_inplace = unlinked(elementwise.sgd_update_inplace)
momentum_update_inplace = unlinked(elementwise.momentum_update_inplace)
panel_column_sums_into = unlinked(panel_sums.panel_column_sums_into)
