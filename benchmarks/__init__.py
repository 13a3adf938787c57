"""asv suites of fastmlp: `asv run` from the repository root (settings in asv.conf.json)."""
