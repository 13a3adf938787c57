"""Refusing non-C-contiguous arrays when a kernel is compiled, not after it computed garbage.

The kernels index their arrays' flat data by row strides alone, so a view whose columns are not
adjacent (`big[:, ::2]`, a transpose) would be read and written as if they were: an outside test
found `matmul_into(big[:, ::2], A, B)` silently overwriting `big[:, 1]`. Numba knows every
array's layout while it types a call, so the check costs nothing at run time: a call with a
layout other than 'C' fails to compile with a TypingError naming the argument's position.
Row slices `buf[:n]` of a C-contiguous buffer keep layout 'C' and are accepted.
"""

from numba import types
from numba.core.errors import TypingError
from numba.extending import overload

from ..runtime.jit import CACHE


def require_c_contiguous(*arrays):
    """Raise at compile time unless every array argument has Numba layout 'C' (nothing at run time)."""


@overload(require_c_contiguous, jit_options={"cache": CACHE})
def _require_c_contiguous(*arrays):
    if len(arrays) == 1 and isinstance(arrays[0], types.StarArgTuple):
        arrays = arrays[0].types
    for position, array in enumerate(arrays, start=1):
        if isinstance(array, types.Array) and array.layout != "C":
            raise TypingError(
                f"fastmlp.kernels: array argument {position} of this kernel is {array} (layout "
                f"{array.layout!r}), not C-contiguous: a column slice or transposed view would be "
                f"read and written as if its columns were adjacent; pass np.ascontiguousarray(...)")
    return lambda *arrays: None
