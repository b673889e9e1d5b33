"""Checkpoints: plain dicts of tensors and primitives, written atomically, loaded safely.

Loading always uses `weights_only=True`, so a checkpoint can never run code.
"""

from __future__ import annotations

import io
import platform
from pathlib import Path
from typing import Any

import torch
from torch import nn

import mlptrain
from mlptrain.errors import UsageError
from mlptrain.model.mlp import MLP, ModelSpec
from mlptrain.util.files import atomic_write_bytes

FORMAT_VERSION = 1  # what this version writes
# The oldest format this version reads. Retiring one raises it; loading an older file is
# then refused with the message in load_checkpoint, naming the release that reads it.
# tests/fixtures/checkpoint-format1.pt holds format 1, which must load until retired.
OLDEST_FORMAT_VERSION = 1
LAST_RELEASE_READING = {}  # retired format -> the last mlptrain version that reads it
REQUIRED_KEYS = ("format_version", "model_spec", "model_state", "config", "class_names")


def unwrap(model: nn.Module) -> nn.Module:
    """The module under torch.compile's wrapper, so saved keys never carry `_orig_mod.`."""
    return getattr(model, "_orig_mod", model)


def build_checkpoint(
    *,
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None,
    epoch: int,
    config: dict[str, Any],
    class_names: list[str],
    metrics: list[dict[str, Any]],
    rng: dict[str, Any] | None = None,
    scheduler: dict[str, Any] | None = None,
    trained: nn.Module | None = None,
    average: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Everything to rebuild the model, evaluate it, and resume training exactly.

    `epoch` is the number of completed epochs (0: saved before the first one); `rng`
    holds the random-number states at that point, so a resumed run repeats the rest.
    With averaged weights (training.ema, training.swa), `model` is the average, which
    every reader of model_state uses, and `trained` the weights that training goes on
    from, kept as training_weights with the average's `average` state.
    """
    module = unwrap(model)
    spec: ModelSpec = module.spec
    extra = {}
    if trained is not None:
        extra = {"training_weights": unwrap(trained).state_dict(), "average": average}
    return {
        **extra,
        "format_version": FORMAT_VERSION,
        "model_spec": spec.to_dict(),
        "model_state": module.state_dict(),
        "optimizer_state": optimizer.state_dict() if optimizer is not None else None,
        "scheduler_state": scheduler,
        "epoch": epoch,
        "config": config,
        "dataset": config["data"]["dataset"],
        "class_names": list(class_names),
        "normalization": {"mean": spec.mean, "std": spec.std},
        "metrics": [dict(row) for row in metrics],
        "rng": rng,
        "versions": {
            "mlptrain": mlptrain.__version__,
            "torch": str(torch.__version__),
            "python": platform.python_version(),
        },
    }


def save_checkpoint(path: Path, checkpoint: dict[str, Any], *copies: Path) -> None:
    """Write the checkpoint to `path` (and `copies`), serialized once, each file atomically."""
    buffer = io.BytesIO()
    torch.save(checkpoint, buffer)
    for target in (path, *copies):
        atomic_write_bytes(Path(target), buffer.getvalue())


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load and check a checkpoint onto the CPU; every way it can be wrong is a UsageError."""
    path = Path(path)
    if not path.is_file():
        what = "is a folder, not a checkpoint file" if path.is_dir() else "does not exist"
        raise UsageError(f"checkpoint {path} {what}")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise UsageError(
            f"{path} is not a readable mlptrain checkpoint ({_load_failure(exc)}); "
            "it may be truncated, damaged or a different kind of file"
        ) from None
    if not isinstance(checkpoint, dict) or any(key not in checkpoint for key in REQUIRED_KEYS):
        raise UsageError(f"{path} is a PyTorch file but not an mlptrain checkpoint")
    version = checkpoint["format_version"]
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise UsageError(
            f"{path} has checkpoint format {version!r}, newer than this mlptrain "
            f"({mlptrain.__version__}) reads (format {FORMAT_VERSION}); upgrade mlptrain"
        )
    if version < OLDEST_FORMAT_VERSION:
        release = LAST_RELEASE_READING.get(version, "an earlier release")
        raise UsageError(
            f"{path} has checkpoint format {version}, which this mlptrain "
            f"({mlptrain.__version__}) no longer reads (it reads formats "
            f"{OLDEST_FORMAT_VERSION} to {FORMAT_VERSION}); load it with mlptrain {release}"
        )
    return checkpoint


def _load_failure(exc: Exception) -> str:
    text = str(exc)
    if "Unsupported global" in text:
        return "it holds Python objects other than tensors and plain values, never loaded"
    if "WeightsUnpickler" in text or "invalid load key" in text:
        return "its content is not a PyTorch checkpoint"
    if "zip archive" in text:
        return "its archive is incomplete"
    return text.strip().splitlines()[0] if text.strip() else type(exc).__name__


def model_from_checkpoint(checkpoint: dict[str, Any], origin: str = "the checkpoint") -> MLP:
    """Rebuild the model from the checkpoint alone, weights loaded, on the CPU."""
    try:
        model = MLP(ModelSpec.from_dict(checkpoint["model_spec"]))
        model.load_state_dict(checkpoint["model_state"])
    except (TypeError, KeyError, ValueError, RuntimeError) as exc:
        raise UsageError(f"the model in {origin} cannot be rebuilt: {exc}") from None
    return model
