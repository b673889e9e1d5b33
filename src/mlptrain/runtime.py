"""Device resolution and seeding."""

from __future__ import annotations

import random

import numpy as np
import torch

from mlptrain.errors import UsageError


def resolve_device(name: str) -> torch.device:
    """Turn the config's `device` (auto | cpu | cuda | cuda:N) into a usable torch.device."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise UsageError(
                f"device {name!r} was asked for, but this machine has no usable CUDA GPU; "
                "use device: cpu (or auto)"
            )
        count = torch.cuda.device_count()
        if device.index is not None and device.index >= count:
            raise UsageError(
                f"device {name!r} does not exist: this machine has {count} CUDA device(s), "
                f"cuda:0 to cuda:{count - 1}"
            )
    return device


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (all devices) so a run repeats on the same machine."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def resolve_amp(mode: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for `training.amp`, or None for full precision."""
    if mode == "none":
        return None
    if device.type != "cuda":
        raise UsageError(
            f"training.amp: {mode} runs on CUDA devices only, and this run is on {device}; "
            "set training.amp: none (or train on a GPU)"
        )
    if not torch.cuda.is_bf16_supported():
        raise UsageError(f"training.amp: {mode} is not supported by {torch.cuda.get_device_name()}")
    return torch.bfloat16
