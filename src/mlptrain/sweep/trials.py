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
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from mlptrain.sweep.spec import overrides

POLL_SECONDS = 0.2
COMPLETE, FAILED, PRUNED, INTERRUPTED = "complete", "failed", "pruned", "interrupted"


@dataclass
class TrialResult:
    status: str
    run_dir: str
    message: str = ""
    best_val_accuracy: float | None = None
    best_epoch: int | None = None
    test_accuracy: float | None = None
    train_seconds: float | None = None
    curve: list[float] = field(default_factory=list)  # validation accuracy per epoch

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


def read_curve(run_dir: Path) -> tuple[list[float], float]:
    """Validation accuracy per finished epoch, and the seconds those epochs took."""
    try:
        with open(run_dir / "metrics.csv", newline="") as handle:
            rows = list(csv.DictReader(handle))
    except OSError:
        return [], 0.0
    curve = [float(row["val_accuracy"]) for row in rows if row.get("val_accuracy")]
    seconds = sum(float(row["epoch_seconds"]) for row in rows if row.get("epoch_seconds"))
    return curve, seconds


def run_trial(
    base_config: Path,
    params: dict[str, Any],
    run_dir: Path,
    threads: int,
    stop: threading.Event,
    on_epoch: Callable[[int, float], bool] | None = None,
    processes: set[subprocess.Popen] | None = None,
) -> TrialResult:
    """Train one trial; `on_epoch(epoch, val_accuracy)` returning True prunes it."""
    command = [
        sys.executable,
        "-m",
        "mlptrain.cli.train",
        "--config",
        str(base_config),
        *(item for override in overrides(params) for item in ("--set", override)),
        "--set",
        f"training.threads={threads}",
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
        stopped_as = _watch(process, run_dir, stop, on_epoch)
        if processes is not None:
            processes.discard(process)
        errors.seek(0)
        stderr = errors.read()
    curve, seconds = read_curve(run_dir)
    result = TrialResult(status=COMPLETE, run_dir=str(run_dir), curve=curve, train_seconds=seconds)
    if curve:
        result.best_val_accuracy = max(curve)
        result.best_epoch = curve.index(max(curve)) + 1
    if stopped_as is not None:
        result.status = stopped_as
    elif process.returncode != 0:
        result.status = FAILED
        result.message = _last_line(stderr) or f"exit status {process.returncode}"
    else:
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
            curve, _ = read_curve(run_dir)
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
