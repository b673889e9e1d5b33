"""The training loop: train_one_epoch, evaluate, fit.

The trainer takes built objects (model, optimizer, splits) and reports through hooks;
it knows nothing of config files or run folders. Losses and correct counts
accumulate on the device and are read once per epoch, so nothing synchronizes per step.
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from mlptrain.datasets import DataSplits, Split, batches
from mlptrain.optim import current_lr


@dataclass(frozen=True)
class EvalResult:
    loss: float
    accuracy: float
    predictions: torch.Tensor  # int64 on the CPU
    labels: torch.Tensor  # int64 on the CPU

    @property
    def n(self) -> int:
        return int(self.labels.shape[0])


@dataclass
class FitResult:
    history: list[dict[str, Any]] = field(default_factory=list)
    best_epoch: int = 0
    best_val_accuracy: float | None = None


class Hooks:
    """What the caller sees of training; every method is optional."""

    def epoch_start(self, epoch: int, batch_count: int) -> None:
        pass

    def batch_end(self, samples: int) -> None:
        pass

    def epoch_end(self, record: dict[str, Any], is_best: bool) -> None:
        pass


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
    batch_size: int,
    generator: torch.Generator,
    hooks: Hooks | None = None,
    amp_dtype: torch.dtype | None = None,
) -> dict[str, float]:
    """One shuffled pass over `split`; returns mean loss, accuracy, seconds and samples/s."""
    hooks = hooks or Hooks()
    device = split.labels.device
    model.train()
    order = torch.randperm(len(split), generator=generator).to(device)
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), dtype=torch.int64, device=device)
    seen = 0
    start = time.perf_counter()
    for images, labels in batches(split, batch_size, order):
        if len(labels) < 2 and seen:
            continue  # batch norm cannot train on one sample; a trailing single is dropped
        with autocast(device, amp_dtype):
            logits = model(images)
        loss = F.cross_entropy(logits.float(), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        loss_sum += loss.detach() * len(labels)
        correct += (logits.argmax(dim=1) == labels).sum()
        seen += len(labels)
        hooks.batch_end(len(labels))
    mean_loss = loss_sum.item() / seen  # the epoch's one synchronization
    seconds = time.perf_counter() - start
    return {
        "train_loss": mean_loss,
        "train_accuracy": correct.item() / seen,
        "train_seconds": seconds,
        "samples_per_second": seen / seconds,
    }


@torch.inference_mode()
def evaluate(
    model: nn.Module, split: Split, batch_size: int, amp_dtype: torch.dtype | None = None
) -> EvalResult:
    """Mean cross-entropy, accuracy and predictions of `model` on `split`."""
    model.eval()
    device = split.labels.device
    loss_sum = torch.zeros((), device=device)
    predictions = []
    for images, labels in batches(split, batch_size):
        with autocast(device, amp_dtype):
            logits = model(images)
        loss_sum += F.cross_entropy(logits.float(), labels, reduction="sum")
        predictions.append(logits.argmax(dim=1))
    predicted = torch.cat(predictions).cpu()
    labels = split.labels.cpu()
    return EvalResult(
        loss=loss_sum.item() / len(split),
        accuracy=(predicted == labels).sum().item() / len(split),
        predictions=predicted,
        labels=labels,
    )


def fit(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    splits: DataSplits,
    *,
    epochs: int,
    batch_size: int,
    eval_batch_size: int,
    seed: int,
    hooks: Hooks | None = None,
    amp_dtype: torch.dtype | None = None,
) -> FitResult:
    """Train for `epochs`, validating after each; the best epoch has the best val accuracy.

    Without a validation split every epoch counts as the best, so the last one wins.
    """
    hooks = hooks or Hooks()
    generator = torch.Generator().manual_seed(seed)
    result = FitResult()
    for epoch in range(1, epochs + 1):
        hooks.epoch_start(epoch, math.ceil(len(splits.train) / batch_size))
        start = time.perf_counter()
        record: dict[str, Any] = {"epoch": epoch, "lr": current_lr(optimizer)}
        record.update(
            train_one_epoch(model, optimizer, splits.train, batch_size, generator, hooks, amp_dtype)
        )
        val_accuracy = None
        if splits.val is not None:
            val = evaluate(model, splits.val, eval_batch_size, amp_dtype)
            record.update(val_loss=val.loss, val_accuracy=val.accuracy)
            val_accuracy = val.accuracy
        record["epoch_seconds"] = time.perf_counter() - start
        is_best = val_accuracy is None or (
            result.best_val_accuracy is None or val_accuracy > result.best_val_accuracy
        )
        if is_best:
            result.best_epoch, result.best_val_accuracy = epoch, val_accuracy
        result.history.append(record)
        hooks.epoch_end(record, is_best)
    return result
