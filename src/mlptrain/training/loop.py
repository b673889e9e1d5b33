"""The training loop: train_one_epoch, evaluate, fit, on a FitState the caller owns.

The trainer takes built objects (model, optimizer, splits) and reports through hooks;
it knows nothing of config files or run folders. Losses and correct counts
accumulate on the device and are read once per epoch, so nothing synchronizes per step.
Whatever happens (a NaN, a stop request), the state holds every finished epoch.
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

from mlptrain.artifacts.metrics import EvalResult
from mlptrain.config.monitor import Monitor
from mlptrain.data.splits import DataSplits, Split, batches
from mlptrain.training.averaging import WeightAverage
from mlptrain.training.hooks import Hooks
from mlptrain.training.objective import training_loss
from mlptrain.training.optim import Schedule, current_lr

NONFINITE_CHECKS = ("every_batch", "device_flag")


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
    # mixup/cutmix: (images, labels[, blocks]) -> (mixed images, soft targets)
    mix: Callable[..., tuple[torch.Tensor, torch.Tensor]] | None = None
    teacher: nn.Module | None = None  # distillation: its logits on each training batch
    distill_weight: float = 0.0  # the teacher's share of the loss
    distill_temperature: float = 1.0
    select_best_by: str = "val_accuracy"  # or "val_loss": best.pt and early stopping
    patience: int | None = None  # early stopping: epochs without improvement
    min_delta: float = 0.0  # early stopping: the least improvement that counts
    nonfinite_check: str | None = None  # NONFINITE_CHECKS; None: by device

    @property
    def monitor(self) -> Monitor:
        return Monitor(self.select_best_by)


@dataclass
class FitState:
    """Everything that changes while a run trains. The caller owns it, so nothing is
    lost or rebuilt when fit() ends by an exception."""

    model: nn.Module  # what is trained: the model or its torch.compile wrapper
    optimizer: torch.optim.Optimizer
    generator: torch.Generator  # draws each epoch's batch order
    schedule: Schedule = field(default_factory=Schedule)
    average: WeightAverage | None = None  # averaged weights (EMA or SWA), when on
    history: list[dict[str, Any]] = field(default_factory=list)
    best_epoch: int = 0  # the epoch best.pt holds; 0: none yet
    best_value: float | None = None  # its monitored metric
    watched_value: float | None = None  # early stopping's reference value
    stale_epochs: int = 0  # epochs since the monitored metric last improved by min_delta
    stopped_early: bool = False

    @property
    def epochs_done(self) -> int:
        return int(self.history[-1]["epoch"]) if self.history else 0

    def add(self, record: dict[str, Any], settings: LoopSettings) -> bool:
        """Append an epoch's record; True when it is the new best (the first best on ties).

        Without validation every epoch counts as the best, so the last one wins.
        """
        self.history.append(record)
        monitor = settings.monitor
        value = monitor.value(record)
        if value is None:
            self.best_epoch = record["epoch"]
            return True
        if monitor.better(value, self.watched_value, settings.min_delta):
            self.watched_value, self.stale_epochs = value, 0
        else:
            self.stale_epochs += 1
        if monitor.better(value, self.best_value):
            self.best_epoch, self.best_value = record["epoch"], value
            return True
        return False

    def should_stop_early(self, settings: LoopSettings) -> bool:
        return settings.patience is not None and self.stale_epochs >= settings.patience


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


class NonFiniteCheck:
    """Watches one epoch's losses for NaN or infinity.

    every_batch reads each loss (free on a CPU, and needed to skip a batch); device_flag
    keeps the first bad batch's number on the device and reads it every `every` batches
    and at the end, so that nothing synchronizes per step on a GPU.
    """

    def __init__(
        self,
        settings: LoopSettings,
        device: torch.device,
        epoch: int,
        lr: Callable[[], float],
        every: int = 32,
    ) -> None:
        self.skip = settings.on_nonfinite == "skip_batch"
        default = "every_batch" if self.skip or device.type == "cpu" else "device_flag"
        self.strategy = settings.nonfinite_check or default
        if self.strategy not in NONFINITE_CHECKS or (self.skip and self.strategy != "every_batch"):
            raise ValueError(f"non-finite check {self.strategy!r} with {settings.on_nonfinite}")
        self.epoch, self.lr, self.every = epoch, lr, every
        self.skipped = 0
        self._first_bad = torch.zeros((), dtype=torch.int64, device=device)  # 1-based; 0: none

    def skips(self, loss: torch.Tensor, batch: int) -> bool:
        """True when the batch is to be skipped; raises NonFiniteLoss to stop training."""
        if self.strategy == "every_batch":
            if math.isfinite(loss.item()):
                return False
            if not self.skip:
                raise NonFiniteLoss(self.epoch, batch, self.lr())
            self.skipped += 1
            return True
        self._first_bad = torch.where(
            (self._first_bad == 0) & ~torch.isfinite(loss), batch, self._first_bad
        )
        if batch % self.every == 0:
            self.finish()
        return False

    def finish(self) -> None:
        """Raise for a bad batch that the device flag holds."""
        first_bad = int(self._first_bad.item()) if self.strategy == "device_flag" else 0
        if first_bad:
            raise NonFiniteLoss(self.epoch, first_bad, self.lr())


def autocast(
    device: torch.device, amp_dtype: torch.dtype | None
) -> contextlib.AbstractContextManager:
    """Mixed precision for the forward pass when asked for; a no-op otherwise."""
    if amp_dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=amp_dtype)


@torch.no_grad()
def teacher_logits(
    settings: LoopSettings, images: torch.Tensor, device: torch.device
) -> torch.Tensor | None:
    """The teacher's logits on the batch the student sees (None without a teacher)."""
    if settings.teacher is None:
        return None
    with autocast(device, settings.amp_dtype):
        return settings.teacher(images).float()


def _has_batch_norm(model: nn.Module) -> bool:
    return any(isinstance(module, nn.modules.batchnorm._BatchNorm) for module in model.modules())


def train_one_epoch(
    state: FitState,
    split: Split,
    settings: LoopSettings,
    hooks: Hooks | None = None,
    epoch: int = 1,
) -> dict[str, float]:
    """One shuffled pass over `split`; returns mean loss, accuracy, seconds and samples/s."""
    hooks = hooks or Hooks()
    model, optimizer, average = state.model, state.optimizer, state.average
    step_schedule = average is None or not average.holds_lr(epoch)  # SWA holds the lr
    device = split.labels.device
    check = NonFiniteCheck(settings, device, epoch, lambda: current_lr(optimizer))
    report_loss = hooks.wants_batch_loss()  # the hot loop pays nothing when nobody asks
    # Batch norm cannot train on one sample: only then is a trailing single dropped.
    single_breaks = _has_batch_norm(model)
    model.train()
    order = torch.randperm(len(split), generator=state.generator).to(device)
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), dtype=torch.int64, device=device)
    seen = 0
    start = time.perf_counter()
    for batch, (images, labels) in enumerate(batches(split, settings.batch_size, order), 1):
        if single_breaks and len(labels) < 2 and seen:
            continue
        if settings.augment is not None:
            images = settings.augment(images)
        targets = labels
        if settings.mix is not None:
            images, targets = settings.mix(images, labels)
            labels = targets.argmax(dim=1)  # what training accuracy counts: the larger part
        with autocast(device, settings.amp_dtype):
            logits = model(images)
        loss = training_loss(
            logits.float(),
            targets,
            settings.label_smoothing,
            teacher_logits(settings, images, device),
            settings.distill_weight,
            settings.distill_temperature,
        )
        if check.skips(loss, batch):
            continue
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if settings.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(model.parameters(), settings.grad_clip)
        optimizer.step()
        if average is not None:
            average.step_end()
        if step_schedule:
            state.schedule.batch_end()
        loss_sum += loss.detach() * len(labels)
        correct += torch.count_nonzero(logits.argmax(dim=1) == labels)  # no bool-to-int cast
        seen += len(labels)
        if report_loss:
            hooks.batch_loss(loss.detach())
        hooks.batch_end(len(labels))
        if hooks.should_stop():
            raise TrainingInterrupted(epoch, batch)
    check.finish()
    if not seen:
        raise NonFiniteLoss(epoch, 1, current_lr(optimizer))  # every batch was skipped
    mean_loss = loss_sum.item() / seen  # the epoch's one synchronization
    seconds = time.perf_counter() - start
    return {
        "train_loss": mean_loss,
        "train_accuracy": correct.item() / seen,
        "train_seconds": seconds,
        "samples_per_second": seen / seconds,
        "skipped_batches": check.skipped,
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
    state: FitState, splits: DataSplits, settings: LoopSettings, hooks: Hooks | None = None
) -> FitState:
    """Train the epochs after `state.epochs_done` up to `settings.epochs`, validating
    after each; a resumed run's state already holds the earlier epochs."""
    hooks = hooks or Hooks()
    batch_count = math.ceil(len(splits.train) / settings.batch_size)
    average = state.average
    for epoch in range(state.epochs_done + 1, settings.epochs + 1):
        hooks.epoch_start(epoch, batch_count)
        start = time.perf_counter()
        if average is not None:
            average.epoch_start(epoch, state.optimizer)
        record: dict[str, Any] = {"epoch": epoch, "lr": current_lr(state.optimizer)}
        record.update(train_one_epoch(state, splits.train, settings, hooks, epoch))
        evaluated = state.model
        if average is None or not average.holds_lr(epoch):
            state.schedule.epoch_end()
        if average is not None:
            average.epoch_end(epoch, splits.train, settings.eval_batch_size, settings.amp_dtype)
            evaluated = average.evaluated(epoch)
        if splits.val is not None:
            val = evaluate(evaluated, splits.val, settings.eval_batch_size, settings.amp_dtype)
            record.update(val_loss=val.loss, val_accuracy=val.accuracy)
        record["epoch_seconds"] = time.perf_counter() - start
        hooks.epoch_end(record, state.add(record, settings))
        if state.should_stop_early(settings) and epoch < settings.epochs:
            state.stopped_early = True
            break
        if hooks.should_stop() and epoch < settings.epochs:
            raise TrainingInterrupted(epoch, None)
    return state
