"""The training loop: train_one_epoch, evaluate, fit.

The trainer takes built objects (model, optimizer, splits) and reports through hooks;
it knows nothing of config files or run folders. Losses and correct counts
accumulate on the device and are read once per epoch, so nothing synchronizes per step.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from mlptrain.datasets import DataSplits, Split, batches
from mlptrain.optim import Schedule, current_lr


@dataclass(frozen=True)
class EvalResult:
    loss: float
    accuracy: float
    predictions: torch.Tensor  # int64 on the CPU
    labels: torch.Tensor  # int64 on the CPU
    confidences: torch.Tensor  # the predicted class's probability, on the CPU

    @property
    def n(self) -> int:
        return int(self.labels.shape[0])


@dataclass(frozen=True)
class LoopSettings:
    epochs: int
    batch_size: int
    eval_batch_size: int
    amp_dtype: torch.dtype | None = None  # autocast dtype, None for full precision
    on_nonfinite: str = "stop"  # "stop" | "skip_batch"
    label_smoothing: float = 0.0
    grad_clip: float | None = None  # max gradient norm
    augment: Callable[[torch.Tensor], torch.Tensor] | None = None  # training batches only
    select_best_by: str = "val_accuracy"  # or "val_loss"
    patience: int | None = None  # early stopping: epochs without val accuracy gain
    min_delta: float = 0.0  # early stopping: the least gain that counts


@dataclass
class FitResult:
    settings: LoopSettings
    history: list[dict[str, Any]] = field(default_factory=list)
    best_epoch: int = 0
    best_score: float | None = None  # by settings.select_best_by; higher is better
    stale_epochs: int = 0  # epochs since validation accuracy last improved by min_delta
    top_accuracy: float | None = None
    stopped_early: bool = False

    @property
    def best_val_accuracy(self) -> float | None:
        return self.history[self.best_epoch - 1].get("val_accuracy") if self.best_epoch else None

    def add(self, record: dict[str, Any]) -> bool:
        """Append an epoch's record; True when it is the new best (the first best on ties).

        Without validation every epoch counts as the best, so the last one wins.
        """
        self.history.append(record)
        accuracy = record.get("val_accuracy")
        if accuracy is None:
            self.best_epoch = record["epoch"]
            return True
        if self.top_accuracy is None or accuracy > self.top_accuracy + self.settings.min_delta:
            self.top_accuracy, self.stale_epochs = accuracy, 0
        else:
            self.stale_epochs += 1
        score = accuracy if self.settings.select_best_by == "val_accuracy" else -record["val_loss"]
        if self.best_score is None or score > self.best_score:
            self.best_epoch, self.best_score = record["epoch"], score
            return True
        return False

    @property
    def should_stop_early(self) -> bool:
        patience = self.settings.patience
        return patience is not None and self.stale_epochs >= patience


class TrainingInterrupted(Exception):
    """Raised between batches when the hooks ask to stop (a signal, say)."""

    def __init__(self, epoch: int, batch: int | None) -> None:
        super().__init__(f"interrupted in epoch {epoch}")
        self.epoch, self.batch = epoch, batch  # batch None: after the epoch had ended


class NonFiniteLoss(Exception):
    """The loss became NaN or infinite; the epoch's weights are not to be trusted."""

    def __init__(self, epoch: int, batch: int, lr: float) -> None:
        super().__init__(f"non-finite loss in epoch {epoch}, batch {batch}")
        self.epoch, self.batch, self.lr = epoch, batch, lr


class Hooks:
    """What the caller sees of training; every method is optional."""

    def epoch_start(self, epoch: int, batch_count: int) -> None:
        pass

    def batch_end(self, samples: int) -> None:
        pass

    def epoch_end(self, record: dict[str, Any], is_best: bool) -> None:
        pass

    def should_stop(self) -> bool:
        return False


def autocast(
    device: torch.device, amp_dtype: torch.dtype | None
) -> contextlib.AbstractContextManager:
    """Mixed precision for the forward pass when asked for; a no-op otherwise."""
    if amp_dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=amp_dtype)


def train_one_epoch(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    split: Split,
    settings: LoopSettings,
    generator: torch.Generator,
    hooks: Hooks | None = None,
    epoch: int = 1,
    schedule: Schedule | None = None,
) -> dict[str, float]:
    """One shuffled pass over `split`; returns mean loss, accuracy, seconds and samples/s."""
    hooks = hooks or Hooks()
    schedule = schedule or Schedule()
    device = split.labels.device
    skip_nonfinite = settings.on_nonfinite == "skip_batch"
    # Where reading a value costs nothing (CPU) the loss is checked every batch; on a GPU
    # the first bad batch is tracked on the device and read every few batches, so that
    # nothing synchronizes per step.
    check_every = 1 if device.type == "cpu" else 32
    model.train()
    order = torch.randperm(len(split), generator=generator).to(device)
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), dtype=torch.int64, device=device)
    first_bad = torch.zeros((), dtype=torch.int64, device=device)  # 1-based; 0: none yet
    seen = skipped = 0
    start = time.perf_counter()
    for batch, (images, labels) in enumerate(batches(split, settings.batch_size, order), 1):
        if len(labels) < 2 and seen:
            continue  # batch norm cannot train on one sample; a trailing single is dropped
        if settings.augment is not None:
            images = settings.augment(images)
        with autocast(device, settings.amp_dtype):
            logits = model(images)
        loss = F.cross_entropy(logits.float(), labels, label_smoothing=settings.label_smoothing)
        if skip_nonfinite or check_every == 1:
            if not math.isfinite(loss.item()):  # with skip_batch, a sync per step on a GPU
                if not skip_nonfinite:
                    raise NonFiniteLoss(epoch, batch, current_lr(optimizer))
                skipped += 1
                continue
        else:
            first_bad = torch.where((first_bad == 0) & ~torch.isfinite(loss), batch, first_bad)
            if batch % check_every == 0 and first_bad.item():
                raise NonFiniteLoss(epoch, int(first_bad.item()), current_lr(optimizer))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if settings.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(model.parameters(), settings.grad_clip)
        optimizer.step()
        schedule.batch_end()
        loss_sum += loss.detach() * len(labels)
        correct += (logits.argmax(dim=1) == labels).sum()
        seen += len(labels)
        hooks.batch_end(len(labels))
        if hooks.should_stop():
            raise TrainingInterrupted(epoch, batch)
    if first_bad.item():
        raise NonFiniteLoss(epoch, int(first_bad.item()), current_lr(optimizer))
    if not seen:
        raise NonFiniteLoss(epoch, 1, current_lr(optimizer))  # every batch was skipped
    mean_loss = loss_sum.item() / seen  # the epoch's one synchronization
    seconds = time.perf_counter() - start
    return {
        "train_loss": mean_loss,
        "train_accuracy": correct.item() / seen,
        "train_seconds": seconds,
        "samples_per_second": seen / seconds,
        "skipped_batches": skipped,
    }


@torch.inference_mode()
def evaluate(
    model: nn.Module, split: Split, batch_size: int, amp_dtype: torch.dtype | None = None
) -> EvalResult:
    """Mean cross-entropy, accuracy and predictions of `model` on `split`."""
    model.eval()
    device = split.labels.device
    loss_sum = torch.zeros((), device=device)
    predictions, confidences = [], []
    for images, labels in batches(split, batch_size):
        with autocast(device, amp_dtype):
            logits = model(images)
        loss_sum += F.cross_entropy(logits.float(), labels, reduction="sum")
        confidence, predicted = logits.float().softmax(dim=1).max(dim=1)
        predictions.append(predicted)
        confidences.append(confidence)
    predicted = torch.cat(predictions).cpu()
    labels = split.labels.cpu()
    return EvalResult(
        loss=loss_sum.item() / len(split),
        accuracy=(predicted == labels).sum().item() / len(split),
        predictions=predicted,
        labels=labels,
        confidences=torch.cat(confidences).cpu(),
    )


def fit(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    splits: DataSplits,
    settings: LoopSettings,
    generator: torch.Generator,
    *,
    hooks: Hooks | None = None,
    start_epoch: int = 1,
    history: list[dict[str, Any]] | None = None,
    schedule: Schedule | None = None,
) -> FitResult:
    """Train epochs `start_epoch`..`settings.epochs`, validating after each.

    `history` holds the records of earlier epochs when a run is resumed; `generator`
    draws each epoch's batch order (its state is part of a resumable checkpoint).
    """
    hooks = hooks or Hooks()
    schedule = schedule or Schedule()
    result = FitResult(settings)
    for record in history or []:
        result.add(record)
    batch_count = math.ceil(len(splits.train) / settings.batch_size)
    for epoch in range(start_epoch, settings.epochs + 1):
        hooks.epoch_start(epoch, batch_count)
        start = time.perf_counter()
        record: dict[str, Any] = {"epoch": epoch, "lr": current_lr(optimizer)}
        record.update(
            train_one_epoch(
                model, optimizer, splits.train, settings, generator, hooks, epoch, schedule
            )
        )
        schedule.epoch_end()
        if splits.val is not None:
            val = evaluate(model, splits.val, settings.eval_batch_size, settings.amp_dtype)
            record.update(val_loss=val.loss, val_accuracy=val.accuracy)
        record["epoch_seconds"] = time.perf_counter() - start
        hooks.epoch_end(record, result.add(record))
        if result.should_stop_early and epoch < settings.epochs:
            result.stopped_early = True
            break
        if hooks.should_stop() and epoch < settings.epochs:
            raise TrainingInterrupted(epoch, None)
    return result
