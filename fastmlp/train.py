"""`python -m fastmlp.train`: the same command as `fastmlp train` (the code lives in `fastmlp.cli.train`)."""

import sys

from .cli.train import *  # noqa: F401,F403
from .cli.train import main

if __name__ == "__main__":
    sys.exit(main())
