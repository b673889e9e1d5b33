"""One trial: an ordinary run in its own process and folder (mlptrain.run.trial), watched
per epoch through its metrics.csv, and read back from its folder when it ends.

A trial that crashes, runs out of memory or hits a NaN is its own process's business;
the sweep records it as failed (with the message of its outcome file) and goes on.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from mlptrain.artifacts.rundir import RunDir
from mlptrain.config.monitor import Monitor
from mlptrain.run.trial import COMPLETE, FAILED, INTERRUPTED, Outcome, TrialMember, TrialSpec
from mlptrain.sweep.spec import overrides

POLL_SECONDS = 0.2
PRUNED = "pruned"  # the sweep stopped it; its other statuses are the outcome file's words


@dataclass
class TrialResult:
    """What a trial reached. The best_* fields describe the epoch best.pt holds, chosen by
    the run's monitored metric (training.select_best_by); `curve` is that metric per epoch."""

    best_epoch: int | None = None
    best_val_accuracy: float | None = None
    best_val_loss: float | None = None
    test_accuracy: float | None = None
    train_seconds: float | None = None
    status: str = COMPLETE
    run_dir: str = ""
    message: str = ""
    curve: list[float] = field(default_factory=list)

    @classmethod
    def columns(cls) -> list[str]:
        """The results table's columns, in order (the curve is for plots)."""
        return [item.name for item in fields(cls) if item.name != "curve"]

    def best(self, monitor: Monitor) -> float | None:
        """The monitored metric at the best epoch: the trial's score."""
        return getattr(self, f"best_{monitor.metric}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def free_run_dir(trials_dir: Path, number: int) -> Path:
    """trials/trial-0007, or trial-0007-2... when an interrupted attempt left its folder."""
    base = trials_dir / f"trial-{number:04d}"
    attempt = 1
    path = base
    while path.exists():
        attempt += 1
        path = base.with_name(f"{base.name}-{attempt}")
    return path


def read_history(run_dir: Path) -> list[dict[str, str]]:
    """The run's metrics.csv rows (the finished epochs); none before its first epoch."""
    try:
        return RunDir(run_dir).read_metrics()
    except OSError:
        return []


def summarize_history(history: list[dict[str, str]], monitor: Monitor) -> TrialResult:
    """The best epoch by `monitor` (as best.pt has it), its validation metrics, the curve
    of the monitored metric and the seconds the epochs took."""
    result = TrialResult(
        curve=[value for value in map(monitor.value, history) if value is not None],
        train_seconds=sum(
            float(row["epoch_seconds"]) for row in history if row.get("epoch_seconds")
        ),
    )
    result.best_epoch = monitor.best_epoch(history)
    if result.best_epoch is not None and result.curve:
        best = history[result.best_epoch - int(history[0]["epoch"])]
        result.best_val_accuracy = float(best["val_accuracy"])
        result.best_val_loss = float(best["val_loss"])
    return result


def run_trials(
    base_config: Path,
    members: list[tuple[dict[str, Any], Path]],
    spec_path: Path,
    threads: int,
    stop: threading.Event,
    monitor: Monitor,
    on_epoch: Callable[[int, float], bool] | None = None,
    processes: set[subprocess.Popen] | None = None,
    device: str | None = None,
) -> list[TrialResult]:
    """Train one trial, or several of one shape together (`members`: (params, run_dir)
    pairs), in one process of their own (mlptrain.run.trial, from a spec written to
    `spec_path`), on `device` when the sweep pins its workers to devices. Each gets its
    own run folder and result, read from that folder. `on_epoch(epoch, monitored value)`
    returning True prunes a lone trial; models trained together end together."""
    spec = TrialSpec(
        config=[str(base_config)],
        members=[TrialMember(str(run_dir), overrides(params)) for params, run_dir in members],
        device=device,
        threads=threads,
    )
    spec.write(spec_path)
    command = [sys.executable, "-m", "mlptrain.run.trial", str(spec_path)]
    with open(spec_path.with_suffix(".stderr.txt"), "w") as stderr:
        # Its own session: a Ctrl-C at the terminal reaches the sweep, which stops trials
        # itself, so each one ends cleanly rather than all at once mid-write. Its stderr
        # is kept for people (a crash's traceback); the sweep reads only the run folders.
        process = subprocess.Popen(
            command, stdout=subprocess.DEVNULL, stderr=stderr, start_new_session=True
        )
        if processes is not None:
            processes.add(process)
        watched = on_epoch if len(members) == 1 else None
        stopped_as = _watch(process, members[0][1], stop, monitor, watched)
        if processes is not None:
            processes.discard(process)
    return [_result(run_dir, process.returncode, stopped_as, monitor) for _, run_dir in members]


def _result(
    run_dir: Path, returncode: int, stopped_as: str | None, monitor: Monitor
) -> TrialResult:
    """A trial's result from its run folder: its outcome file, metrics and test."""
    outcome = Outcome.read(run_dir)
    if stopped_as is None and outcome is not None and outcome.status == COMPLETE:
        return finished_result(run_dir, monitor)
    result = summarize_history(read_history(run_dir), monitor)
    result.run_dir, result.status = str(run_dir), stopped_as or FAILED
    if stopped_as is None:
        result.message = (
            outcome.message
            if outcome is not None
            else f"the trial process ended with exit status {returncode} and left no outcome"
        )
    return result


def finished_result(run_dir: Path, monitor: Monitor) -> TrialResult:
    """What a run that ended normally reached, read from its folder alone (so a sweep that
    lost its storage connection can still record it when it resumes)."""
    result = summarize_history(read_history(run_dir), monitor)
    result.run_dir = str(run_dir)
    try:
        summary = json.loads((run_dir / "test_metrics.json").read_text())
        result.test_accuracy = summary["accuracy"]
    except (OSError, ValueError, KeyError) as exc:
        result.status, result.message = FAILED, f"no test results: {exc}"
    return result


def _watch(
    process: subprocess.Popen,
    run_dir: Path,
    stop: threading.Event,
    monitor: Monitor,
    on_epoch: Callable[[int, float], bool] | None,
) -> str | None:
    """Wait for the trial; report new epochs; stop it (SIGTERM) when pruned or asked to."""
    reported = 0
    stopped_as = None
    while process.poll() is None:
        time.sleep(POLL_SECONDS)
        if stopped_as is not None:
            continue
        if stop.is_set():
            stopped_as = INTERRUPTED
        elif on_epoch is not None:
            curve = summarize_history(read_history(run_dir), monitor).curve
            for epoch in range(reported + 1, len(curve) + 1):
                reported = epoch
                if on_epoch(epoch, curve[epoch - 1]):
                    stopped_as = PRUNED
                    break
        if stopped_as is not None:
            process.send_signal(signal.SIGTERM)  # the trial saves what it has and exits
    return stopped_as
