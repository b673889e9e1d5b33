"""What a person sees of a run: the model, data and training lines, the progress bar and
one line per epoch (on the terminal and in train.log)."""

from __future__ import annotations

import sys
from typing import Any

import torch
from tqdm import tqdm

from mlptrain.config.schema import Config
from mlptrain.data.splits import DataSplits
from mlptrain.model.mlp import ModelSpec
from mlptrain.training.hooks import Hooks
from mlptrain.training.runtime import Amp
from mlptrain.util.logs import get_logger, member_scope


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


def describe_training(config: Config, amp: Amp) -> str:
    opt, training = config.optimizer, config.training
    line = (
        f"optimizer: {opt.name} lr {opt.lr:g}; {training.epochs} epochs, "
        f"batch size {training.batch_size}; best.pt by {training.select_best_by}"
    )
    if amp.dtype is not None or training.amp != "none":
        line += f"; {amp.reason}"
    if training.compile:
        line += "; torch.compile"
    return line


class EpochLines(Hooks):
    """One log line per finished epoch (in a group, in its member's scope)."""

    def __init__(self, epochs: int, scope: str | None = None) -> None:
        self.epochs, self.scope = epochs, scope

    def epoch_end(self, record: dict[str, Any], is_best: bool) -> None:
        with member_scope(self.scope):
            get_logger().info(format_epoch(record, self.epochs, is_best))


class ProgressBar(Hooks):
    """A progress bar over an epoch's batches, on stderr; gone when the epoch ends."""

    def __init__(self, epochs: int) -> None:
        self.epochs = epochs
        self.bar: tqdm | None = None

    def epoch_start(self, epoch: int, batch_count: int) -> None:
        self.close()  # the previous epoch's (a group's bar sees no records)
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
        self.close()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
