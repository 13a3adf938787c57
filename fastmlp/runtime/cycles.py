"""The CPU's cycle counter, read from nopython code: the numba backend's step timeline (StepTimeline).

    cycle_counter()        an intrinsic for nopython code: the counter now (int64)
    read_cycle_counter()   the same, callable from Python (to tie the counter to wall-clock seconds)

`llvm.readcyclecounter`: `rdtsc` on x86-64, a constant-rate counter on current CPUs (it ticks at the
nominal frequency whatever the clock does), readable in user space, ~20 cycles a read and no fence,
so a stamp costs far less than a microsecond and does not order the work around it. LLVM gives 0
on a target without such a counter: a timeline of zeros there, never a wrong training step.
"""

from typing import Any, no_type_check

from llvmlite import ir
from numba import types
from numba.extending import intrinsic

from .jit import cached_njit


@intrinsic
def cycle_counter(typingctx: Any) -> Any:
    """The CPU's cycle counter now, int64 (for nopython code)."""
    sig = types.int64()

    def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
        i64 = ir.IntType(64)
        fn = builder.module.declare_intrinsic("llvm.readcyclecounter", (), ir.FunctionType(i64, []))
        return builder.call(fn, [])

    return sig, codegen


@cached_njit(nogil=True)
@no_type_check  # a Numba body: mypy would misread the intrinsic's call (typed by Numba)
def read_cycle_counter():
    """The CPU's cycle counter now (the one the step's stamps read), from Python."""
    return cycle_counter()
