"""bf16 training without recasting the weights.

Under autocast every forward and backward casts each float32 weight to bf16 again: 38
casts per step of the fashion preset, a third of its time on a CPU with fast bf16. Here
the Linear layers' float32 weights and biases (the masters, which the optimizer steps and
checkpoints save) live in one flat buffer, and their bf16 copies in another, refreshed
with one copy after each optimizer step. The forward and backward use the copies
directly (a custom autograd function per Linear); each layer's bf16 weight gradient is
written into a flat bf16 buffer, cast to the masters' float32 gradients once per step.
So the masters get what autocast gives them (the bf16 gradient, as float32), activations
stay bf16 between layers, batch norm keeps float32 parameters and statistics (its CPU
kernel takes bf16 input with float32 weights), and the casts per step are the input's,
the logits' and their gradient's, the gradient gather and the refresh.
"""

from __future__ import annotations

import torch
from torch import nn

from mlptrain.model.mlp import MLP


class _Linear(torch.autograd.Function):
    """y = x W^T + b with W and b given in bf16; their gradients are written into the
    given bf16 slots (not returned), the input's gradient returned."""

    @staticmethod
    def forward(ctx, x, master_weight, weight, weight_grad, master_bias, bias, bias_grad):
        ctx.save_for_backward(x, weight)
        ctx.grad_slots = (weight_grad, bias_grad)
        out = x @ weight.t()
        return out if bias is None else out.add_(bias)  # addmm would copy the bias in first

    @staticmethod
    def backward(ctx, grad_out):
        x, weight = ctx.saved_tensors
        weight_grad, bias_grad = ctx.grad_slots
        torch.mm(grad_out.t(), x, out=weight_grad)
        if bias_grad is not None:
            torch.sum(grad_out, dim=0, out=bias_grad)
        grad_x = grad_out @ weight if ctx.needs_input_grad[0] else None
        return grad_x, None, None, None, None, None, None


class Bf16Weights:
    """The bf16 copies of an MLP's Linear weights and biases, and its bf16 forward.

    Built before the optimizer and any copy of the model: the masters' storage moves into
    the flat buffer (the Parameter objects stay, so optimizers, state dicts and
    checkpoints see ordinary float32 parameters)."""

    def __init__(self, model: MLP) -> None:
        self.model = model
        linears = [layer for layer in model.layers if isinstance(layer, nn.Linear)]
        params = [p for layer in linears for p in (layer.weight, layer.bias) if p is not None]
        total = sum(p.numel() for p in params)
        device = params[0].device
        self.master = torch.empty(total, dtype=torch.float32, device=device)
        self.copies = torch.empty(total, dtype=torch.bfloat16, device=device)
        self.grads16 = torch.zeros(total, dtype=torch.bfloat16, device=device)
        self.grads32 = torch.zeros(total, dtype=torch.float32, device=device)
        self.params, self.grad_views, slots = params, [], {}
        offset = 0
        for p in params:
            part = slice(offset, offset + p.numel())
            offset += p.numel()
            self.master[part].copy_(p.detach().flatten())
            p.data = self.master[part].view_as(p)
            self.grad_views.append(self.grads32[part].view_as(p))
            slots[p] = (self.copies[part].view_as(p), self.grads16[part].view_as(p))
        self.layers = []
        for layer in model.layers:
            if isinstance(layer, nn.Linear):
                weight, weight_grad = slots[layer.weight]
                bias, bias_grad = slots[layer.bias] if layer.bias is not None else (None, None)
                self.layers.append((layer.weight, weight, weight_grad, layer.bias, bias, bias_grad))
            else:
                self.layers.append(layer)
        # 1/255 as a tensor: MLP.forward's Python number, without a per-call scalar cast.
        self.inverse_255 = torch.tensor(1.0 / 255.0, dtype=torch.float32, device=device)
        self.refresh()

    def refresh(self) -> None:
        """The bf16 copies from the masters: after each optimizer step (and after the
        masters were loaded from a checkpoint)."""
        self.copies.copy_(self.master)

    def gather_grads(self) -> None:
        """The masters' float32 gradients from the bf16 ones (after backward): one cast."""
        self.grads32.copy_(self.grads16)
        for p, grad in zip(self.params, self.grad_views, strict=True):
            p.grad = grad

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        """The model's logits (bf16) for raw pixels, as MLP.forward computes them, with
        the normalization in float32 and everything after it in bf16."""
        model = self.model
        x = pixels.flatten(1)
        if x.dtype == torch.uint8:
            x = x.float() * self.inverse_255
        x = ((x - model.mean) / model.std).to(torch.bfloat16)
        for layer in self.layers:
            x = _Linear.apply(x, *layer) if isinstance(layer, tuple) else layer(x)
        return x
