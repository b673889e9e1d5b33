"""The model behind `mlp-serve`: a checkpoint, an ensemble of checkpoints (torch) or an
exported ONNX file (onnxruntime, no torch import), loaded once, with what /metadata says
of it. Every way the files can be wrong is a UsageError, raised before a port is opened.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mlptrain.errors import UsageError


@dataclass
class ServedModel:
    """`probabilities(uint8 N x H x W) -> float N x classes`, and its description."""

    probabilities: Any  # Callable[[np.ndarray], np.ndarray]
    class_names: list[str]
    image_size: tuple[int, int]
    builtin_data: bool  # MNIST-like: light images are inverted, as mlp-predict does
    engine: str  # "torch" or "onnxruntime"
    files: list[Path]
    normalization: dict[str, float] | None = None
    source: dict[str, Any] = field(default_factory=dict)  # run folder, config, epoch, ...

    def metadata(self) -> dict[str, Any]:
        height, width = self.image_size
        return {
            "class_names": self.class_names,
            "image_size": [height, width],
            "input": f"grey images, resized to {height}x{width}, pixels 0-255",
            "normalization": self.normalization,
            "engine": self.engine,
            "files": [{"path": str(path), "sha256": sha256(path)} for path in self.files],
            **self.source,
        }

    def warm_up(self) -> None:
        """One call, so that the first user's request pays no first-call costs."""
        self.probabilities(np.zeros((1, *self.image_size), dtype=np.uint8))


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def load_served_model(paths: Sequence[str | Path], threads: int | None = None) -> ServedModel:
    """One checkpoint or ONNX file, or several checkpoints (an ensemble)."""
    paths = [Path(path) for path in paths]
    for path in paths:
        if not path.is_file():
            what = "is a folder, not a model file" if path.is_dir() else "does not exist"
            raise UsageError(f"{path} {what}")
    if any(path.suffix == ".onnx" for path in paths):
        if len(paths) > 1:
            raise UsageError("--ensemble takes checkpoints (.pt); export an ensemble to one "
                             "ONNX file with mlp-export --ensemble instead")  # fmt: skip
        return _onnx(paths[0])
    return _torch(paths, threads)


def _onnx(path: Path) -> ServedModel:
    from mlptrain.deploy.onnx_model import OnnxModel

    model = OnnxModel(path)
    meta = model.metadata
    keys = ("dataset", "source_checkpoint", "epoch", "test_accuracy", "mlptrain_version")
    source = {key: meta[key] for key in keys if key in meta}
    return ServedModel(
        model.probabilities, list(model.class_names), tuple(model.image_size),
        model.builtin_data, "onnxruntime", [path], None, source,
    )  # fmt: skip


def _torch(paths: list[Path], threads: int | None) -> ServedModel:
    import torch

    from mlptrain.artifacts.checkpoint import load_checkpoint, model_from_checkpoint
    from mlptrain.config.schema import BUILTIN_DATASETS

    if threads is not None:
        torch.set_num_threads(threads)
    if len(paths) == 1:
        checkpoints = [load_checkpoint(paths[0])]
        model = model_from_checkpoint(checkpoints[0], str(paths[0]))
    else:
        from mlptrain.evaluation.ensemble import load_ensemble

        checkpoints, model = load_ensemble(paths)
    model.eval()

    def probabilities(pixels: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return model(torch.from_numpy(pixels)).float().softmax(dim=1).numpy()

    first = checkpoints[0]
    source = {
        "dataset": first["dataset"],
        "epoch": [checkpoint.get("epoch") for checkpoint in checkpoints]
        if len(paths) > 1
        else first.get("epoch"),
        "run": [str(path.parent) for path in paths] if len(paths) > 1 else str(paths[0].parent),
        "config": first["config"],
    }
    return ServedModel(
        probabilities, list(first["class_names"]), tuple(model.spec.image_size),
        first["dataset"] in BUILTIN_DATASETS, "torch", paths,
        {key: float(value) for key, value in first["normalization"].items()}, source,
    )  # fmt: skip


def describe(model: ServedModel) -> str:
    files = ", ".join(str(path) for path in model.files)
    return f"{files} ({model.engine}, {len(model.class_names)} classes, " + (
        f"{model.image_size[0]}x{model.image_size[1]} images)"
    )
