"""One trial: an ordinary `mlp-train` run in its own process and folder, watched per epoch.

A trial that crashes, runs out of memory or hits a NaN is its own process's business;
the sweep records it as failed and goes on.
"""

from __future__ import annotations

import csv
import json
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from mlptrain.config.monitor import Monitor
from mlptrain.sweep.spec import overrides

POLL_SECONDS = 0.2
COMPLETE, FAILED, PRUNED, INTERRUPTED = "complete", "failed", "pruned", "interrupted"


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
        with open(run_dir / "metrics.csv", newline="") as handle:
            return list(csv.DictReader(handle))
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


def run_trial(
    base_config: Path,
    params: dict[str, Any],
    run_dir: Path,
    threads: int,
    stop: threading.Event,
    monitor: Monitor,
    on_epoch: Callable[[int, float], bool] | None = None,
    processes: set[subprocess.Popen] | None = None,
    device: str | None = None,
) -> TrialResult:
    """Train one trial (on `device`, when the sweep pins its workers to devices);
    `on_epoch(epoch, monitored value)` returning True prunes it."""
    command = [
        sys.executable,
        "-m",
        "mlptrain.cli.train",
        "--config",
        str(base_config),
        *(item for override in overrides(params) for item in ("--set", override)),
        "--set",
        f"training.threads={threads}",
        *(("--set", f"device={device}") if device else ()),
        "--run-dir",
        str(run_dir),
        "--quiet",
    ]
    with tempfile.TemporaryFile("w+") as errors:
        # Its own session: a Ctrl-C at the terminal reaches the sweep, which stops trials
        # itself, so each one ends cleanly rather than all at once mid-write.
        process = subprocess.Popen(
            command, stdout=subprocess.DEVNULL, stderr=errors, text=True, start_new_session=True
        )
        if processes is not None:
            processes.add(process)
        stopped_as = _watch(process, run_dir, stop, monitor, on_epoch)
        if processes is not None:
            processes.discard(process)
        errors.seek(0)
        stderr = errors.read()
    if stopped_as is not None:
        result = summarize_history(read_history(run_dir), monitor)
        result.run_dir, result.status = str(run_dir), stopped_as
        return result
    if process.returncode != 0:
        result = summarize_history(read_history(run_dir), monitor)
        result.run_dir, result.status = str(run_dir), FAILED
        result.message = _last_line(stderr) or f"exit status {process.returncode}"
        return result
    return finished_result(run_dir, monitor)


def run_group(
    base_config: Path,
    members: list[tuple[dict[str, Any], Path]],
    spec_path: Path,
    threads: int,
    stop: threading.Event,
    monitor: Monitor,
    processes: set[subprocess.Popen] | None = None,
    device: str | None = None,
) -> list[TrialResult]:
    """Train several trials of one shape together in one process (mlp-train --group):
    `members` are (params, run_dir) pairs; each trial still gets its own run folder and
    result. Models trained together end together, so a group is never pruned."""
    spec = {"members": [{"overrides": overrides(params), "run_dir": str(run_dir)}
                        for params, run_dir in members]}  # fmt: skip
    spec_path.parent.mkdir(parents=True, exist_ok=True)
    spec_path.write_text(json.dumps(spec, indent=1) + "\n")
    command = [
        sys.executable, "-m", "mlptrain.cli.train", "--config", str(base_config),
        "--group", str(spec_path), "--set", f"training.threads={threads}",
        *(("--set", f"device={device}") if device else ()), "--quiet",
    ]  # fmt: skip
    with tempfile.TemporaryFile("w+") as errors:
        process = subprocess.Popen(
            command, stdout=subprocess.DEVNULL, stderr=errors, text=True, start_new_session=True
        )
        if processes is not None:
            processes.add(process)
        stopped_as = _watch(process, members[0][1], stop, monitor, None)
        if processes is not None:
            processes.discard(process)
        errors.seek(0)
        message = _last_line(errors.read()) or f"exit status {process.returncode}"
    results = []
    for _, run_dir in members:
        if stopped_as is None and (run_dir / "test_metrics.json").is_file():
            results.append(finished_result(run_dir, monitor))
            continue
        result = summarize_history(read_history(run_dir), monitor)
        result.run_dir, result.status = str(run_dir), stopped_as or FAILED
        if stopped_as is None:
            result.message = _member_failure(run_dir) or message
        results.append(result)
    return results


def _member_failure(run_dir: Path) -> str:
    """Why a member of a group ended without a test: the last line its train.log has."""
    try:
        lines = (run_dir / "train.log").read_text().splitlines()
    except OSError:
        return ""
    stopped = [line for line in lines if line.startswith("stopped: ")]
    return stopped[-1].removeprefix("stopped: ") if stopped else ""


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


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1].removeprefix("mlp-train: error: ").removeprefix("mlp-train: ") if lines else ""
