"""One lifecycle for a run or a group of runs trained together: fit, test best.pt,
record, and stop on a signal or a non-finite loss.

The runs arrive started (runner.py builds them, new or resumed, with their folders,
recorders and trackers). One run is fitted by the training loop itself, several by the
stack; everything after that is the same code: a run that ended on a non-finite loss is
recorded as failed (best.pt and last.pt intact), the others test best.pt, and a signal
becomes StopRun with everything finished already on disk.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlptrain.artifacts.metrics import format_report
from mlptrain.artifacts.rundir import RunDir
from mlptrain.config.files import config_to_yaml
from mlptrain.config.schema import Config
from mlptrain.errors import StopRun, signal_status
from mlptrain.evaluation.evaluator import (
    OutputNames,
    evaluate_ensemble,
    evaluate_split,
    load_model,
    write_outputs,
)
from mlptrain.run.console import EpochLines, ProgressBar
from mlptrain.run.group import FAILED, FINISHED, GroupFile
from mlptrain.run.recorder import RunRecorder
from mlptrain.run.session import Session
from mlptrain.stack.trainer import Member, fit_group
from mlptrain.tracking.base import Trackers
from mlptrain.tracking.trackers import open_trackers
from mlptrain.training.hooks import HookList, Hooks
from mlptrain.training.loop import NonFiniteLoss, TrainingInterrupted, fit
from mlptrain.util.logs import get_logger, member_scope
from mlptrain.util.stopping import TwoStageStop

log = get_logger()


@dataclass(frozen=True)
class RunResult:
    """A finished run: where it is, what each epoch measured, how best.pt tested."""

    run_dir: Path
    history: list[dict[str, Any]]  # one record per epoch, as in metrics.csv
    best_epoch: int  # the epoch best.pt holds
    test: dict[str, Any]  # best.pt on the test split, as in test_metrics.json
    fit_seconds: float  # the epochs of this call: training, validation, checkpoints, logging
    train_samples: int

    @property
    def test_accuracy(self) -> float:
        return self.test["accuracy"]


@dataclass
class GroupResult:
    """The finished runs (as RunResult) and the failed ones (folder -> why)."""

    folder: Path | None  # where group.json is; None for one run, or runs in given folders
    results: list[RunResult] = field(default_factory=list)
    failed: dict[Path, str] = field(default_factory=dict)
    test: dict[str, Any] | None = None  # an ensemble's test, as in its test_metrics.json


@dataclass
class Running:
    """A started run: its session, folder, recorder and trackers, and what the loop
    trains (`member`: its model and state, with the hooks that see its own records)."""

    session: Session
    run: RunDir
    recorder: RunRecorder
    trackers: Trackers
    member: Member
    scope: str | None  # its name in a group's log lines; None alone

    @classmethod
    def start(
        cls, session: Session, run: RunDir, scope: str | None, observers: Sequence[Hooks] = ()
    ) -> Running:
        """The run's observers, in order: its folder, the caller's, its trackers, its
        epoch lines (trackers continue after the epochs its session has done)."""
        trackers = open_trackers(session.config, run.path, session.state.epochs_done)
        recorder = RunRecorder(session, run)
        lines = EpochLines(session.settings.epochs, scope)
        hooks = HookList(recorder, *observers, trackers, lines)
        member = Member(session.model, session.state, session.settings, session.splits, hooks)
        return cls(session, run, recorder, trackers, member, scope)


class StopWhenAsked(Hooks):
    """Asks the loop to stop once the two-stage stop has received a signal."""

    def __init__(self, stop: TwoStageStop) -> None:
        self.stop = stop

    def should_stop(self) -> bool:
        return self.stop.requested.is_set()


def drive(running: list[Running], group: GroupFile | None, show_bar: bool) -> GroupResult:
    """Fit the runs (one by the loop, several together by the stack), then test each
    best.pt or record its failure; a signal raises StopRun after the runs have saved."""
    epochs = running[0].session.settings.epochs
    bar = ProgressBar(epochs) if show_bar else None
    start = time.perf_counter()
    with TwoStageStop() as stop:
        try:
            _fit(running, [bar] if bar else [], StopWhenAsked(stop))
        except TrainingInterrupted as exc:
            raise _interrupted(exc, stop.received or signal.SIGINT, running, group) from None
        finally:
            if bar:
                bar.close()
    fit_seconds = time.perf_counter() - start
    result = GroupResult(group.path.parent if group else None)
    for item in running:
        with member_scope(item.scope):
            if item.member.failure is not None:
                item.trackers.abort("nonfinite")
                message = nonfinite_message(item.member.failure, item)
                log.info("stopped: %s", message)
                result.failed[item.run.path] = message
            else:
                _note_early_stop(item.session)
                tested = test_best(item.session, item.run, fit_seconds)
                item.trackers.finish(item.run.path, tested.test)
                result.results.append(tested)
        if group is not None:
            status = FAILED if item.member.failure is not None else FINISHED
            group.set_status(item.run.path, status)
    return result


def _fit(running: list[Running], bar: list[Hooks], stop: Hooks) -> None:
    """One run by the training loop (its bar, its own hooks, the stop), or several by the
    stack (each member's records to its own hooks; the bar and the stop around them)."""
    if len(running) > 1:
        log.info("training %d models together", len(running))
        fit_group([item.member for item in running], HookList(*bar, stop))
        return
    member = running[0].member
    try:
        fit(member.state, member.splits, member.settings, HookList(*bar, member.hooks, stop))
    except NonFiniteLoss as exc:
        member.failure = exc  # its model keeps the weights of its last finished epoch


def _note_early_stop(session: Session) -> None:
    if session.state.stopped_early:
        stopping, settings = session.config.training.early_stopping, session.settings
        log.info(
            "stopped early after epoch %d: %s has not improved by more than %g for %d "
            "epochs; testing best.pt",
            session.state.epochs_done, settings.monitor.label, stopping.min_delta,
            stopping.patience,
        )  # fmt: skip


def _interrupted(
    exc: TrainingInterrupted, signum: int, running: list[Running], group: GroupFile | None
) -> StopRun:
    for item in running:
        if item.member.active:
            item.trackers.abort("interrupted")
    where = (
        f"during epoch {exc.epoch} (after batch {exc.batch}; that epoch will be run again)"
        if exc.batch is not None
        else f"after epoch {exc.epoch}"
    )
    if len(running) == 1:
        item = running[0]
        saved = f"last.pt holds epoch {item.recorder.saved_epoch} of {item.session.settings.epochs}"
    else:
        saved = "each model's last.pt holds its last finished epoch"
    log.info("%s received %s; %s", signal.Signals(signum).name, where, saved)
    target = group.path.parent if group else running[0].run.path
    return StopRun(f"interrupted; resume with: mlp-train --resume {target}", signal_status(signum))


def nonfinite_message(exc: NonFiniteLoss, item: Running) -> str:
    best_epoch = item.session.state.best_epoch
    kept = (
        f"best.pt (epoch {best_epoch}) and last.pt (epoch {item.recorder.saved_epoch}) are intact"
        if best_epoch
        else "no epoch had finished, so there is no best.pt"
    )
    return (
        f"the training loss became NaN or infinite in epoch {exc.epoch}, batch {exc.batch} "
        f"(learning rate {exc.lr:g}). That epoch is discarded; {kept}, and metrics.csv holds "
        "the finished epochs. Try a lower optimizer.lr, or training.on_nonfinite: skip_batch "
        "to skip such batches"
    )


def test_best(session: Session, run: RunDir, fit_seconds: float) -> RunResult:
    """The test split is touched once: by best.pt, read back from disk and evaluated in
    full precision, exactly as mlp-eval does."""
    from mlptrain.artifacts import reports  # matplotlib: only once there is something to draw

    state, splits = session.state, session.splits
    _, model = load_model(run.path / "best.pt", session.device)
    names = list(splits.info.class_names)
    evaluation = evaluate_split(
        model,
        splits.test,
        names,
        session.settings.eval_batch_size,
        session.config.evaluation.tta,
        split="test",
        checkpoint="best.pt",
        epoch=state.best_epoch,
        dataset=splits.info.name,
        selected_by=session.settings.select_best_by,
    )
    title = f"{splits.info.title} test set, best.pt (epoch {state.best_epoch})"
    write_outputs(run.path, OutputNames.of_training(), evaluation, title)
    reports.plot_curves(run.path / "curves.png", state.history, state.best_epoch)
    reports.plot_samples(run.path / "samples.png", splits.train.images, splits.train.labels, names)
    pictures = ["curves.png", "confusion_matrix.png", "misclassified.png", "samples.png"]
    summary = evaluation.summary
    reports.write_report(
        run.path / "report.md", config_to_yaml(session.config), state.history,
        state.best_epoch, summary, pictures,
    )  # fmt: skip
    log.info("test set, best.pt (epoch %d):\n%s", state.best_epoch, format_report(summary))
    log.info("run folder: %s  test accuracy: %.4f", run.path, evaluation.accuracy)
    return RunResult(
        run.path, list(state.history), state.best_epoch, summary, fit_seconds, len(splits.train)
    )


def test_ensemble(folder: Path, config: Config, members: Sequence[Path]) -> dict[str, Any]:
    """An ensemble group's members' best.pt tested as one model (their averaged
    probabilities, with the config's test-time augmentation), written into the group
    folder as a run's test is written into its run folder."""
    paths = [member / "best.pt" for member in members]
    batch_size = config.training.eval_batch_size
    evaluation, _ = evaluate_ensemble(paths, {}, batch_size, config.evaluation.tta)
    title = f"test set, ensemble of {len(paths)} (best.pt of each)"
    write_outputs(folder, OutputNames.of_training(), evaluation, title)
    log.info("test set, ensemble of %d:\n%s", len(paths), format_report(evaluation.summary))
    log.info("group folder: %s  ensemble test accuracy: %.4f", folder, evaluation.accuracy)
    return evaluation.summary
