"""The two ways a sweep chooses its trials: a grid (no extra dependency) and Optuna.

Both run trials in worker threads, each thread waiting on one trial process, and keep a
ledger that a resumed sweep reads: trials.json for a grid, the Optuna study for a search.
"""

from __future__ import annotations

import json
import logging
import subprocess
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlptrain.errors import UsageError
from mlptrain.fsutil import atomic_write_text
from mlptrain.monitor import Monitor
from mlptrain.sweep.report import row_for, score, write_reports
from mlptrain.sweep.settings import SweepSettings
from mlptrain.sweep.spec import ParamSpec, decode, encode
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

    @property
    def trials_dir(self) -> Path:
        return self.folder / "trials"

    @property
    def monitor(self) -> Monitor:
        return self.settings.objective

    def run_trial(self, params: dict[str, Any], run_dir: Path, on_epoch=None) -> TrialResult:
        return run_trial(
            self.base_config,
            params,
            run_dir,
            self.threads,
            self.stop,
            self.monitor,
            on_epoch=on_epoch,
            processes=self.processes,
        )

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


def _run_all(context: SweepContext, jobs: list[Callable[[], None]]) -> None:
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
        _run_all(self.context, [lambda entry=entry: self._run_one(entry) for entry in todo])

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


# --- Optuna ----------------------------------------------------------------------------------


def import_optuna():
    try:
        import optuna
    except ImportError:
        raise UsageError(
            "--search optuna needs the optuna package: pip install 'mlptrain[sweep]' "
            "(grid sweeps need nothing extra)"
        ) from None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna


class OptunaEngine:
    """An Optuna study (TPE sampler, optional median pruning) over the parameter specs.

    The study is the ledger: on SQLite in the sweep folder by default, or on a database
    server that several machines' sweeps share (`--storage URL --study NAME`).
    """

    def __init__(self, context: SweepContext, epochs: int) -> None:
        optuna = self.optuna = import_optuna()
        settings = context.settings
        self.context, self.specs = context, settings.params
        self.trials, self.prune = settings.trials, settings.prune
        self.epochs = epochs  # the base config's; a swept training.epochs overrides it
        pruner = (
            optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=2)
            if settings.prune
            else optuna.pruners.NopPruner()
        )
        self.study = self._open_study(settings.storage, settings.study, pruner, settings.seed)
        self.distributions = {spec.key: self._distribution(spec) for spec in self.specs}

    def _open_study(self, url: str, study_name: str, pruner, seed: int | None):
        optuna = self.optuna
        for attempt in range(6):
            try:
                storage: Any = url
                if url.startswith("sqlite:"):
                    # Several processes may share one SQLite file: wait for its lock.
                    storage = optuna.storages.RDBStorage(
                        url, engine_kwargs={"connect_args": {"timeout": 60}}
                    )
                return optuna.create_study(
                    storage=storage,
                    study_name=study_name,
                    direction=self.context.monitor.direction,
                    load_if_exists=True,
                    sampler=optuna.samplers.TPESampler(seed=seed),
                    pruner=pruner,
                )
            except Exception as exc:  # a bad URL, a missing driver, or a creation race
                error = exc
                time.sleep(0.5 * (attempt + 1))  # two sweeps creating one database at once
        raise UsageError(f"cannot open the Optuna storage {url!r}: {error}") from None

    def _distribution(self, spec: ParamSpec):
        distributions = self.optuna.distributions
        if spec.kind == "choice":
            return distributions.CategoricalDistribution(list(spec.choices))
        if spec.kind in ("int", "logint"):
            return distributions.IntDistribution(
                int(spec.low), int(spec.high), log=spec.kind == "logint"
            )
        return distributions.FloatDistribution(spec.low, spec.high, log=spec.kind == "loguniform")

    def _params(self, trial) -> dict[str, Any]:
        return {
            spec.key: decode(trial.params[spec.key])
            if spec.kind == "choice"
            else trial.params[spec.key]
            for spec in self.specs
        }

    def _counted(self, below: int | None = None) -> int:
        """Trials that count towards the total: finished for good, or running."""
        states = self.optuna.trial.TrialState
        count = 0
        for trial in self.study.get_trials(deepcopy=False):
            if below is not None and trial.number >= below:
                continue
            finished = trial.state in (states.COMPLETE, states.PRUNED, states.RUNNING)
            failed = trial.state == states.FAIL and trial.user_attrs.get("outcome") == FAILED
            count += finished or failed
        return count

    def rows(self) -> list[dict[str, Any]]:
        rows = []
        for trial in self.study.get_trials(deepcopy=False):
            outcome = trial.user_attrs.get("outcome")
            if outcome not in (COMPLETE, FAILED, PRUNED, INTERRUPTED):
                continue
            result = {key: trial.user_attrs.get(key) for key in TrialResult.columns()}
            result["curve"] = trial.user_attrs.get("curve")
            rows.append(row_for(trial.number, self._params(trial), {**result, "status": outcome}))
        return rows

    def run(self) -> None:
        self._fail_own_stale_trials()
        log.info(
            "study %r: %d of %d trials done", self.study.study_name, self._counted(), self.trials
        )
        _run_all(self.context, [self._worker for _ in range(self.context.workers)])

    def _fail_own_stale_trials(self) -> None:
        # Trials this sweep folder left running when it was stopped hard: run them anew.
        states = self.optuna.trial.TrialState
        for trial in self.study.get_trials(deepcopy=False, states=(states.RUNNING,)):
            if trial.user_attrs.get("sweep_dir") == str(self.context.folder):
                self.study.tell(trial.number, state=states.FAIL)

    def _worker(self) -> None:
        states = self.optuna.trial.TrialState
        context = self.context
        while not context.stop.is_set() and self._counted() < self.trials:
            trial = self.study.ask(self.distributions)
            trial.set_user_attr("sweep_dir", str(context.folder))
            if self._counted(below=trial.number) >= self.trials:
                # Another worker or machine took the last place first.
                trial.set_user_attr("outcome", "surplus")
                self.study.tell(trial, state=states.FAIL)
                return
            params = self._params(trial)
            with context.lock:
                run_dir = free_run_dir(context.trials_dir, trial.number)
                run_dir.parent.mkdir(parents=True, exist_ok=True)
            trial.set_user_attr("run_dir", str(run_dir))

            last_epoch = params.get("training.epochs", self.epochs)

            def on_epoch(epoch: int, value: float, trial=trial, last=last_epoch) -> bool:
                trial.report(value, epoch)
                # Never after the last epoch: the trial has finished its training by then.
                return self.prune and epoch < last and trial.should_prune()

            result = context.run_trial(params, run_dir, on_epoch).to_dict()
            value = score(result, context.monitor)
            if result["status"] == COMPLETE and value is None:
                result.update(status=FAILED, message="no validation split (data.val_fraction 0)")
            for key, attribute in result.items():
                if key != "status":
                    trial.set_user_attr(key, attribute)
            trial.set_user_attr("outcome", result["status"])
            if result["status"] == COMPLETE:
                self.study.tell(trial, value)
            elif result["status"] == PRUNED:
                self.study.tell(trial, state=states.PRUNED)
            else:
                self.study.tell(trial, state=states.FAIL)
            with context.lock:
                context.write_reports(self.rows())
            context.log_result(trial.number, params, result)
