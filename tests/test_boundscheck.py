"""Bounds checking: `.ci/run` runs the kernel and equivalence tests again with NUMBA_BOUNDSCHECK=1
(and its own NUMBA_CACHE_DIR); these tests prove the checks are really compiled in."""

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from numba import njit

from fastmlp import kernels

pytestmark = pytest.mark.kernels  # run again per ISA and with bounds checks by .ci/run

BOUNDSCHECKED = os.environ.get("NUMBA_BOUNDSCHECK") == "1"


@pytest.mark.skipif(not BOUNDSCHECKED, reason="only in the NUMBA_BOUNDSCHECK=1 run of .ci/run")
def test_out_of_range_indices_raise_index_error_in_fastmlp_kernels_and_user_njit_code():
    @njit
    def read(a, i):
        return a[i]

    with pytest.raises(IndexError):
        read(np.zeros(3), 3)
    # A cached fastmlp kernel: compiled with the checks, not loaded from the unchecked cache.
    with pytest.raises(IndexError):
        kernels.gather_labels(np.empty(2, np.int64), np.arange(3), np.array([0, 3]))


def test_numba_boundscheck_env_var_turns_the_checks_on_in_a_fresh_process(tmp_path):
    script = textwrap.dedent("""
        import numpy as np
        from fastmlp import kernels
        try:
            kernels.gather_labels(np.empty(2, np.int64), np.arange(3), np.array([0, 3]))
        except IndexError:
            print("IndexError")
    """)
    env = {**os.environ, "NUMBA_BOUNDSCHECK": "1", "NUMBA_CACHE_DIR": str(tmp_path)}
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "IndexError"
