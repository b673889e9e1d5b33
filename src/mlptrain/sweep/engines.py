"""What every sweep engine shares (SweepContext, worker threads, devices) and the grid.

Both engines (the grid here, Optuna in optuna_engine.py) run trials in worker threads,
each thread waiting on one trial process, and keep a ledger that a resumed sweep reads:
trials.json for a grid, the Optuna study for a search.
"""

from __future__ import annotations

import json
import queue
import subprocess
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlptrain.config.monitor import Monitor
from mlptrain.sweep.report import row_for, score, write_reports
from mlptrain.sweep.settings import SweepSettings
from mlptrain.sweep.spec import encode, overrides
from mlptrain.sweep.trials import (
    COMPLETE,
    FAILED,
    INTERRUPTED,
    PRUNED,
    TrialResult,
    free_run_dir,
    run_trials,
)
from mlptrain.util.files import atomic_write_text
from mlptrain.util.logs import get_logger

log = get_logger()


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

    def run(self, members: list[tuple[dict[str, Any], Path]], on_epoch=None) -> list[TrialResult]:
        """A trial, or trials of one shape trained together (mlp-sweep --stack), in one
        process, on a free device of their own when the sweep has --devices."""
        device = self.devices.get() if self.devices is not None else None
        if device is not None:
            log.info("%s starts on %s", members[0][1].name, device)
        spec = self.folder / "specs" / f"{members[0][1].name}.json"
        try:
            return run_trials(self.base_config, members, spec, self.threads, self.stop,
                              self.monitor, on_epoch, self.processes, device)  # fmt: skip
        finally:
            if device is not None:
                self.devices.put(device)

    def stack_groups(self, params_list: list[dict[str, Any]]) -> list[list[int]]:
        """Positions of `params_list` in groups that can be trained together: equal in
        every key that fixes shapes and the data pipeline, at most `stack` each."""
        from mlptrain.config.files import load_config
        from mlptrain.stack.compat import group_key

        size = max(1, self.settings.stack)
        groups: dict[str, list[int]] = {}
        for position, params in enumerate(params_list):
            key = group_key(load_config(self.base_config, overrides(params)))
            groups.setdefault(key, []).append(position)
        return [
            positions[start : start + size]
            for positions in groups.values()
            for start in range(0, len(positions), size)
        ]

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
        if self.context.settings.stack:
            groups = self.context.stack_groups([entry["params"] for entry in todo])
            batches = [[todo[position] for position in group] for group in groups]
        else:
            batches = [[entry] for entry in todo]
        run_all(self.context, [lambda batch=batch: self._run(batch) for batch in batches])

    def _run(self, entries: list[dict[str, Any]]) -> None:
        """Trials one at a time, or one group trained together (--stack)."""
        context = self.context
        if context.stop.is_set():
            return
        with context.lock:
            for entry in entries:
                run_dir = free_run_dir(context.trials_dir, entry["number"])
                entry.update(status="running", run_dir=str(run_dir))
            self._save()
        members = [(entry["params"], Path(entry["run_dir"])) for entry in entries]
        results = [result.to_dict() for result in context.run(members)]
        with context.lock:
            for entry, result in zip(entries, results, strict=True):
                entry.update(result)
            self._save()
            context.write_reports(self.rows())
        for entry, result in zip(entries, results, strict=True):
            context.log_result(entry["number"], entry["params"], result)
