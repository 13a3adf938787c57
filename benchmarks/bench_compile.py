"""Compile time of the numba backend's training epoch, with the cache disabled."""

import tempfile

from fastmlp.bench import compile_seconds_in_child


class ColdCompile:
    """Seconds to compile the fused training epoch in a fresh process with an empty NUMBA_CACHE_DIR."""

    params = [["float32", "pixels"]]
    param_names = ["input"]
    timeout = 180

    def track_cold_compile_seconds(self, input):
        with tempfile.TemporaryDirectory(prefix="fastmlp-numba-cache-") as cache_dir:
            return compile_seconds_in_child(cache_dir, [input])

    track_cold_compile_seconds.unit = "s"
