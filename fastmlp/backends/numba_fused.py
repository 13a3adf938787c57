"""Former home of the numba backend, kept so that `fastmlp.backends.numba_fused` keeps importing;
the code lives in `fastmlp.backends.numba`."""

from .numba.backend import *  # noqa: F401,F403
from .numba.backend import Backend  # noqa: F401
