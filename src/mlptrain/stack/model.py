"""StackedMLP: K MLPs of one shape as one module, their parameters in one [K, P] tensor.

Model k's parameters are row k of `flat`, in the order of its own `parameters()`, each
kept in its own shape ([out, in] for a weight), so that copying a model in or out is a
slice copy. The forward pass splits `flat` into views (one gradient buffer for all of
them), and each layer is a batched matrix product over the K models. Per-model dropout
rates, batch-norm statistics and input normalization are [K, ...] tensors.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from mlptrain.model import ACTIVATIONS, MLP
from mlptrain.random_bits import INT16_LEVELS, int16_bits

BN_EPS, BN_MOMENTUM = 1e-5, 0.1  # nn.BatchNorm1d's defaults, which MLP uses


@dataclass(frozen=True)
class Slot:
    """Where one parameter of every member lives in `flat`: columns offset to offset+size."""

    name: str
    offset: int
    shape: tuple[int, ...]

    @property
    def size(self) -> int:
        return math.prod(self.shape)


def _layers(model: MLP) -> list[tuple[nn.Linear, nn.BatchNorm1d | None]]:
    """Each Linear with the BatchNorm1d that follows it (None when there is none)."""
    modules = list(model.layers)
    pairs = []
    for index, module in enumerate(modules):
        if isinstance(module, nn.Linear):
            following = modules[index + 1] if index + 1 < len(modules) else None
            norm = following if isinstance(following, nn.BatchNorm1d) else None
            pairs.append((module, norm))
    return pairs


def shape_of(model: MLP) -> tuple:
    """What must be equal for models to be stacked."""
    spec = model.spec
    return (spec.input_size, spec.hidden, spec.num_classes, spec.activation, spec.batch_norm)


class StackedMLP(nn.Module):
    def __init__(self, models: Sequence[MLP]) -> None:
        super().__init__()
        shapes = {shape_of(model) for model in models}
        if len(shapes) != 1:
            raise ValueError(f"models of different shapes cannot be stacked: {shapes}")
        self.count = len(models)
        first = models[0]
        self.batch_norm = first.spec.batch_norm
        self.activation = ACTIVATIONS[first.spec.activation]()
        self.slots: list[Slot] = []
        offset = 0
        for name, parameter in first.named_parameters():
            self.slots.append(Slot(name, offset, tuple(parameter.shape)))
            offset += parameter.numel()
        device = first.mean.device
        self.flat = nn.Parameter(torch.empty(self.count, offset, device=device))
        self.depth = len(_layers(first))
        for index, (_, norm) in enumerate(_layers(first)):
            if norm is not None:
                width = norm.num_features
                self.register_buffer(f"running_mean{index}", torch.empty(self.count, width))
                self.register_buffer(f"running_var{index}", torch.empty(self.count, width))
                self.register_buffer(
                    f"batches_tracked{index}", torch.empty(self.count, dtype=torch.long)
                )
        self.to(device)

        def column(values: list[float]) -> torch.Tensor:
            return torch.tensor(values, dtype=torch.float32, device=device).view(-1, 1, 1)

        specs = [model.spec for model in models]
        self.register_buffer("mean", column([spec.mean for spec in specs]))
        self.register_buffer("std", column([spec.std for spec in specs]))
        kept = [max(1, round((1.0 - spec.dropout) * INT16_LEVELS)) for spec in specs]
        self.has_dropout = any(spec.dropout > 0 for spec in specs)
        self.register_buffer("keep_below", column([level - INT16_LEVELS // 2 for level in kept]))
        self.register_buffer("keep_scale", column([INT16_LEVELS / level for level in kept]))
        self.load_members(models)

    # --- members in and out --------------------------------------------------------------

    @torch.no_grad()
    def load_members(self, models: Sequence[MLP]) -> None:
        """Copy each model's parameters and batch-norm statistics into row k."""
        for k, model in enumerate(models):
            for slot, parameter in zip(self.slots, model.parameters(), strict=True):
                self.flat[k, slot.offset : slot.offset + slot.size].copy_(parameter.flatten())
            for index, (_, norm) in enumerate(_layers(model)):
                if norm is not None:
                    getattr(self, f"running_mean{index}")[k].copy_(norm.running_mean)
                    getattr(self, f"running_var{index}")[k].copy_(norm.running_var)
                    getattr(self, f"batches_tracked{index}")[k].copy_(norm.num_batches_tracked)

    @torch.no_grad()
    def store_member(self, k: int, model: MLP) -> None:
        """Copy row k back into `model` (an ordinary MLP, which checkpoints save)."""
        for slot, parameter in zip(self.slots, model.parameters(), strict=True):
            parameter.copy_(self.flat[k, slot.offset : slot.offset + slot.size].view(slot.shape))
        for index, (_, norm) in enumerate(_layers(model)):
            if norm is not None:
                norm.running_mean.copy_(getattr(self, f"running_mean{index}")[k])
                norm.running_var.copy_(getattr(self, f"running_var{index}")[k])
                norm.num_batches_tracked.copy_(getattr(self, f"batches_tracked{index}")[k])

    def member_view(self, tensor: torch.Tensor, k: int, slot: Slot) -> torch.Tensor:
        """Row k's part of a [K, P] tensor (a parameter or optimizer state) for `slot`."""
        return tensor[k, slot.offset : slot.offset + slot.size].view(slot.shape)

    # --- forward ------------------------------------------------------------------------

    def _views(self) -> dict[str, torch.Tensor]:
        chunks = self.flat.split([slot.size for slot in self.slots], dim=1)
        return {
            slot.name: chunk.view(self.count, *slot.shape)
            for slot, chunk in zip(self.slots, chunks, strict=True)
        }

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        """[K, B, H, W] raw pixels (row k for model k) -> [K, B, classes] logits."""
        x = pixels.flatten(2)
        if x.dtype == torch.uint8:
            x = x.to(self.mean.dtype) * (1.0 / 255.0)
        x = (x - self.mean) / self.std
        views = self._views()
        names = iter(self.slots)
        for index in range(self.depth):
            weight = views[next(names).name]
            last = index == self.depth - 1
            norm = self.batch_norm and not last
            if norm:
                x = torch.bmm(x, weight.transpose(1, 2))
                x = self._batch_norm(x.float(), index, views[next(names).name],
                                     views[next(names).name])  # fmt: skip
            else:
                bias = views[next(names).name]
                x = torch.baddbmm(bias.unsqueeze(1), x, weight.transpose(1, 2))
            if last:
                return x
            x = self.activation(x)
            if self.has_dropout and self.training:
                keep = int16_bits(x.shape, device=x.device) < self.keep_below
                x = x * keep.to(x.dtype).mul_(self.keep_scale.to(x.dtype))
        raise AssertionError("an MLP ends with a Linear layer")

    def _batch_norm(
        self, x: torch.Tensor, index: int, weight: torch.Tensor, bias: torch.Tensor
    ) -> torch.Tensor:
        """nn.BatchNorm1d per model over its own batch (dimension 1)."""
        running_mean = getattr(self, f"running_mean{index}")
        running_var = getattr(self, f"running_var{index}")
        if self.training:
            var, mean = torch.var_mean(x, dim=1, correction=0)
            with torch.no_grad():
                count = x.shape[1]
                running_mean.lerp_(mean, BN_MOMENTUM)
                running_var.lerp_(var * (count / max(count - 1, 1)), BN_MOMENTUM)
                getattr(self, f"batches_tracked{index}").add_(1)
        else:
            mean, var = running_mean, running_var
        scale = torch.rsqrt(var + BN_EPS) * weight
        return (x - mean.unsqueeze(1)) * scale.unsqueeze(1) + bias.unsqueeze(1)
