"""A one-line notice when Numba really compiles, not when it loads the compiled code from its cache.

Compiling the training epoch for a new net depth takes seconds; loading it from Numba's cache takes a
fraction of one. Numba fires its "numba:compile" event only for a real compilation (a cache hit returns
before it), so listening to that event is how fastmlp tells the two apart.

By default the notice goes to the "fastmlp" logger at WARNING level: with no logging set up, Python's
last-resort handler prints it as one line on stderr, so a script or notebook is told why it waits;
`logging.getLogger("fastmlp").setLevel(logging.ERROR)` silences it. A warning (the warnings module)
was the other choice, but tests and applications run with warnings as errors, and a compilation is not
something to fix. The command line passes its own `say` (stderr, quiet with --quiet).
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

logger = logging.getLogger("fastmlp")


def compiling_message(what: str = "the numba kernels") -> str:
    """The notice's text: what is compiled, and whether the result is kept for later runs."""
    from .jit import CACHE

    if CACHE:
        return f"compiling {what} (once: later runs load them from Numba's cache)..."
    return f"compiling {what} (in every run: Numba has no cache folder here, see NUMBA_CACHE_DIR)..."


@contextmanager
def announce_compiling(what: str = "the numba kernels", say: Callable[[str], object] | None = None) -> Iterator[None]:
    """Within the block, call say(message) once when Numba starts a real compilation (default: the
    "fastmlp" logger's warning); nothing when everything comes from memory or from Numba's cache."""
    if "numba" not in sys.modules:  # nothing compiles without Numba imported (the numpy backend)
        yield
        return
    from numba.core import event

    said = False

    class Notice(event.Listener):  # numba has no type information: a subclass of Any
        def on_start(self, ev: Any) -> None:
            nonlocal said
            if not said:
                said = True
                (say or logger.warning)(compiling_message(what))

        def on_end(self, ev: Any) -> None:
            pass

    with event.install_listener("numba:compile", Notice()):
        yield
