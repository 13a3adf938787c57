"""A cold start compiles each tile-holding kernel once (forward_part included), and none of the
step's glue on its own.

Numba links the LLVM of every function a compiled function calls into its module and optimises
it all again (fastmlp/backends/numba/step.py, "Compiling"): another signature of a kernel that
holds tiles (a call passing the literal 0 where another passes an int64), or one more compiled
layer of glue between the epoch function and the kernels, costs seconds of every cold start. The
seconds themselves are never asserted (the machine is noisy): what is counted is which functions
Numba compiled, and how often, in a fresh process with an empty cache.
"""

import json
import os
import subprocess
import sys
import tempfile
import textwrap

# Compiles the training epoch (as `fastmlp train` does before its first epoch) with Numba's cache
# in an empty folder, and prints how many times each function was compiled, by name.
PROBE = textwrap.dedent("""
    import collections, json, sys
    from numba.core import event
    from fastmlp import MLP
    from fastmlp.backends import get_backend

    compiled = collections.Counter()

    class Count(event.Listener):
        def on_start(self, ev):
            compiled[ev.data["dispatcher"].py_func.__name__] += 1

        def on_end(self, ev):
            pass

    event.register("numba:compile", Count())
    pixels = sys.argv[1] == "pixels"
    get_backend("numba").warm_up(MLP((6, 5, 4, 3), seed=0), pixels=pixels)
    # Then an epoch on two workers, each gathering into input buffers of its own (layer 0 split by panels):
    # the warm-up's compilation must serve it too, whatever the worker count.
    import numpy as np
    from fastmlp import Pixels
    from fastmlp.backends.numba.backend import Backend
    from fastmlp.kernels import PANEL_WIDTH
    from fastmlp.backends.numba.threads import epoch_workers, may_replicate_upper, private_inputs
    sizes = (64, 2 * PANEL_WIDTH, 4, 3)
    assert epoch_workers(2, 64, sizes) == 2 and private_inputs(2, 64, sizes) and may_replicate_upper(2, 64, sizes)
    X = np.zeros((256, 64), np.uint8)
    # Then with the upper layers replicated on both workers (one barrier a step, acts[0] double-buffered).
    from fastmlp.backends.numba import threads
    for replicated in (False, True):
        threads.SPLITS = threads.SplitChooser(forced=replicated)
        Backend(threads=2).train_epoch(MLP(sizes, seed=0), Pixels(X) if pixels else X.astype(np.float32),
                                       np.zeros(256, np.int64), batch_size=64, lr=0.01, rng=np.random.default_rng(0))
    print(json.dumps(compiled))
""")

# Kernels with SIMD tiles (or their IR) that the epoch function calls, and how many times each is compiled:
# once, forward_part too (its forward and backward passes with the same argument types: step.py's module doc).
TILE_KERNELS = {"forward_part": 1, "forward_part_into_panels": 1, "update_part": 1, "transpose_packed_into": 1,
                "panels_from_rows_into": 1}
# The step's glue, inlined into train_batches_worker: never compiled as a function of its own.
INLINED_GLUE = ("forward_backward", "updates", "gather_part", "forward_rows", "backward_rows",
                "backward_rows_into_panels", "bias_step", "adam_bias_update", "part_of", "layer_input",
                "layer0_columns", "training_forward_rows", "layer1_cut", "sum_parts_bias_rows_into")
# The kernels' own small helpers, inlined into the kernel that calls them: compiled on its own, each was a module
# that Numba linked into its caller and optimised again (0.5 s of a cold start on an Intel Xeon, the five).
INLINED_HELPERS = ("_panel_offset", "_zigzag", "_first_column", "_chunked_wgrad_tiles", "_prefetch_row",
                   "_forward_tiles", "_unlisted_after")


def _compiled_in_a_fresh_process(kind):
    with tempfile.TemporaryDirectory(prefix="fastmlp-cold-") as cache:
        # FASTMLP_TUNE=0: with the tuning folder in the empty cache, a first use would tune (its own processes,
        # counted nowhere here, but up to 30 s); the stored choice or the built-in table serves as well.
        env = {**os.environ, "NUMBA_CACHE_DIR": cache, "FASTMLP_TUNE": "0"}
        out = subprocess.run([sys.executable, "-c", PROBE, kind], capture_output=True, text=True, env=env,
                             timeout=300)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_a_cold_start_compiles_each_tile_kernel_once_and_no_glue_on_its_own():
    compiled = _compiled_in_a_fresh_process("pixels")
    assert compiled["train_batches_worker"] == 1
    assert compiled["forward_logits_inplace"] == 1  # a Trainer's evaluation, compiled by the warm-up too
    assert {name: compiled.get(name, 0) for name in TILE_KERNELS} == TILE_KERNELS
    assert {name: compiled.get(name, 0) for name in INLINED_GLUE} == dict.fromkeys(INLINED_GLUE, 0)
    assert {name: compiled.get(name, 0) for name in INLINED_HELPERS} == dict.fromkeys(INLINED_HELPERS, 0)


def test_the_step_functions_compile_without_reference_counting():
    # They allocate nothing, and Numba's increfs and decrefs of every array of every tuple they pass down their
    # inlined glue were 45 % of train_batches_worker's unoptimised IR (step.py's module doc).
    from fastmlp.backends.numba import batch, step
    for function in (step.step_worker, step.train_batches_worker, batch.forward_probs_inplace,
                     batch.forward_logits_inplace, batch.loss_and_grads_into):
        assert function.targetoptions.get("_nrt") is False, function.py_func.__name__
