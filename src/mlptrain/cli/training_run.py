"""One training run, wired end to end: the body of `mlp-train` once the config is valid."""

from __future__ import annotations

import logging
import sys
import time
from dataclasses import dataclass
from typing import Any

import torch
from tqdm import tqdm

from mlptrain.checkpoint import (
    build_checkpoint,
    load_checkpoint,
    model_from_checkpoint,
    save_checkpoint,
)
from mlptrain.cli.common import log_to_file
from mlptrain.config import Config, config_to_dict, config_to_yaml
from mlptrain.datasets import DataSplits, load_splits, pixel_stats
from mlptrain.metrics import format_report, summarize
from mlptrain.model import MLP, ModelSpec
from mlptrain.optim import build_optimizer
from mlptrain.rundir import RunDir, write_evaluation
from mlptrain.runtime import resolve_amp, resolve_device, seed_everything
from mlptrain.trainer import Hooks, evaluate, fit


class RunHooks(Hooks):
    """Progress bar, one log line, a metrics row and checkpoints per epoch."""

    def __init__(
        self,
        run: RunDir,
        model: torch.nn.Module,
        optimizer: torch.optim.Optimizer,
        config: Config,
        class_names: tuple[str, ...],
        log: logging.Logger,
        show_bar: bool,
    ) -> None:
        self.run, self.model, self.optimizer, self.log = run, model, optimizer, log
        self.config_dict = config_to_dict(config)
        self.class_names = list(class_names)
        self.epochs = config.training.epochs
        self.show_bar = show_bar
        self.bar: tqdm | None = None
        self.history: list[dict[str, Any]] = []

    def epoch_start(self, epoch: int, batch_count: int) -> None:
        if self.show_bar:
            self.bar = tqdm(
                total=batch_count,
                desc=f"epoch {epoch}/{self.epochs}",
                unit="batch",
                leave=False,
                file=sys.stderr,
                dynamic_ncols=True,
            )

    def batch_end(self, samples: int) -> None:
        if self.bar is not None:
            self.bar.update()

    def epoch_end(self, record: dict[str, Any], is_best: bool) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        self.history.append(record)
        self.run.append_metrics(record)
        checkpoint = build_checkpoint(
            model=self.model,
            optimizer=self.optimizer,
            epoch=record["epoch"],
            config=self.config_dict,
            class_names=self.class_names,
            metrics=self.history,
        )
        save_checkpoint(self.run.path / "last.pt", checkpoint)
        if is_best:
            save_checkpoint(self.run.path / "best.pt", checkpoint)
        self.log.info(format_epoch(record, self.epochs, is_best))


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


@dataclass(frozen=True)
class TrainingOutcome:
    run: RunDir
    best_epoch: int
    test_accuracy: float
    fit_seconds: float  # all epochs: training, validation, checkpoints, metrics, logging
    train_samples: int


def describe_training(config: Config) -> str:
    opt, training = config.optimizer, config.training
    line = (
        f"optimizer: {opt.name} lr {opt.lr:g}; {training.epochs} epochs, "
        f"batch size {training.batch_size}"
    )
    if training.amp != "none":
        line += f"; {training.amp} autocast"
    if training.compile:
        line += "; torch.compile"
    return line


def train(config: Config, log: logging.Logger, show_bar: bool) -> TrainingOutcome:
    """Train, keep best/last checkpoints, test best.pt; everything lands in a new run folder."""
    device = resolve_device(config.device)
    amp_dtype = resolve_amp(config.training.amp, device)
    seed_everything(config.seed)
    splits = load_splits(config.data, config.seed, device)
    mean, std = pixel_stats(splits.train)
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
    # The compiled wrapper shares the parameters; checkpoints save the plain module.
    trained_model = torch.compile(model) if config.training.compile else model

    # Created only now, so a config or data error leaves no empty run folder behind.
    run = RunDir.create(config.output.runs_dir, config.name)
    log_to_file(log, run.log_file)
    run.write_text("config.yaml", config_to_yaml(config))
    log.info("run folder: %s", run.path)
    log.info(describe_data(splits, device))
    log.info(describe_model(spec, model))
    log.info(describe_training(config))

    hooks = RunHooks(run, model, optimizer, config, splits.info.class_names, log, show_bar)
    start = time.perf_counter()
    try:
        result = fit(
            trained_model,
            optimizer,
            splits,
            epochs=config.training.epochs,
            batch_size=config.training.batch_size,
            eval_batch_size=config.training.eval_batch_size,
            seed=config.seed,
            hooks=hooks,
            amp_dtype=amp_dtype,
        )
    except KeyboardInterrupt:
        if hooks.bar is not None:
            hooks.bar.close()
        done = len(hooks.history)
        log.info(
            "interrupted after %d complete epoch(s); %s keeps what they produced", done, run.path
        )
        raise
    fit_seconds = time.perf_counter() - start

    # The test split is touched once: by the best checkpoint, read back from disk and
    # evaluated in full precision, exactly as mlp-eval does.
    best_path = run.path / "best.pt"
    best_model = model_from_checkpoint(load_checkpoint(best_path), str(best_path)).to(device)
    test = evaluate(best_model, splits.test, config.training.eval_batch_size)
    summary = summarize(
        test,
        list(splits.info.class_names),
        split="test",
        checkpoint="best.pt",
        epoch=result.best_epoch,
        dataset=splits.info.name,
    )
    write_evaluation(run.path, "test_metrics.json", "confusion_matrix.csv", summary)
    log.info("test set, best.pt (epoch %d):\n%s", result.best_epoch, format_report(summary))
    log.info("run folder: %s  test accuracy: %.4f", run.path, test.accuracy)
    return TrainingOutcome(run, result.best_epoch, test.accuracy, fit_seconds, len(splits.train))
