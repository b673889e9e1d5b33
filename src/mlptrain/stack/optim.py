"""One optimizer step for K stacked models, each with its own hyperparameters.

PyTorch's optimizers take one learning rate per parameter group, so K models with K
learning rates would be K optimizer calls per step. StackedOptimizer does the same
arithmetic as torch.optim's SGD, Adam, AdamW and RMSprop (their defaults otherwise) on
the [K, P] tensor with the hyperparameters as [K, 1] columns: a handful of element-wise
operations per step for all models. Its state moves to and from each member's ordinary
torch optimizer, so checkpoints hold today's optimizer_state, and each model resumes
alone or in a group.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from mlptrain.stack.model import StackedMLP

# The state each torch optimizer keeps per parameter, besides "step".
STATE_KEYS = {
    "sgd": ("momentum_buffer",),
    "adam": ("exp_avg", "exp_avg_sq"),
    "adamw": ("exp_avg", "exp_avg_sq"),
    "rmsprop": ("square_avg", "momentum_buffer"),
}
RMSPROP_ALPHA = 0.99  # torch.optim.RMSprop's default, which mlptrain uses


class StackedOptimizer:
    def __init__(
        self, model: StackedMLP, name: str, members: Sequence[torch.optim.Optimizer]
    ) -> None:
        if name not in STATE_KEYS:
            raise ValueError(f"no stacked {name}")
        self.model, self.name = model, name
        self.param = model.flat
        groups = [optimizer.param_groups[0] for optimizer in members]
        device = self.param.device

        def column(values: Sequence[float]) -> torch.Tensor:
            return torch.tensor(values, dtype=torch.float32, device=device).view(-1, 1)

        self.lr = column([group["lr"] for group in groups])
        self.weight_decay = column([group["weight_decay"] for group in groups])
        self.momentum = column([group.get("momentum", 0.0) for group in groups])
        self.nesterov = bool(groups[0].get("nesterov", False))
        betas = [group.get("betas", (0.9, 0.999)) for group in groups]
        self.beta1 = column([beta[0] for beta in betas])
        self.beta2 = column([beta[1] for beta in betas])
        self.eps = column([group.get("eps", 1e-8) for group in groups])
        self.step_count = torch.zeros(len(members), 1, dtype=torch.float32, device=device)
        self.state = {key: torch.zeros_like(self.param) for key in STATE_KEYS[name]}
        self.load_members(members)

    # --- members in and out --------------------------------------------------------------

    @torch.no_grad()
    def load_members(self, members: Sequence[torch.optim.Optimizer]) -> None:
        for k, optimizer in enumerate(members):
            parameters = optimizer.param_groups[0]["params"]
            for slot, parameter in zip(self.model.slots, parameters, strict=True):
                state = optimizer.state.get(parameter, {})
                for key, tensor in self.state.items():
                    value = state.get(key)
                    target = self.model.member_view(tensor, k, slot)
                    if value is None:
                        target.zero_()
                    else:
                        target.copy_(value)
                if "step" in state:
                    self.step_count[k] = float(state["step"])
                elif state:  # sgd keeps no step count, only its momentum buffers
                    self.step_count[k] = 1.0

    @torch.no_grad()
    def store_member(self, k: int, optimizer: torch.optim.Optimizer) -> None:
        """Row k's state into member k's torch optimizer, as it would hold it itself."""
        if not int(self.step_count[k]):
            return  # no step yet: torch optimizers hold no state either
        parameters = optimizer.param_groups[0]["params"]
        group = optimizer.param_groups[0]
        for slot, parameter in zip(self.model.slots, parameters, strict=True):
            state = {}
            for key, tensor in self.state.items():
                if key == "momentum_buffer" and not group.get("momentum"):
                    continue  # torch keeps no momentum buffer without momentum
                state[key] = self.model.member_view(tensor, k, slot).clone()
            if self.name != "sgd":
                state["step"] = torch.tensor(float(self.step_count[k]), dtype=torch.float32)
                if group.get("fused"):
                    state["step"] = state["step"].to(parameter.device)
            optimizer.state[parameter] = state

    def set_lr(self, values: Sequence[float]) -> None:
        self.lr.copy_(torch.tensor(values, dtype=torch.float32).view(-1, 1))

    # --- the step -----------------------------------------------------------------------

    def zero_grad(self) -> None:
        self.param.grad = None

    @torch.no_grad()
    def step(self, skip: torch.Tensor | None = None) -> None:
        """One step for every model; `skip` (bool [K]): models whose step is left out."""
        if skip is not None and bool(skip.any()):
            kept = [tensor[skip].clone() for tensor in self._tensors()]
            self._step()
            for tensor, saved in zip(self._tensors(), kept, strict=True):
                tensor[skip] = saved
            return
        self._step()

    def _tensors(self) -> list[torch.Tensor]:
        return [self.param, self.step_count, *self.state.values()]

    def _step(self) -> None:
        param, grad = self.param, self.param.grad
        if grad is None:
            return
        self.step_count += 1
        if self.name == "adamw":
            param.mul_(1.0 - self.lr * self.weight_decay)
        elif self.weight_decay.any():
            grad = grad + self.weight_decay * param
        if self.name in ("adam", "adamw"):
            exp_avg, exp_avg_sq = self.state["exp_avg"], self.state["exp_avg_sq"]
            exp_avg.lerp_(grad, 1.0 - self.beta1)
            exp_avg_sq.mul_(self.beta2).addcmul_(grad, grad * (1.0 - self.beta2))
            correction1 = 1.0 - self.beta1**self.step_count
            correction2 = 1.0 - self.beta2**self.step_count
            denom = (exp_avg_sq.sqrt() / correction2.sqrt()).add_(self.eps)
            param.addcdiv_(exp_avg * (-self.lr / correction1), denom)
        elif self.name == "sgd":
            buffer = self.state["momentum_buffer"]
            buffer.mul_(self.momentum).add_(grad)
            update = grad + self.momentum * buffer if self.nesterov else buffer
            param.sub_(update * self.lr)
        else:  # rmsprop
            square_avg, buffer = self.state["square_avg"], self.state["momentum_buffer"]
            square_avg.mul_(RMSPROP_ALPHA).addcmul_(grad, grad, value=1.0 - RMSPROP_ALPHA)
            average = square_avg.sqrt().add_(self.eps)
            buffer.mul_(self.momentum).addcdiv_(grad, average)
            param.sub_(buffer * self.lr)

    def clip_grad_norms(self, max_norms: torch.Tensor) -> None:
        """Per-model clip_grad_norm_: `max_norms` [K, 1], infinity where a model has none."""
        grad = self.param.grad
        if grad is None:
            return
        norms = grad.norm(dim=1, keepdim=True)
        grad.mul_((max_norms / (norms + 1e-6)).clamp_(max=1.0))
