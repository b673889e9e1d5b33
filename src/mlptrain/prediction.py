"""Predicting the class of image files (any size; PNG, JPEG, ...) with a checkpoint."""

from __future__ import annotations

from pathlib import Path
from typing import Any

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")


def image_paths(arguments: list[str]) -> list[Path]:
    """The files named, and the image files inside the folders named, in order."""
    paths: list[Path] = []
    for argument in arguments:
        path = Path(argument)
        if path.is_dir():
            paths += sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        else:
            paths.append(path)
    return paths


def load_image(path: Path, invert: bool | None):
    """A 28x28 uint8 array, light strokes on black like the datasets.

    Without a choice, a light border means a light background, which is inverted.
    """
    import numpy as np
    from PIL import Image

    with Image.open(path) as image:
        grey = image.convert("L").resize((28, 28), Image.Resampling.BILINEAR)
        pixels = np.asarray(grey, dtype=np.uint8)
    if invert is None:
        border = np.concatenate([pixels[0], pixels[-1], pixels[:, 0], pixels[:, -1]])
        invert = float(border.mean()) > 127
    return 255 - pixels if invert else pixels


class Predictor:
    """A checkpoint's model on the CPU, with its class names."""

    def __init__(self, checkpoint_path: str | Path) -> None:
        from mlptrain.checkpoint import load_checkpoint, model_from_checkpoint

        checkpoint = load_checkpoint(checkpoint_path)
        self.model = model_from_checkpoint(checkpoint, str(checkpoint_path)).eval()
        self.class_names = list(checkpoint["class_names"])

    def top(self, pixels, k: int) -> list[dict[str, Any]]:
        """The `k` likeliest classes of one 28x28 uint8 image, likeliest first."""
        import torch

        with torch.inference_mode():
            probabilities = self.model(torch.from_numpy(pixels.copy())[None]).softmax(dim=1)[0]
        values, indices = probabilities.topk(min(k, len(self.class_names)))
        return [
            {"index": int(i), "class": self.class_names[i], "probability": round(float(v), 6)}
            for v, i in zip(values, indices, strict=True)
        ]


def read_failure(exc: Exception) -> str:
    """Why an image could not be read, in a few words."""
    if isinstance(exc, FileNotFoundError):
        return "no such file"
    return str(exc) or type(exc).__name__
