"""`python -m fastmlp.bench`, the same as `fastmlp bench`."""

import sys

from .throughput import main

sys.exit(main())
