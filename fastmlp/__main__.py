"""`python -m fastmlp SUBCOMMAND ...`, the same as the `fastmlp` command."""

import sys

from .cli import main

sys.exit(main())
