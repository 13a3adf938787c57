"""`python -m fastmlp.predict`: the same command as `fastmlp predict` (the code lives in `fastmlp.cli.predict`)."""

import sys

from .cli.predict import *  # noqa: F401,F403
from .cli.predict import main

if __name__ == "__main__":
    sys.exit(main())
