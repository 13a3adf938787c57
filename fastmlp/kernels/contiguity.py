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
from numba.core.extending import lower_builtin, type_callable


def require_c_contiguous(a0, a1=None, a2=None, a3=None, a4=None, a5=None, a6=None, a7=None):
    """Raise at compile time unless every array argument (up to eight) has Numba layout 'C' (nothing at run
    time)."""


# A typing rule and an empty lowering rather than an @overload: an overload compiles its implementation
# (a no-op) as a function of its own for every combination of argument types, ten of them in a cold start
# of the training epoch (0.4 s); this compiles nothing.
@type_callable(require_c_contiguous)
def _type_require_c_contiguous(context):
    def typer(a0, a1=None, a2=None, a3=None, a4=None, a5=None, a6=None, a7=None):
        for position, array in enumerate((a0, a1, a2, a3, a4, a5, a6, a7), start=1):
            if isinstance(array, types.Array) and array.layout != "C":
                raise TypingError(
                    f"fastmlp.kernels: array argument {position} of this kernel is {array} (layout "
                    f"{array.layout!r}), not C-contiguous: a column slice or transposed view would be "
                    f"read and written as if its columns were adjacent; pass np.ascontiguousarray(...)")
        return types.none

    return typer


@lower_builtin(require_c_contiguous, types.VarArg(types.Any))
def _lower_require_c_contiguous(context, builder, signature, args):
    return context.get_dummy_value()
