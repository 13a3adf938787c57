"""`python -m fastmlp.sweep` / `fastmlp sweep`: a grid of trainings on a Dask cluster, ranked by accuracy.

    cli      the command: options, the cluster, the run and its report
    grid     the configurations a command line asks for
    trial    one training run on a Dask worker
    report   the records of trials, their ranking and the resumable JSON
    plot     accuracy against a swept option
"""

from .cli import build_parser, main, parse_arguments

__all__ = ["build_parser", "main", "parse_arguments"]
