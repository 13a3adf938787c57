"""The training CLI: `python -m fastmlp.train --backend numba`. Argument parsing and printing only."""

import argparse
import json
import math
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from threadpoolctl import threadpool_limits

from .._version import __version__
from ..backends import get_backend
from ..backends.base import BackendBase
from ..datasets import ENV_VAR, find_dataset, load_mnist, train_val_split, unused_env_folder
from ..datasets.tabular import class_labels, encode_labels, hold_out, load_table, mean_and_std, standardize_in_place
from ..inputs import Pixels, check_positive_float
from ..model import INITS, MLP
from ..optim import ADAM_OPTIMIZERS, OPTIMIZERS, SCHEDULES
from ..runtime.atomic import atomic_write
from ..runtime.compile_notice import announce_compiling
from ..trainer import Trainer, format_epoch
from .common import (
    add_data_arguments,
    check_output_path,
    integer_at_least,
    new_parser,
    plural,
    positive_int,
    run_reporting_errors,
)
from .plot import PLOT_FORMATS, plot_learning_curves, require_plotting

PROG = "python -m fastmlp.train"
ADAM_DEFAULT_LR = 0.001  # --lr when --optimizer adam / adamw is given without it


def build_parser(prog: str = PROG) -> argparse.ArgumentParser:
    parser = new_parser(
        prog, description="Train an MLP (ReLU hidden layers, softmax, minibatch SGD or Adam) on MNIST, or on your own "
                          "data with --data, and report test accuracy.",
    )
    add_training_arguments(parser)
    add_optimizer_arguments(parser)
    add_own_data_arguments(parser)
    parser.add_argument("--save", type=Path, metavar="PATH", help="write the trained model (.npz)")
    parser.add_argument("--metrics-json", type=Path, metavar="PATH", help="write metrics and history as JSON")
    parser.add_argument("--plot", type=Path, metavar="PATH",
                        help="draw the learning curves (loss, accuracy per epoch) as an image in the format of "
                             f"PATH's suffix ({', '.join(PLOT_FORMATS)}; PNG without one); needs the plot extra")
    parser.add_argument("--threads", "--blas-threads", dest="threads", type=positive_int, default=None, metavar="N",
                        help="threads to train with: BLAS threads for numpy, worker threads (each with one BLAS "
                             "thread) for numba (default: one per core, and numpy's BLAS fewer while other work keeps "
                             "cores busy; a fixed N gives the same bits in every run). --blas-threads is its old name")
    parser.add_argument("--quiet", action="store_true", help="print only the final test accuracy")
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error")
    parser.add_argument("--version", action="version", version=f"fastmlp {__version__}")
    return parser


def add_training_arguments(
    parser: argparse.ArgumentParser, adapt: Callable[[str, dict[str, Any]], dict[str, Any]] | None = None
) -> None:
    """The options that define one training (net, optimiser, schedule, seed, data), shared by
    `fastmlp.train` and `fastmlp.sweep`. adapt(dest, kwargs) -> kwargs, if given, rewrites an
    option's `add_argument` keywords (the sweep lets each take several values); the data options
    are never adapted."""

    def add(flag: str, **kwargs: Any) -> None:
        dest = flag[2:].replace("-", "_")
        parser.add_argument(flag, **(adapt(dest, kwargs) if adapt else kwargs))

    add("--backend", choices=["numpy", "numba"], default="numba",
        help="numpy: the vectorized reference; numba: the fused JIT kernels")
    add("--hidden", type=positive_int, nargs="*", default=[128, 64], metavar="N",
        help="hidden layer widths; --hidden with no width trains no hidden layer (softmax regression)")
    add("--epochs", type=positive_int, default=10, help="passes over the training set")
    add("--batch-size", type=positive_int, default=64, metavar="N", help="samples per SGD step")
    add("--lr", type=_positive_float, default=0.05, help="SGD learning rate (of the first epoch)")
    add("--momentum", type=_momentum, default=0.9, help="SGD momentum in [0, 1); 0: plain SGD")
    add("--nesterov", action=argparse.BooleanOptionalAction, default=True,
        help="Nesterov momentum rather than classical (no effect with --momentum 0)")
    add("--weight-decay", type=_non_negative_float, default=0.0,
        help="L2 weight decay on the weights (not the biases)")
    add("--schedule", choices=SCHEDULES, default="cosine",
        help="learning rate per epoch: step: times --gamma every --step-size epochs; "
             "cosine: from --lr down towards 0 over the epochs")
    add("--step-size", type=positive_int, default=10, metavar="EPOCHS",
        help="epochs between two decays of the step schedule")
    add("--gamma", type=_decay_factor, default=0.1, help="the step schedule's decay factor")
    add("--seed", type=_non_negative_int, default=0, help="seed of the initial weights and the shuffling")
    add("--init", choices=INITS, default="he", help="he: N(0, 2/fan_in); normal: N(0, 0.01^2)")
    add_data_arguments(parser)  # where the data comes from: one source per command, never varied
    add("--val-size", type=_fraction, default=0.0,
        help="fraction of the training set held out for validation (0: report test metrics per epoch)")
    add("--patience", type=positive_int, default=None, metavar="N",
        help="stop when the validation loss has not improved for N epochs and keep the best "
             "epoch's parameters (needs --val-size)")


def add_optimizer_arguments(parser: argparse.ArgumentParser) -> None:
    """--optimizer and Adam's --beta1, --beta2, --eps (train's own: a sweep trains with SGD)."""
    parser.add_argument("--optimizer", choices=OPTIMIZERS, default="sgd",
                        help="sgd: SGD with --momentum; adam: Adam (Kingma & Ba) with --beta1, --beta2, --eps, "
                             f"and --lr {ADAM_DEFAULT_LR:g} unless given; adamw: Adam with the weight decay "
                             "decoupled from the gradient. --momentum and --nesterov are SGD options")
    parser.add_argument("--beta1", type=_beta, default=0.9,
                        help="Adam's decay rate of the gradient's running mean, in [0, 1)")
    parser.add_argument("--beta2", type=_beta, default=0.999,
                        help="Adam's decay rate of the squared gradient's running mean, in [0, 1)")
    parser.add_argument("--eps", type=_eps, default=1e-8,
                        help="Adam's term added to the root of the second moment, > 0")


def add_own_data_arguments(parser: argparse.ArgumentParser) -> None:
    """--data, --target, --test-data, --test-size, --standardize: training on the user's own file."""
    group = parser.add_argument_group(
        "your own data", "train on a CSV file with a header row (features: numbers; labels: numbers or words) or an "
                         ".npz file holding arrays X (samples, features) and y (labels), instead of --dataset")
    group.add_argument("--data", type=Path, metavar="PATH", help="the training data: a .csv or an .npz file")
    group.add_argument("--target", metavar="COLUMN", help="the CSV column holding the labels (default: the last "
                                                          "column); every other column is a feature")
    group.add_argument("--test-data", type=Path, metavar="PATH",
                       help="the test data, with the same columns as --data (default: hold out --test-size of --data)")
    group.add_argument("--test-size", type=_open_fraction, default=0.2, metavar="FRACTION",
                       help="without --test-data: the fraction of --data's rows held out, at random (--seed), as the "
                            "test set")
    group.add_argument("--standardize", action="store_true",
                       help="scale each feature to mean 0 and standard deviation 1 (of the training rows); the model "
                            "keeps the mean and std and applies them in evaluate, predict and the ONNX export")


def given_options(prog: str, argv: Sequence[str] | None) -> set[str]:
    """The dest names of the options given on the command line, not left at their defaults: the
    command line parsed again with every default suppressed (so `--momentum 0.9` counts, and
    the default 0.9 does not)."""
    probe = build_parser(prog)
    for action in probe._actions:
        action.default = argparse.SUPPRESS
    return set(vars(probe.parse_args(argv)))


def _non_negative_int(text: str) -> int:
    return integer_at_least(text, 0)


def _positive_float(text: str) -> float:
    try:
        return check_positive_float(float(text), "value")
    except ValueError:  # also float("x")
        raise argparse.ArgumentTypeError(f"must be a finite number > 0 (in float32), got {text}") from None


def _float_type(accepts: Callable[[float], bool], expectation: str) -> Callable[[str], float]:
    """An argparse type: the float of the text if accepts(value), else the usage error 'must be <expectation>'."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {expectation}, got {text!r}") from None
        if not accepts(value):
            raise argparse.ArgumentTypeError(f"must be {expectation}, got {text}")
        return value

    return parse


_non_negative_float = _float_type(lambda v: math.isfinite(v) and v >= 0, "a finite number >= 0")
_momentum = _float_type(lambda v: 0 <= v < 1, "in [0, 1)")
_decay_factor = _float_type(lambda v: 0 < v <= 1, "in (0, 1]")
_fraction = _float_type(lambda v: 0 <= v < 1, "a fraction in [0, 1)")
_open_fraction = _float_type(lambda v: 0 < v < 1, "a fraction in (0, 1)")
_beta = _float_type(lambda v: 0 <= v < 1, "in [0, 1)")
_eps = _float_type(lambda v: math.isfinite(v) and v > 0 and np.float32(v) > 0, "a finite number > 0 (in float32)")


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Load data, train, evaluate, write outputs; returns the metrics dict."""
    say = (lambda *a: None) if args.quiet else print
    start = time.perf_counter()
    data = load_own_data(args, say) if args.data is not None else load_named_dataset(args)
    X_train, y_train, X_test, y_test = data.X_train, data.y_train, data.X_test, data.y_test
    data_seconds = time.perf_counter() - start
    if args.val_size > 0:
        X_train, y_train, X_val, y_val = train_val_split(X_train, y_train, args.val_size, args.seed)
        validation, val_label = (X_val, y_val), "val"
    else:
        validation, val_label = (X_test, y_test), "test"

    model = MLP([X_train.shape[1], *args.hidden, data.n_classes], init=args.init, seed=args.seed)
    backend = get_backend(args.backend, args.threads)
    # The form the backend trains fastest on, with the same values (float32 bytes / 255 as bytes): asked here, as
    # Trainer.fit keeps X as it is when given on_epoch_end, and ours below only prints.
    X_train = backend.training_inputs(X_train, args.epochs)
    # One line on stderr while Numba really compiles (a new net depth, a cold cache); none on a cache hit.
    tell = (lambda message: print(message, file=sys.stderr, flush=True)) if not args.quiet else (lambda message: None)
    with announce_compiling(say=tell):
        compile_seconds = backend.warm_up(model, pixels=isinstance(X_train, Pixels))
    trainer = Trainer(model, backend, lr=args.lr, batch_size=args.batch_size, seed=args.seed, momentum=args.momentum,
                      nesterov=args.nesterov, weight_decay=args.weight_decay, schedule=args.schedule,
                      step_size=args.step_size, gamma=args.gamma, optimizer=args.optimizer,
                      betas=(args.beta1, args.beta2), eps=args.eps)
    compiled = "" if type(backend).warm_up is BackendBase.warm_up else f", compiled in {compile_seconds:.1f} s"
    say(f"fastmlp {__version__}: backend {args.backend}, net {'-'.join(map(str, model.layer_sizes))}, "
        f"{data.name} {len(X_train):,} train / {len(validation[0]):,} {val_label}, "
        f"batch {args.batch_size}, {describe_sgd(args)}, seed {args.seed} "
        f"(data loaded in {data_seconds:.1f} s{compiled})")
    history = trainer.fit(
        X_train, y_train, epochs=args.epochs, validation_data=validation,
        on_epoch_end=lambda record: say(format_epoch(record, args.epochs, val_label)),
        progress_bar=not args.quiet and sys.stderr.isatty(), patience=args.patience,
    )
    if history.best_epoch is not None and history.best_epoch != history[-1].epoch:
        say(f"early stopping: kept the parameters of epoch {history.best_epoch}, the lowest validation loss")
    test_loss, test_accuracy = trainer.evaluate(X_test, y_test)
    data.describe_model(model)  # the labels, columns and standardisation the saved model keeps
    print(f"test accuracy {100 * test_accuracy:.2f}%  (loss {test_loss:.4f}, {plural(len(history), 'epoch')}, "
          f"{sum(history.column('seconds')):.1f} s training)")

    metrics: dict[str, Any] = {
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
                             title=f"{'-'.join(map(str, model.layer_sizes))} MLP on {data.name}, "
                                   f"{args.backend} backend: test accuracy {100 * test_accuracy:.2f}%")
        say(f"learning curves drawn in {args.plot}")
    return metrics


@dataclass
class TrainingData:
    """What `run` trains and tests on: features (float32, or MNIST's Pixels) and class indices, the number of
    classes, a name for the output, and what a model trained on it must keep (labels, columns, mean and std)."""

    X_train: Any
    y_train: np.ndarray
    X_test: Any
    y_test: np.ndarray
    n_classes: int
    name: str
    classes: np.ndarray | None = None
    feature_names: tuple[str, ...] | None = None
    target: str | None = None
    mean: np.ndarray | None = None
    std: np.ndarray | None = None

    def describe_model(self, model: MLP) -> None:
        """Give model this data's labels, column names and standardisation, as `save` then writes them."""
        model.classes, model.feature_names, model.target = self.classes, self.feature_names, self.target
        if self.mean is not None and self.std is not None:
            model.set_standardization(self.mean, self.std)


def load_named_dataset(args: argparse.Namespace) -> TrainingData:
    """MNIST or Fashion-MNIST (--dataset) from where --data-dir, $FASTMLP_DATA or the defaults say; says on
    stderr when $FASTMLP_DATA is set but another copy is used, so that the data used is never a surprise."""
    where, folder = find_dataset(args.dataset, args.data_dir, download=not args.no_download)
    unused = unused_env_folder(args.dataset) if args.data_dir is None else None
    if unused is not None:
        print(f"{args.prog}: note: ${ENV_VAR}={unused[0]} does not hold the {args.dataset} files ({unused[1]}); "
              f"using the {where}: {folder}", file=sys.stderr)
    X_train, y_train, X_test, y_test = load_mnist(folder, download=False, dataset=args.dataset, as_pixels=True)
    return TrainingData(X_train, y_train, X_test, y_test, 10, args.dataset)


def load_own_data(args: argparse.Namespace, say: Callable[..., object]) -> TrainingData:
    """--data (and --test-data, or a held-out --test-size of --data), labels encoded as class indices,
    standardised in place with --standardize (the training rows' mean and std)."""
    table = load_table(args.data, args.target)
    classes = class_labels(table.labels, args.data)
    y = encode_labels(table.labels, classes, args.data)
    X, names, target = table.X, table.feature_names, table.target
    del table  # from here X is the only copy of the features, and moves in place
    if args.test_data is not None:
        test = load_table(args.test_data, target if args.test_data.suffix.lower() != ".npz" else None)
        if test.X.shape[1] != X.shape[1] or (target is not None and test.target is not None
                                             and test.feature_names != names):
            raise ValueError(f"--test-data {args.test_data}: its feature columns ({', '.join(test.feature_names)}) "
                             f"differ from --data {args.data}'s ({', '.join(names)})")
        X_train, y_train, X_test, y_test = X, y, test.X, encode_labels(test.labels, classes, args.test_data)
        say(f"test set: {args.test_data}")
    else:
        try:
            X_train, y_train, X_test, y_test = hold_out(X, y, args.test_size, args.seed)
        except ValueError as exc:
            raise ValueError(f"--test-size {args.test_size:g} of --data {args.data}: {exc}") from None
        say(f"test set: {len(X_test):,} rows ({100 * args.test_size:g}%) of {args.data} held out at random "
            f"(--test-size {args.test_size:g}, --seed {args.seed}); give --test-data PATH to test on a file instead")
    mean = std = None
    if args.standardize:
        mean, std = mean_and_std(X_train)
        standardize_in_place(X_train, mean, std)
        standardize_in_place(X_test, mean, std)
    return TrainingData(X_train, y_train, X_test, y_test, len(classes), str(args.data), classes, names, target,
                        mean, std)


def describe_sgd(args: argparse.Namespace) -> str:
    """The optimiser settings in a few words, e.g. 'lr 0.05 cosine, momentum 0.9 (Nesterov)'
    or 'adam, lr 0.001 cosine, betas 0.9 0.999, eps 1e-08'."""
    adam = getattr(args, "optimizer", "sgd") in ADAM_OPTIMIZERS
    text = (f"{args.optimizer}, " if adam else "") + f"lr {args.lr:g}"
    text += "" if args.schedule == "none" else f" {args.schedule}"
    if args.schedule == "step":
        text += f" (x{args.gamma:g} every {plural(args.step_size, 'epoch')})"
    if adam:
        text += f", betas {args.beta1:g} {args.beta2:g}, eps {args.eps:g}"
    if args.momentum:
        text += f", momentum {args.momentum:g}" + (" (Nesterov)" if args.nesterov else "")
    if args.weight_decay:
        text += f", weight decay {args.weight_decay:g}"
    return text


def check_data_options(parser: argparse.ArgumentParser, args: argparse.Namespace, given: set[str]) -> None:
    """Usage errors for data options that contradict each other: --data (own file) against --dataset and
    --data-dir (MNIST-style folders); the own-data options without --data."""
    if args.data is not None:
        for option in ("dataset", "data_dir", "no_download"):
            if option in given:
                parser.error(f"--{option.replace('_', '-')} chooses an MNIST-style dataset; --data trains on your "
                             f"file instead: give one or the other")
        if args.test_data is not None and "test_size" in given:
            parser.error("--test-size holds out part of --data; with --test-data the test set is that file")
    else:
        for option in ("target", "test_data", "test_size", "standardize"):
            if option in given:
                parser.error(f"--{option.replace('_', '-')} goes with --data PATH (your own CSV or .npz file)")


def main(argv: Sequence[str] | None = None, *, prog: str = PROG) -> int:
    parser = build_parser(prog)
    args = parser.parse_args(argv)
    if args.patience is not None and args.val_size == 0:
        parser.error("--patience needs --val-size > 0: early stopping watches the validation loss")
    given = given_options(prog, argv)
    if args.optimizer in ADAM_OPTIMIZERS:
        for option in ("momentum", "nesterov"):
            if option in given:
                parser.error(f"--{option} is an SGD option: --optimizer {args.optimizer} takes --beta1 and --beta2 "
                             f"instead")
        args.momentum, args.nesterov = 0.0, False  # the SGD defaults do not apply
        if "lr" not in given:
            args.lr = ADAM_DEFAULT_LR
    else:
        for option in ("beta1", "beta2", "eps"):
            if option in given:
                parser.error(f"--{option} is an Adam option: give --optimizer adam or adamw with it")
    if args.momentum == 0:
        args.nesterov = False  # plain SGD: there is no velocity to look ahead with
    check_data_options(parser, args, given)
    args.prog = prog

    def check_outputs_then_run() -> None:
        for option in ("save", "metrics_json", "plot"):
            check_output_path(getattr(args, option), "--" + option.replace("_", "-"))
        if args.plot:
            require_plotting(args.plot)
        with threadpool_limits(args.threads, user_api="blas"):  # None: leave BLAS as it is
            run(args)

    return run_reporting_errors(prog, check_outputs_then_run, debug=args.debug)


if __name__ == "__main__":
    sys.exit(main())
