"""Float32 inputs that are bytes, trained on as bytes.

A float32 row of MNIST is 3,136 bytes, the same row as uint8 `Pixels` 784. The step gathers each shuffled batch
from memory, and a core's memory throughput bounds that gather, so float32 rows cost an epoch more than pixel
rows of the same values (docs/results.md). Where every entry of a float32 X is a byte times 1/255, computed as
the gather computes it (the float32 product `float32(k) * float32(1 / 255)`, as `load_mnist` and
`Pixels.to_float32` make them), the bytes reproduce X bit for bit through that gather: training on
`Pixels(codes)` gives the same bits as training on X, with a quarter of the bytes to read. Data scaled another
way (X / 255 in float64, standardised features) fail the check at their first such value and are trained on
as they are.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from ...inference.threads import run_parts
from ...inputs import FloatArray, Pixels
from ...runtime.jit import cached_njit

# Trainer.fit hands X over as bytes (`exact_pixels`) only for this many epochs or more. The check and the copy took
# 6-85 ms for MNIST's 60,000 rows on the two cores of an AMD EPYC Zen 5 VM (most of it faulting in the bytes'
# pages, the more where the memory was new to the process), and an epoch on the bytes saved 1-3 ms at batch 32 and
# 64 there, 7-15 at 128 and 1024: ten-epoch fits came out 1.00x at 32 and 64 and 1.04-1.13x at 128 and 1024, the
# longer fits the more (docs/results.md).
PIXEL_EPOCHS = 10


@cached_njit(nogil=True)
def pixel_codes_into(codes: npt.NDArray[np.uint8], X: FloatArray, scale: np.float32) -> bool:
    """codes[i, j] = the byte k whose float32 product k * scale is X[i, j], for a C-contiguous float32 X (n, f);
    True when every entry of X is such a product (not NaN, not -0.0, on the grid of scale's multiples from 0 to
    255 * scale), else False, at the end of the first row that holds another value (codes are then unfinished).
    scale: float32 (> 0). Overwrites codes (n, f) uint8."""
    inv = np.float32(1.0) / scale
    signs = X.view(np.uint32)  # the sign bit tells -0.0 (a different bit pattern) from 0.0, which == calls equal
    for i in range(X.shape[0]):
        bad = np.uint32(0)  # OR of the row's misses: no branch in the loop, which then vectorises
        for j in range(X.shape[1]):
            v = X[i, j]
            # The nearest k to v / scale, clamped to the bytes (a NaN gives some k, whose product differs from it).
            k = np.int32(min(max(v * inv + np.float32(0.5), np.float32(0.0)), np.float32(255.0)))
            bad |= np.uint32(np.float32(k) * scale != v) | (signs[i, j] >> np.uint32(31))
            codes[i, j] = np.uint8(k)
        if bad:
            return False
    return True


def exact_pixels(X: FloatArray, scale: float = 1.0 / 255.0, parts: int = 1) -> Pixels | None:
    """X (float32, C-contiguous, 2-D) as `Pixels(codes, scale)` when each entry is exactly a byte times scale in
    float32 (`pixel_codes_into`), so that the two give the same float32 rows; else None. Copies X's values once
    into a new uint8 array (a quarter of X's bytes), its rows cut into `parts` parts checked on as many threads
    at once (the first on this one); a part stops at its first row off the grid."""
    codes = np.empty(X.shape, dtype=np.uint8)
    parts = max(1, min(parts, len(X)))
    cuts = [len(X) * p // parts for p in range(parts + 1)]
    scale32 = np.float32(scale)
    if not all(run_parts(pixel_codes_into, [(codes[a:b], X[a:b], scale32) for a, b in zip(cuts, cuts[1:])])):
        return None
    return Pixels(codes, scale)
