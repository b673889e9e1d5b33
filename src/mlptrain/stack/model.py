"""StackedMLP: K MLPs of one shape as one module.

Each parameter of the K models is one [K, ...] tensor whose row k is model k's
parameter in its own shape ([out, in] for a weight), in the order of the models' own
`parameters()`; rows are contiguous, so a row is a view that model k's own optimizer
can step in place (see stack/trainer.py). Each layer is a batched matrix product over
the K models. Per-model dropout rates, batch-norm statistics and input normalization
are [K, ...] tensors.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from mlptrain.model.mlp import ACTIVATIONS, MLP
from mlptrain.model.random_bits import INT16_LEVELS, int16_bits

BN_EPS, BN_MOMENTUM = 1e-5, 0.1  # nn.BatchNorm1d's defaults, which MLP uses


class _StackedLinear(torch.autograd.Function):
    """x @ weight^T + bias per model: [K, B, in], [K, out, in], [K, out] -> [K, B, out].

    Autograd's own backward of bmm(x, weight.transpose(1, 2)) computes the weight's
    gradient as [K, in, out] and copies it into the weight's layout: a copy as large as
    the weights in every step. Here it is g^T @ x, in the weight's layout at once. Under
    autocast, both products run in its dtype, as nn.Linear's do.
    """

    @staticmethod
    def forward(ctx, x, weight, bias):  # type: ignore[override]
        device_type = x.device.type
        dtype = torch.get_autocast_dtype(device_type)
        cast = torch.is_autocast_enabled(device_type) and dtype != x.dtype
        ctx.input_dtype = x.dtype
        if cast or x.dtype != weight.dtype:
            target = dtype if cast else x.dtype
            x, weight_used = x.to(target), weight.to(target)
        else:
            weight_used = weight
        ctx.has_bias = bias is not None
        ctx.save_for_backward(x, weight_used)
        with torch.autocast(device_type, enabled=False):
            if bias is None:
                return torch.bmm(x, weight_used.transpose(1, 2))
            return torch.baddbmm(bias.to(x.dtype).unsqueeze(1), x, weight_used.transpose(1, 2))

    @staticmethod
    def backward(ctx, grad):  # type: ignore[override]
        x, weight = ctx.saved_tensors
        grad = grad.to(x.dtype)
        grad_x = grad_weight = grad_bias = None
        if ctx.needs_input_grad[0]:
            grad_x = torch.bmm(grad, weight).to(ctx.input_dtype)
        if ctx.needs_input_grad[1]:
            grad_weight = torch.bmm(grad.transpose(1, 2), x).float()
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_bias = grad.sum(dim=1).float()
        return grad_x, grad_weight, grad_bias


def stacked_linear(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None
) -> torch.Tensor:
    return _StackedLinear.apply(x, weight, bias)


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
        device = first.mean.device
        self.batch_norm = first.spec.batch_norm
        self.activation = ACTIVATIONS[first.spec.activation]()
        self.stacked = nn.ParameterList(
            nn.Parameter(torch.empty(self.count, *parameter.shape, device=device))
            for parameter in first.parameters()
        )
        self.depth = len(_layers(first))
        for index, (_, norm) in enumerate(_layers(first)):
            if norm is not None:
                width = norm.num_features
                self.register_buffer(
                    f"running_mean{index}", torch.empty(self.count, width, device=device)
                )
                self.register_buffer(
                    f"running_var{index}", torch.empty(self.count, width, device=device)
                )
                self.register_buffer(
                    f"batches_tracked{index}",
                    torch.empty(self.count, dtype=torch.long, device=device),
                )

        def column(values: list[float]) -> torch.Tensor:
            return torch.tensor(values, dtype=torch.float32, device=device).view(-1, 1, 1)

        specs = [model.spec for model in models]
        # (pixels / 255 - mean) / std as pixels * scale - shift, in place.
        self.register_buffer("pixel_scale", column([1.0 / (255.0 * s.std) for s in specs]))
        self.register_buffer("pixel_shift", column([s.mean / s.std for s in specs]))
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
            for stacked, parameter in zip(self.stacked, model.parameters(), strict=True):
                stacked[k].copy_(parameter)
            for index, (_, norm) in enumerate(_layers(model)):
                if norm is not None:
                    getattr(self, f"running_mean{index}")[k].copy_(norm.running_mean)
                    getattr(self, f"running_var{index}")[k].copy_(norm.running_var)
                    getattr(self, f"batches_tracked{index}")[k].copy_(norm.num_batches_tracked)

    @torch.no_grad()
    def store_member(self, k: int, model: MLP) -> None:
        """Copy row k back into `model` (an ordinary MLP, which checkpoints save)."""
        for stacked, parameter in zip(self.stacked, model.parameters(), strict=True):
            parameter.copy_(stacked[k])
        for index, (_, norm) in enumerate(_layers(model)):
            if norm is not None:
                norm.running_mean.copy_(getattr(self, f"running_mean{index}")[k])
                norm.running_var.copy_(getattr(self, f"running_var{index}")[k])
                norm.num_batches_tracked.copy_(getattr(self, f"batches_tracked{index}")[k])

    def rows(self, k: int) -> list[nn.Parameter]:
        """Model k's parameters as leaf views of the stacked storage: stepping them in
        place (its own optimizer does) updates row k."""
        return [nn.Parameter(stacked.detach()[k]) for stacked in self.stacked]

    # --- forward ------------------------------------------------------------------------

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        """[K, B, H, W] raw pixels (row k for model k) -> [K, B, classes] logits."""
        x = pixels.flatten(2)
        if x.dtype == torch.uint8:
            x = x.float().mul_(self.pixel_scale).sub_(self.pixel_shift)
        else:
            x = (x - self.mean) / self.std
        parameters = iter(self.stacked)
        for index in range(self.depth):
            weight = next(parameters)
            last = index == self.depth - 1
            if self.batch_norm and not last:
                x = stacked_linear(x, weight, None)
                x = self._batch_norm(x.float(), index, next(parameters), next(parameters))
            else:
                x = stacked_linear(x, weight, next(parameters))
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
