"""The optimizers of models trained together (a Stack), stepping their rows of the
stacked parameters: each member keeps its own torch optimizer, re-pointed at its rows;
FusedAdam takes their Adam/AdamW steps together."""

from __future__ import annotations

from collections.abc import Sequence

import torch


class FusedAdam:
    """The fused Adam/AdamW steps of K optimizers, each stepping its row of the stacked
    parameters, in as few kernel calls as their hyperparameters allow: the call each
    optimizer's own step() makes, without its Python overhead times K.

    Once every optimizer has its state (the first step goes through each optimizer's own
    step(), which creates it), the state is copied into [K, ...] tensors shaped like the
    stacked parameters, which hold it while the stack trains (each optimizer's own
    tensors wait, out of date, until `flush()`). When all members have
    equal hyperparameters and step counts (the seeds of one config), a step is one
    kernel call on the stacked tensors; otherwise one call per set of equal
    hyperparameters, on the members' rows. `flush()` copies the state back into each
    optimizer's own tensors, which checkpoints save; the stack calls it before anything
    reads them."""

    def __init__(
        self, optimizers: Sequence[torch.optim.Optimizer], stacked: Sequence[torch.Tensor]
    ) -> None:
        self.optimizers, self.stacked = list(optimizers), list(stacked)
        self.applies = all(_fusable(optimizer) for optimizer in self.optimizers)
        self.gathered = False

    def step(self, grads: list[torch.Tensor | None], skip: list[bool] | None) -> bool:
        """True when it took the step (leaving out the members whose `skip` is set);
        False, doing nothing, where it does not apply: another optimizer, no fused
        kernel, no gradient, or no state yet."""
        if not self.applies or any(grad is None for grad in grads):
            self.flush(release=True)
            return False
        if not self.gathered and not self._gather():
            return False
        stepping = [k for k in range(len(self.optimizers)) if not (skip and skip[k])]
        calls: dict[tuple, list[int]] = {}
        for k in stepping:
            calls.setdefault(_hyperparameters(self.optimizers[k]), []).append(k)
        if len(calls) == 1 and len(stepping) == len(self.optimizers) and self.uniform:
            self.steps.add_(1)
            _kernel(next(iter(calls)), self.params, grads, self.exp_avgs, self.exp_avg_sqs,
                    self.step_views)  # fmt: skip
            return True
        for key, ks in calls.items():
            params, grads_, exp_avgs, exp_avg_sqs, steps = [], [], [], [], []
            for k in ks:
                params += self.rows[k]
                grads_ += [grad[k] for grad in grads]
                exp_avgs += [tensor[k] for tensor in self.exp_avgs]
                exp_avg_sqs += [tensor[k] for tensor in self.exp_avg_sqs]
                steps += self.member_steps[k]
            torch._foreach_add_(steps, 1)
            _kernel(key, params, grads_, exp_avgs, exp_avg_sqs, steps)
        if len(stepping) < len(self.optimizers):
            self.uniform = bool((self.steps == self.steps[:, :1]).all())
        return True

    def flush(self, release: bool = False) -> None:
        """Each member's state from the stacked tensors into its optimizer's own tensors
        (`release`: and the stacked tensors given up; a later step gathers again)."""
        if not self.gathered:
            return
        with torch.no_grad():
            for k, optimizer in enumerate(self.optimizers):
                for p, row in enumerate(self.rows[k]):
                    state = optimizer.state[row]
                    state["exp_avg"].copy_(self.exp_avgs[p][k])
                    state["exp_avg_sq"].copy_(self.exp_avg_sqs[p][k])
                    state["step"].copy_(self.steps[p, k])
        self.gathered = not release

    def _gather(self) -> bool:
        """The members' states stacked; False where some member has none yet."""
        self.rows = [optimizer.param_groups[0]["params"] for optimizer in self.optimizers]
        states = [
            [optimizer.state.get(row) for row in rows]
            for optimizer, rows in zip(self.optimizers, self.rows, strict=True)
        ]
        if not all(all(member_states) for member_states in states):
            return False
        by_parameter = list(zip(*states, strict=True))  # [parameter][member] -> state

        def stacked(name: str) -> list[torch.Tensor]:
            return [torch.stack([state[name] for state in row]) for row in by_parameter]

        with torch.no_grad():
            self.params = [parameter.detach() for parameter in self.stacked]
            self.exp_avgs, self.exp_avg_sqs = stacked("exp_avg"), stacked("exp_avg_sq")
            self.steps = torch.stack(stacked("step"))  # [parameter, member], float32
        self.step_views = list(self.steps[:, 0])
        self.member_steps = [list(self.steps[:, k]) for k in range(len(self.optimizers))]
        self.uniform = bool((self.steps == self.steps[:, :1]).all())
        self.gathered = True
        return True


def _hyperparameters(optimizer: torch.optim.Optimizer) -> tuple:
    group = optimizer.param_groups[0]
    decoupled = type(optimizer) is torch.optim.AdamW or group.get("decoupled_weight_decay")
    return (group["lr"], *group["betas"], group["weight_decay"], group["eps"], bool(decoupled))


def _kernel(key: tuple, params, grads, exp_avgs, exp_avg_sqs, steps) -> None:
    lr, beta1, beta2, weight_decay, eps, decoupled = key
    kernel = torch._fused_adamw_ if decoupled else torch._fused_adam_
    kernel(
        params, grads, exp_avgs, exp_avg_sqs, [], steps,
        amsgrad=False, lr=lr, beta1=beta1, beta2=beta2, weight_decay=weight_decay,
        eps=eps, maximize=False, grad_scale=None, found_inf=None,
    )  # fmt: skip


def _fusable(optimizer: torch.optim.Optimizer) -> bool:
    group = optimizer.param_groups[0]
    return (
        type(optimizer) in (torch.optim.Adam, torch.optim.AdamW)
        and bool(group.get("fused"))
        and not group["amsgrad"]
        and not group["maximize"]
        and isinstance(group["lr"], float)
    )


def repoint(optimizer: torch.optim.Optimizer, parameters: list[torch.Tensor]) -> None:
    """Make `optimizer` step `parameters`, keeping its state (matched by position)."""
    group = optimizer.param_groups[0]
    old = group["params"]
    group["params"] = parameters
    for before, after in zip(old, parameters, strict=True):
        if before in optimizer.state:
            optimizer.state[after] = optimizer.state.pop(before)
