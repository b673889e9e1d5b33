"""Hooks: what a caller sees of training (batches, epochs, the stop request), and
HookList, several observers as one."""

from __future__ import annotations

from typing import Any

import torch


class Hooks:
    """What the caller sees of training; every method is optional."""

    def epoch_start(self, epoch: int, batch_count: int) -> None:
        pass

    def batch_end(self, samples: int) -> None:
        pass

    def batch_loss(self, loss: torch.Tensor) -> None:
        """The batch's training loss, a tensor on the device (reading it synchronizes);
        called only when wants_batch_loss() says so."""

    def wants_batch_loss(self) -> bool:
        return type(self).batch_loss is not Hooks.batch_loss

    def epoch_end(self, record: dict[str, Any], is_best: bool) -> None:
        pass

    def should_stop(self) -> bool:
        return False


class HookList(Hooks):
    """Several observers as one, told in order."""

    def __init__(self, *hooks: Hooks) -> None:
        self.hooks = hooks

    def wants_batch_loss(self) -> bool:
        return any(hook.wants_batch_loss() for hook in self.hooks)

    def epoch_start(self, epoch: int, batch_count: int) -> None:
        for hook in self.hooks:
            hook.epoch_start(epoch, batch_count)

    def batch_end(self, samples: int) -> None:
        for hook in self.hooks:
            hook.batch_end(samples)

    def batch_loss(self, loss: torch.Tensor) -> None:
        for hook in self.hooks:
            if hook.wants_batch_loss():
                hook.batch_loss(loss)

    def epoch_end(self, record: dict[str, Any], is_best: bool) -> None:
        for hook in self.hooks:
            hook.epoch_end(record, is_best)

    def should_stop(self) -> bool:
        return any(hook.should_stop() for hook in self.hooks)
