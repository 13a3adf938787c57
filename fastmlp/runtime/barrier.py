"""A spinning barrier for nopython worker threads that share one training epoch.

The numba backend runs an epoch on one thread per core, each meeting the others at two barriers
a step (fastmlp/backends/numba/step.py). A sleeping barrier (a futex, or Numba's own parallel
launches, whose idle workers sleep) costs tens of microseconds to wake, as much as a whole step
at batch 32; this one spins on an atomic counter, then yields the core if the others are late, and sleeps in short naps
once they are very late (a machine busy with other work, or more workers than cores): a waiter
that only yields still takes its full share of the cores from the threads it waits for.

State lives in an int64 array made by `barrier_state()`, one cache line per field. Any thread
can `abort_barrier(state)`: waiting and later `barrier_wait` calls then return False at once,
so workers stop instead of waiting forever for one that failed.
"""

from typing import Any, no_type_check

import numpy as np
import numpy.typing as npt
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

from .aligned import aligned_zeros
from .jit import X86, cached_njit

_COUNT, _GENERATION, _ABORTED = 0, 8, 16  # int64 slots, 64 bytes apart
_SPINS_BEFORE_YIELD = 4000  # tens of microseconds of spinning, a fraction of a step at batch 32
# Then sched_yield, ~1 us each when no other thread wants the core; after this many (>= 1 ms:
# on an idle machine the others never are that late) the waiter naps NAP_MICROSECONDS at a time,
# so a late thread, descheduled by other work, gets the core back within a nap or two: with naps,
# bench --contention ran faster beside a CPU hog and two at once than yielding only (docs/results.md).
_YIELDS_BEFORE_NAPS = 1000
_NAP_MICROSECONDS = 50


def _slot_pointer(context: Any, builder: Any, array_type: Any, array: Any, index: Any) -> Any:
    return builder.gep(context.make_array(array_type)(context, builder, array).data, [index])


@intrinsic
def _atomic_add(typingctx: Any, state: Any, index: Any, value: Any) -> Any:
    """state[index] += value atomically (sequentially consistent); returns the old value."""

    def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
        ptr = _slot_pointer(context, builder, signature.args[0], args[0], args[1])
        return builder.atomic_rmw("add", ptr, args[2], "seq_cst")

    return types.int64(state, types.intp, types.int64), codegen


@intrinsic
def _atomic_load(typingctx: Any, state: Any, index: Any) -> Any:
    """state[index], read atomically (acquire): never hoisted out of a spin loop."""

    def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
        ptr = _slot_pointer(context, builder, signature.args[0], args[0], args[1])
        return builder.load_atomic(ptr, "acquire", 8)

    return types.int64(state, types.intp), codegen


@intrinsic
def _atomic_store(typingctx: Any, state: Any, index: Any, value: Any) -> Any:
    """state[index] = value atomically (release)."""

    def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
        ptr = _slot_pointer(context, builder, signature.args[0], args[0], args[1])
        builder.store_atomic(args[2], ptr, "release", 8)
        return context.get_dummy_value()

    return types.void(state, types.intp, types.int64), codegen


@intrinsic
def _cpu_relax(typingctx: Any) -> Any:
    """x86 `pause` (eases the spinning core's pressure on its sibling); a no-op elsewhere."""

    def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
        if X86:
            fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(ir.VoidType(), []),
                                                "llvm.x86.sse2.pause")
            builder.call(fn, [])
        return context.get_dummy_value()

    return types.void(), codegen


@intrinsic
def _sched_yield(typingctx: Any) -> Any:
    """POSIX sched_yield(): let another thread run on this core."""

    def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
        fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(ir.IntType(32), []), "sched_yield")
        builder.call(fn, [])
        return context.get_dummy_value()

    return types.void(), codegen


@intrinsic
def _usleep(typingctx: Any, microseconds: Any) -> Any:
    """POSIX usleep(microseconds): sleep at least that long (the scheduler may round it up)."""

    def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
        i32 = ir.IntType(32)
        fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(i32, [i32]), "usleep")
        builder.call(fn, [context.cast(builder, args[0], signature.args[0], types.uint32)])
        return context.get_dummy_value()

    return types.void(microseconds), codegen


# The atomics and waits above, for other nopython code that threads share (fastmlp/kernels/serving.py).
atomic_add, atomic_load, atomic_store, cpu_relax = _atomic_add, _atomic_load, _atomic_store, _cpu_relax


def barrier_state() -> npt.NDArray[np.int64]:
    """A fresh barrier: int64 state, no thread waiting, not aborted."""
    # on cache lines of its own: a neighbouring array written by another thread would bounce the spun-on line
    return aligned_zeros(_ABORTED + 8, np.int64)


def abort_barrier(state: npt.NDArray[np.int64]) -> None:
    """Release every waiting thread; this barrier and later waits on it return False."""
    state[_ABORTED] = 1


def barrier_aborted(state: npt.NDArray[np.int64]) -> bool:
    return bool(state[_ABORTED])


@cached_njit(nogil=True)
@no_type_check  # a Numba body: mypy would misread the intrinsics' calls (typed by Numba)
def barrier_wait(state, parties):
    """Block until `parties` threads have called it (True), or the barrier is aborted (False)."""
    if parties <= 1:
        return _atomic_load(state, _ABORTED) == 0
    generation = _atomic_load(state, _GENERATION)
    if _atomic_add(state, _COUNT, 1) == parties - 1:  # the last to arrive releases the others
        _atomic_store(state, _COUNT, 0)
        _atomic_add(state, _GENERATION, 1)
        return _atomic_load(state, _ABORTED) == 0
    spins = 0
    while _atomic_load(state, _GENERATION) == generation:
        if _atomic_load(state, _ABORTED) != 0:
            return False
        if spins < _SPINS_BEFORE_YIELD:
            _cpu_relax()
        elif spins < _SPINS_BEFORE_YIELD + _YIELDS_BEFORE_NAPS:
            _sched_yield()
        else:
            _usleep(_NAP_MICROSECONDS)
            continue  # spins stays put: every later wait of this call naps
        spins += 1
    return _atomic_load(state, _ABORTED) == 0

