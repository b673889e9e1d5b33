"""Test-time augmentation: a model whose output averages its probabilities over fixed
variants of each image (mirrored, or shifted by a pixel each way).

Like an ensemble, its output is the logarithm of the averaged probabilities, so
evaluation treats it like any model: the softmax is the average, the argmax its class.
"""

from __future__ import annotations

import math

import torch
from torch import nn

TTA_VARIANTS = {
    "hflip": "the image and its mirror image",
    "shift": "the image and its shifts by one pixel left, right, up and down",
}


def shifted(images: torch.Tensor, rows: int, columns: int) -> torch.Tensor:
    """N x H x W images moved by `rows` down and `columns` right; uncovered pixels 0."""
    moved = torch.roll(images, shifts=(rows, columns), dims=(-2, -1))
    if rows:
        edge = slice(0, rows) if rows > 0 else slice(rows, None)
        moved[..., edge, :] = 0
    if columns:
        edge = slice(0, columns) if columns > 0 else slice(columns, None)
        moved[..., :, edge] = 0
    return moved


def variants(images: torch.Tensor, mode: str) -> list[torch.Tensor]:
    if mode == "hflip":
        return [images, images.flip(-1)]
    if mode == "shift":
        moves = ((1, 0), (-1, 0), (0, 1), (0, -1))
        return [images] + [shifted(images, rows, columns) for rows, columns in moves]
    raise ValueError(f"unknown test-time augmentation {mode!r}; choose {', '.join(TTA_VARIANTS)}")


class TestTimeAugmented(nn.Module):
    __test__ = False  # not a pytest class

    def __init__(self, model: nn.Module, mode: str) -> None:
        super().__init__()
        variants(torch.zeros(1, 2, 2), mode)  # an unknown mode fails here, not mid-test
        self.model, self.mode = model, mode
        self.spec = getattr(model, "spec", None)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        shown = variants(images, self.mode)
        log_probs = torch.stack([self.model(image).float().log_softmax(dim=1) for image in shown])
        return torch.logsumexp(log_probs, dim=0) - math.log(len(shown))


def with_tta(model: nn.Module, mode: str) -> nn.Module:
    """The model, averaged over the variants of `mode` ("none": the model itself)."""
    return model if mode == "none" else TestTimeAugmented(model, mode)
