"""`python -m fastmlp.evaluate`: the same command as `fastmlp evaluate` (the code lives in `fastmlp.cli.evaluate`)."""

import sys

from .cli.evaluate import *  # noqa: F401,F403
from .cli.evaluate import main

if __name__ == "__main__":
    sys.exit(main())
