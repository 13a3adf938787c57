"""`python -m fastmlp.sweep`, the same as `fastmlp sweep`."""

import sys

from .cli import main

sys.exit(main())
