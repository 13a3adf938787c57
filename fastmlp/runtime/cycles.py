"""The CPU's cycle counter, read from nopython code: the numba backend's step timeline (StepTimeline).

    cycle_counter()        an intrinsic for nopython code: the counter now (int64)
    stamp_cycles(stamps, t, s, point)   an intrinsic for nopython code: stamps[t, s, point] = the counter
                           now where step s fits in stamps; with stamps None, no code at all
    read_cycle_counter()   the same counter, callable from Python (to tie it to wall-clock seconds)

`llvm.readcyclecounter`: `rdtsc` on x86-64, a constant-rate counter on current CPUs (it ticks at the
nominal frequency whatever the clock does), readable in user space, ~20 cycles a read and no fence,
so a stamp costs far less than a microsecond and does not order the work around it. LLVM gives 0
on a target without such a counter: a timeline of zeros there, never a wrong training step.
"""

from typing import Any, no_type_check

from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

from .jit import cached_njit


@intrinsic
def cycle_counter(typingctx: Any) -> Any:
    """The CPU's cycle counter now, int64 (for nopython code)."""
    sig = types.int64()

    def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
        return _read_counter(builder)

    return sig, codegen


def _read_counter(builder: Any) -> Any:
    i64 = ir.IntType(64)
    fn = builder.module.declare_intrinsic("llvm.readcyclecounter", (), ir.FunctionType(i64, []))
    return builder.call(fn, [])


@intrinsic
def stamp_cycles(typingctx: Any, stamps: Any, t: Any, s: Any, point: Any) -> Any:
    """stamps[t, s, point] = the cycle counter now, if s < stamps.shape[1]: stamps an int64 (workers, steps, points)
    array, or None, for which it emits nothing. An intrinsic rather than an inlined function so that the
    numba step, which calls it at a dozen points, compiles as fast with it as without (inlined, each call site
    cost Numba's inliner and type inference: 0.3-0.4 s of a cold start on an Intel Xeon)."""
    sig = types.void(stamps, t, s, point)

    def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
        if isinstance(signature.args[0], types.NoneType):
            return context.get_dummy_value()
        stamps_type = signature.args[0]
        array = context.make_array(stamps_type)(context, builder, args[0])
        t_, s_, point_ = (context.cast(builder, value, ty, types.intp)
                          for value, ty in zip(args[1:], signature.args[1:]))
        steps = cgutils.unpack_tuple(builder, array.shape, 3)[1]
        with builder.if_then(builder.icmp_signed("<", s_, steps), likely=True):
            slot = cgutils.get_item_pointer(context, builder, stamps_type, array, [t_, s_, point_], wraparound=False)
            builder.store(_read_counter(builder), slot)
        return context.get_dummy_value()

    return sig, codegen


@cached_njit(nogil=True)
@no_type_check  # a Numba body: mypy would misread the intrinsic's call (typed by Numba)
def read_cycle_counter():
    """The CPU's cycle counter now (the one the step's stamps read), from Python."""
    return cycle_counter()
