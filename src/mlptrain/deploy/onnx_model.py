"""An exported ONNX model run by onnxruntime, with numpy only: no torch import.

`mlp-predict --model` and `mlp-eval --model` use this; so does `mlp-export` to check the
file it is about to write. The metadata `mlp-export` puts into the file (class names,
dataset, input format, versions) is read back here.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from mlptrain.config.schema import BUILTIN_DATASETS
from mlptrain.deploy.prediction import top_classes
from mlptrain.errors import UsageError

INPUT_NAME = "pixels"
INSTALL_HINT = "pip install 'mlptrain[export]'"


def import_onnxruntime():
    try:
        import onnxruntime
    except ImportError:
        raise UsageError(f"running an ONNX model needs onnxruntime: {INSTALL_HINT}") from None
    return onnxruntime


class OnnxModel:
    """An mlptrain ONNX export: uint8 pixels [N, H, W] in, logits (or probabilities) out."""

    def __init__(self, source: str | Path | bytes, origin: str | None = None) -> None:
        onnxruntime = import_onnxruntime()
        self.origin = origin or str(source)
        if not isinstance(source, bytes) and not Path(source).is_file():
            raise UsageError(f"no such model file: {source}")
        options = onnxruntime.SessionOptions()
        options.log_severity_level = 3  # errors only; the message below says what failed
        try:
            self.session = onnxruntime.InferenceSession(
                source if isinstance(source, bytes) else str(source),
                options,
                providers=["CPUExecutionProvider"],
            )
        except Exception as exc:  # onnxruntime raises its own types for every kind of damage
            reason = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
            raise UsageError(
                f"{self.origin} is not a readable ONNX model ({reason[:300]})"
            ) from None
        self.metadata = self.session.get_modelmeta().custom_metadata_map
        self.class_names = _class_names(self.metadata, self.origin)
        self.outputs = self.metadata.get("output", "logits")
        self.image_size = tuple(json.loads(self.metadata.get("image_size", "[28, 28]")))
        self.builtin_data = self.metadata.get("dataset") in BUILTIN_DATASETS

    def __call__(self, pixels: np.ndarray) -> np.ndarray:
        """The model's output for uint8 pixels of shape [N, H, W]."""
        return self.session.run(None, {INPUT_NAME: np.ascontiguousarray(pixels, np.uint8)})[0]

    def probabilities(self, pixels: np.ndarray) -> np.ndarray:
        out = self(pixels).astype(np.float64)
        if self.outputs == "probabilities":
            return out
        out = np.exp(out - out.max(axis=1, keepdims=True))
        return out / out.sum(axis=1, keepdims=True)

    def top(self, pixels: np.ndarray, k: int) -> list[dict[str, Any]]:
        """The `k` likeliest classes of one uint8 image, likeliest first."""
        return top_classes(self.probabilities(pixels[None])[0], self.class_names, k)


def _class_names(metadata: dict[str, str], origin: str) -> list[str]:
    try:
        names = json.loads(metadata["class_names"])
    except (KeyError, ValueError):
        raise UsageError(
            f"{origin} is an ONNX model but not one exported by mlp-export: it carries no "
            "class names in its metadata"
        ) from None
    if not isinstance(names, list) or not names:
        raise UsageError(f"{origin}: its metadata's class names are damaged")
    return [str(name) for name in names]


def evaluate_onnx(
    model: OnnxModel, data_root: str, source: str | None, verify: bool, batch_size: int
) -> dict[str, Any]:
    """The exported model on its dataset's whole test split: the summary `mlp-eval` prints
    for a checkpoint (loss, accuracy, per-class report, confusion matrix)."""
    from mlptrain.artifacts.metrics import EvalResult, summarize
    from mlptrain.config.schema import DataConfig
    from mlptrain.data.registry import DATASETS, read_test_files

    dataset = model.metadata.get("dataset", "")
    if dataset in ("images", "csv"):
        raise UsageError(
            f"{model.origin} was trained on your own data ({dataset}); mlp-eval --model "
            "evaluates on the built-in datasets: evaluate the checkpoint it was exported from "
            "with mlp-eval --checkpoint"
        )
    if dataset not in DATASETS:
        raise UsageError(f"{model.origin} names an unknown dataset {dataset!r} in its metadata")
    if batch_size < 1:
        raise UsageError(f"the batch size must be at least 1, got {batch_size}")
    data = DataConfig(dataset=dataset, root=data_root, source=source, verify=verify)
    images, labels = read_test_files(data)
    probabilities = np.concatenate(
        [
            model.probabilities(images[start : start + batch_size])
            for start in range(0, len(images), batch_size)
        ]
    )
    predictions = probabilities.argmax(axis=1)
    picked = probabilities[np.arange(len(labels)), labels]
    result = EvalResult(
        loss=float(-np.log(np.maximum(picked, 1e-12)).mean()),
        accuracy=float((predictions == labels).mean()),
        predictions=predictions,
        labels=labels,
        confidences=probabilities.max(axis=1),
    )
    return summarize(result, model.class_names, split="test", model=model.origin, dataset=dataset)
