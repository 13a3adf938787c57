"""The fused backend: fastmlp's own SIMD kernels run whole epochs in nopython code."""

from .backend import Backend

__all__ = ["Backend"]
