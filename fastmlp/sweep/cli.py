"""The sweep CLI: `fastmlp sweep --lr 0.05 0.1 --seed 0 1 2` (or `python -m fastmlp.sweep`), trials run on Dask.

Each of `fastmlp.train`'s options may take several values; the trials are their cartesian
product (or `--random N` of it). They run on a Dask cluster: by default a LocalCluster of one
single-threaded worker process per core on 127.0.0.1, or the one at `--scheduler ADDRESS`.
fastmlp/sweep_trial.py is what a worker runs; fastmlp/sweep_grid.py builds the trials and
fastmlp/sweep_report.py the table, the JSON and the groups over seeds.
"""

from __future__ import annotations

import argparse
import logging
import sys
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tqdm import tqdm

from .._version import __version__
from ..cli.common import check_output_path, new_parser, positive_int, run_reporting_errors
from ..cli.plot import PLOT_FORMATS, require_plotting
from ..runtime.blas_threads import usable_cpus
from .grid import Config, add_grid_arguments, config_key, configurations, describe, grid_values, swept_options
from .plot import plot_sweep
from .report import Record, Report, load_resumed_trials, trial_record
from .trial import TRIAL_STARTED, Source, ensemble_accuracy, one_line_error, run_trial

if TYPE_CHECKING:
    from distributed import Client, Future

    from ..model import MLP

PROG = "python -m fastmlp.sweep"
INSTALL_HINT = 'pip install "fastmlp[sweep]"'
NEXT_GRID = "--and"  # on the command line: the options after it make one more grid
CONNECT_TIMEOUT_S = 20


class SweepUnavailableError(ImportError):
    """Dask distributed, from the `sweep` extra, is not installed."""


def build_parser(prog: str = PROG) -> argparse.ArgumentParser:
    parser = new_parser(
        prog,
        description="Train MLPs over a grid of fastmlp.train's options on a Dask cluster and compare them. "
                    "Each training option takes one or more values; the trials are their cartesian product. "
                    f"'{NEXT_GRID}' followed by training options adds another grid, which takes the training "
                    f"options before the first '{NEXT_GRID}' as its defaults.",
    )
    parser.set_defaults(grid_dests=add_grid_arguments(parser))
    parser.add_argument("--random", type=positive_int, default=None, metavar="N",
                        help="run N trials drawn at random from the grid instead of all of it")
    parser.add_argument("--random-seed", type=int, default=0, metavar="S", help="seed of the --random draw")
    parser.add_argument("--scheduler", metavar="ADDRESS",
                        help="the Dask scheduler of a running cluster, e.g. tcp://10.0.0.5:8786 "
                             "(default: start a local cluster on 127.0.0.1)")
    parser.add_argument("--workers", type=positive_int, default=None, metavar="N",
                        help="worker processes of the local cluster, one thread each (default: one per core)")
    parser.add_argument("--json", type=Path, metavar="PATH",
                        help="write every trial's configuration and results as JSON, after each trial")
    parser.add_argument("--resume", type=Path, metavar="PATH",
                        help="continue the sweep of this JSON: skip its ok trials, rerun its failed ones "
                             "(and write to it unless --json says otherwise)")
    parser.add_argument("--plot", type=Path, metavar="PATH",
                        help="draw accuracy against each swept option as an image in the format of PATH's suffix "
                             f"({', '.join(PLOT_FORMATS)}; PNG without one); needs the plot extra")
    parser.add_argument("--save-best", type=Path, metavar="PATH", help="write the best trial's model (.npz)")
    parser.add_argument("--ensemble", action="store_true",
                        help="with several --seed values: also the test accuracy of each configuration's "
                             "seeds' averaged probabilities")
    parser.add_argument("--quiet", action="store_true", help="print only the final table")
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error")
    parser.add_argument("--version", action="version", version=f"fastmlp {__version__}")
    return parser


def parse_arguments(argv: Sequence[str] | None, prog: str = PROG) -> tuple[argparse.Namespace, list[Config]]:
    """(args, configurations): the sweep's options and its trials; exits with status 2 on a usage error."""
    parser = build_parser(prog)
    parts = _split_grids(sys.argv[1:] if argv is None else list(argv))
    # The sweep's own options (--json, --scheduler, ...) may come anywhere; the training options
    # of each grid are those before the first --and, overridden by those of its own part.
    args = parser.parse_args([word for part in parts for word in part])
    grids = [grid_values(parser.parse_args(parts[0] + part), args.grid_dests) for part in parts[1:]]
    grids.insert(0, grid_values(parser.parse_args(parts[0]), args.grid_dests))
    if len({grid["val_size"][0] for grid in grids}) > 1:
        parser.error("--val-size must be the same for every grid: the table ranks all trials by one accuracy")
    for grid in grids:
        if grid["patience"] != [None] and grid["val_size"] == [0.0]:
            parser.error("--patience needs --val-size > 0: early stopping watches the validation loss")
    if args.workers is not None and args.scheduler:
        parser.error("--workers sizes the local cluster; with --scheduler the cluster's own workers run the trials")
    try:
        configs = configurations(grids, args.random, args.random_seed)
    except ValueError as exc:
        parser.error(str(exc))
    if args.ensemble and len({c["seed"] for c in configs}) < 2:
        parser.error("--ensemble averages the trials of several seeds: give --seed two or more values")
    return args, configs


def _split_grids(argv: Sequence[str]) -> list[list[str]]:
    parts: list[list[str]] = [[]]
    for word in argv:
        if word == NEXT_GRID:
            parts.append([])
        else:
            parts[-1].append(word)
    return parts


def require_distributed() -> None:
    """Raise SweepUnavailableError, saying how to install it, unless Dask distributed can be imported."""
    try:
        import distributed  # noqa: F401
    except ImportError:
        raise SweepUnavailableError(f"sweeps need Dask distributed, which is not installed: {INSTALL_HINT}") from None


@contextmanager
def dask_client(scheduler: str | None = None, workers: int | None = None) -> Iterator[Client]:
    """A distributed.Client of the cluster at `scheduler`, or of a new LocalCluster on 127.0.0.1 of
    `workers` single-threaded worker processes (default one per core), closed on leaving."""
    from distributed import Client, LocalCluster

    if scheduler:
        try:
            client = Client(scheduler, timeout=CONNECT_TIMEOUT_S)
        except (OSError, TimeoutError, ValueError) as exc:
            raise ConnectionError(f"--scheduler {scheduler}: cannot reach the Dask scheduler: "
                                  f"{' '.join(str(exc).split())}") from None
        with client:
            yield client
        return
    # One thread per worker process: each trial trains single-threaded, so this fills the cores
    # without oversubscribing them. No dashboard, and the scheduler's remaining HTTP routes on a
    # free loopback port rather than 8787, which another cluster on the machine may hold.
    with LocalCluster(n_workers=workers or usable_cpus(), threads_per_worker=1, processes=True, host="127.0.0.1",
                      dashboard_address=None, scheduler_kwargs={"dashboard_address": "127.0.0.1:0"},
                      silence_logs=logging.ERROR) as cluster, Client(cluster) as client:
        yield client


def run(args: argparse.Namespace, configs: list[Config]) -> Report:
    """Run the trials not already done in --resume's JSON; print and write the results."""
    say: Callable[[str], object] = (lambda *a: None) if args.quiet else tqdm.write
    # A local cluster's workers share this machine's folders; a remote one's resolve the path where they run.
    data_dir = args.data_dir if args.scheduler or args.data_dir is None else args.data_dir.resolve()
    source = {"dataset": configs[0]["dataset"], "data_dir": str(data_dir) if data_dir else None,
              "download": not args.no_download}
    resumed = load_resumed_trials(args.resume) if args.resume else []
    done = {config_key(trial["config"]) for trial in resumed if trial["status"] == "ok"}
    todo = [config for config in configs if config_key(config) not in done]
    todo_keys = {config_key(config) for config in todo}
    report = Report(configs=configs, swept=swept_options(configs) or ["seed"], source=source,
                    by_validation=args.val_size > 0, argv=args.argv,
                    trials=[trial for trial in resumed if config_key(trial["config"]) not in todo_keys])
    output = args.json or args.resume
    with dask_client(args.scheduler, args.workers) as client:
        say(f"fastmlp sweep: {len(configs)} trials, {len(todo)} to run"
            + (f" ({len(configs) - len(todo)} done in {args.resume})" if args.resume else "")
            + f", on {_describe_cluster(client, args.scheduler)}")
        starts = _watch_trial_starts(client)
        best_model = _run_trials(client, todo, source, args, report, starts, output, say)
        if args.ensemble:
            _add_ensembles(client, report, source)
        if output:
            report.write_json(output)
        print(report.table())
        for line in report.groups_over_seeds_lines():
            print(line)
        if args.save_best:
            _save_best(client, report, best_model, source, args.save_best, say)
    if output:
        say(f"results written to {output}")
    if args.plot:
        plot_sweep(report.ok_trials(), report.swept, args.plot, metric=report.metric)
        say(f"accuracy per option drawn in {args.plot}")
    return report


def _run_trials(client: Client, todo: list[Config], source: Source, args: argparse.Namespace, report: Report,
                starts: dict[str, list[str]], output: Path | None,
                say: Callable[[str], object]) -> tuple[Record | None, MLP | None]:
    """Submit every trial, record each as it finishes; returns (record, model) of the best trial run here."""
    from distributed import as_completed

    run_id = uuid.uuid4().hex[:8]
    futures: dict[Future, Config] = {}
    for i, config in enumerate(todo):
        key = f"fastmlp-trial-{run_id}-{i}"
        future = client.submit(run_trial, key, config, source, keep_model=args.save_best is not None,
                               keep_probabilities=args.ensemble, key=key, pure=False)
        futures[future] = config
    best: tuple[Record | None, MLP | None] = (None, None)
    with tqdm(total=len(todo), unit="trial", disable=args.quiet or not sys.stderr.isatty()) as bar:
        for finished, future in enumerate(as_completed(futures), 1):
            result = _result_of(future)
            model = result.pop("model", None)
            record = trial_record(futures[future], result, attempts=starts.get(future.key, []))
            record["_probabilities"] = result.pop("test_probabilities", None)
            report.add(record)
            if model is not None and (best[0] is None or report.rank_key(record) < report.rank_key(best[0])):
                best = (record, model)
            if output:
                report.write_json(output)
            say(f"[{finished}/{len(todo)}] {report.trial_line(record)}")
            bar.update()
            future.release()
    return best


def _result_of(future: Future) -> dict[str, Any]:
    """The trial's result dict; a trial Dask gave up on (its workers kept dying) becomes a failed one."""
    from distributed import KilledWorker

    try:
        return future.result()
    except KilledWorker as exc:
        return {"status": "failed", "error": f"every worker that ran it was lost ({one_line_error(exc)})"}
    except Exception as exc:  # e.g. a worker that cannot import fastmlp or unpickle the task
        return {"status": "failed", "error": one_line_error(exc)}


def _watch_trial_starts(client: Client) -> dict[str, list[str]]:
    """{task key: [worker address of each attempt]}, filled as trials log their start (run_trial).

    A trial that started twice was rerun by Dask after losing its worker mid-trial: the scheduler
    reschedules the tasks of a lost worker, up to distributed.scheduler.allowed-failures times.
    """
    starts: dict[str, list[str]] = {}

    def note(event: tuple[float, dict[str, Any]]) -> None:
        _, message = event
        starts.setdefault(message["key"], []).append(message["worker"])

    client.subscribe_topic(TRIAL_STARTED, note)
    return starts


def _describe_cluster(client: Client, scheduler: str | None) -> str:
    workers = client.scheduler_info()["workers"].values()
    threads = sorted({worker["nthreads"] for worker in workers})
    text = (f"{len(workers)} worker{'s' if len(workers) != 1 else ''} "
            f"({'/'.join(map(str, threads)) or 'no'} thread{'s' if threads != [1] else ''} each)")
    if scheduler:
        text += f" of the cluster at {scheduler}"
    else:
        assert client.scheduler is not None  # set while the client is connected
        text += f" of a local cluster at {client.scheduler.address}"
    if not workers:
        text += "; the trials wait for workers to join"
    return text


def _add_ensembles(client: Client, report: Report, source: Source) -> None:
    """The test accuracy of each group's averaged probabilities, computed on a worker, which holds the labels."""
    for group in report.groups_over_seeds():
        members = [trial for trial in group["trials"] if trial.get("_probabilities") is not None]
        if len(members) >= 2:  # trials resumed from a JSON have no probabilities
            accuracy = client.submit(ensemble_accuracy, source, [t["_probabilities"] for t in members]).result()
            report.set_ensemble(group["config"], [t["config"]["seed"] for t in members], accuracy)


def _save_best(client: Client, report: Report, best: tuple[Record | None, MLP | None], source: Source, path: Path,
               say: Callable[[str], object]) -> None:
    """Save the best trial's model; a best trial from --resume's JSON is trained again (same seed, same result)."""
    record = report.best()
    if record is None:  # the command exits 1 for that
        say("--save-best: no trial finished ok, so there is no model to save")
        return
    model = best[1] if best[0] is record else None
    if model is None:
        say(f"training the best trial again to save its model ({describe(record['config'], report.swept)})")
        result = client.submit(run_trial, "fastmlp-best", record["config"], source, keep_model=True,
                               pure=False).result()
        if result["status"] != "ok":
            raise RuntimeError(f"--save-best: training the best trial again failed: {result['error']}")
        model = result["model"]
    model.save(path)
    say(f"best model ({describe(record['config'], report.swept)}) saved to {path}")


def main(argv: Sequence[str] | None = None, *, prog: str = PROG) -> int:
    args, configs = parse_arguments(argv, prog)
    args.argv = sys.argv[1:] if argv is None else list(argv)

    reports: list[Report] = []

    def check_then_run() -> None:
        require_distributed()
        for option in ("json", "resume", "plot", "save_best"):
            check_output_path(getattr(args, option), "--" + option.replace("_", "-"))
        if args.plot:  # before the trials, not after them: no matplotlib, or a suffix it cannot draw
            require_plotting(args.plot)
        reports.append(run(args, configs))

    status = run_reporting_errors(prog, check_then_run, debug=args.debug)
    if status == 0 and reports[0].trials and not reports[0].ok_trials():
        print(f"{prog}: error: every trial failed", file=sys.stderr)
        return 1
    return status


if __name__ == "__main__":
    sys.exit(main())
