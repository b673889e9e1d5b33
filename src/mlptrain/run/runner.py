"""Driving a run: train a new one, resume a stopped one, then test its best.pt.

Signals, a non-finite loss and errors become outcomes here (StopRun, UsageError) with
everything finished already on disk; the caller (a CLI, a notebook, a script) decides
what to print and which exit status to return.
"""

from __future__ import annotations

import shutil
import signal
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from mlptrain.artifacts.checkpoint import load_checkpoint
from mlptrain.artifacts.metrics import format_report
from mlptrain.artifacts.rundir import RunDir
from mlptrain.config.files import config_to_yaml
from mlptrain.config.schema import Config
from mlptrain.errors import EXIT_NONFINITE, StopRun, UsageError, signal_status
from mlptrain.evaluation.evaluator import OutputNames, evaluate_split, load_model, write_outputs
from mlptrain.run.console import (
    EpochLines,
    ProgressBar,
    describe_data,
    describe_model,
    describe_training,
)
from mlptrain.run.recorder import RunRecorder
from mlptrain.run.session import Session, build_session, resume_session, resumed_config
from mlptrain.tracking.base import Trackers
from mlptrain.tracking.trackers import open_trackers
from mlptrain.training.loop import HookList, Hooks, NonFiniteLoss, TrainingInterrupted, fit
from mlptrain.util.logs import LogFile, get_logger
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


def train(
    config: Config,
    *,
    run_dir: str | Path | None = None,
    show_bar: bool = False,
    observers: Sequence[Hooks] = (),
) -> RunResult:
    """Train, keep best/last checkpoints, test best.pt; everything lands in a new run folder
    (`run_dir` exactly, when given: it must not exist yet). `observers` see every batch
    and epoch record after the run folder has recorded it."""
    with LogFile() as log_file:
        session = build_session(config)
        # Created only now, so a config or data error leaves no empty run folder behind.
        if run_dir is not None:
            run = RunDir.create_exactly(run_dir)
        else:
            run = RunDir.create(config.output.runs_dir, config.name)
        log_file.open(run.log_file)
        run.write_text("config.yaml", config_to_yaml(config))
        log.info("run folder: %s", run.path)
        log.info(describe_data(session.splits, session.device))
        log.info(describe_model(session.model.spec, session.model))
        log.info(describe_training(config, session.amp))
        try:
            trackers = open_trackers(config, run.path, 0)
        except UsageError:
            shutil.rmtree(run.path, ignore_errors=True)  # refused before training: no folder
            raise
        recorder = RunRecorder(session, run)
        recorder.save(is_best=False)  # so that even a run stopped in its first epoch resumes
        return _fit_and_test(session, recorder, [*observers, trackers], show_bar, trackers)


def resume(
    run_path: str | Path,
    overrides: list[str] | tuple[str, ...] = (),
    settings: dict[str, Any] | None = None,
    *,
    show_bar: bool = False,
    observers: Sequence[Hooks] = (),
) -> RunResult:
    """Continue a run in its own folder from last.pt, exactly where its last epoch ended.

    `overrides` (KEY=VALUE) and `settings` (dotted key -> value) may change only the keys
    in SAFE_ON_RESUME."""
    run_path = Path(run_path)
    last = run_path / "last.pt"
    if not run_path.is_dir():
        raise UsageError(f"--resume {run_path}: there is no such run folder")
    if not last.is_file():
        raise UsageError(
            f"--resume {run_path}: the folder has no last.pt, so it is not an mlp-train run "
            "folder (or its run saved nothing); start a new run instead"
        )
    checkpoint = load_checkpoint(last)
    if not checkpoint.get("rng"):
        raise UsageError(f"{last} holds no random-number states, so it cannot be resumed")
    config = resumed_config(run_path, checkpoint["config"], list(overrides), settings or {})
    done = int(checkpoint["epoch"])
    if done >= config.training.epochs:
        raise UsageError(
            f"{run_path} has finished its {done} epochs; to train longer, extend it with "
            f"--set training.epochs=N (N > {done})"
        )
    with LogFile() as log_file:
        session = resume_session(config, checkpoint)
        run = RunDir(run_path)
        log_file.open(run.log_file)
        run.write_metrics(session.state.history)  # exactly the saved epochs: no duplicate, no gap
        _note_resume_in_config(run, config, done)
        log.info("resuming %s after epoch %d of %d", run.path, done, config.training.epochs)
        log.info(describe_data(session.splits, session.device))
        trackers = open_trackers(config, run.path, done)
        recorder = RunRecorder(session, run)
        return _fit_and_test(session, recorder, [*observers, trackers], show_bar, trackers)


def _note_resume_in_config(run: RunDir, config: Config, done: int) -> None:
    try:
        lines = (run.path / "config.yaml").read_text(encoding="utf-8").splitlines()
    except OSError:
        lines = []
    comments = [line for line in lines if line.startswith("#")]
    stamp = datetime.now().strftime("%Y-%m-%d %H:%M:%S")
    comments.append(f"# resumed {stamp} after epoch {done} of {config.training.epochs}")
    run.write_text("config.yaml", "\n".join(comments) + "\n" + config_to_yaml(config))


class StopWhenAsked(Hooks):
    """Asks the loop to stop once the two-stage stop has received a signal."""

    def __init__(self, stop: TwoStageStop) -> None:
        self.stop = stop

    def should_stop(self) -> bool:
        return self.stop.requested.is_set()


def _fit_and_test(
    session: Session,
    recorder: RunRecorder,
    observers: Sequence[Hooks],
    show_bar: bool,
    trackers: Trackers,
) -> RunResult:
    settings = session.settings
    bar = ProgressBar(settings.epochs) if show_bar else None
    start = time.perf_counter()
    with TwoStageStop() as stop:
        hooks = [bar] if bar else []
        hooks += [recorder, *observers, EpochLines(settings.epochs), StopWhenAsked(stop)]
        try:
            fit(session.state, session.splits, settings, HookList(*hooks))
        except TrainingInterrupted as exc:
            if bar:
                bar.close()
            trackers.abort("interrupted")
            raise _interrupted(exc, stop.received or signal.SIGINT, session, recorder) from None
        except NonFiniteLoss as exc:
            if bar:
                bar.close()
            trackers.abort("nonfinite")
            raise nonfinite_stop(exc, session, recorder) from None
    fit_seconds = time.perf_counter() - start
    if session.state.stopped_early:
        stopping = session.config.training.early_stopping
        log.info(
            "stopped early after epoch %d: %s has not improved by more than %g for %d "
            "epochs; testing best.pt",
            session.state.epochs_done,
            settings.monitor.label,
            stopping.min_delta,
            stopping.patience,
        )
    result = test_best(session, recorder.run, fit_seconds)
    trackers.finish(recorder.run.path, result.test)
    return result


def _interrupted(
    exc: TrainingInterrupted, signum: int, session: Session, recorder: RunRecorder
) -> StopRun:
    where = (
        f"during epoch {exc.epoch} (after batch {exc.batch}; that epoch will be run again)"
        if exc.batch is not None
        else f"after epoch {exc.epoch}"
    )
    log.info(
        "%s received %s; last.pt holds epoch %d of %d",
        signal.Signals(signum).name,
        where,
        recorder.saved_epoch,
        session.settings.epochs,
    )
    return StopRun(
        f"interrupted; resume with: mlp-train --resume {recorder.run.path}", signal_status(signum)
    )


def nonfinite_stop(exc: NonFiniteLoss, session: Session, recorder: RunRecorder) -> StopRun:
    best_epoch = session.state.best_epoch
    kept = (
        f"best.pt (epoch {best_epoch}) and last.pt (epoch {recorder.saved_epoch}) are intact"
        if best_epoch
        else "no epoch had finished, so there is no best.pt"
    )
    message = (
        f"the training loss became NaN or infinite in epoch {exc.epoch}, batch {exc.batch} "
        f"(learning rate {exc.lr:g}). That epoch is discarded; {kept}, and metrics.csv holds "
        "the finished epochs. Try a lower optimizer.lr, or training.on_nonfinite: skip_batch "
        "to skip such batches"
    )
    log.info("stopped: %s", message)
    return StopRun(message, EXIT_NONFINITE)


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
