"""`fastmlp.checked_kernels`: the public kernels for Python callers, arguments checked; the code lives in
`fastmlp.kernels.checked`."""

from .kernels.checked import *  # noqa: F401,F403
from .kernels.checked import __all__  # noqa: F401
