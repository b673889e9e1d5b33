"""What every sweep engine shares (SweepContext, worker threads, devices) and the grid.

Both engines (the grid here, Optuna in optuna_engine.py) run trials in worker threads,
each thread waiting on one trial process, and keep a ledger that a resumed sweep reads:
trials.json for a grid, the Optuna study for a search.
"""

from __future__ import annotations

import json
import logging
import queue
import subprocess
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlptrain.fsutil import atomic_write_text
from mlptrain.monitor import Monitor
from mlptrain.sweep.report import row_for, score, write_reports
from mlptrain.sweep.settings import SweepSettings
from mlptrain.sweep.spec import encode
from mlptrain.sweep.trials import (
    COMPLETE,
    FAILED,
    INTERRUPTED,
    PRUNED,
    TrialResult,
    free_run_dir,
    run_trial,
)

log = logging.getLogger("mlptrain")


@dataclass
class SweepContext:
    """What every trial of a sweep shares."""

    folder: Path
    base_config: Path
    settings: SweepSettings
    workers: int
    threads: int  # torch threads per trial
    stop: threading.Event = field(default_factory=threading.Event)
    processes: set[subprocess.Popen] = field(default_factory=set)
    lock: threading.Lock = field(default_factory=threading.Lock)
    devices: queue.Queue[str] | None = None  # free devices, when workers are pinned

    @classmethod
    def pinned(cls, devices: list[str], **values: Any) -> SweepContext:
        """A context whose trials each take one of `devices` while they run."""
        context = cls(**values)
        if devices:
            context.devices = queue.Queue()
            for device in devices:
                context.devices.put(device)
        return context

    @property
    def trials_dir(self) -> Path:
        return self.folder / "trials"

    @property
    def monitor(self) -> Monitor:
        return self.settings.objective

    def run_trial(self, params: dict[str, Any], run_dir: Path, on_epoch=None) -> TrialResult:
        """Run a trial, on a free device of its own when the sweep has --devices."""
        device = self.devices.get() if self.devices is not None else None
        if device is not None:
            log.info("%s starts on %s", run_dir.name, device)
        try:
            return run_trial(
                self.base_config,
                params,
                run_dir,
                self.threads,
                self.stop,
                self.monitor,
                on_epoch=on_epoch,
                processes=self.processes,
                device=device,
            )
        finally:
            if device is not None:
                self.devices.put(device)

    def write_reports(self, rows: list[dict[str, Any]]) -> None:
        keys, log_keys = self.settings.keys, self.settings.log_keys()
        write_reports(self.folder, keys, rows, self.monitor, log_keys)

    def log_result(self, number: int, params: dict[str, Any], result: dict[str, Any]) -> None:
        outcome = result["status"]
        value = score(result, self.monitor)
        if value is not None:
            outcome += f", {self.monitor.label} {value:.4f} (epoch {result['best_epoch']})"
        if result.get("message"):
            outcome += f": {result['message']}"
        log.info("trial %d: %s -> %s", number, self.describe(params), outcome)

    def describe(self, params: dict[str, Any]) -> str:
        return ", ".join(f"{key}={encode(value)}" for key, value in params.items())


def run_all(context: SweepContext, jobs: list[Callable[[], None]]) -> None:
    with ThreadPoolExecutor(max_workers=context.workers) as pool:
        futures = [pool.submit(job) for job in jobs]
        for future in futures:
            while True:  # short waits keep the main thread free for Ctrl-C
                try:
                    future.result(timeout=0.5)
                    break
                except FutureTimeout:
                    continue


# --- grid -------------------------------------------------------------------------------------


class GridEngine:
    """Every combination once; trials.json records each one's status and results."""

    def __init__(self, context: SweepContext) -> None:
        self.context = context
        self.ledger_path = context.folder / "trials.json"
        if self.ledger_path.exists():
            self.entries = json.loads(self.ledger_path.read_text())["trials"]
        else:
            self.entries = [
                {"number": number, "params": params, "status": "pending"}
                for number, params in enumerate(context.settings.points)
            ]
            self._save()

    def _save(self) -> None:
        atomic_write_text(self.ledger_path, json.dumps({"trials": self.entries}, indent=1) + "\n")

    def rows(self) -> list[dict[str, Any]]:
        return [
            row_for(entry["number"], entry["params"], entry)
            for entry in self.entries
            if entry["status"] in (COMPLETE, FAILED, PRUNED, INTERRUPTED)
        ]

    def run(self) -> None:
        # Finished trials (complete or failed) are never repeated; others run (again).
        todo = [entry for entry in self.entries if entry["status"] not in (COMPLETE, FAILED)]
        done = len(self.entries) - len(todo)
        if done:
            log.info(
                "%d of %d trials already finished; running the other %d",
                done,
                len(self.entries),
                len(todo),
            )
        run_all(self.context, [lambda entry=entry: self._run_one(entry) for entry in todo])

    def _run_one(self, entry: dict[str, Any]) -> None:
        context = self.context
        if context.stop.is_set():
            return
        with context.lock:
            run_dir = free_run_dir(context.trials_dir, entry["number"])
            entry.update(status="running", run_dir=str(run_dir))
            self._save()
        result = context.run_trial(entry["params"], run_dir).to_dict()
        with context.lock:
            entry.update(result)
            self._save()
            context.write_reports(self.rows())
        context.log_result(entry["number"], entry["params"], result)
