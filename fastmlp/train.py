"""The training CLI: `python -m fastmlp.train --backend numba`. Argument parsing and printing only."""

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

from threadpoolctl import threadpool_limits

from . import __version__
from ._atomic import atomic_write
from .backends import get_backend
from .datasets import FILES, load_mnist, train_val_split
from .inputs import check_positive_float
from .model import INITS, MLP
from .optim import SCHEDULES
from .plot import plot_learning_curves, require_matplotlib
from .trainer import Trainer, format_epoch

PROG = "python -m fastmlp.train"


def build_parser():
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Train an MLP (ReLU hidden layers, softmax, minibatch SGD) on MNIST and report test accuracy.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--backend", choices=["numpy", "numba"], default="numba",
                        help="numpy: the vectorized reference; numba: the fused JIT kernels")
    parser.add_argument("--hidden", type=_positive_int, nargs="*", default=[128, 64], metavar="N",
                        help="hidden layer widths")
    parser.add_argument("--epochs", type=_positive_int, default=10)
    parser.add_argument("--batch-size", type=_positive_int, default=64)
    parser.add_argument("--lr", type=_positive_float, default=0.05, help="SGD learning rate (of the first epoch)")
    parser.add_argument("--momentum", type=_momentum, default=0.9, help="SGD momentum in [0, 1); 0: plain SGD")
    parser.add_argument("--nesterov", action=argparse.BooleanOptionalAction, default=True,
                        help="Nesterov momentum rather than classical (no effect with --momentum 0)")
    parser.add_argument("--weight-decay", type=_non_negative_float, default=0.0,
                        help="L2 weight decay on the weights (not the biases)")
    parser.add_argument("--schedule", choices=SCHEDULES, default="cosine",
                        help="learning rate per epoch: step: times --gamma every --step-size epochs; "
                             "cosine: from --lr down towards 0 over the epochs")
    parser.add_argument("--step-size", type=_positive_int, default=10, metavar="EPOCHS",
                        help="epochs between two decays of the step schedule")
    parser.add_argument("--gamma", type=_decay_factor, default=0.1, help="the step schedule's decay factor")
    parser.add_argument("--seed", type=_non_negative_int, default=0, help="seed of the initial weights and the shuffling")
    parser.add_argument("--init", choices=INITS, default="he", help="he: N(0, 2/fan_in); normal: N(0, 0.01^2)")
    add_data_arguments(parser)
    parser.add_argument("--val-size", type=_fraction, default=0.0,
                        help="fraction of the training set held out for validation (0: report test metrics per epoch)")
    parser.add_argument("--patience", type=_positive_int, default=None, metavar="N",
                        help="stop when the validation loss has not improved for N epochs and keep the best "
                             "epoch's parameters (needs --val-size)")
    parser.add_argument("--save", type=Path, metavar="PATH", help="write the trained model (.npz)")
    parser.add_argument("--metrics-json", type=Path, metavar="PATH", help="write metrics and history as JSON")
    parser.add_argument("--plot", type=Path, metavar="PATH",
                        help="draw the learning curves (loss, accuracy per epoch) as a PNG; needs the plot extra")
    parser.add_argument("--threads", "--blas-threads", dest="threads", type=_positive_int, default=None, metavar="N",
                        help="threads to train with: BLAS threads for numpy, worker threads (each with one BLAS "
                             "thread) for numba (default: one per core, and numpy's BLAS fewer while other work keeps "
                             "cores busy; a fixed N gives the same bits in every run). --blas-threads is its old name")
    parser.add_argument("--quiet", action="store_true", help="print only the final test accuracy")
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error")
    parser.add_argument("--version", action="version", version=f"fastmlp {__version__}")
    return parser


def add_data_arguments(parser):
    """--dataset, --data-dir and --no-download: where the data comes from, for every fastmlp command."""
    parser.add_argument("--dataset", choices=sorted(FILES), default="mnist")
    parser.add_argument("--data-dir", type=Path, default=None,
                        help="folder with the four IDX files (default: $FASTMLP_DATA, the embedded MNIST, the cache)")
    parser.add_argument("--no-download", action="store_true", help="never use the network")


def _positive_int(text):
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1, got {text}")
    return value


def _non_negative_int(text):
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be an integer >= 0, got {text}")
    return value


def _positive_float(text):
    try:
        return check_positive_float(float(text), "value")
    except ValueError:  # also float("x")
        raise argparse.ArgumentTypeError(f"must be a finite number > 0 (in float32), got {text}") from None


def _float_type(accepts, expectation):
    """An argparse type: the float of the text if accepts(value), else the usage error 'must be <expectation>'."""

    def parse(text):
        value = float(text)
        if not accepts(value):
            raise argparse.ArgumentTypeError(f"must be {expectation}, got {text}")
        return value

    parse.__name__ = "number"  # argparse names it in "invalid number value: 'x'"
    return parse


_non_negative_float = _float_type(lambda v: math.isfinite(v) and v >= 0, "a finite number >= 0")
_momentum = _float_type(lambda v: 0 <= v < 1, "in [0, 1)")
_decay_factor = _float_type(lambda v: 0 < v <= 1, "in (0, 1]")
_fraction = _float_type(lambda v: 0 <= v < 1, "a fraction in [0, 1)")


def run(args):
    """Load data, train, evaluate, write outputs; returns the metrics dict."""
    say = (lambda *a: None) if args.quiet else print
    start = time.perf_counter()
    X_train, y_train, X_test, y_test = load_mnist(
        args.data_dir, download=not args.no_download, dataset=args.dataset, as_pixels=True
    )
    data_seconds = time.perf_counter() - start
    if args.val_size > 0:
        X_train, y_train, X_val, y_val = train_val_split(X_train, y_train, args.val_size, args.seed)
        validation, val_label = (X_val, y_val), "val"
    else:
        validation, val_label = (X_test, y_test), "test"

    model = MLP([X_train.shape[1], *args.hidden, 10], init=args.init, seed=args.seed)
    backend = get_backend(args.backend, args.threads)
    if args.backend == "numba" and not args.quiet and sys.stderr.isatty():
        print(compiling_message(), file=sys.stderr, flush=True)
    compile_seconds = backend.warm_up(model, pixels=True, momentum=args.momentum > 0 or args.weight_decay > 0)
    trainer = Trainer(model, backend, lr=args.lr, batch_size=args.batch_size, seed=args.seed, momentum=args.momentum,
                      nesterov=args.nesterov, weight_decay=args.weight_decay, schedule=args.schedule,
                      step_size=args.step_size, gamma=args.gamma)
    say(f"fastmlp {__version__}: backend {args.backend}, net {'-'.join(map(str, model.layer_sizes))}, "
        f"{args.dataset} {len(X_train):,} train / {len(validation[0]):,} {val_label}, "
        f"batch {args.batch_size}, {describe_sgd(args)}, seed {args.seed} "
        f"(data loaded in {data_seconds:.1f} s, compiled in {compile_seconds:.1f} s)")
    history = trainer.fit(
        X_train, y_train, epochs=args.epochs, validation_data=validation,
        on_epoch_end=lambda record: say(format_epoch(record, args.epochs, val_label)),
        progress_bar=not args.quiet and sys.stderr.isatty(), patience=args.patience,
    )
    if history.best_epoch is not None and history.best_epoch != history[-1].epoch:
        say(f"early stopping: kept the parameters of epoch {history.best_epoch}, the lowest validation loss")
    test_loss, test_accuracy = trainer.evaluate(X_test, y_test)
    print(f"test accuracy {100 * test_accuracy:.2f}%  (loss {test_loss:.4f}, {len(history)} epochs, "
          f"{sum(history.column('seconds')):.1f} s training)")

    metrics = {
        "test_accuracy": test_accuracy,
        "test_loss": test_loss,
        "history": history.as_dicts(),
        "best_epoch": history.best_epoch,
        "timings": {"data_load_s": data_seconds, "compile_s": compile_seconds,
                    "train_s": sum(history.column("seconds")), "total_s": time.perf_counter() - start},
        "config": {key: str(value) if isinstance(value, Path) else value for key, value in vars(args).items()},
    }
    metrics["config"]["blas_threads"] = args.threads  # the option's old name, for readers of older reports
    if args.save:
        model.save(args.save)
        say(f"model saved to {args.save}")
    if args.metrics_json:
        with atomic_write(args.metrics_json, "w", encoding="utf-8") as f:
            json.dump(metrics, f, indent=2)
            f.write("\n")
        say(f"metrics written to {args.metrics_json}")
    if args.plot:
        plot_learning_curves(history, args.plot, val_label=val_label, best_epoch=history.best_epoch,
                             title=f"{'-'.join(map(str, model.layer_sizes))} MLP on {args.dataset}, "
                                   f"{args.backend} backend: test accuracy {100 * test_accuracy:.2f}%")
        say(f"learning curves drawn in {args.plot}")
    return metrics


def compiling_message():
    """What the terminal shows while Numba compiles (or loads from its cache) the training epoch."""
    from ._jit import CACHE

    if CACHE:
        return "compiling the numba kernels (first run only, ~10 s)..."
    return "compiling the numba kernels (~10 s, in every run: Numba has no cache folder here, see NUMBA_CACHE_DIR)..."


def describe_sgd(args):
    """The optimiser settings in a few words, e.g. 'lr 0.05 cosine, momentum 0.9 (Nesterov)'."""
    text = f"lr {args.lr:g}" + ("" if args.schedule == "none" else f" {args.schedule}")
    if args.schedule == "step":
        text += f" (x{args.gamma:g} every {args.step_size} epochs)"
    if args.momentum:
        text += f", momentum {args.momentum:g}" + (" (Nesterov)" if args.nesterov else "")
    if args.weight_decay:
        text += f", weight decay {args.weight_decay:g}"
    return text


def check_output_path(path, option):
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


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.patience is not None and args.val_size == 0:
        parser.error("--patience needs --val-size > 0: early stopping watches the validation loss")
    if args.momentum == 0:
        args.nesterov = False  # plain SGD: there is no velocity to look ahead with

    def check_outputs_then_run():
        for option in ("save", "metrics_json", "plot"):
            check_output_path(getattr(args, option), "--" + option.replace("_", "-"))
        if args.plot:
            require_matplotlib()
        with threadpool_limits(args.threads, user_api="blas"):  # None: leave BLAS as it is
            run(args)

    return run_reporting_errors(PROG, check_outputs_then_run, debug=args.debug)


def run_reporting_errors(prog, action, *, debug=False):
    """Call action() and return the exit status: 0; 1 after one line on stderr for an error (debug re-raises it);
    130 on Ctrl-C; 141 when stdout was closed early."""
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
        print(f"{prog}: error: {_one_line(exc)}", file=sys.stderr)
        return 1
    return 0


def _one_line(exc):
    """The exception's message on one line; its type too when it is not an expected runtime error."""
    message = " ".join(str(exc).split())
    if not isinstance(exc, (OSError, ValueError, TypeError, ArithmeticError, ImportError)):
        message = f"{type(exc).__name__}: {message} (run with --debug for the traceback)"
    return message


if __name__ == "__main__":
    sys.exit(main())
