"""A sweep's results: one record per trial, the ranked table, the groups over seeds and the JSON.

The JSON (`--json PATH`, rewritten atomically after every finished trial) holds
{"sweep": {what was swept and on which data}, "trials": [one record per finished trial, in the
order they finished], "best": the best ok record, "groups_over_seeds": [...]}, each record with
"config", "status" ("ok" or "failed"), "test_accuracy", "test_loss", "val_accuracy",
"val_loss", "train_s", "error" (None when ok) and how it ran ("worker", "retries",
"lost_workers", "loaded_data", "compile_s").
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from .._version import __version__
from ..runtime.atomic import atomic_write
from .grid import Config, config_key, describe, format_value, option_flag, without

RESULT_FIELDS = ("test_accuracy", "test_loss", "val_accuracy", "val_loss", "train_s", "epochs_trained",
                 "best_epoch", "error", "worker", "loaded_data", "compile_s")
STATUSES = ("ok", "failed")

Record = dict[str, Any]  # one trial's JSON record (and the client's private "_" fields)


def trial_record(config: Config, result: dict[str, Any], attempts: Sequence[str]) -> Record:
    """A trial's JSON record from its config, run_trial's result and the workers each attempt started on."""
    record: Record = {"config": config, "status": result["status"]}
    record.update({name: result.get(name) for name in RESULT_FIELDS})
    # Each attempt but the one that returned lost its worker mid-trial (all of them, if Dask gave up).
    lost = attempts[:-1] if result.get("worker") is not None else list(attempts)
    record["retries"] = max(0, len(attempts) - 1)
    record["lost_workers"] = lost
    return record


def load_resumed_trials(path: str | os.PathLike[str]) -> list[Record]:
    """The trial records of a sweep JSON written by --json, checked enough to resume from."""
    try:
        document = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FileNotFoundError(f"--resume {path}: no such file") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"--resume {path}: not a JSON file ({exc})") from None
    trials = document.get("trials") if isinstance(document, dict) else None
    if not isinstance(trials, list) or not all(
            isinstance(t, dict) and isinstance(t.get("config"), dict) and t.get("status") in STATUSES for t in trials):
        raise ValueError(f"--resume {path}: not a sweep's JSON (expected a \"trials\" list of records with "
                         f"\"config\" and \"status\", as --json writes)")
    for trial in trials:  # written before the sweep had --optimizer: every trial was SGD's
        trial["config"].setdefault("optimizer", "sgd")
    return trials


class Report:
    """The records of a sweep's trials (resumed ones first), ranked by test or validation accuracy."""

    def __init__(self, *, configs: Sequence[Config], swept: list[str], source: dict[str, Any], by_validation: bool,
                 argv: list[str], trials: Iterable[Record] = ()) -> None:
        self.trials = list(trials)
        self.swept = swept
        self.metric = "val_accuracy" if by_validation else "test_accuracy"
        self.header = {"fastmlp": __version__, "argv": argv, "trials_in_grid": len(configs), "swept": swept,
                       "sorted_by": self.metric, "data": source}
        # config_key of a group -> {"seeds": [...], "test_accuracy": ...}
        self.ensembles: dict[str, dict[str, Any]] = {}

    def add(self, record: Record) -> None:
        self.trials.append(record)

    def ok_trials(self) -> list[Record]:
        return [trial for trial in self.trials if trial["status"] == "ok"]

    def rank_key(self, record: Record) -> tuple[int, float, float]:
        """Sorts the best first: ok trials by descending accuracy (ties: lower test loss), then the failed ones."""
        value = record.get(self.metric)
        if record["status"] != "ok" or value is None:
            return (1, 0.0, 0.0)
        return (0, -value, record["test_loss"])

    def ranked(self) -> list[Record]:
        return sorted(self.trials, key=self.rank_key)

    def best(self) -> Record | None:
        ranked = self.ranked()
        return ranked[0] if ranked and ranked[0]["status"] == "ok" else None

    def trial_line(self, record: Record) -> str:
        """The line printed as a trial finishes."""
        text = describe(record["config"], self.swept) + ": "
        if record["status"] == "ok":
            if record["val_accuracy"] is not None:
                text += f"val acc {100 * record['val_accuracy']:.2f}%, "
            text += (f"test acc {100 * record['test_accuracy']:.2f}% (loss {record['test_loss']:.4f}), "
                     f"{record['train_s']:.1f} s training")
        else:
            text += f"failed: {record['error']}"
        if record["worker"]:
            text += f", on {record['worker']}"
        if record["lost_workers"]:
            text += (f" (retried {record['retries']}x: worker {', '.join(record['lost_workers'])} "
                     f"was lost mid-trial)")
        return text

    def table(self) -> str:
        """The trials ranked, one row each, as aligned text."""
        columns = [option_flag(dest)[2:] for dest in self.swept]
        columns += (["val acc"] if self.metric == "val_accuracy" else []) + ["test acc", "test loss", "train s",
                                                                             "status"]
        rows = []
        for rank, trial in enumerate(self.ranked(), 1):
            row = [format_value(dest, trial["config"][dest]) for dest in self.swept]
            if trial["status"] == "ok":
                if self.metric == "val_accuracy":
                    row.append(_percent(trial["val_accuracy"]))
                row += [_percent(trial["test_accuracy"]), f"{trial['test_loss']:.4f}", f"{trial['train_s']:.1f}",
                        "ok" + (f" (retried {trial['retries']}x)" if trial["retries"] else "")]
            else:
                row += [""] * (len(columns) - len(self.swept) - 1) + [f"failed: {_shorten(trial['error'])}"]
            rows.append([str(rank)] + row)
        return _align(["#"] + columns, rows, title=f"{len(self.trials)} trials, best first "
                                                    f"(by {self.metric.replace('_', ' ')}):")

    def groups_over_seeds(self) -> list[dict[str, Any]]:
        """The ok trials that differ only by seed, grouped: [{"config" (no seed), "trials"}], when seeds were swept."""
        if "seed" not in self.swept:
            return []
        groups: dict[str, dict[str, Any]] = {}
        for trial in self.ok_trials():
            config = without(trial["config"], "seed")
            groups.setdefault(config_key(config), {"config": config, "trials": []})["trials"].append(trial)
        return list(groups.values())

    def set_ensemble(self, config: Config, seeds: list[int], accuracy: float) -> None:
        self.ensembles[config_key(config)] = {"seeds": seeds, "test_accuracy": accuracy}

    def group_summaries(self) -> list[dict[str, Any]]:
        """Mean, min and max test accuracy of each group over seeds, and its ensemble's if computed."""
        summaries = []
        for group in self.groups_over_seeds():
            accuracies = [trial["test_accuracy"] for trial in group["trials"]]
            summaries.append({"config": group["config"], "seeds": [t["config"]["seed"] for t in group["trials"]],
                              "test_accuracy_mean": sum(accuracies) / len(accuracies),
                              "test_accuracy_min": min(accuracies), "test_accuracy_max": max(accuracies),
                              "ensemble": self.ensembles.get(config_key(group["config"]))})
        return sorted(summaries, key=lambda s: -s["test_accuracy_mean"])

    def groups_over_seeds_lines(self) -> list[str]:
        """The groups over seeds as a table (none when seeds were not swept)."""
        summaries = self.group_summaries()
        if not summaries:
            return []
        options = [dest for dest in self.swept if dest != "seed"]
        ensembles = any(s["ensemble"] for s in summaries)
        rows = []
        for s in summaries:
            row = [format_value(dest, s["config"][dest]) for dest in options]
            row += [" ".join(map(str, sorted(s["seeds"]))), _percent(s["test_accuracy_mean"]),
                    _percent(s["test_accuracy_min"]), _percent(s["test_accuracy_max"])]
            if ensembles:
                row.append(_percent(s["ensemble"]["test_accuracy"]) if s["ensemble"] else "")
            rows.append(row)
        columns = [option_flag(dest)[2:] for dest in options] + ["seeds", "mean test acc", "min", "max"]
        columns += ["ensemble test acc"] if ensembles else []
        return ["", _align(columns, rows, title="over seeds (ok trials), best mean first:")]

    def document(self) -> dict[str, Any]:
        """The whole sweep as the JSON-ready dict --json writes."""
        best = self.best()
        return {"sweep": self.header, "trials": [_public(t) for t in self.trials],
                "best": _public(best) if best else None, "groups_over_seeds": self.group_summaries()}

    def write_json(self, path: str | os.PathLike[str]) -> None:
        with atomic_write(path, "w", encoding="utf-8") as f:
            json.dump(self.document(), f, indent=2)
            f.write("\n")


def _public(record: Record) -> Record:
    """A record without the client's private fields (test probabilities kept for --ensemble)."""
    return {key: value for key, value in record.items() if not key.startswith("_")}


def _percent(value: float | None) -> str:
    return "" if value is None or not math.isfinite(value) else f"{100 * value:.2f}%"


def _shorten(text: str, width: int = 70) -> str:
    return text if len(text) <= width else text[: width - 3] + "..."


def _align(columns: Sequence[str], rows: Sequence[Sequence[str]], title: str) -> str:
    widths = [max(len(str(cell)) for cell in column) for column in zip(columns, *rows)]
    lines = [title, "  ".join(f"{c:<{w}}" for c, w in zip(columns, widths)).rstrip()]
    lines += ["  ".join(f"{c:<{w}}" for c, w in zip(row, widths)).rstrip() for row in rows]
    return "\n".join(lines)
