"""Averaged weights: an exponential moving average (EMA) over steps, or stochastic weight
averaging (SWA) over the last epochs. The average is a second copy of the model that
validation, best.pt and the test see; the trained weights go on training underneath.

EMA: after every optimizer step, average = decay * average + (1 - decay) * weights, for
the parameters and batch norm's running statistics alike (so the statistics follow the
weights they belong to), starting from the initial weights.

SWA (Izmailov et al. 2018): from `start_epoch` on, the learning rate is held at `lr`
(the schedule pauses) and each epoch's final weights enter an equal average; batch
norm's statistics are then recomputed for the averaged weights with one pass over the
training split, since an average of weights does not have the average's statistics.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn

from mlptrain.config.training_schema import EmaConfig, SwaConfig
from mlptrain.data.splits import Split, batches


def _averaged_tensors(module: nn.Module) -> list[torch.Tensor]:
    """The parameters and floating buffers (batch norm's running statistics), in
    state-dict order."""
    return [
        tensor.detach()
        for tensor in module.state_dict(keep_vars=True).values()
        if tensor.is_floating_point()
    ]


class WeightAverage:
    def __init__(self, model: nn.Module, ema: EmaConfig | None, swa: SwaConfig | None) -> None:
        if (ema is None) == (swa is None):
            raise ValueError("WeightAverage takes ema or swa")
        self.ema, self.swa = ema, swa
        self.source = model
        self.model = copy.deepcopy(model)
        self.model.requires_grad_(False)
        self.count = 0  # EMA: steps averaged; SWA: epochs averaged
        # The same tensor objects for the whole run (loading and stepping work in place).
        self._averages, self._weights = _averaged_tensors(self.model), _averaged_tensors(model)

    @property
    def kind(self) -> str:
        return "ema" if self.ema is not None else "swa"

    def active(self, epoch: int) -> bool:
        """Whether the average is what epoch `epoch` validates and saves."""
        return self.ema is not None or (self.count > 0 and epoch >= self.swa.start_epoch)

    def holds_lr(self, epoch: int) -> bool:
        """Whether SWA holds the learning rate in `epoch` (the schedule pauses)."""
        return self.swa is not None and epoch >= self.swa.start_epoch

    def epoch_start(self, epoch: int, optimizer: torch.optim.Optimizer) -> None:
        if self.holds_lr(epoch):
            for group in optimizer.param_groups:
                group["lr"] = self.swa.lr

    @torch.no_grad()
    def step_end(self) -> None:
        """After an optimizer step: EMA takes it in."""
        if self.ema is None:
            return
        weight = 1.0 - self.ema.decay
        for average, trained in zip(self._averages, self._weights, strict=True):
            average.lerp_(trained, weight)  # measured 5x faster here than _foreach_lerp_
        self.count += 1

    @torch.no_grad()
    def epoch_end(
        self, epoch: int, train: Split, batch_size: int, amp_dtype: torch.dtype | None = None
    ) -> None:
        """After an epoch's training: SWA takes its weights in and recomputes batch norm."""
        if not self.holds_lr(epoch):
            return
        self.count += 1
        for average, trained in zip(self.model.parameters(), self.source.parameters(), strict=True):
            average.lerp_(trained.detach(), 1.0 / self.count)  # equal weights
        recompute_batch_norm(self.model, train, batch_size, amp_dtype)

    def evaluated(self, epoch: int) -> nn.Module:
        """The model that epoch `epoch` validates and saves."""
        return self.model if self.active(epoch) else self.source

    def state(self) -> dict[str, Any]:
        return {"kind": self.kind, "count": self.count}

    def load(self, averaged: dict[str, torch.Tensor], state: dict[str, Any]) -> None:
        if state.get("kind") != self.kind:
            raise ValueError(f"the checkpoint's average is {state.get('kind')}, not {self.kind}")
        self.model.load_state_dict(averaged)
        self.count = int(state["count"])


@torch.no_grad()
def recompute_batch_norm(
    model: nn.Module, train: Split, batch_size: int, amp_dtype: torch.dtype | None = None
) -> None:
    """Batch norm's running statistics anew, as the plain mean and variance over the
    training split's batches (images as they are, dropout off)."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return
    was_training = model.training
    model.eval()
    momenta = []
    for norm in norms:
        norm.reset_running_stats()
        momenta.append(norm.momentum)
        norm.momentum = None  # a cumulative average over the batches
        norm.train()
    device = train.labels.device
    for images, _ in batches(train, batch_size):
        if len(images) < 2:
            continue
        if amp_dtype is None:
            model(images)
        else:
            with torch.autocast(device_type=device.type, dtype=amp_dtype):
                model(images)
    for norm, momentum in zip(norms, momenta, strict=True):
        norm.momentum = momentum
    model.train(was_training)
