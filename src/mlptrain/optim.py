"""Optimizers by name."""

from __future__ import annotations

from collections.abc import Iterable

import torch

from mlptrain.config import OPTIMIZERS_WITH_MOMENTUM, OptimizerConfig

OPTIMIZERS: dict[str, type[torch.optim.Optimizer]] = {
    "sgd": torch.optim.SGD,
    "adam": torch.optim.Adam,
    "adamw": torch.optim.AdamW,
    "rmsprop": torch.optim.RMSprop,
}


def build_optimizer(
    parameters: Iterable[torch.nn.Parameter], config: OptimizerConfig
) -> torch.optim.Optimizer:
    options = {"lr": config.lr, "weight_decay": config.weight_decay}
    if config.name in OPTIMIZERS_WITH_MOMENTUM:
        options["momentum"] = config.momentum
    return OPTIMIZERS[config.name](parameters, **options)


def current_lr(optimizer: torch.optim.Optimizer) -> float:
    return float(optimizer.param_groups[0]["lr"])
