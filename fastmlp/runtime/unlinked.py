"""`unlinked(kernel)`: call a compiled function from nopython code without Numba linking a copy of it in.

    from fastmlp.runtime.unlinked import unlinked
    update_part = unlinked(packed.update_part)   # then call update_part(...) from @njit code as before

Why. Numba compiles every @njit function into an LLVM module of its own, and into it links a copy of the
optimised module of every @njit function it calls; then it optimises the whole module again and generates
its machine code (numba.core.codegen.CPUCodeLibrary.finalize). Where the callees are large and the caller
small, that is most of the caller's compile: fastmlp's training step is glue (the phases, the splits of the
work) around kernels that hold SIMD tiles, which LLVM never inlines, yet every step function compiled
(one per net depth and input kind) optimised and compiled every kernel's code once more.

How. `unlinked(kernel)` is an intrinsic that, where it is compiled into a caller:
  1. compiles `kernel` for the call's argument types (as a linked call would), in its own module, once;
  2. publishes the address of that machine code to the JIT's linker under a name of its own,
     `fastmlp.unlinked.<module>.<function>.<hash of the types>` (llvmlite's add_symbol, the way Numba
     publishes its own runtime's C functions);
  3. emits a call of that name, in Numba's calling convention (a return slot, an exception slot, the
     arguments flattened), and propagates the kernel's error status (an exception) to the caller's caller.
The caller's module then holds a declaration of the kernel, not its body, and its machine code a call
that the linker resolves when the module is loaded.

Numba's cache. A caller loaded from Numba's on-disk cache in another process needs the name published before
its machine code is loaded: Numba runs a cached function's "reload init" functions first
(numba.core.compiler.CompileResult._rebuild, the hook it keeps for its own parallel runtime), and the call adds
one, `link_kernel(module, function, types)`, which compiles the kernel (or loads it from its own cache) and
publishes its address again. fastmlp's cache key already covers every source file with compiled code
(runtime/jit.py), so a cached caller never outlives the kernels it was compiled against.

Where the Numba running lacks either hook (`HOOKS`: a later version that renamed them), `unlinked(kernel)`
is the kernel itself, a linked call as before: slower to compile, the same results.
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import inspect
from typing import Any

import llvmlite.binding as ll
from numba.core import cgutils, types
from numba.core.codegen import CPUCodeLibrary
from numba.core.compiler import CompileResult
from numba.core.typing import signature
from numba.extending import intrinsic

__all__ = ["HOOKS", "link_kernel", "symbol_name", "unlinked"]


def _numba_has_hooks() -> bool:
    """Whether this Numba runs a cached function's reload-init functions before loading its machine code, and
    keeps them on the code library being lowered (where the intrinsic adds its own)."""
    try:
        rebuild = inspect.signature(CompileResult._rebuild)
        inits = [inspect.getsource(vars(cls)["__init__"])
                 for cls in CPUCodeLibrary.__mro__[:-1] if "__init__" in vars(cls)]
    except (AttributeError, OSError, TypeError, ValueError):
        return False
    return "reload_init" in rebuild.parameters and any("self._reload_init" in source for source in inits)


HOOKS = _numba_has_hooks()


def symbol_name(module: str, function: str, argtypes: tuple[Any, ...]) -> str:
    """The linker's name for the machine code of `module.function` compiled for the Numba types argtypes."""
    digest = hashlib.sha256(repr(argtypes).encode()).hexdigest()[:20]
    return f"fastmlp.unlinked.{module}.{function}.{digest}"


def link_kernel(module: str, function: str, argtypes: tuple[Any, ...]) -> Any:
    """Compile (or load from the cache) the @njit function `module.function` for argtypes, publish its
    machine code's address as symbol_name(...), and return Numba's compile result (its signature)."""
    kernel = getattr(importlib.import_module(module), function)
    kernel.compile(argtypes)
    result = kernel.overloads[argtypes]
    address = result.library.get_pointer_to_function(result.fndesc.llvm_func_name)
    if not address:
        raise RuntimeError(f"Numba compiled {module}.{function}{argtypes} but exposes no machine code for it")
    ll.add_symbol(symbol_name(module, function, argtypes), address)
    return result


def unlinked(kernel: Any) -> Any:
    """An intrinsic that calls the @njit function `kernel` (a Numba dispatcher, defined at the top level of its
    module) by the address of its own machine code, with the same arguments and result (the module doc);
    the kernel itself where this Numba lacks the hooks it needs."""
    if not HOOKS:
        return kernel
    module, function = kernel.py_func.__module__, kernel.py_func.__name__

    def call(typingctx: Any, *args: Any) -> Any:
        argtypes = tuple(types.unliteral(arg) for arg in args)
        restype = link_kernel(module, function, argtypes).signature.return_type

        def codegen(context: Any, builder: Any, sig: Any, llargs: Any) -> Any:
            # The arguments come as one tuple of the call's own types (literals included): unpack, cast.
            given = sig.args[0].types
            values = [context.cast(builder, value, have, want) for value, have, want in
                      zip(cgutils.unpack_tuple(builder, llargs[0], len(given)), given, argtypes)]
            declared = cgutils.get_or_insert_function(builder.module,
                                                      context.call_conv.get_function_type(restype, argtypes),
                                                      symbol_name(module, function, argtypes))
            status, result = context.call_conv.call_function(builder, declared, restype, argtypes, values)
            with cgutils.if_unlikely(builder, status.is_error):
                context.call_conv.return_status_propagate(builder, status)
            # Run before this caller's machine code is loaded from Numba's cache in another process.
            context.active_code_library._reload_init.add(functools.partial(link_kernel, module, function, argtypes))
            return result

        return signature(restype, types.StarArgTuple.from_types(args)), codegen

    call.__name__ = call.__qualname__ = f"unlinked_{function}"
    call.__doc__ = f"{module}.{function}, called by the address of its machine code (fastmlp.runtime.unlinked)."
    return intrinsic(call)
