"""The Optuna search: a study (TPE sampler, optional median pruning) that one sweep folder
or several machines' sweeps share.

Sharing rests on three rules, all on Optuna's public API and the same for every storage:
- a running trial writes a heartbeat (a time stamp in its user attributes) every
  `heartbeat` seconds; any sweep of the study that sees one older than `grace` seconds
  fails that trial and queues its parameters again (at most MAX_RETRIES times), so a
  machine that died does not hold its trial forever;
- a trial counts towards `--trials` when it is running or finished for good; a sweep stops
  asking when the study has enough, then waits for the other machines' running trials so
  that its results list the whole study;
- a lost storage connection ends the sweep with a message, never a running trial: it
  finishes its run folder, and `--resume` records it.
"""

from __future__ import annotations

import contextlib
import time
from pathlib import Path
from typing import Any

from mlptrain.errors import EXIT_USAGE, StopRun
from mlptrain.sweep.engines import SweepContext, run_all
from mlptrain.sweep.report import score
from mlptrain.sweep.spec import decode
from mlptrain.sweep.storage import import_optuna, open_storage, reason, shown, storage_errors
from mlptrain.sweep.study import Heartbeat, distribution, open_study
from mlptrain.sweep.trials import (
    COMPLETE,
    FAILED,
    INTERRUPTED,
    PRUNED,
    TrialResult,
    finished_result,
    free_run_dir,
)
from mlptrain.util.logs import get_logger

log = get_logger()
MAX_RETRIES = 3  # times one set of parameters is queued again after its machine died
RECORDED = (COMPLETE, FAILED, PRUNED, INTERRUPTED)


class StorageLost(Exception):
    """The study's storage stopped answering in the middle of the sweep."""


class OptunaEngine:
    def __init__(self, context: SweepContext, epochs: int) -> None:
        optuna = self.optuna = import_optuna()
        settings = context.settings
        self.context, self.specs = context, settings.params
        self.trials, self.prune = settings.trials, settings.prune
        self.heartbeat, self.grace = settings.heartbeat, settings.grace
        self.epochs = epochs  # the base config's; a swept training.epochs overrides it
        self.url = settings.storage
        self.lost: StorageLost | None = None
        pruner = (
            optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=2)
            if settings.prune
            else optuna.pruners.NopPruner()
        )
        storage = open_storage(optuna, settings.storage)
        direction = context.monitor.direction
        self.study = open_study(
            optuna, storage, self.url, settings.study, direction, pruner, settings.seed
        )
        self.distributions = {spec.key: distribution(optuna, spec) for spec in self.specs}
        self.states = optuna.trial.TrialState

    def _params(self, trial) -> dict[str, Any]:
        return {
            spec.key: decode(trial.params[spec.key])
            if spec.kind == "choice"
            else trial.params[spec.key]
            for spec in self.specs
        }

    def _trials(self, *states) -> list[Any]:
        return self.study.get_trials(deepcopy=False, states=states or None)

    def _counted(self, below: int | None = None) -> int:
        """Trials that count towards the total: running, or finished for good."""
        count = 0
        for trial in self._trials():
            if below is not None and trial.number >= below:
                continue
            counts = trial.state in (self.states.COMPLETE, self.states.PRUNED)
            counts |= trial.state == self.states.RUNNING
            counts |= trial.state == self.states.FAIL and trial.user_attrs.get("outcome") == FAILED
            count += counts
        return count

    def rows(self) -> list[dict[str, Any]]:
        from mlptrain.sweep.report import row_for

        rows = []
        for trial in self._trials():
            outcome = trial.user_attrs.get("outcome")
            if outcome not in RECORDED:
                continue
            result = {key: trial.user_attrs.get(key) for key in TrialResult.columns()}
            result["curve"] = trial.user_attrs.get("curve")
            rows.append(row_for(trial.number, self._params(trial), {**result, "status": outcome}))
        return rows

    # --- the sweep ---------------------------------------------------------------------------

    def run(self) -> None:
        try:
            self._recover_own_trials()
            log.info(
                "study %r in %s: %d of %d trials done or running",
                self.study.study_name, shown(self.url), self._counted(), self.trials,
            )  # fmt: skip
            while True:
                run_all(self.context, [self._worker for _ in range(self.context.workers)])
                if self.context.stop.is_set() or self.lost or not self._wait_for_others():
                    break
            if not self.lost:
                with self.context.lock:
                    self.context.write_reports(self.rows())
        except storage_errors() as exc:
            self.lost = self.lost or StorageLost(reason(exc))
        if self.lost:
            raise StopRun(
                f"lost the Optuna storage {shown(self.url)} ({self.lost}); finished trials are "
                "kept, and a trial that finished meanwhile is recorded from its run folder when "
                f"you resume: mlp-sweep --resume {self.context.folder}",
                EXIT_USAGE,
            )

    def _recover_own_trials(self) -> None:
        """Trials this sweep folder left running when it stopped: a run that finished is
        recorded from its folder; the others are failed and queued again."""
        for trial in self._trials(self.states.RUNNING):
            if trial.user_attrs.get("sweep_dir") != str(self.context.folder):
                continue
            run_dir = trial.user_attrs.get("run_dir")
            result = finished_result(Path(run_dir), self.context.monitor) if run_dir else None
            value = score(result.to_dict(), self.context.monitor) if result else None
            if result is None or result.status != COMPLETE or value is None:
                self._retire(trial, "its sweep stopped before it finished")
                continue
            # Its run finished while the storage was out of reach: record it as a new trial.
            self.study.tell(trial.number, state=self.states.FAIL)
            attributes = {**result.to_dict(), "outcome": COMPLETE, "recovered_from": trial.number}
            attributes.pop("status")
            self.study.add_trial(
                self.optuna.trial.create_trial(
                    params=dict(trial.params),
                    distributions=trial.distributions,
                    value=value,
                    user_attrs=attributes,
                )
            )
            log.info(
                "trial %d finished while the sweep was away: recorded from %s",
                trial.number,
                run_dir,
            )

    def _retire(self, trial: Any, why: str) -> None:
        """Fail a running trial of any machine and queue its parameters again."""
        try:
            self.study.tell(trial.number, state=self.states.FAIL)
        except Exception:  # another sweep retired it first, or it has just finished
            return
        retries = int(trial.user_attrs.get("retries", 0))
        if retries >= MAX_RETRIES:
            log.warning(
                "trial %d failed (%s); retried %d times already, not again",
                trial.number,
                why,
                retries,
            )
            return
        self.study.enqueue_trial(
            dict(trial.params), user_attrs={"retries": retries + 1, "retry_of": trial.number}
        )
        log.warning("trial %d failed (%s); its parameters are queued again", trial.number, why)

    def _retire_stale(self) -> None:
        now = time.time()
        for trial in self._trials(self.states.RUNNING):
            beat = trial.user_attrs.get("heartbeat") or trial.datetime_start.timestamp()
            if now - beat > self.grace:
                self._retire(trial, f"no heartbeat for {now - beat:.0f} s")

    def _wait_for_others(self) -> bool:
        """After this sweep's workers stop: True when the study needs more trials (a retired
        one was queued again); False once no trial runs anywhere."""
        announced = False
        while not self.context.stop.is_set():
            self._retire_stale()
            if self._counted() < self.trials:
                return True
            running = len(self._trials(self.states.RUNNING))
            if not running:
                return False
            if not announced:
                log.info("waiting for %d trial(s) running in other sweeps of the study", running)
                announced = True
            time.sleep(min(self.heartbeat, 2.0))
        return False

    def _worker(self) -> None:
        try:
            while not self.context.stop.is_set() and not self.lost:
                self._retire_stale()
                if self._counted() >= self.trials:
                    return
                if self.context.settings.stack > 1:
                    self._run_batch()
                else:
                    self._run_one()
        except StorageLost as exc:
            self.lost = self.lost or exc
        except storage_errors() as exc:
            self.lost = self.lost or StorageLost(reason(exc))

    def _ask(self) -> tuple[Any, dict[str, Any], Path] | None:
        """A new trial, its parameters and its run folder; None when the study has enough
        (another worker or machine took the last place first)."""
        context = self.context
        trial = self.study.ask(self.distributions)
        trial.set_user_attr("sweep_dir", str(context.folder))
        trial.set_user_attr("heartbeat", time.time())
        if self._counted(below=trial.number) >= self.trials:
            trial.set_user_attr("outcome", "surplus")
            self.study.tell(trial, state=self.states.FAIL)
            return None
        with context.lock:
            run_dir = free_run_dir(context.trials_dir, trial.number)
            run_dir.parent.mkdir(parents=True, exist_ok=True)
        trial.set_user_attr("run_dir", str(run_dir))
        return trial, self._params(trial), run_dir

    def _run_batch(self) -> None:
        """--stack: up to `stack` trials asked together, trained in groups of one shape
        (the sampler proposes them without each other's results)."""
        asked = []
        for _ in range(min(self.context.settings.stack, self.trials - self._counted())):
            item = self._ask()
            if item is None:
                break
            asked.append(item)
        if not asked:
            return
        outcomes: dict[int, dict[str, Any]] = {}
        with contextlib.ExitStack() as beats:
            for trial, _, _ in asked:
                beats.enter_context(Heartbeat(trial, self.heartbeat))
            for group in self.context.stack_groups([params for _, params, _ in asked]):
                members = [(asked[index][1], asked[index][2]) for index in group]
                for index, result in zip(group, self.context.run(members), strict=True):
                    outcomes[index] = result.to_dict()
        if self.lost:
            log.warning(
                "trials %s: their run folders are complete; they are recorded on --resume",
                ", ".join(str(trial.number) for trial, _, _ in asked),
            )
            return
        for index, (trial, params, _) in enumerate(asked):
            self._record(trial, params, outcomes[index])

    def _run_one(self) -> None:
        context = self.context
        item = self._ask()
        if item is None:
            return
        trial, params, run_dir = item
        last_epoch = params.get("training.epochs", self.epochs)

        def on_epoch(epoch: int, value: float) -> bool:
            if self.lost:
                return False  # no storage: no pruning; the trial runs to its end
            try:
                trial.report(value, epoch)
                # Never after the last epoch: the trial has finished its training by then.
                return self.prune and epoch < last_epoch and trial.should_prune()
            except storage_errors() as exc:
                self.lost = self.lost or StorageLost(reason(exc))
                log.warning(
                    "trial %d: the storage stopped answering (%s); the trial goes on "
                    "to the end of its run",
                    trial.number,
                    self.lost,
                )
                return False

        with Heartbeat(trial, self.heartbeat):
            (trial_result,) = context.run([(params, run_dir)], on_epoch)
            result = trial_result.to_dict()
        if self.lost:
            log.warning(
                "trial %d: run folder %s is complete; it is recorded on --resume",
                trial.number,
                run_dir,
            )
            return
        self._record(trial, params, result)

    def _record(self, trial: Any, params: dict[str, Any], result: dict[str, Any]) -> None:
        context = self.context
        value = score(result, context.monitor)
        if result["status"] == COMPLETE and value is None:
            result.update(status=FAILED, message="no validation split (data.val_fraction 0)")
        try:
            for key, attribute in result.items():
                if key != "status":
                    trial.set_user_attr(key, attribute)
            trial.set_user_attr("outcome", result["status"])
            if result["status"] == COMPLETE:
                self.study.tell(trial, value)
            else:
                state = self.states.PRUNED if result["status"] == PRUNED else self.states.FAIL
                self.study.tell(trial, state=state)
        except Exception as exc:
            if self._retired_meanwhile(trial.number):
                log.warning(
                    "trial %d was retired by another sweep (no heartbeat reached it); "
                    "its run folder %s is kept",
                    trial.number,
                    result["run_dir"],
                )
                return
            raise StorageLost(reason(exc)) from exc
        with context.lock:
            context.write_reports(self.rows())
        context.log_result(trial.number, params, result)

    def _retired_meanwhile(self, number: int) -> bool:
        try:
            (trial,) = [t for t in self._trials() if t.number == number]
        except Exception:
            return False
        return trial.state == self.states.FAIL and "outcome" not in trial.user_attrs
