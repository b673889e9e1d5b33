"""`mlp-predict`: classify image files with a checkpoint (any size; PNG, JPEG, ...)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from mlptrain.cli.common import run_command
from mlptrain.errors import UsageError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")
EXIT_SOME_FAILED = 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mlp-predict",
        description="Predict the class of images with a checkpoint written by mlp-train.",
    )
    parser.add_argument("--checkpoint", required=True, metavar="PATH")
    parser.add_argument("images", nargs="+", metavar="IMAGE", help="image files or folders")
    parser.add_argument("--top-k", type=int, default=3, metavar="K", help="classes per image")
    parser.add_argument("--json", action="store_true", help="one JSON object per image per line")
    invert = parser.add_mutually_exclusive_group()
    invert.add_argument(
        "--invert",
        dest="invert",
        action="store_const",
        const=True,
        help="the images are dark on light: invert them",
    )
    invert.add_argument(
        "--no-invert",
        dest="invert",
        action="store_const",
        const=False,
        help="the images are light on dark, like the datasets",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_command("mlp-predict", lambda: predict(args))


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


def predict(args: argparse.Namespace) -> int:
    import torch

    from mlptrain.checkpoint import load_checkpoint, model_from_checkpoint

    if args.top_k < 1:
        raise UsageError(f"--top-k must be at least 1, got {args.top_k}")
    checkpoint = load_checkpoint(args.checkpoint)
    model = model_from_checkpoint(checkpoint, args.checkpoint).eval()
    names = list(checkpoint["class_names"])
    top_k = min(args.top_k, len(names))
    failed = 0
    for path in image_paths(args.images):
        try:
            pixels = load_image(path, args.invert)
        except Exception as exc:  # missing, unreadable, not an image: name it and go on
            print(f"mlp-predict: cannot read {path}: {_reason(exc)}", file=sys.stderr)
            failed += 1
            continue
        with torch.inference_mode():
            probabilities = model(torch.from_numpy(pixels.copy())[None]).softmax(dim=1)[0]
        values, indices = probabilities.topk(top_k)
        top = [
            {"index": int(index), "class": names[index], "probability": round(float(value), 6)}
            for value, index in zip(values, indices, strict=True)
        ]
        print(_format(str(path), top, args.json), flush=True)
    return EXIT_SOME_FAILED if failed else 0


def _format(path: str, top: list[dict[str, Any]], as_json: bool) -> str:
    if as_json:
        return json.dumps({"path": path, "top": top})
    return f"{path}: " + ", ".join(
        f"{entry['class']} ({entry['probability']:.3f})" for entry in top
    )


def _reason(exc: Exception) -> str:
    if isinstance(exc, FileNotFoundError):
        return "no such file"
    return str(exc) or type(exc).__name__


if __name__ == "__main__":
    sys.exit(main())
