"""ModelSpec (plain data, stored in checkpoints) and the MLP built from it."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from mlptrain.model.random_bits import INT16_LEVELS, int16_bits

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "gelu": nn.GELU,
    "tanh": nn.Tanh,
    "sigmoid": nn.Sigmoid,
    "leaky_relu": nn.LeakyReLU,
}


@dataclass(frozen=True)
class ModelSpec:
    """Everything needed to rebuild the model, checkpoint included."""

    hidden: tuple[int, ...] = (256, 128)
    activation: str = "relu"
    dropout: float = 0.0
    batch_norm: bool = False
    input_size: int = 28 * 28  # height x width of image_size
    num_classes: int = 10
    image_size: tuple[int, int] = (28, 28)  # what inputs are resized to (height, width)
    # Normalization of pixels on the 0-1 scale, usually the training split's statistics.
    mean: float = 0.0
    std: float = 1.0

    def to_dict(self) -> dict[str, Any]:
        spec = asdict(self)
        spec["hidden"], spec["image_size"] = list(self.hidden), list(self.image_size)
        return spec

    @classmethod
    def from_dict(cls, spec: dict[str, Any]) -> ModelSpec:
        size = tuple(spec.get("image_size", (28, 28)))  # checkpoints before image folders
        return cls(**{**spec, "hidden": tuple(spec["hidden"]), "image_size": size})


class Dropout(nn.Dropout):
    """nn.Dropout with a four times cheaper mask on a CPU (mlptrain.model.random_bits).

    An element is kept when its 16-bit random integer is below a threshold, so the keep
    rate is 1 - p to within 2**-16, and kept values are scaled by the inverse of that
    exact rate, so the expected output equals the input. The parameters, state dict and
    inference behaviour (the identity) are nn.Dropout's; on other devices, whose dropout
    kernels are already fused, it is nn.Dropout.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0 or x.device.type != "cpu":
            return super().forward(x)
        kept_levels = max(1, round((1.0 - self.p) * INT16_LEVELS))
        bits = int16_bits(x.shape, device=x.device)
        # The comparison written straight into a mask of x's type: no bool mask to cast
        # (torch.where on a bool mask measured twice as slow).
        keep = torch.empty(x.shape, dtype=x.dtype, device=x.device)
        torch.lt(bits, kept_levels - INT16_LEVELS // 2, out=keep)
        return x * keep.mul_(INT16_LEVELS / kept_levels)


class MLP(nn.Module):
    """flatten -> normalize -> [Linear -> (BatchNorm) -> activation -> (Dropout)] x N -> Linear.

    Takes raw pixels (uint8 0-255, or floats 0-1) and returns logits: no softmax,
    since cross-entropy takes logits.
    """

    def __init__(self, spec: ModelSpec) -> None:
        super().__init__()
        self.spec = spec
        self.register_buffer("mean", torch.tensor(spec.mean, dtype=torch.float32))
        self.register_buffer("std", torch.tensor(spec.std, dtype=torch.float32))
        layers: list[nn.Module] = []
        width = spec.input_size
        for hidden in spec.hidden:
            # A bias before batch norm is cancelled by its mean subtraction.
            layers.append(nn.Linear(width, hidden, bias=not spec.batch_norm))
            if spec.batch_norm:
                layers.append(nn.BatchNorm1d(hidden))
            layers.append(ACTIVATIONS[spec.activation]())
            if spec.dropout > 0:
                layers.append(Dropout(spec.dropout))
            width = hidden
        layers.append(nn.Linear(width, spec.num_classes))
        self.layers = nn.Sequential(*layers)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        x = pixels.flatten(1)
        if x.dtype == torch.uint8:
            x = x.to(self.mean.dtype) * (1.0 / 255.0)
        return self.layers((x - self.mean) / self.std)
