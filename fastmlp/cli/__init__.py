"""The `fastmlp` command (`fastmlp train|evaluate|predict|bench|sweep ...`): one module per subcommand.

Each subcommand but export and tune is also `python -m fastmlp.<subcommand>` (those two: `python -m
fastmlp.cli.<subcommand>`); both run the same `main`.
    common    what every command shares in how it parses and reports errors
    train, evaluate, predict, export   the commands on models and data
    plot      the figures they draw (matplotlib, optional)
`bench` and `sweep` are packages of their own (fastmlp.bench, fastmlp.sweep).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from .._version import __version__
from .common import Parser, new_parser

SUBCOMMANDS = {
    "train": "train an MLP on MNIST, Fashion-MNIST or your own CSV / .npz data and report its test accuracy",
    "evaluate": "a saved model's test accuracy, per-class precision and recall, confusion matrix",
    "predict": "the predicted class of every row or image in CSV, .npz, .npy, IDX or image files",
    "export": "write a saved model as an ONNX graph (the onnx extra)",
    "bench": "training throughput of the backends against the gemm floor and the roofline",
    "sweep": "a grid of trainings on a Dask cluster (the sweep extra), ranked by accuracy",
    "tune": "measure which SIMD tile is fastest on this machine and keep the choice",
}
MODULES = {"train": "fastmlp.cli.train", "evaluate": "fastmlp.cli.evaluate", "predict": "fastmlp.cli.predict",
           "export": "fastmlp.cli.export",
           "bench": "fastmlp.bench", "sweep": "fastmlp.sweep", "tune": "fastmlp.cli.tune"}



def build_parser() -> Parser:
    parser = new_parser("fastmlp", description="NumPy and Numba kernels for training MLPs on the CPU.",
                        epilog="Each subcommand has its own --help, e.g. fastmlp train --help. "
                               "python -m fastmlp.<subcommand> runs the same command (export and tune: "
                               "python -m fastmlp.cli.<subcommand>).")
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
    module = importlib.import_module(MODULES[name])
    return int(module.main(rest, prog=f"fastmlp {name}"))


if __name__ == "__main__":
    sys.exit(main())
