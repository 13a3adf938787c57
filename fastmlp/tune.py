"""`python -m fastmlp.tune`: the same command as `fastmlp tune` (the code lives in `fastmlp.cli.tune`)."""

import sys

from .cli.tune import main

if __name__ == "__main__":
    sys.exit(main())
