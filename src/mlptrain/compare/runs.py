"""Runs compared across folders: what each run reached and what differs between them.

Reads only a run folder's files (config.yaml, metrics.csv, test_metrics.json, train.log,
the checkpoints' presence), never torch, so hundreds of runs read in well under a second
and a copy of `runs/` from another machine compares as well as the original.
"""

from __future__ import annotations

import glob
import json
import math
import statistics
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from mlptrain.artifacts.rundir import RunDir
from mlptrain.config.files import flatten
from mlptrain.config.monitor import Monitor

# Keys that name or place a run rather than define it: never a column, never a group key.
NOT_COMPARED = ("name", "output.runs_dir", "data.root", "data.source")
GROUP_FREE = ("seed",)  # runs differing only here form one group
METRICS = ("best_val", "test_accuracy", "train_seconds")
FINISHED, RESUMABLE, NONFINITE, FAILED = "finished", "interrupted (resumable)", "NaN", "failed"
_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


@dataclass
class Run:
    folder: Path
    config: dict[str, Any]  # flattened: dotted keys
    history: list[dict[str, float]]
    status: str
    best_epoch: int | None
    best_val: float | None  # the monitored validation metric at the best epoch
    monitor: str
    test_accuracy: float | None
    train_seconds: float

    @property
    def epochs(self) -> str:
        return f"{len(self.history)}/{self.config.get('training.epochs', '?')}"


@dataclass
class Row:
    """One line of the table: a run, or a group of runs that differ only in their seed."""

    runs: list[Run]
    label: str
    values: dict[str, Any] = field(default_factory=dict)


def find_runs(arguments: Iterable[str]) -> tuple[list[Path], list[str]]:
    """Run folders named by `arguments` (runs, sweep folders, folders of runs, globs), each
    once, in order; and a warning for each argument that held none."""
    folders: list[Path] = []
    warnings: list[str] = []
    for argument in arguments:
        matches = sorted(glob.glob(argument)) if glob.has_magic(argument) else [argument]
        found = [run for match in matches for run in _runs_under(Path(match))]
        if not found:
            warnings.append(f"{argument}: no run folder here (none holds a config.yaml)")
        folders += [run for run in found if run not in folders]
    return folders, warnings


def _runs_under(path: Path) -> list[Path]:
    """`path` itself when it holds a config.yaml; else the run folders below it: those
    with a config.yaml and a train.log (which mlp-train writes first), so copies of a
    run's files elsewhere (an MLflow store's artifacts) are not taken for runs."""
    if (path / "config.yaml").is_file():
        return [path]
    if not path.is_dir():
        return []
    return sorted(
        config.parent
        for config in path.rglob("config.yaml")
        if (config.parent / "train.log").is_file()
    )


def read_run(folder: Path) -> Run:
    """One run's results; ValueError (or OSError) names what is damaged."""
    try:
        document = yaml.load((folder / "config.yaml").read_text(), Loader=_Loader)
    except yaml.YAMLError:
        raise ValueError("config.yaml is not valid YAML") from None
    if not isinstance(document, dict):
        raise ValueError("config.yaml is not a mapping of keys")
    config = flatten(document)
    monitor = Monitor(config.get("training.select_best_by", "val_accuracy"))
    history = _history(folder)
    test = _json(folder / "test_metrics.json")
    best_epoch = test.get("epoch") if test else monitor.best_epoch(history)
    best = next((row for row in history if row["epoch"] == best_epoch), None)
    return Run(
        folder=folder,
        config=config,
        history=history,
        status=_status(folder, test),
        best_epoch=best_epoch,
        best_val=best.get(monitor.metric) if best else None,
        monitor=monitor.metric,
        test_accuracy=test.get("accuracy") if test else None,
        train_seconds=sum(row.get("epoch_seconds") or 0.0 for row in history),
    )


def _history(folder: Path) -> list[dict[str, float]]:
    rows = RunDir(folder).read_metrics()
    try:
        return [{key: float(value) for key, value in row.items() if value} for row in rows]
    except (TypeError, ValueError):
        raise ValueError("metrics.csv has a row that is not numbers") from None


def _json(path: Path) -> dict[str, Any] | None:
    if not path.exists():
        return None
    data = json.loads(path.read_text())
    if not isinstance(data, dict):
        raise ValueError(f"{path.name} is not a JSON object")
    return data


def _status(folder: Path, test: dict[str, Any] | None) -> str:
    if test is not None:
        return FINISHED
    log = folder / "train.log"
    if log.exists() and "became NaN or infinite" in log.read_text(errors="replace"):
        return NONFINITE
    return RESUMABLE if (folder / "last.pt").exists() else FAILED


def read_runs(folders: Iterable[Path]) -> tuple[list[Run], list[str]]:
    runs, warnings = [], []
    for folder in folders:
        try:
            runs.append(read_run(folder))
        except (OSError, ValueError) as exc:
            warnings.append(f"{folder}: skipped, {str(exc).splitlines()[0]}")
    return runs, warnings


def differing_keys(runs: list[Run], exclude: Iterable[str] = ()) -> list[str]:
    """Config keys whose values are not the same in every run, in config order."""
    skip = set(NOT_COMPARED) | set(exclude)
    keys: list[str] = []
    for run in runs:
        keys += [key for key in run.config if key not in keys and key not in skip]
    return [key for key in keys if len({_text(run.config.get(key)) for run in runs}) > 1]


def rows_of(runs: list[Run], group: bool) -> tuple[list[Row], list[str]]:
    """The table's rows and its varied config keys: one row per run, or per group of runs
    of one status whose resolved configs differ only in the seed (mean ± std)."""
    keys = differing_keys(runs, GROUP_FREE if group else ())
    buckets: dict[tuple, list[Run]] = {}
    for run in runs:
        # A group holds runs of one status: an unfinished run never dilutes finished ones.
        identity = (run.status, *(_text(run.config.get(key)) for key in keys))
        identity = identity if group else (run.folder,)
        buckets.setdefault(identity, []).append(run)
    rows = []
    for members in buckets.values():
        first = members[0]
        label = str(first.folder) if len(members) == 1 else f"{first.folder} (+{len(members) - 1})"
        values: dict[str, Any] = {
            "dataset": first.config.get("data.dataset"),
            "n": len(members),
            "status": _joined(run.status for run in members),
            "epochs": _joined(run.epochs for run in members),
            "best_epoch": _joined(str(run.best_epoch or "-") for run in members),
            "monitor": first.monitor,
        }
        for metric in METRICS:
            values[metric] = _mean_std([getattr(run, metric) for run in members])
        values.update({key: first.config.get(key) for key in keys})
        rows.append(Row(members, label, values))
    return rows, keys


def _mean_std(values: list[float | None]) -> tuple[float, float] | None:
    numbers = [value for value in values if value is not None]
    if not numbers:
        return None
    return statistics.fmean(numbers), statistics.stdev(numbers) if len(numbers) > 1 else 0.0


def _joined(values: Iterable[str]) -> str:
    distinct = list(dict.fromkeys(values))
    return distinct[0] if len(distinct) == 1 else ", ".join(distinct)


def _text(value: Any) -> str:
    return json.dumps(value, sort_keys=True)


def matches(run: Run, conditions: dict[str, Any]) -> bool:
    """`--where KEY=VALUE`: every key's config value equals the given one."""
    return all(_text(run.config.get(key)) == _text(value) for key, value in conditions.items())


def sort_rows(rows: list[Row], key: str) -> list[Row]:
    """Best first for metrics (lowest first for seconds and losses), ascending for keys."""

    def value(row: Row) -> float | str:
        item = row.values.get(key)
        if isinstance(item, tuple):
            item = item[0]
        return item if isinstance(item, (int, float)) and not isinstance(item, bool) else math.nan

    descending = key in ("best_val", "test_accuracy") and not all(
        row.values.get("monitor") == "val_loss" and key == "best_val" for row in rows
    )
    numeric = [row for row in rows if not math.isnan(value(row))]
    rest = [row for row in rows if math.isnan(value(row))]
    if not numeric and rest:
        return sorted(rows, key=lambda row: _text(row.values.get(key)))
    return sorted(numeric, key=value, reverse=descending) + rest
