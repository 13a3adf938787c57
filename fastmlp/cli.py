"""The `fastmlp` command (`fastmlp train|evaluate|predict|bench|sweep ...`), and what every fastmlp CLI shares
in how it parses: one-line usage errors, help that shows each default, messages in flags.

Each subcommand is also `python -m fastmlp.<subcommand>`; both run the same `main`.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

from . import __version__

SUBCOMMANDS = {
    "train": "train an MLP on MNIST or Fashion-MNIST and report its test accuracy",
    "evaluate": "a saved model's test accuracy, per-class precision and recall, confusion matrix",
    "predict": "the predicted class of every image in IDX, .npy or image files",
    "bench": "training throughput of the backends against the gemm floor and the roofline",
    "sweep": "a grid of trainings on a Dask cluster (the sweep extra), ranked by accuracy",
}


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose usage errors are one line on stderr (status 2), as README says."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows "(default: X)" after an option's help, except where there is no default to show
    (None, a flag's False) or the help already says it."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        if any(action.default is nothing for nothing in (None, False, argparse.SUPPRESS)) or "default:" in text:
            return text
        return super()._get_help_string(action)


def new_parser(prog: str, **kwargs: Any) -> Parser:
    """The parser of a fastmlp command: one-line usage errors, defaults in the help."""
    return Parser(prog=prog, formatter_class=HelpFormatter, **kwargs)


def plural(count: int, noun: str) -> str:
    """'1 epoch', '3 epochs'."""
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def dataset_not_found_message(exc: Exception) -> str | None:
    """The CLI's words for a `DatasetNotFoundError`: flags, not load_mnist's keyword arguments; the places
    looked in one per line. None for any other error."""
    from .datasets import ENV_VAR, DatasetNotFoundError

    if not isinstance(exc, DatasetNotFoundError) or exc.dataset is None:
        return None
    if exc.data_dir is not None:
        return (f"--data-dir {exc.data_dir} does not hold the {exc.dataset} files ({exc.places[0][2]}); put the "
                f"four IDX files there, or leave out --no-download to download them into it")
    looked = "\n".join(f"  - {label}: {folder} ({missing})" for label, folder, missing in exc.places)
    hint = ""
    if exc.dataset == "fashion-mnist":
        hint = " On Debian or Ubuntu, apt-get install dataset-fashion-mnist provides the system copy."
    return (f"{exc.dataset} not found, and --no-download forbids downloading it. Looked for the four IDX files "
            f"in:\n{looked}\nSet ${ENV_VAR} to a folder holding them, pass --data-dir DIR, or leave out "
            f"--no-download.{hint}")


def build_parser() -> Parser:
    parser = new_parser("fastmlp", description="NumPy and Numba kernels for training MLPs on the CPU.",
                        epilog="Each subcommand has its own --help, e.g. fastmlp train --help. "
                               "python -m fastmlp.<subcommand> runs the same command.")
    parser.add_argument("--version", action="version", version=f"fastmlp {__version__}")
    parser.add_argument("subcommand", choices=list(SUBCOMMANDS), metavar="SUBCOMMAND",
                        help="; ".join(f"{name}: {text}" for name, text in SUBCOMMANDS.items()))
    parser.add_argument("arguments", nargs=argparse.REMAINDER, metavar="...", help="the subcommand's options")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """`fastmlp SUBCOMMAND ...`: run the subcommand's `main` with the rest of the arguments; returns its status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in SUBCOMMANDS:  # before argparse, so that `fastmlp train --help` is train's help
        name, rest = argv[0], argv[1:]
    else:
        args = build_parser().parse_args(argv)  # --help, --version and usage errors exit here
        name, rest = args.subcommand, args.arguments
    module = importlib.import_module(f"fastmlp.{name}")
    return int(module.main(rest, prog=f"fastmlp {name}"))


if __name__ == "__main__":
    sys.exit(main())
