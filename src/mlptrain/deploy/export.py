"""Exporting a checkpoint for deployment: ONNX (run by onnxruntime) or a torch.export
program (`.pt2`), each checked against the checkpoint before it is written.

The exported model is the whole model a user needs: uint8 pixels [N, H, W] (0-255, H x W the
training images' size and polarity) with any N, normalization
inside, logits (or probabilities) out, in float32 and in inference mode.
"""

from __future__ import annotations

import hashlib
import importlib
import io
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

import mlptrain
from mlptrain.artifacts.checkpoint import load_checkpoint, model_from_checkpoint
from mlptrain.data.splits import load_test_split
from mlptrain.deploy.onnx_model import INPUT_NAME, INSTALL_HINT, OnnxModel
from mlptrain.errors import EXIT_CHECK_FAILED, StopRun, UsageError
from mlptrain.evaluation.evaluator import stored_config
from mlptrain.model.mlp import ModelSpec
from mlptrain.util.files import atomic_write_bytes

FORMATS = ("onnx", "pt2")
PT2_METADATA = "mlptrain.json"  # the extra file of a .pt2 archive holding the metadata
INPUT_FORMAT = "uint8 [N, {height}, {width}], pixels 0-255, as the training images"
DEFAULT_TOLERANCE = 1e-4
ONNX_PACKAGES = ("onnx", "onnxscript", "onnxruntime")
CHECK_BATCH = 1000


class Deployable(nn.Module):
    """The checkpoint's model as shipped: logits, or their softmax with `probabilities`."""

    def __init__(self, model: nn.Module, probabilities: bool) -> None:
        super().__init__()
        self.model = model.float()  # float32 even when training used bf16
        self.probabilities = probabilities
        self.eval()  # batch norm's running statistics, no dropout

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        logits = self.model(pixels)
        return logits.softmax(dim=1) if self.probabilities else logits


@dataclass(frozen=True)
class Parity:
    """The exported model against the checkpoint's, on the same images."""

    images: int
    max_abs_difference: float
    top1_agreement: float  # share of images with the same top-1 class

    def passes(self, tolerance: float) -> bool:
        return self.top1_agreement == 1.0 and self.max_abs_difference <= tolerance

    def describe(self) -> str:
        return (
            f"largest absolute output difference {self.max_abs_difference:.3g}, "
            f"top-1 agreement {self.top1_agreement:.2%} on {self.images:,} test images"
        )


@dataclass(frozen=True)
class ExportResult:
    path: Path
    format: str
    metadata: dict[str, str]
    parity: Parity


def export_checkpoint(
    checkpoint_path: str | Path,
    format: str,
    out: str | Path | None = None,
    *,
    opset: int | None = None,
    probabilities: bool = False,
    check_images: int | None = None,
    tolerance: float = DEFAULT_TOLERANCE,
    settings: Mapping[str, Any] | None = None,
) -> ExportResult:
    """Export, check against the checkpoint on test images, then write `out` atomically.

    `settings`: dotted config keys for reading the test split (data.source, data.root...).
    A failed check raises StopRun with exit status 1 and writes nothing.
    """
    source = Path(checkpoint_path)
    target = _checked_target(format, out, source.with_suffix(f".{format}"), check_images)
    checkpoint = load_checkpoint(source)
    model = Deployable(model_from_checkpoint(checkpoint, str(source)), probabilities)
    metadata = _metadata(checkpoint, source, probabilities)
    config = stored_config(checkpoint, source, settings or {})
    return _check_and_write(model, metadata, config.data, checkpoint["class_names"], format,
                            target, opset, check_images, tolerance)  # fmt: skip


def export_ensemble(
    checkpoint_paths: list[str | Path],
    format: str,
    out: str | Path,
    *,
    opset: int | None = None,
    probabilities: bool = False,
    check_images: int | None = None,
    tolerance: float = DEFAULT_TOLERANCE,
    settings: Mapping[str, Any] | None = None,
) -> ExportResult:
    """Several checkpoints of one dataset exported as one model (mlptrain.evaluation.ensemble): the
    average of their probabilities, checked like one checkpoint on the first one's test
    images. Its metadata names every member."""
    from mlptrain.evaluation.ensemble import load_ensemble

    target = _checked_target(format, out, None, check_images)
    sources = [Path(path) for path in checkpoint_paths]
    checkpoints, ensemble = load_ensemble(sources)
    model = Deployable(ensemble, probabilities)
    metadata = _metadata(checkpoints[0], sources[0], probabilities)
    metadata.update(
        source_checkpoint=json.dumps([str(path) for path in sources]),
        checkpoint_sha256=json.dumps(
            [hashlib.sha256(path.read_bytes()).hexdigest() for path in sources]
        ),
        epoch=json.dumps([checkpoint.get("epoch") for checkpoint in checkpoints]),
        test_accuracy="",
        ensemble=str(len(sources)),
    )
    config = stored_config(checkpoints[0], sources[0], settings or {})
    return _check_and_write(model, metadata, config.data, checkpoints[0]["class_names"],
                            format, target, opset, check_images, tolerance)  # fmt: skip


def _checked_target(
    format: str, out: str | Path | None, default: Path | None, check_images: int | None
) -> Path:
    """The output path, refused before any work is done when it cannot be written."""
    if format not in FORMATS:
        raise UsageError(f"unknown export format {format!r}; choose one of: {', '.join(FORMATS)}")
    if format == "onnx":
        _require(ONNX_PACKAGES)
    if check_images is not None and check_images < 1:
        raise UsageError(f"--check-images must be at least 1, got {check_images}")
    if out is None and default is None:
        raise UsageError("an ensemble's export needs --out FILE")
    target = Path(out) if out is not None else default
    _check_writable(target)
    return target


def _check_and_write(
    model: Deployable,
    metadata: dict[str, str],
    data: Any,
    class_names: list[str],
    format: str,
    target: Path,
    opset: int | None,
    check_images: int | None,
    tolerance: float,
) -> ExportResult:
    """Export, compare with `model` on the test images of `data`, then write atomically."""
    images = load_test_split(data, torch.device("cpu"), class_names).images[:check_images]
    content = serialize(model, format, metadata, opset)
    parity = _compare(model, load_exported(format, content, str(target)), images)
    if not parity.passes(tolerance):
        raise StopRun(
            f"the exported model differs from the checkpoint ({parity.describe()}; tolerance "
            f"{tolerance:g}, 100% agreement needed): {target} was not written",
            EXIT_CHECK_FAILED,
        )
    try:
        atomic_write_bytes(target, content)
    except OSError as exc:
        raise UsageError(f"cannot write {target}: {exc.strerror or exc}") from None
    return ExportResult(target, format, metadata, parity)


def _require(packages: tuple[str, ...]) -> None:
    missing = []
    for name in packages:
        try:
            importlib.import_module(name)
        except ImportError:
            missing.append(name)
    if missing:
        raise UsageError(
            f"exporting to ONNX needs {', '.join(missing)}, which is not installed: {INSTALL_HINT}"
        )


def _check_writable(target: Path) -> None:
    """Refuse an output path that cannot be written before any work is done."""
    folder = target.parent
    if target.is_dir():
        raise UsageError(f"the output {target} is a folder; name a file")
    if not folder.is_dir():
        raise UsageError(f"cannot write {target}: the folder {folder} does not exist")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise UsageError(f"cannot write {target}: the folder {folder} is not writable")


def _metadata(checkpoint: dict[str, Any], source: Path, probabilities: bool) -> dict[str, str]:
    """What travels inside the exported file, as strings (ONNX metadata_props are)."""
    height, width = ModelSpec.from_dict(checkpoint["model_spec"]).image_size
    return {
        "producer": "mlptrain",
        "mlptrain_version": mlptrain.__version__,
        "dataset": str(checkpoint["dataset"]),
        "class_names": json.dumps(list(checkpoint["class_names"])),
        "input": INPUT_FORMAT.format(height=height, width=width),
        "image_size": json.dumps([height, width]),
        "output": "probabilities" if probabilities else "logits",
        "source_checkpoint": source.name,
        "checkpoint_sha256": hashlib.sha256(source.read_bytes()).hexdigest(),
        "epoch": str(checkpoint.get("epoch")),
        "test_accuracy": _recorded_test_accuracy(source),
    }


def _recorded_test_accuracy(source: Path) -> str:
    """The test accuracy the run recorded for this checkpoint, or "" when it has none
    (test_metrics.json describes best.pt only)."""
    try:
        summary = json.loads((source.parent / "test_metrics.json").read_text())
    except (OSError, ValueError):
        return ""
    if summary.get("checkpoint") != source.name or "accuracy" not in summary:
        return ""
    return repr(float(summary["accuracy"]))


def serialize(
    model: Deployable, format: str, metadata: dict[str, str], opset: int | None = None
) -> bytes:
    """The exported file's bytes: an ONNX model or a .pt2 archive, metadata inside."""
    if format == "onnx":
        return _export_onnx(model, metadata, opset)
    return _export_pt2(model, metadata)


def _example(model: Deployable, batch: int = 2) -> torch.Tensor:
    return torch.zeros(batch, *model.model.spec.image_size, dtype=torch.uint8)


def _dynamic_batch() -> dict[str, dict[int, Any]]:
    return {INPUT_NAME: {0: torch.export.Dim("batch")}}


def _export_pt2(model: Deployable, metadata: dict[str, str]) -> bytes:
    program = torch.export.export(model, (_example(model),), dynamic_shapes=_dynamic_batch())
    buffer = io.BytesIO()
    torch.export.save(program, buffer, extra_files={PT2_METADATA: json.dumps(metadata)})
    return buffer.getvalue()


def _export_onnx(model: Deployable, metadata: dict[str, str], opset: int | None) -> bytes:
    try:
        program = torch.onnx.export(
            model,
            (_example(model),),
            input_names=[INPUT_NAME],
            output_names=[metadata["output"]],
            dynamic_shapes=_dynamic_batch(),
            opset_version=opset,
            dynamo=True,
            verbose=False,
        )
    except Exception as exc:  # the exporter's errors for an opset it cannot target
        if opset is None:
            raise
        raise UsageError(f"cannot export to ONNX opset {opset}: {_last_line(exc)}") from None
    program.model.metadata_props.update(metadata)
    return program.model_proto.SerializeToString()


def _last_line(exc: Exception) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[-1][:300] if lines else type(exc).__name__


def load_pt2(source: str | Path | bytes) -> tuple[nn.Module, dict[str, str]]:
    """A .pt2 program as a callable module, and the metadata mlp-export put into it."""
    extra = {PT2_METADATA: ""}
    handle = io.BytesIO(source) if isinstance(source, bytes) else source
    program = torch.export.load(handle, extra_files=extra)
    return program.module(), json.loads(extra[PT2_METADATA] or "{}")


def load_exported(format: str, content: bytes, origin: str):
    """An exported model from its bytes, as a function of uint8 pixels (numpy) to outputs."""
    if format == "onnx":
        return OnnxModel(content, origin=origin)
    module, _ = load_pt2(content)
    return lambda pixels: module(torch.from_numpy(pixels)).detach().numpy()


def _compare(model: Deployable, exported, images: torch.Tensor) -> Parity:
    largest, agree = 0.0, 0
    with torch.inference_mode():
        for start in range(0, len(images), CHECK_BATCH):
            batch = images[start : start + CHECK_BATCH]
            expected = model(batch).numpy()
            got = np.asarray(exported(batch.numpy()))
            largest = max(largest, float(np.abs(got - expected).max()))
            agree += int((got.argmax(axis=1) == expected.argmax(axis=1)).sum())
    return Parity(len(images), largest, agree / max(len(images), 1))
