"""Random erasing, mixup and cutmix of whole batches, on their device, without per-image
Python loops.

Erase changes pixels only. Mixup and cutmix also change what an image is labelled: they
return soft targets (each row a mix of two one-hot labels, weighted as the pixels were),
which the loss takes in place of class indices. Images are N x H x W floats on the 0-1
scale; a batch of K models trained together (the stack) is K blocks of B images, and
each image is mixed only with another of its own block, so no model sees another's data.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from mlptrain.config.training_schema import EraseConfig, MixConfig

ASPECT_RANGE = (0.3, 1 / 0.3)  # random erasing's rectangles: height/width (Zhong et al. 2017)


def _inside(
    top: torch.Tensor,
    left: torch.Tensor,
    bottom: torch.Tensor,
    right: torch.Tensor,
    height: int,
    width: int,
) -> torch.Tensor:
    """N x H x W: whether each pixel lies in its image's box (rows top..bottom-1, columns
    left..right-1; each N), built from a row mask and a column mask in one broadcast."""
    device = top.device
    rows = torch.arange(height, device=device)
    columns = torch.arange(width, device=device)
    in_rows = (rows >= top.view(-1, 1)) & (rows < bottom.view(-1, 1))
    in_columns = (columns >= left.view(-1, 1)) & (columns < right.view(-1, 1))
    return in_rows.unsqueeze(2) & in_columns.unsqueeze(1)


class Erase:
    """Random erasing (Zhong et al. 2017): each image, with the configured probability,
    gets one rectangle of uniform noise, of an area share drawn from `area` and an
    aspect ratio (height/width) log-uniform in ASPECT_RANGE; the other pixels stay."""

    def __init__(self, config: EraseConfig) -> None:
        self.config = config

    def __call__(self, pixels: torch.Tensor) -> torch.Tensor:
        count, height, width = pixels.shape
        device = pixels.device
        low, high = self.config.area
        chosen = torch.rand(count, device=device) < self.config.probability
        area = (low + (high - low) * torch.rand(count, device=device)) * (height * width)
        log_low, log_high = (math.log(value) for value in ASPECT_RANGE)
        aspect = torch.exp(log_low + (log_high - log_low) * torch.rand(count, device=device))
        box_height = torch.sqrt(area * aspect).round().clamp(1, height).long()
        box_width = torch.sqrt(area / aspect).round().clamp(1, width).long()
        top = (torch.rand(count, device=device) * (height - box_height + 1)).long()
        left = (torch.rand(count, device=device) * (width - box_width + 1)).long()
        bottom = torch.where(chosen, top + box_height, top)  # an empty box: not chosen
        mask = _inside(top, left, bottom, left + box_width, height, width)
        noise = torch.rand(pixels.shape, device=device, dtype=pixels.dtype)
        return torch.where(mask, noise, pixels)


@dataclass(frozen=True)
class MixPlan:
    """The random draws of one mixed batch: each image's partner (its index), its own
    share `lam` (1: not mixed) and, for cutmix, the pasted box (N x H x W, empty where an
    image is not cut) and which images are cut (N)."""

    partner: torch.Tensor
    lam: torch.Tensor
    box: torch.Tensor | None = None
    cut: torch.Tensor | None = None


class Mixer:
    """Mixup (Zhang et al. 2018) and cutmix (Yun et al. 2019), per image.

    Each image, with its method's probability, is mixed with a partner from its own
    block, with a weight `lam` drawn from Beta(alpha, alpha): mixup blends the whole
    images (lam of its own), cutmix pastes the partner's pixels into a box covering a
    1 - lam share of the image (clipped at the edges; lam is then the share kept). With
    both on, each image takes one of them at even odds. The targets are lam times the
    image's one-hot label plus 1 - lam times the partner's.
    """

    def __init__(self, mixup: MixConfig | None, cutmix: MixConfig | None, num_classes: int):
        if mixup is None and cutmix is None:
            raise ValueError("Mixer needs mixup or cutmix")
        self.mixup, self.cutmix, self.num_classes = mixup, cutmix, num_classes

    def __call__(
        self, pixels: torch.Tensor, labels: torch.Tensor, blocks: int = 1
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(mixed pixels, soft targets N x classes) for N images in `blocks` equal blocks."""
        if pixels.dtype == torch.uint8:
            pixels = pixels.float() / 255.0
        return self.apply(pixels, labels, self.plan(pixels.shape, blocks, pixels.device))

    def plan(self, shape: torch.Size, blocks: int, device: torch.device) -> MixPlan:
        count, height, width = shape
        size = count // blocks
        offsets = (torch.arange(blocks, device=device) * size).view(-1, 1)
        partner = (torch.rand(blocks, size, device=device).argsort(dim=1) + offsets).flatten()
        use_cut = self._methods(count, device)
        lam = torch.ones(count, device=device)
        for is_cut, config in ((False, self.mixup), (True, self.cutmix)):
            if config is None:
                continue
            chosen = (use_cut == is_cut) & (torch.rand(count, device=device) < config.probability)
            draws = torch.distributions.Beta(config.alpha, config.alpha).sample((count,))
            lam = torch.where(chosen, draws.to(device), lam)
        if self.cutmix is None:
            return MixPlan(partner, lam)
        cut = use_cut & (lam < 1.0)
        top, left, bottom, right = self._box_edges(lam, height, width, device)
        bottom = torch.where(cut, bottom, top)  # an empty box where an image is not cut
        box = _inside(top, left, bottom, right, height, width)
        kept = 1.0 - ((bottom - top) * (right - left)).float() / (height * width)
        return MixPlan(partner, torch.where(cut, kept, lam), box, cut)  # lam: the share kept

    def apply(
        self, pixels: torch.Tensor, labels: torch.Tensor, plan: MixPlan
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Float pixels mixed as `plan` says, and their soft targets."""
        others = pixels[plan.partner]
        if plan.box is None:  # mixup only
            mixed = torch.lerp(others, pixels, plan.lam.view(-1, 1, 1))
        else:  # cut images paste their box (uncut images have an empty one) ...
            mixed = torch.where(plan.box, others, pixels)
            if self.mixup is not None:  # ... and, with mixup on, the others blend
                blended = torch.lerp(others, pixels, plan.lam.view(-1, 1, 1))
                mixed = torch.where(plan.cut.view(-1, 1, 1), mixed, blended)
        share = plan.lam.view(-1, 1)
        targets = torch.zeros(
            len(labels), self.num_classes, dtype=pixels.dtype, device=pixels.device
        )
        targets.scatter_(1, labels.view(-1, 1), share)
        return mixed, targets.scatter_add_(1, labels[plan.partner].view(-1, 1), 1.0 - share)

    def _methods(self, count: int, device: torch.device) -> torch.Tensor:
        """True where an image takes cutmix, False where mixup."""
        if self.mixup is None:
            return torch.ones(count, dtype=torch.bool, device=device)
        if self.cutmix is None:
            return torch.zeros(count, dtype=torch.bool, device=device)
        return torch.rand(count, device=device) < 0.5

    @staticmethod
    def _box_edges(lam: torch.Tensor, height: int, width: int, device: torch.device):
        """Top, left, bottom and right (exclusive) of a box of about a 1 - lam share of
        each image, centred at random and clipped at the edges."""
        count = lam.shape[0]
        side = torch.sqrt(1.0 - lam)
        box_height, box_width = (side * height).round().long(), (side * width).round().long()
        centre_row = (torch.rand(count, device=device) * height).long()
        centre_column = (torch.rand(count, device=device) * width).long()
        top = (centre_row - box_height // 2).clamp(0, height)
        bottom = (centre_row + box_height - box_height // 2).clamp(0, height)
        left = (centre_column - box_width // 2).clamp(0, width)
        right = (centre_column + box_width - box_width // 2).clamp(0, width)
        return top, left, bottom, right
