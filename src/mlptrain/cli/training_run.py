"""One training run wired end to end, new or resumed: the body of `mlp-train`."""

from __future__ import annotations

import copy
import logging
import math
import signal
import sys
import threading
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from mlptrain.augment import RandomAffine
from mlptrain.checkpoint import (
    build_checkpoint,
    load_checkpoint,
    model_from_checkpoint,
    save_checkpoint,
)
from mlptrain.cli.common import log_to_file
from mlptrain.config import (
    Config,
    config_to_dict,
    config_to_yaml,
    parse_override,
    set_key,
    validate,
)
from mlptrain.datasets import DataSplits, load_splits, pixel_stats
from mlptrain.errors import StopRun, UsageError
from mlptrain.metrics import format_report, summarize
from mlptrain.model import MLP, ModelSpec
from mlptrain.optim import Schedule, build_optimizer, build_schedule
from mlptrain.rundir import RunDir, write_evaluation
from mlptrain.runtime import (
    resolve_amp,
    resolve_device,
    restore_rng_state,
    rng_state,
    seed_everything,
    set_deterministic,
)
from mlptrain.trainer import (
    FitResult,
    Hooks,
    LoopSettings,
    NonFiniteLoss,
    TrainingInterrupted,
    evaluate,
    fit,
)

EXIT_NONFINITE = 3
# Keys a resumed run may change: they do not alter what the finished epochs mean.
SAFE_ON_RESUME = (
    "training.epochs",
    "training.eval_batch_size",
    "device",
    "data.root",
    "data.source",
    "data.verify",
)


@dataclass(frozen=True)
class TrainingOutcome:
    run: RunDir
    best_epoch: int
    test_accuracy: float
    fit_seconds: float  # the epochs of this call: training, validation, checkpoints, logging
    train_samples: int


@dataclass(frozen=True)
class Session:
    """The built objects of a run."""

    config: Config
    device: torch.device
    splits: DataSplits
    model: MLP  # what checkpoints save
    trained_model: torch.nn.Module  # the model, or its torch.compile wrapper
    optimizer: torch.optim.Optimizer
    schedule: Schedule
    generator: torch.Generator  # draws the batch order
    settings: LoopSettings


def build_session(config: Config, spec: ModelSpec | None = None) -> Session:
    """Device, seeds, data, model and optimizer; `spec` given when resuming."""
    device = resolve_device(config.device)
    amp_dtype = resolve_amp(config.training.amp, device)
    set_deterministic(config.training.deterministic)
    if config.training.threads is not None:
        torch.set_num_threads(config.training.threads)
    seed_everything(config.seed)
    splits = load_splits(config.data, config.seed, device)
    if spec is None:
        fixed = config.data.normalize
        mean, std = (fixed.mean, fixed.std) if fixed else pixel_stats(splits.train)
        spec = ModelSpec(
            hidden=tuple(config.model.hidden),
            activation=config.model.activation,
            dropout=config.model.dropout,
            batch_norm=config.model.batch_norm,
            mean=mean,
            std=std,
        )
    model = MLP(spec).to(device)
    optimizer = build_optimizer(model.parameters(), config.optimizer)
    training = config.training
    steps_per_epoch = math.ceil(len(splits.train) / training.batch_size)
    schedule = build_schedule(optimizer, config.scheduler, training.epochs, steps_per_epoch)
    stopping = training.early_stopping
    settings = LoopSettings(
        epochs=training.epochs,
        batch_size=training.batch_size,
        eval_batch_size=training.eval_batch_size,
        amp_dtype=amp_dtype,
        on_nonfinite=training.on_nonfinite,
        label_smoothing=training.label_smoothing,
        grad_clip=training.grad_clip,
        augment=RandomAffine(config.augment) if config.augment.enabled else None,
        select_best_by=training.select_best_by,
        patience=stopping.patience if stopping else None,
        min_delta=stopping.min_delta if stopping else 0.0,
    )
    return Session(
        config=config,
        device=device,
        splits=splits,
        model=model,
        # The compiled wrapper shares the parameters; checkpoints save the plain module.
        trained_model=torch.compile(model) if training.compile else model,
        optimizer=optimizer,
        schedule=schedule,
        generator=torch.Generator().manual_seed(config.seed),
        settings=settings,
    )


class StopSignals:
    """The first SIGINT/SIGTERM asks training to stop after the current batch; a second
    one stops at once (files are written atomically, so none is left half-written)."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.received: int | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            self._previous = {sig: signal.signal(sig, self._handle) for sig in self.SIGNALS}
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def _handle(self, signum: int, frame: object) -> None:
        if self.received is None:
            self.received = signum
            return
        if signum == signal.SIGTERM:
            raise SystemExit(128 + signum)
        raise KeyboardInterrupt


class RunHooks(Hooks):
    """Progress bar, checkpoints, a metrics row and a log line per epoch; stop requests."""

    def __init__(self, session: Session, run: RunDir, log: logging.Logger, show_bar: bool) -> None:
        self.session, self.run, self.log, self.show_bar = session, run, log, show_bar
        self.config_dict = config_to_dict(session.config)
        self.class_names = list(session.splits.info.class_names)
        self.bar: tqdm | None = None
        self.history: list[dict[str, Any]] = []
        self.saved_epoch = 0
        self.signals: StopSignals | None = None

    def save(self, epoch: int, is_best: bool) -> None:
        checkpoint = build_checkpoint(
            model=self.session.model,
            optimizer=self.session.optimizer,
            epoch=epoch,
            config=self.config_dict,
            class_names=self.class_names,
            metrics=self.history,
            rng=rng_state(self.session.generator),
            scheduler=self.session.schedule.state_dict(),
        )
        copies = [self.run.path / "best.pt"] if is_best else []
        try:
            save_checkpoint(self.run.path / "last.pt", checkpoint, *copies)
        except OSError as exc:
            raise UsageError(
                f"cannot write a checkpoint into {self.run.path}: {exc.strerror or exc}; "
                "the previous checkpoints are intact"
            ) from None
        self.saved_epoch = epoch

    def epoch_start(self, epoch: int, batch_count: int) -> None:
        if self.show_bar:
            self.bar = tqdm(
                total=batch_count,
                desc=f"epoch {epoch}/{self.session.settings.epochs}",
                unit="batch",
                leave=False,
                file=sys.stderr,
                dynamic_ncols=True,
            )

    def batch_end(self, samples: int) -> None:
        if self.bar is not None:
            self.bar.update()

    def close_bar(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def epoch_end(self, record: dict[str, Any], is_best: bool) -> None:
        self.close_bar()
        self.history.append(record)
        # last.pt first: it is what a resumed run trusts, metrics.csv included.
        self.save(record["epoch"], is_best)
        self.run.append_metrics(record)
        self.log.info(format_epoch(record, self.session.settings.epochs, is_best))

    def should_stop(self) -> bool:
        return self.signals is not None and self.signals.received is not None


def format_epoch(record: dict[str, Any], epochs: int, is_best: bool) -> str:
    width = len(str(epochs))
    line = (
        f"epoch {record['epoch']:>{width}}/{epochs}  "
        f"train loss {record['train_loss']:.4f} acc {record['train_accuracy']:.4f}"
    )
    if "val_accuracy" in record:
        line += f"  val loss {record['val_loss']:.4f} acc {record['val_accuracy']:.4f}"
    line += (
        f"  lr {record['lr']:.3g}  {record['epoch_seconds']:.1f} s"
        f"  {record['samples_per_second']:,.0f} samples/s"
    )
    if record.get("skipped_batches"):
        line += f"  ({record['skipped_batches']} non-finite batches skipped)"
    return line + ("  *best*" if is_best and "val_accuracy" in record else "")


def describe_model(spec: ModelSpec, model: torch.nn.Module) -> str:
    widths = " -> ".join(str(width) for width in (spec.input_size, *spec.hidden, spec.num_classes))
    parameters = sum(parameter.numel() for parameter in model.parameters())
    extras = [spec.activation]
    if spec.batch_norm:
        extras.append("batch norm")
    if spec.dropout:
        extras.append(f"dropout {spec.dropout}")
    return f"model: {widths} ({parameters:,} parameters; {', '.join(extras)})"


def describe_data(splits: DataSplits, device: torch.device) -> str:
    val = len(splits.val) if splits.val is not None else 0
    return (
        f"data: {splits.info.title}, {len(splits.train):,} train / {val:,} val / "
        f"{len(splits.test):,} test images on {device}"
    )


def describe_training(config: Config, amp_dtype: torch.dtype | None) -> str:
    opt, training = config.optimizer, config.training
    line = (
        f"optimizer: {opt.name} lr {opt.lr:g}; {training.epochs} epochs, "
        f"batch size {training.batch_size}"
    )
    if amp_dtype is not None:
        line += "; bf16 autocast"
    elif training.amp == "auto":
        line += "; float32 (amp auto: no native bf16 on this device)"
    if training.compile:
        line += "; torch.compile"
    return line


def train(
    config: Config, log: logging.Logger, show_bar: bool, run_dir: Path | None = None
) -> TrainingOutcome:
    """Train, keep best/last checkpoints, test best.pt; everything lands in a new run folder
    (`run_dir` exactly, when given: it must not exist yet)."""
    session = build_session(config)
    # Created only now, so a config or data error leaves no empty run folder behind.
    if run_dir is not None:
        run = RunDir.create_exactly(run_dir)
    else:
        run = RunDir.create(config.output.runs_dir, config.name)
    log_to_file(log, run.log_file)
    run.write_text("config.yaml", config_to_yaml(config))
    log.info("run folder: %s", run.path)
    log.info(describe_data(session.splits, session.device))
    log.info(describe_model(session.model.spec, session.model))
    log.info(describe_training(config, session.settings.amp_dtype))
    hooks = RunHooks(session, run, log, show_bar)
    hooks.save(0, is_best=False)  # so that even a run stopped in its first epoch resumes
    return _fit_and_test(session, run, hooks, log, start_epoch=1)


def resume(
    run_path: Path,
    overrides: list[str],
    settings: dict[str, Any],
    log: logging.Logger,
    show_bar: bool,
) -> TrainingOutcome:
    """Continue a run in its own folder from last.pt, exactly where its last epoch ended."""
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
    config = _resumed_config(run_path, checkpoint["config"], overrides, settings)
    done = int(checkpoint["epoch"])
    if done >= config.training.epochs:
        raise UsageError(
            f"{run_path} has finished its {done} epochs; to train longer, extend it with "
            f"--set training.epochs=N (N > {done})"
        )
    session = build_session(config, ModelSpec.from_dict(checkpoint["model_spec"]))
    session.model.load_state_dict(checkpoint["model_state"])
    session.optimizer.load_state_dict(checkpoint["optimizer_state"])
    session.schedule.load_state_dict(checkpoint.get("scheduler_state"))
    restore_rng_state(checkpoint["rng"], session.generator)

    run = RunDir(run_path)
    log_to_file(log, run.log_file)
    history = [dict(record) for record in checkpoint["metrics"]]
    run.write_metrics(history)  # exactly the saved epochs: no duplicate, no gap
    comments = [line for line in _read_lines(run.path / "config.yaml") if line.startswith("#")]
    stamp = datetime.now().strftime("%Y-%m-%d %H:%M:%S")
    comments.append(f"# resumed {stamp} after epoch {done} of {config.training.epochs}")
    run.write_text("config.yaml", "\n".join(comments) + "\n" + config_to_yaml(config))
    log.info("resuming %s after epoch %d of %d", run.path, done, config.training.epochs)
    log.info(describe_data(session.splits, session.device))
    hooks = RunHooks(session, run, log, show_bar)
    hooks.history = history
    hooks.saved_epoch = done
    return _fit_and_test(session, run, hooks, log, start_epoch=done + 1)


def _resumed_config(
    run_path: Path, stored: dict[str, Any], overrides: list[str], settings: dict[str, Any]
) -> Config:
    document = copy.deepcopy(stored)
    changes = [(parse_override(text), f"--set {text!r}") for text in overrides]
    changes += [((key.split("."), value), "command line") for key, value in settings.items()]
    for (parts, value), origin in changes:
        key = ".".join(parts)
        if key not in SAFE_ON_RESUME:
            raise UsageError(
                f"{origin}: {key} cannot change when a run is resumed (only "
                f"{', '.join(SAFE_ON_RESUME)} can); start a new run from its config instead: "
                f"mlp-train --config {run_path / 'config.yaml'} --set ..."
            )
        set_key(document, parts, value, origin)
    config = validate(document, f"config of {run_path}")
    if config.training.epochs != stored["training"]["epochs"] and config.scheduler.name in (
        "cosine",
        "onecycle",
    ):
        raise UsageError(
            f"training.epochs cannot change when resuming a run with the {config.scheduler.name} "
            "schedule: its learning rates are planned over the original number of epochs"
        )
    return config


def _read_lines(path: Path) -> list[str]:
    try:
        return path.read_text(encoding="utf-8").splitlines()
    except OSError:
        return []


def _fit_and_test(
    session: Session, run: RunDir, hooks: RunHooks, log: logging.Logger, start_epoch: int
) -> TrainingOutcome:
    start = time.perf_counter()
    with StopSignals() as signals:
        hooks.signals = signals
        try:
            result = fit(
                session.trained_model,
                session.optimizer,
                session.splits,
                session.settings,
                session.generator,
                hooks=hooks,
                start_epoch=start_epoch,
                history=list(hooks.history),
                schedule=session.schedule,
            )
        except TrainingInterrupted as exc:
            hooks.close_bar()
            raise _interrupted(exc, signals.received or signal.SIGINT, hooks, log) from None
        except NonFiniteLoss as exc:
            hooks.close_bar()
            raise _nonfinite(exc, hooks, log) from None
    fit_seconds = time.perf_counter() - start
    if result.stopped_early:
        stopping = session.config.training.early_stopping
        log.info(
            "stopped early after epoch %d: validation accuracy has not improved by more than "
            "%g for %d epochs; testing best.pt",
            len(result.history),
            stopping.min_delta,
            stopping.patience,
        )
    return _test_best(session, run, result, log, fit_seconds)


def _interrupted(
    exc: TrainingInterrupted, signum: int, hooks: RunHooks, log: logging.Logger
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
        hooks.saved_epoch,
        hooks.session.settings.epochs,
    )
    return StopRun(f"interrupted; resume with: mlp-train --resume {hooks.run.path}", 128 + signum)


def _nonfinite(exc: NonFiniteLoss, hooks: RunHooks, log: logging.Logger) -> StopRun:
    best = FitResult(hooks.session.settings)
    for record in hooks.history:
        best.add(record)
    kept = (
        f"best.pt (epoch {best.best_epoch}) and last.pt (epoch {hooks.saved_epoch}) are intact"
        if best.best_epoch
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


def _write_pictures(
    session: Session, run: RunDir, result: FitResult, test: Any, summary: dict[str, Any]
) -> None:
    from mlptrain import reports  # matplotlib: only once there is something to draw

    names = list(session.splits.info.class_names)
    splits = session.splits
    reports.plot_curves(run.path / "curves.png", result.history, result.best_epoch)
    reports.plot_confusion(
        run.path / "confusion_matrix.png",
        summary["confusion_matrix"],
        names,
        f"{splits.info.title} test set, best.pt (epoch {result.best_epoch})",
    )
    reports.plot_misclassified(
        run.path / "misclassified.png",
        splits.test.images,
        test.labels,
        test.predictions,
        test.confidences,
        names,
    )
    reports.plot_samples(run.path / "samples.png", splits.train.images, splits.train.labels, names)
    pictures = ["curves.png", "confusion_matrix.png", "misclassified.png", "samples.png"]
    reports.write_report(
        run.path / "report.md",
        config_to_yaml(session.config),
        result.history,
        result.best_epoch,
        summary,
        pictures,
    )


def _test_best(
    session: Session, run: RunDir, result: FitResult, log: logging.Logger, fit_seconds: float
) -> TrainingOutcome:
    # The test split is touched once: by the best checkpoint, read back from disk and
    # evaluated in full precision, exactly as mlp-eval does.
    best_path = run.path / "best.pt"
    model = model_from_checkpoint(load_checkpoint(best_path), str(best_path)).to(session.device)
    test = evaluate(model, session.splits.test, session.settings.eval_batch_size)
    summary = summarize(
        test,
        list(session.splits.info.class_names),
        split="test",
        checkpoint="best.pt",
        epoch=result.best_epoch,
        dataset=session.splits.info.name,
    )
    write_evaluation(run.path, "test_metrics.json", "confusion_matrix.csv", summary)
    _write_pictures(session, run, result, test, summary)
    log.info("test set, best.pt (epoch %d):\n%s", result.best_epoch, format_report(summary))
    log.info("run folder: %s  test accuracy: %.4f", run.path, test.accuracy)
    return TrainingOutcome(
        run, result.best_epoch, test.accuracy, fit_seconds, len(session.splits.train)
    )
