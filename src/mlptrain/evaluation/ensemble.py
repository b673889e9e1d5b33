"""Several checkpoints of one dataset as one model: the average of their probabilities.

Ensemble's output is the logarithm of the averaged probabilities: logits in every sense
that matters downstream (their softmax is the average, their argmax its top class, the
cross-entropy on them the ensemble's loss), so evaluation, prediction and export treat an
ensemble like any model.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mlptrain.artifacts.checkpoint import load_checkpoint, model_from_checkpoint
from mlptrain.errors import UsageError
from mlptrain.model.mlp import MLP, ModelSpec


class Ensemble(nn.Module):
    def __init__(self, models: Sequence[MLP]) -> None:
        super().__init__()
        self.members = nn.ModuleList(models)
        self.spec = models[0].spec  # the input's size, which every member shares

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        log_probs = torch.stack(
            [member(pixels).float().log_softmax(dim=1) for member in self.members]
        )
        return torch.logsumexp(log_probs, dim=0) - math.log(len(self.members))


def load_ensemble(paths: Sequence[str | Path]) -> tuple[list[dict[str, Any]], Ensemble]:
    """The checkpoints and their ensemble (on the CPU). They must be of one dataset: the
    same classes, in the same order, and the same image size."""
    if len(paths) < 2:
        raise UsageError("an ensemble needs at least two checkpoints")
    checkpoints = [load_checkpoint(path) for path in paths]
    first, origin = checkpoints[0], Path(paths[0])
    size = ModelSpec.from_dict(first["model_spec"]).image_size
    for path, checkpoint in zip(paths[1:], checkpoints[1:], strict=True):
        differences = [
            what
            for what, differs in (
                ("dataset", checkpoint["dataset"] != first["dataset"]),
                ("classes", list(checkpoint["class_names"]) != list(first["class_names"])),
                ("image size", ModelSpec.from_dict(checkpoint["model_spec"]).image_size != size),
            )
            if differs
        ]
        if differences:
            raise UsageError(
                f"an ensemble's checkpoints must be of one dataset, but {path} differs from "
                f"{origin} in its {' and '.join(differences)}"
            )
    models = [
        model_from_checkpoint(checkpoint, str(path))
        for path, checkpoint in zip(paths, checkpoints, strict=True)
    ]
    return checkpoints, Ensemble(models)


def member_files(paths: Sequence[str | Path], origin: str) -> list[Path]:
    """Checkpoint files from paths that are files, run folders (their best.pt) or group
    folders (each member's best.pt, in name order)."""
    files = []
    for path in map(Path, paths):
        if not path.is_dir():
            files.append(path)
        elif (path / "best.pt").is_file():
            files.append(path / "best.pt")
        else:
            members = sorted(path.glob("*/best.pt"))
            if not members:
                raise UsageError(
                    f"{origin} {path}: a folder with no best.pt and no run folders holding one"
                )
            files.extend(members)
    return files


def teacher_checkpoints(
    paths: Sequence[str | Path],
) -> tuple[dict[Path, dict[str, Any]], nn.Module]:
    """training.teacher's checkpoints (by file) and the model they make: one checkpoint's
    own, or several checkpoints' ensemble."""
    files = member_files(paths, "training.teacher")
    if len(files) == 1:
        checkpoint = load_checkpoint(files[0])
        return {files[0]: checkpoint}, model_from_checkpoint(checkpoint, str(files[0]))
    checkpoints, ensemble = load_ensemble(files)
    return dict(zip(files, checkpoints, strict=True)), ensemble
