"""What every fastmlp command shares: one-line usage errors, help that shows each default, argument
types whose errors name the flag, data options, output checks, and the run-and-report wrapper."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

from ..datasets import FILES


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
    """The parser of a fastmlp command: one-line usage errors, defaults in the help, and options spelled out in
    full: argparse's prefix matching would read --data as --data-dir, or a future option's prefix as an old one."""
    kwargs.setdefault("allow_abbrev", False)
    return Parser(prog=prog, formatter_class=HelpFormatter, **kwargs)


def plural(count: int, noun: str) -> str:
    """'1 epoch', '3 epochs'."""
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def dataset_not_found_message(exc: Exception) -> str | None:
    """The CLI's words for a `DatasetNotFoundError`: flags, not load_mnist's keyword arguments; the places
    looked in one per line. None for any other error."""
    from ..datasets import ENV_VAR, DatasetNotFoundError

    if not isinstance(exc, DatasetNotFoundError) or exc.dataset is None:
        return None
    if exc.data_dir is not None and exc.data_dir.exists() and not exc.data_dir.is_dir():
        return (f"--data-dir {exc.data_dir} is a file, not a folder of the {exc.dataset} IDX files; to train on "
                f"a CSV or .npz file of your own, give it as --data {exc.data_dir}")
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


def add_data_arguments(parser: argparse.ArgumentParser) -> None:
    """--dataset, --data-dir and --no-download: where the data comes from, for every fastmlp command."""
    parser.add_argument("--dataset", choices=sorted(FILES), default="mnist",
                        help="mnist: handwritten digits; fashion-mnist: ten kinds of clothing, same format")
    parser.add_argument("--data-dir", type=Path, default=None, metavar="DIR",
                        help="folder with the four IDX files (default: $FASTMLP_DATA, the embedded MNIST, the "
                             "system copy, the user cache, then a download into the cache)")
    parser.add_argument("--no-download", action="store_true", help="never use the network")


def integer_at_least(text: str, minimum: int) -> int:
    """The int of text if it is an integer >= minimum, else the usage error 'must be an integer >= minimum'."""
    try:
        value = int(text)
    except ValueError:
        value = None
    if value is None or value < minimum:
        raise argparse.ArgumentTypeError(f"must be an integer >= {minimum}, got {text!r}")
    return value


def positive_int(text: str) -> int:
    return integer_at_least(text, 1)


def check_output_path(path: str | os.PathLike[str] | None, option: str) -> None:
    """Fail before the work, not after it, when an output cannot be written."""
    if path is None:
        return
    path = Path(path)
    folder = path.parent
    if not folder.is_dir():
        raise FileNotFoundError(f"{option} {path}: folder {folder} does not exist")
    if not os.access(folder, os.W_OK):
        raise PermissionError(f"{option} {path}: folder {folder} is not writable")
    if path.is_dir():
        raise IsADirectoryError(f"{option} {path} is a folder, not a file")


def run_reporting_errors(prog: str, action: Callable[[], object], *, debug: bool = False) -> int:
    """Call action() and return the exit status: 0; 1 after one line on stderr for an error (debug re-raises it;
    data not found adds the places looked in, one per line); 130 on Ctrl-C; 141 when stdout was closed early."""
    try:
        action()
    except KeyboardInterrupt:  # outputs are written atomically, so none is left half-written
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # stdout closed early, as by `| head`: stop quietly, as shell tools do
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit
        return 141
    except Exception as exc:
        if debug:
            raise
        print(f"{prog}: error: {dataset_not_found_message(exc) or _one_line(exc)}", file=sys.stderr)
        return 1
    return 0


def _one_line(exc: BaseException) -> str:
    """The exception's message on one line; its type too when it is not an expected runtime error."""
    message = " ".join(str(exc).split())
    if not isinstance(exc, (OSError, ValueError, TypeError, ArithmeticError, ImportError)):
        message = f"{type(exc).__name__}: {message} (run with --debug for the traceback)"
    return message


