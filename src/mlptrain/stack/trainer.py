"""fit_group(): the epochs of K models trained together, each with its own fit state.

Each member is an ordinary model, optimizer, schedule and FitState (what checkpoints
save and a resumed run loads). For the epochs they are stacked: one StackedMLP and one
StackedOptimizer take every step, and after each epoch every member gets its rows back,
then its own hooks (its run folder, its trackers) see its own record. Members end on
their own: by early stopping, or by a non-finite loss (that member's epoch is
discarded); the others go on, and the stack is rebuilt without them.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

from mlptrain.datasets import DataSplits, Split
from mlptrain.model import MLP
from mlptrain.optim import current_lr
from mlptrain.stack.model import StackedMLP
from mlptrain.stack.optim import StackedOptimizer
from mlptrain.trainer import (
    FitState,
    Hooks,
    LoopSettings,
    NonFiniteLoss,
    TrainingInterrupted,
    autocast,
)


@dataclass
class Member:
    """One model of a group: what it trains, on what, and who watches it."""

    model: MLP
    state: FitState
    settings: LoopSettings
    splits: DataSplits
    hooks: Hooks = field(default_factory=Hooks)
    failure: NonFiniteLoss | None = None  # set when its loss became NaN or infinite

    @property
    def active(self) -> bool:
        return self.failure is None and not self.state.stopped_early


class Stack:
    """The stacked model and optimizer of the members still training."""

    def __init__(self, members: Sequence[Member]) -> None:
        self.members = list(members)
        optimizers = [member.state.optimizer for member in members]
        for optimizer in optimizers:
            # Schedules step the members' optimizers, whose step() never runs here.
            optimizer._opt_called = True  # type: ignore[attr-defined]
        self.model = StackedMLP([member.model for member in members])
        name = type(optimizers[0]).__name__.lower()
        self.optimizer = StackedOptimizer(self.model, name, optimizers)
        device = self.model.flat.device
        settings = [member.settings for member in members]
        self.smoothing = torch.tensor(
            [item.label_smoothing for item in settings], device=device
        ).view(-1, 1)
        clips = [item.grad_clip for item in settings]
        self.max_norms = None
        if any(clip is not None for clip in clips):
            values = [math.inf if clip is None else clip for clip in clips]
            self.max_norms = torch.tensor(values, device=device).view(-1, 1)
        self.per_batch_schedule = any(member.state.schedule.per_batch for member in members)

    def refresh_lr(self) -> None:
        self.optimizer.set_lr([current_lr(member.state.optimizer) for member in self.members])

    def store(self) -> None:
        """Each member's rows back into its own model and optimizer."""
        for k, member in enumerate(self.members):
            self.model.store_member(k, member.model)
            self.optimizer.store_member(k, member.state.optimizer)


def stacked_cross_entropy(
    logits: torch.Tensor, labels: torch.Tensor, smoothing: torch.Tensor
) -> torch.Tensor:
    """F.cross_entropy with label smoothing per model: [K, B, C], [K, B], [K, 1] -> [K]."""
    log_probs = logits.log_softmax(dim=-1)
    nll = -log_probs.gather(-1, labels.unsqueeze(-1)).squeeze(-1)
    uniform = -log_probs.mean(dim=-1)
    return ((1.0 - smoothing) * nll + smoothing * uniform).mean(dim=1)


def _train_epoch(
    stack: Stack, settings: LoopSettings, hooks: Hooks, epoch: int
) -> list[dict[str, Any] | NonFiniteLoss]:
    """One pass of every member over its own training split, in its own order."""
    members, model, optimizer = stack.members, stack.model, stack.optimizer
    trains = [member.splits.train for member in members]
    device = trains[0].labels.device
    count = len(members)
    skip_mode = settings.on_nonfinite == "skip_batch"
    single_breaks = model.batch_norm
    orders = [
        torch.randperm(len(split), generator=member.state.generator).to(device)
        for split, member in zip(trains, members, strict=True)
    ]
    model.train()
    loss_sum = torch.zeros(count, device=device)
    correct = torch.zeros(count, dtype=torch.int64, device=device)
    counted = torch.zeros(count, dtype=torch.int64, device=device)
    first_bad = torch.zeros(count, dtype=torch.int64, device=device)  # 1-based; 0: none
    skipped = torch.zeros(count, dtype=torch.int64, device=device)
    seen = 0
    start = time.perf_counter()
    for batch, begin in enumerate(range(0, len(trains[0]), settings.batch_size), 1):
        index = [order[begin : begin + settings.batch_size] for order in orders]
        labels = torch.stack([split.labels[i] for split, i in zip(trains, index, strict=True)])
        size = labels.shape[1]
        if single_breaks and size < 2 and seen:
            continue
        images = torch.stack([split.images[i] for split, i in zip(trains, index, strict=True)])
        if settings.augment is not None:
            images = settings.augment(images.flatten(0, 1)).view(images.shape)
        with autocast(device, settings.amp_dtype):
            logits = model(images)
        losses = stacked_cross_entropy(logits.float(), labels, stack.smoothing)
        finite = torch.isfinite(losses)
        skip = None
        if skip_mode:
            skip = ~finite
            skipped += skip
            losses = torch.where(finite, losses, torch.zeros_like(losses))
        else:
            first_bad = torch.where((first_bad == 0) & ~finite, batch, first_bad)
        optimizer.zero_grad()
        losses.sum().backward()
        if stack.max_norms is not None:
            optimizer.clip_grad_norms(stack.max_norms)
        optimizer.step(skip)
        if stack.per_batch_schedule:
            for member in members:
                member.state.schedule.batch_end()
            stack.refresh_lr()
        loss_sum += losses.detach() * size * finite
        correct += ((logits.argmax(dim=-1) == labels).sum(dim=1)) * finite
        counted += size * finite
        seen += size
        hooks.batch_end(size)
        if hooks.should_stop():
            raise TrainingInterrupted(epoch, batch)
    seconds = time.perf_counter() - start
    results: list[dict[str, Any] | NonFiniteLoss] = []
    for k, member in enumerate(members):
        lr = current_lr(member.state.optimizer)
        bad, samples = int(first_bad[k]), int(counted[k])
        if bad or not samples:
            results.append(NonFiniteLoss(epoch, bad or 1, lr))
            continue
        results.append(
            {
                "train_loss": float(loss_sum[k]) / samples,
                "train_accuracy": int(correct[k]) / samples,
                "train_seconds": seconds,
                "samples_per_second": samples / seconds,
                "skipped_batches": int(skipped[k]),
            }
        )
    return results


@torch.inference_mode()
def evaluate_group(
    model: StackedMLP, splits: Sequence[Split], batch_size: int, amp_dtype: torch.dtype | None
) -> list[tuple[float, float]]:
    """(mean cross-entropy, accuracy) of model k on splits[k], for every k."""
    model.eval()
    device = splits[0].labels.device
    count = len(splits)
    loss_sum = torch.zeros(count, device=device)
    correct = torch.zeros(count, dtype=torch.int64, device=device)
    for begin in range(0, len(splits[0]), batch_size):
        images = torch.stack([split.images[begin : begin + batch_size] for split in splits])
        labels = torch.stack([split.labels[begin : begin + batch_size] for split in splits])
        with autocast(device, amp_dtype):
            logits = model(images).float()
        loss_sum += (
            F.cross_entropy(logits.flatten(0, 1), labels.flatten(), reduction="none")
            .view(labels.shape)
            .sum(dim=1)
        )
        correct += (logits.argmax(dim=-1) == labels).sum(dim=1)
    total = len(splits[0])
    return [(float(loss_sum[k]) / total, int(correct[k]) / total) for k in range(count)]


def fit_group(members: Sequence[Member], hooks: Hooks | None = None) -> None:
    """Train the active members' remaining epochs together (they must have finished the
    same number). Each member's state holds every epoch it finished, whatever happens."""
    hooks = hooks or Hooks()
    active = [member for member in members if member.active]
    if not active:
        return
    done = {member.state.epochs_done for member in active}
    if len(done) != 1:
        raise ValueError(f"members trained together must have finished equal epochs: {done}")
    settings = active[0].settings
    batch_count = math.ceil(len(active[0].splits.train) / settings.batch_size)
    stack = Stack(active)
    for epoch in range(done.pop() + 1, settings.epochs + 1):
        hooks.epoch_start(epoch, batch_count)
        for member in stack.members:
            member.hooks.epoch_start(epoch, batch_count)
        start = time.perf_counter()
        lrs = [current_lr(member.state.optimizer) for member in stack.members]
        trained = _train_epoch(stack, settings, hooks, epoch)
        for member in stack.members:
            member.state.schedule.epoch_end()
        stack.refresh_lr()
        vals = [member.splits.val for member in stack.members]
        validated = None
        if vals[0] is not None:
            validated = evaluate_group(
                stack.model, vals, settings.eval_batch_size, settings.amp_dtype
            )
        stack.store()
        seconds = time.perf_counter() - start
        for k, member in enumerate(stack.members):
            outcome = trained[k]
            if isinstance(outcome, NonFiniteLoss):
                member.failure = outcome
                continue
            record: dict[str, Any] = {"epoch": epoch, "lr": lrs[k], **outcome}
            if validated is not None:
                record.update(val_loss=validated[k][0], val_accuracy=validated[k][1])
            record["epoch_seconds"] = seconds
            member.hooks.epoch_end(record, member.state.add(record, member.settings))
            if member.state.should_stop_early(member.settings) and epoch < settings.epochs:
                member.state.stopped_early = True
        hooks.epoch_end({"epoch": epoch}, False)
        still = [member for member in stack.members if member.active]
        if not still:
            return
        if hooks.should_stop() and epoch < settings.epochs:
            raise TrainingInterrupted(epoch, None)
        if len(still) < len(stack.members):
            stack = Stack(still)  # the rest go on without the ended ones
