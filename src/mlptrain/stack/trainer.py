"""fit_group(): the epochs of K models trained together, each with its own fit state.

Each member is an ordinary model, optimizer, schedule and FitState (what checkpoints
save and a resumed run loads). For the epochs they are stacked (a Stack): one
StackedMLP takes every forward and backward, the members' optimizers step their rows,
and after each epoch every member gets its rows and its optimizer state back, then its
own hooks (its run folder, its trackers) see its own record. Members end on
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

from mlptrain.data.splits import DataSplits, Split
from mlptrain.model.mlp import MLP
from mlptrain.stack.model import StackedMLP
from mlptrain.stack.optim import FusedAdam, repoint
from mlptrain.training.hooks import Hooks
from mlptrain.training.loop import (
    FitState,
    LoopSettings,
    NonFiniteLoss,
    TrainingInterrupted,
    autocast,
    teacher_logits,
)
from mlptrain.training.objective import distillation_term
from mlptrain.training.optim import current_lr


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
    """The stacked model of the members still training, with each member's own torch
    optimizer re-pointed at its rows (leaf views of the stacked parameters): one
    forward and backward for all, then each optimizer steps its model in place with
    its own learning rate, schedule and state (Adam's state is held stacked while the
    stack trains and handed back before each checkpoint, so checkpoints hold today's
    optimizer_state)."""

    def __init__(self, members: Sequence[Member]) -> None:
        self.members = list(members)
        self.model = StackedMLP([member.model for member in members])
        self.rows = [self.model.rows(k) for k in range(len(members))]
        for member, rows in zip(self.members, self.rows, strict=True):
            repoint(member.state.optimizer, rows)
        device = self.model.stacked[0].device
        settings = [member.settings for member in members]
        smoothings = [item.label_smoothing for item in settings]
        self.smoothing: float | torch.Tensor = float(smoothings[0])  # one for all
        if len(set(smoothings)) > 1:
            self.smoothing = torch.tensor(smoothings, device=device).view(-1, 1)
        clips = [item.grad_clip for item in settings]
        self.max_norms = None
        if any(clip is not None for clip in clips):
            values = [math.inf if clip is None else clip for clip in clips]
            self.max_norms = torch.tensor(values, device=device)
        self.per_batch_schedule = any(member.state.schedule.per_batch for member in members)
        self.fused = FusedAdam([member.state.optimizer for member in members], self.model.stacked)
        self._train_data: tuple[torch.Tensor, torch.Tensor, int] | None = None

    def train_data(self) -> tuple[torch.Tensor, torch.Tensor, int]:
        """The members' training splits end to end (images, labels) and one's size: one
        gather per batch for all of them."""
        if self._train_data is None:
            trains = [member.splits.train for member in self.members]
            self._train_data = (
                torch.cat([split.images for split in trains]),
                torch.cat([split.labels for split in trains]),
                len(trains[0]),
            )
        return self._train_data

    def step(self, skip: list[bool] | None) -> None:
        """Each member's optimizer step on its rows of the stacked gradients (but the
        members whose `skip` is set)."""
        grads = [parameter.grad for parameter in self.model.stacked]
        if self.fused.step(grads, skip):
            return
        for k, (member, rows) in enumerate(zip(self.members, self.rows, strict=True)):
            if skip is not None and skip[k]:
                continue
            for row, grad in zip(rows, grads, strict=True):
                row.grad = None if grad is None else grad[k]
            member.state.optimizer.step()

    def clip_grad_norms(self) -> None:
        """clip_grad_norm_ per model (max_norms: infinity where a model has none)."""
        grads = [p.grad for p in self.model.stacked if p.grad is not None]
        squares = torch.stack([grad.flatten(1).square().sum(dim=1) for grad in grads])
        coefficient = (self.max_norms / (squares.sum(dim=0).sqrt() + 1e-6)).clamp_(max=1.0)
        for grad in grads:
            grad.mul_(coefficient.view(-1, *([1] * (grad.dim() - 1))))

    def sync(self, release: bool = False) -> None:
        """Each member's rows and optimizer state copied into its own model and optimizer
        (but a failed member's model, which keeps its last good epoch): what its hooks
        save. `release`: also its optimizer pointed back at that model, as the stack ends."""
        self.fused.flush(release=release)
        for k, member in enumerate(self.members):
            if member.failure is None:
                self.model.store_member(k, member.model)
            if release:
                repoint(member.state.optimizer, list(member.model.parameters()))

    def release(self) -> None:
        self.sync(release=True)


def stacked_cross_entropy(
    logits: torch.Tensor, targets: torch.Tensor, smoothing: float | torch.Tensor
) -> torch.Tensor:
    """F.cross_entropy with label smoothing per model: logits [K, B, C], targets [K, B]
    (class indices) or [K, B, C] (soft targets), and one smoothing for all
    (F.cross_entropy's own kernel, half the time, for indices) or [K, 1] -> [K]."""
    soft = targets.is_floating_point()
    if isinstance(smoothing, float) and not soft:
        return F.cross_entropy(
            logits.transpose(1, 2), targets, reduction="none", label_smoothing=smoothing
        ).mean(dim=1)
    log_probs = logits.log_softmax(dim=-1)
    if soft:
        nll = -(targets * log_probs).sum(dim=-1)
    else:
        nll = -log_probs.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    uniform = -log_probs.mean(dim=-1)
    return ((1.0 - smoothing) * nll + smoothing * uniform).mean(dim=1)


def _train_epoch(
    stack: Stack, settings: LoopSettings, hooks: Hooks, epoch: int
) -> list[dict[str, Any] | NonFiniteLoss]:
    """One pass of every member over its own training split, in its own order."""
    members, model = stack.members, stack.model
    images, labels_all, size_each = stack.train_data()
    device = labels_all.device
    count = len(members)
    skip_mode = settings.on_nonfinite == "skip_batch"
    single_breaks = model.batch_norm
    # Each member's own order over its own split; offsets make them rows of one index.
    orders = torch.stack(
        [
            torch.randperm(size_each, generator=member.state.generator).to(device) + k * size_each
            for k, member in enumerate(members)
        ]
    )
    model.train()
    loss_sum = torch.zeros(count, device=device)
    correct = torch.zeros(count, dtype=torch.int64, device=device)
    counted = torch.zeros(count, dtype=torch.int64, device=device)
    first_bad = torch.zeros(count, dtype=torch.int64, device=device)  # 1-based; 0: none
    skipped = torch.zeros(count, dtype=torch.int64, device=device)
    seen = 0
    start = time.perf_counter()
    for batch, begin in enumerate(range(0, size_each, settings.batch_size), 1):
        index = orders[:, begin : begin + settings.batch_size]
        size = index.shape[1]
        flat_index = index.flatten()
        labels = labels_all.index_select(0, flat_index).view(count, size)
        if single_breaks and size < 2 and seen:
            continue
        # index_select on rows: ten times faster than images[index] for uint8 images
        batch_images = images.index_select(0, flat_index).view(count, size, *images.shape[1:])
        shape = batch_images.shape
        if settings.augment is not None:
            batch_images = settings.augment(batch_images.flatten(0, 1)).view(shape)
        targets = labels
        if settings.mix is not None:  # each model's images mixed among themselves
            mixed, soft = settings.mix(batch_images.flatten(0, 1), labels.flatten(), count)
            batch_images, targets = mixed.view(shape), soft.view(count, size, -1)
            labels = targets.argmax(dim=-1)
        with autocast(device, settings.amp_dtype):
            logits = model(batch_images)
        losses = stacked_cross_entropy(logits.float(), targets, stack.smoothing)
        teacher = teacher_logits(settings, batch_images.flatten(0, 1), device)
        if teacher is not None:
            distilled = distillation_term(
                logits.float(), teacher.view(logits.shape), settings.distill_temperature
            ).mean(dim=1)
            weight = settings.distill_weight
            losses = (1.0 - weight) * losses + weight * distilled
        finite = torch.isfinite(losses)
        hits = (logits.argmax(dim=-1) == labels).sum(dim=1)
        skip = None
        if skip_mode:
            skipped += ~finite
            skip = (~finite).tolist()  # skipping a step needs to know now, as alone
            losses = torch.where(finite, losses, torch.zeros_like(losses))
            hits *= finite
            counted += size * finite
        else:  # a member with a bad batch fails, its epoch's sums unused
            first_bad = torch.where((first_bad == 0) & ~finite, batch, first_bad)
            counted += size
        model.zero_grad(set_to_none=True)
        losses.sum().backward()
        if stack.max_norms is not None:
            stack.clip_grad_norms()
        stack.step(skip)
        if stack.per_batch_schedule:
            for member in members:
                member.state.schedule.batch_end()
        loss_sum += losses.detach() * size
        correct += hits
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
    same number). Each member's state holds every epoch it finished, whatever happens;
    afterwards each member's model holds its weights and its optimizer steps it again."""
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
    try:
        for epoch in range(done.pop() + 1, settings.epochs + 1):
            hooks.epoch_start(epoch, batch_count)
            _epoch(stack, epoch, batch_count, hooks)
            still = [member for member in stack.members if member.active]
            if not still:
                break
            if hooks.should_stop() and epoch < settings.epochs:
                raise TrainingInterrupted(epoch, None)
            if len(still) < len(stack.members):
                stack.release()
                stack = Stack(still)  # the rest go on without the ended ones
    finally:
        stack.release()


def _epoch(stack: Stack, epoch: int, batch_count: int, hooks: Hooks) -> None:
    """One epoch of every member: train, validate, then its record to its own hooks."""
    settings = stack.members[0].settings
    for member in stack.members:
        member.hooks.epoch_start(epoch, batch_count)
    start = time.perf_counter()
    lrs = [current_lr(member.state.optimizer) for member in stack.members]
    trained = _train_epoch(stack, settings, hooks, epoch)
    for member in stack.members:
        member.state.schedule.epoch_end()
    vals = [member.splits.val for member in stack.members]
    validated = None
    if vals[0] is not None:
        validated = evaluate_group(stack.model, vals, settings.eval_batch_size, settings.amp_dtype)
    seconds = time.perf_counter() - start
    for member, outcome in zip(stack.members, trained, strict=True):
        if isinstance(outcome, NonFiniteLoss):
            member.failure = outcome  # its model keeps the weights of its last epoch
    stack.sync()
    for k, member in enumerate(stack.members):
        outcome = trained[k]
        if isinstance(outcome, NonFiniteLoss):
            continue
        record: dict[str, Any] = {"epoch": epoch, "lr": lrs[k], **outcome}
        if validated is not None:
            record.update(val_loss=validated[k][0], val_accuracy=validated[k][1])
        record["epoch_seconds"] = seconds
        member.hooks.epoch_end(record, member.state.add(record, member.settings))
        if member.state.should_stop_early(member.settings) and epoch < settings.epochs:
            member.state.stopped_early = True
