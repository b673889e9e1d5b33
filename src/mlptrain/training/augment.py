"""Random affine and elastic changes of whole batches of images, on their device, in one
grid sample; build_augment chains them with random erasing (mixing.py)."""

from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F

from mlptrain.config.training_schema import AugmentConfig
from mlptrain.model.random_bits import uniform_signed
from mlptrain.training.mixing import Erase


def build_augment(config: AugmentConfig):
    """The pixel changes of training batches (affine and elastic, then erasing), as one
    function of N x H x W images returning floats on the 0-1 scale; None when both are
    off. Mixing, which also changes the labels, is mixing.Mixer's."""
    steps = [RandomAffine(config)] if config.moves else []
    if config.erase is not None:
        steps.append(Erase(config.erase))
    if not steps:
        return None

    def augment(images: torch.Tensor) -> torch.Tensor:
        pixels = images.float() / 255.0 if images.dtype == torch.uint8 else images
        for step in steps:
            pixels = step(pixels)
        return pixels

    return augment


class RandomAffine:
    """Rotation, shear, zoom, translation, mirroring and elastic distortion, drawn per image.

    The elastic distortion is Simard et al.'s (2003): a random displacement per pixel,
    uniform in [-1, 1], smoothed by a Gaussian of `elastic_sigma` pixels and scaled by
    `elastic` pixels, added to the affine sampling grid.

    Takes uint8 (0-255) or float (0-1) images of N x 28 x 28 and returns floats on the
    0-1 scale, which the model normalizes like raw pixels. Uncovered corners are black,
    the background of both datasets.
    """

    def __init__(self, config: AugmentConfig) -> None:
        self.config = config

    def __call__(
        self, images: torch.Tensor, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        config = self.config
        count, height, width = images.shape
        device = images.device
        pixels = images.float() / 255.0 if images.dtype == torch.uint8 else images.float()

        def uniform(*shape: int) -> torch.Tensor:  # in [-1, 1)
            return torch.rand(*shape, generator=generator, device=device) * 2.0 - 1.0

        angle = uniform(count) * math.radians(config.rotate)
        shear = uniform(count) * math.radians(config.shear)
        zoom = 1.0 + uniform(count) * config.scale
        shift = uniform(count, 2)
        cos, sin, tan = torch.cos(angle), torch.sin(angle), torch.tan(shear)
        # theta maps output coordinates to where they are sampled from the input.
        x_row = [cos / zoom, (tan * cos - sin) / zoom]
        if config.hflip:
            flip = torch.rand(count, generator=generator, device=device) < 0.5
            x_row = [torch.where(flip, -term, term) for term in x_row]
        # Each image's two rows of theta (x, then y), stacked whole: element writes would
        # each cost one more copy per batch.
        theta = torch.stack(
            [
                *x_row,
                shift[:, 0] * (2.0 * config.translate / width),
                sin / zoom,
                (cos + tan * sin) / zoom,
                shift[:, 1] * (2.0 * config.translate / height),
            ],
            dim=1,
        ).view(count * 2, 3)
        # Where each output pixel samples the input (affine_grid's sampling grid), as one
        # matrix product, in N x 2 x H x W: the elastic field's layout, so it adds in place.
        grid = (theta @ _base_grid(height, width, device)).view(count, 2, height, width)
        if config.elastic:
            # 16-bit draws: a quarter of the generator's work for a field that is smoothed.
            raw = uniform_signed((count, 2, height, width), generator, device)
            field = _smooth(raw, config.elastic_sigma)  # (x, y) displacement per pixel
            grid.addcmul_(field, _pixel_scale(config.elastic, width, height, device))
        moved = F.grid_sample(
            pixels.unsqueeze(1),
            grid.permute(0, 2, 3, 1),
            mode="bilinear",
            padding_mode="zeros",
            align_corners=False,
        )
        return moved.squeeze(1)


@functools.lru_cache(maxsize=8)  # built once per size and device, not once per batch
def _base_grid(height: int, width: int, device: torch.device) -> torch.Tensor:
    """3 x (H*W): each output pixel's x, y (pixel centres in -1..1, as affine_grid's with
    align_corners=False) and 1, the column a 2 x 3 theta multiplies."""
    xs = torch.linspace(-1.0, 1.0, width) * (width - 1) / width
    ys = torch.linspace(-1.0, 1.0, height) * (height - 1) / height
    rows = [xs.repeat(height), ys.repeat_interleave(width), torch.ones(height * width)]
    return torch.stack(rows).to(device)


@functools.lru_cache(maxsize=8)
def _pixel_scale(pixels: float, width: int, height: int, device: torch.device) -> torch.Tensor:
    """A displacement of `pixels` pixels in x and in y, in the grid's -1..1 units (2 x 1 x 1)."""
    scale = [2.0 * pixels / width, 2.0 * pixels / height]
    return torch.tensor(scale, device=device).view(2, 1, 1)


def _smooth(field: torch.Tensor, sigma: float) -> torch.Tensor:
    """Gaussian blur of each N x C x H x W channel with mirrored edges, as two small matrix
    products (a 28 x 28 blur matrix per axis is far cheaper than a convolution here)."""
    height, width = field.shape[-2:]
    rows = _blur_matrix(height, sigma, field.dtype, field.device)
    columns = _blur_matrix(width, sigma, field.dtype, field.device)
    return rows @ field @ columns.T


@functools.lru_cache(maxsize=8)  # built once per size and device, not once per batch
def _blur_matrix(size: int, sigma: float, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """Row i holds the Gaussian weights of output pixel i over the input pixels, with the
    edges mirrored (pixel -1 is pixel 1), so every row sums to one."""
    radius = min(math.ceil(3.0 * sigma), size - 1)
    offsets = torch.arange(-radius, radius + 1, dtype=dtype)
    weights = torch.exp(-0.5 * (offsets / sigma) ** 2)
    weights = weights / weights.sum()
    sources = torch.arange(size)[:, None] + torch.arange(-radius, radius + 1)[None, :]
    sources = sources.abs()  # mirror at the first pixel
    sources = torch.where(sources > size - 1, 2 * (size - 1) - sources, sources)  # and the last
    matrix = torch.zeros(size, size, dtype=dtype)
    matrix.scatter_add_(1, sources, weights.expand(size, -1).contiguous())
    return matrix.to(device)
