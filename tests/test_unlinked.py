"""fastmlp.runtime.unlinked: a call by the address of the kernel's own machine code gives what the kernel gives
(results, exceptions), leaves no copy of the kernel in the caller's module, and survives Numba's on-disk cache
in a fresh process (where the caller's reload-init publishes the kernel's address before its code loads)."""

import json
import os
import re
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from numba import njit

from fastmlp.runtime.unlinked import HOOKS, symbol_name, unlinked


@njit
def scaled_sum_into(out, x, scale, r0, r1):
    """out[r0:r1] = scale * x[r0:r1]; returns their sum; ValueError on an empty range."""
    if r1 <= r0:
        raise ValueError("empty range")
    total = 0.0
    for i in range(r0, r1):
        out[i] = scale * x[i]
        total += out[i]
    return total


scaled_sum_into_unlinked = unlinked(scaled_sum_into)


@njit
def caller(out, x, r0, r1):
    # A literal (2.5) and int64s: the intrinsic compiles the kernel for the unliteral types, as a linked call would.
    return scaled_sum_into_unlinked(out, x, 2.5, r0, r1) + 1.0


def test_this_numba_has_the_hooks_the_unlinked_call_needs():
    # Where it lacks them, unlinked(kernel) is the kernel itself (slower compiles, same results): a newer Numba
    # that renamed them fails here first.
    assert HOOKS


def test_an_unlinked_call_gives_what_the_kernel_gives():
    x = np.arange(10, dtype=np.float64)
    out, expected_out = np.zeros(10), np.zeros(10)
    total = caller(out, x, 2, 7)
    expected = scaled_sum_into(expected_out, x, 2.5, 2, 7) + 1.0
    assert total == expected
    np.testing.assert_array_equal(out, expected_out)


def test_a_kernel_exception_reaches_the_callers_caller():
    with pytest.raises(ValueError, match="empty range"):
        caller(np.zeros(3), np.zeros(3), 2, 2)


def test_the_callers_module_declares_the_kernel_and_holds_no_copy_of_it():
    caller(np.zeros(3), np.zeros(3), 0, 3)
    (module,) = caller.inspect_llvm().values()
    assert re.search(r"^declare .*fastmlp\.unlinked\.[\w.]*scaled_sum_into\.", module, re.M)
    assert not re.search(r"^define .*scaled_sum_into", module, re.M)


def test_symbol_names_differ_by_argument_types():
    from numba import types

    f64, i64 = types.float64[:], types.int64[:]
    assert symbol_name("m", "f", (f64,)) != symbol_name("m", "f", (i64,))
    assert symbol_name("m", "f", (f64,)) == symbol_name("m", "f", (types.float64[:],))


# A module of its own (Numba caches functions of files, not of a test run), compiled into an empty cache by one
# process and loaded from it by the next: the second must not compile the caller, and must get the same result.
CACHED_MODULE = textwrap.dedent("""
    import numpy as np
    from numba import njit
    from fastmlp.runtime.unlinked import unlinked

    @njit(cache=True)
    def double_into(out, x):
        for i in range(x.shape[0]):
            out[i] = 2.0 * x[i]

    double_into_unlinked = unlinked(double_into)

    @njit(cache=True)
    def caller(out, x):
        double_into_unlinked(out, x)
        return out.sum()
""")

RUN = textwrap.dedent("""
    import json, sys
    import numpy as np
    import cached_module
    out = np.zeros(4)
    total = cached_module.caller(out, np.arange(4.0))
    hits = sum(cached_module.caller.stats.cache_hits.values())
    print(json.dumps({"total": total, "out": out.tolist(), "hits": hits}))
""")


def test_a_cached_caller_loads_and_runs_in_a_fresh_process(tmp_path):
    (tmp_path / "cached_module.py").write_text(CACHED_MODULE)
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path / "cache"),
               PYTHONPATH=os.pathsep.join([str(tmp_path), *sys.path]))
    runs = [json.loads(subprocess.run([sys.executable, "-c", RUN], env=env, cwd=tmp_path, check=True,
                                      capture_output=True, text=True).stdout) for _ in range(2)]
    assert runs[0]["hits"] == 0 and runs[1]["hits"] == 1  # compiled, then loaded from the cache
    for run in runs:
        assert run["total"] == 12.0 and run["out"] == [0.0, 2.0, 4.0, 6.0]


# The training step compiled in a fresh process with an empty cache (Numba shows no LLVM for code it loaded from its
# cache, where an earlier run has put the step): which kernels its module declares, and which it defines.
STEP_PROBE = textwrap.dedent("""
    import json, re
    from fastmlp import MLP
    from fastmlp.backends import get_backend
    from fastmlp.backends.numba.step import train_batches_worker

    get_backend("numba").warm_up(MLP((6, 5, 4, 3), seed=0), pixels=True)
    found = {}
    for module in train_batches_worker.inspect_llvm().values():
        for kernel in ("update_part", "forward_part", "gather_rows_scaled", "softmax_xent_backward_rows_inplace"):
            declared = re.search(rf"^declare .*fastmlp[.]unlinked[.][\\w.]*[.]{kernel}[.]", module, re.M) is not None
            defined = re.search(rf"^define .*{kernel}", module, re.M) is not None
            found.setdefault(kernel, []).append([declared, defined])
    print(json.dumps(found))
""")


def test_the_training_step_holds_no_copy_of_the_kernels_it_calls(tmp_path):
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path))
    found = json.loads(subprocess.run([sys.executable, "-c", STEP_PROBE], env=env, cwd=tmp_path, check=True,
                                      capture_output=True, text=True).stdout)
    assert set(found) == {"update_part", "forward_part", "gather_rows_scaled", "softmax_xent_backward_rows_inplace"}
    for kernel, modules in found.items():
        assert modules and all(declared and not defined for declared, defined in modules), (kernel, modules)
