"""Predicting the class of image files (any size; PNG, JPEG, ...) or of CSV pixel rows
with a checkpoint."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mlptrain.config.schema import BUILTIN_DATASETS

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


def load_image(path: Path, invert: bool | None, size: tuple[int, int] = (28, 28)):
    """A uint8 array of `size` (height, width), grey.

    Without a choice (None), a light border means a light background, which is inverted
    to the built-in datasets' light strokes on black; `False` keeps the image as it is
    (models of your own images expect them as they were trained).
    """
    import numpy as np
    from PIL import Image

    height, width = size
    with Image.open(path) as image:
        grey = image.convert("L").resize((width, height), Image.Resampling.BILINEAR)
        pixels = np.asarray(grey, dtype=np.uint8)
    if invert is None:
        border = np.concatenate([pixels[0], pixels[-1], pixels[:, 0], pixels[:, -1]])
        invert = float(border.mean()) > 127
    return 255 - pixels if invert else pixels


class Predictor:
    """A checkpoint's model on the CPU, with its class names."""

    def __init__(self, checkpoint_path: str | Path) -> None:
        from mlptrain.artifacts.checkpoint import load_checkpoint, model_from_checkpoint

        checkpoint = load_checkpoint(checkpoint_path)
        self.model = model_from_checkpoint(checkpoint, str(checkpoint_path)).eval()
        self.class_names = list(checkpoint["class_names"])
        self.image_size = tuple(self.model.spec.image_size)
        self.builtin_data = checkpoint["dataset"] in BUILTIN_DATASETS

    def probabilities(self, pixels):
        """Class probabilities (numpy, N x classes) of uint8 images N x H x W."""
        import torch

        with torch.inference_mode():
            return self.model(torch.from_numpy(pixels.copy())).softmax(dim=1).numpy()

    def top(self, pixels, k: int) -> list[dict[str, Any]]:
        """The `k` likeliest classes of one uint8 image, likeliest first."""
        return top_classes(self.probabilities(pixels[None])[0], self.class_names, k)


def top_classes(probabilities, class_names: list[str], k: int) -> list[dict[str, Any]]:
    """The `k` likeliest of one image's class probabilities, likeliest first."""
    import numpy as np

    order = np.argsort(-probabilities, kind="stable")[: min(k, len(class_names))]
    return [
        {"index": int(i), "class": class_names[i], "probability": round(float(probabilities[i]), 6)}
        for i in order
    ]


def predict_csv(predictor, path: Path, label_column: str, kaggle: bool, batch: int = 4096) -> str:
    """One prediction per pixel row of a CSV (a label column, if any, is ignored), as CSV
    text: `id,class,probability` (ids from 1), or Kaggle's `ImageId,Label`."""
    import numpy as np

    from mlptrain.data.pixel_csv import read_pixel_csv

    images, _ = read_pixel_csv(path, predictor.image_size, label_column, labels_required=False)
    starts = range(0, len(images), batch)
    probabilities = np.concatenate(
        [predictor.probabilities(images[start : start + batch]) for start in starts]
    )
    lines = ["ImageId,Label" if kaggle else "id,class,probability"]
    for row, index in enumerate(probabilities.argmax(axis=1)):
        name = predictor.class_names[index]
        probability = probabilities[row, index]
        lines.append(
            f"{row + 1},{name}" if kaggle else f"{row + 1},{_csv_field(name)},{probability:.6f}"
        )
    return "\n".join(lines) + "\n"


def _csv_field(text: str) -> str:
    return '"' + text.replace('"', '""') + '"' if any(c in text for c in ',"\n') else text


def read_failure(exc: Exception) -> str:
    """Why an image could not be read, in a few words."""
    if isinstance(exc, FileNotFoundError):
        return "no such file"
    return str(exc) or type(exc).__name__
