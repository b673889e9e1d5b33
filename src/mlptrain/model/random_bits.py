"""Cheap random integers for the training loop's dropout masks and elastic fields.

On a CPU, PyTorch's generator draws one number per element for `bernoulli_` and `rand`,
on one thread: the dropout masks of a [1024, 1024] preset took a fifth of its training
step (docs/performance.md). One 64-bit draw holds four uniform 16-bit integers, which is
all the resolution a dropout keep rate (to within 2**-16) or a smoothed displacement
field needs, at a quarter of the draws.
"""

from __future__ import annotations

import math

import torch

INT16_LEVELS = 2**16


def int16_bits(
    shape: tuple[int, ...] | torch.Size,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Independent uniform integers in [-32768, 32767], as int16 of `shape`."""
    count = math.prod(shape)
    words = torch.empty((count + 3) // 4, dtype=torch.int64, device=device)
    words.random_(-(2**63), None, generator=generator)  # the full 64-bit range
    return words.view(torch.int16)[:count].view(shape)


def uniform_signed(
    shape: tuple[int, ...] | torch.Size,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """float32 uniform in [-1, 1) on a grid of 2**-15."""
    return int16_bits(shape, generator, device).float().mul_(1.0 / 32768)
