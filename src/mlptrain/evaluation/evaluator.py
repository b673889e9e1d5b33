"""Evaluating a checkpoint: load and rebuild it, evaluate it on a split (clean or
perturbed), and write what an evaluation leaves on disk. `mlp-eval`, `mlp-train`'s final
test of best.pt and `mlptrain.evaluate` all come here.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mlptrain.artifacts.checkpoint import load_checkpoint, model_from_checkpoint
from mlptrain.artifacts.metrics import EvalResult, summarize
from mlptrain.artifacts.rundir import write_evaluation
from mlptrain.config.files import build_config
from mlptrain.config.schema import Config
from mlptrain.data.splits import Split, check_classes, load_splits, load_test_split
from mlptrain.errors import UsageError
from mlptrain.evaluation.tta import TTA_VARIANTS, with_tta
from mlptrain.training.loop import evaluate
from mlptrain.training.runtime import resolve_device


@dataclass(frozen=True)
class Evaluation:
    """A checkpoint's evaluation: the JSON-ready summary and the predictions behind it."""

    summary: dict[str, Any]
    result: EvalResult
    split: Split  # the images evaluated (for pictures)

    @property
    def accuracy(self) -> float:
        return self.result.accuracy


@dataclass(frozen=True)
class OutputNames:
    """The files an evaluation writes into a folder."""

    metrics: str
    matrix_csv: str
    matrix_png: str
    misclassified_png: str

    @classmethod
    def of_training(cls) -> OutputNames:
        return cls("test_metrics.json", "confusion_matrix.csv", "confusion_matrix.png",
                   "misclassified.png")  # fmt: skip

    @classmethod
    def of_eval(cls, split: str, kind: str = "") -> OutputNames:
        prefix = f"{kind or 'eval_'}{split}_"
        return cls(f"{prefix}metrics.json", f"{prefix}confusion_matrix.csv",
                   f"{prefix}confusion_matrix.png", f"{prefix}misclassified.png")  # fmt: skip


def stored_config(
    checkpoint: Mapping[str, Any], origin: Path, settings: Mapping[str, Any]
) -> Config:
    """The run's config from its checkpoint, with dotted `settings` (where the data is,
    the device) applied."""
    layers = [(str(origin), checkpoint["config"])]
    return build_config(layers, settings=settings, origin=f"config stored in {origin}")


def load_model(path: Path, device: torch.device) -> tuple[dict[str, Any], nn.Module]:
    checkpoint = load_checkpoint(path)
    return checkpoint, model_from_checkpoint(checkpoint, str(path)).to(device)


def evaluate_split(
    model: nn.Module,
    images: Split,
    class_names: list[str],
    batch_size: int,
    tta: str = "none",
    **context: Any,
) -> Evaluation:
    """Evaluate in full precision and summarize (`context`: split, checkpoint, epoch...);
    `tta` averages the probabilities over variants of each image (evaluation/tta.py)."""
    result = evaluate(with_tta(model, tta), images, batch_size)
    summary = summarize(result, class_names, **context)
    if tta != "none":
        summary["tta"] = {"mode": tta, "variants": TTA_VARIANTS[tta]}
    return Evaluation(summary, result, images)


def evaluate_checkpoint(
    path: str | Path,
    split: str = "test",
    settings: Mapping[str, Any] | None = None,
    batch_size: int = 1000,
    tta: str = "none",
) -> tuple[Evaluation, nn.Module]:
    """Rebuild the checkpoint's model and evaluate it on its run's `split` (test or val);
    only the files that split needs are read."""
    path = Path(path)
    if split not in ("test", "val"):
        raise UsageError(f"split must be test or val, got {split!r}")
    if batch_size < 1:
        raise UsageError(f"the batch size must be at least 1, got {batch_size}")
    checkpoint = load_checkpoint(path)
    config = stored_config(checkpoint, path, settings or {})
    device = resolve_device(config.device)
    if split == "test":
        images = load_test_split(config.data, device, checkpoint["class_names"])
    else:
        splits = load_splits(config.data, config.seed, device)
        check_classes(splits.info, checkpoint["class_names"])
        images = splits.val
        if images is None:
            raise UsageError(f"{path} was trained with data.val_fraction 0: there is no val split")
    model = model_from_checkpoint(checkpoint, str(path)).to(device)
    evaluation = evaluate_split(
        model,
        images,
        list(checkpoint["class_names"]),
        batch_size,
        tta,
        split=split,
        checkpoint=str(path),
        epoch=checkpoint.get("epoch"),
        dataset=config.data.dataset,
    )
    return evaluation, model


def evaluate_ensemble(
    paths: list[str | Path],
    settings: Mapping[str, Any] | None = None,
    batch_size: int = 1000,
    tta: str = "none",
) -> tuple[Evaluation, nn.Module]:
    """The averaged probabilities of several checkpoints of one dataset on its test split
    (read as the first checkpoint's run read it), with each member's own accuracy."""
    from mlptrain.evaluation.ensemble import load_ensemble

    if batch_size < 1:
        raise UsageError(f"the batch size must be at least 1, got {batch_size}")
    checkpoints, ensemble = load_ensemble(paths)
    first = checkpoints[0]
    config = stored_config(first, Path(paths[0]), settings or {})
    device = resolve_device(config.device)
    images = load_test_split(config.data, device, first["class_names"])
    ensemble = ensemble.to(device)
    evaluation = evaluate_split(
        ensemble,
        images,
        list(first["class_names"]),
        batch_size,
        tta,
        split="test",
        checkpoint=[str(path) for path in paths],
        dataset=config.data.dataset,
    )
    evaluation.summary["members"] = [
        {"checkpoint": str(path), "accuracy": evaluate(member, images, batch_size).accuracy}
        for path, member in zip(paths, ensemble.members, strict=True)
    ]
    return evaluation, ensemble


def check_perturbation(rotate: float, shift: float) -> None:
    if not (0 <= rotate <= 180 and 0 <= shift <= 14):
        raise UsageError("--rotate takes 0 to 180 degrees and --shift 0 to 14 pixels")


def perturbed(
    model: nn.Module, split: Split, batch_size: int, rotate: float, shift: float, seed: int
) -> dict[str, Any]:
    """Accuracy on the split's images rotated and shifted at random (seeded)."""
    from mlptrain.config.training_schema import AugmentConfig
    from mlptrain.training.augment import RandomAffine

    check_perturbation(rotate, shift)
    change = RandomAffine(AugmentConfig(rotate=rotate, translate=shift))
    generator = torch.Generator(device=split.images.device).manual_seed(seed)
    result = evaluate(model, Split(change(split.images, generator), split.labels), batch_size)
    parts = [f"rotated up to {rotate:g} degrees"] if rotate else []
    parts += [f"shifted up to {shift:g} pixels"] if shift else []
    return {
        "rotate": rotate,
        "shift": shift,
        "seed": seed,
        "description": ", ".join(parts) + f", seed {seed}",
        "accuracy": result.accuracy,
        "loss": result.loss,
        "n": result.n,
    }


def write_outputs(folder: Path, names: OutputNames, evaluation: Evaluation, title: str) -> None:
    """The summary (JSON), its confusion matrix (CSV and picture) and the misclassified
    images: the same after training and after mlp-eval."""
    from mlptrain.artifacts import reports  # matplotlib: only once there is something to draw

    summary, result = evaluation.summary, evaluation.result
    write_evaluation(folder, names.metrics, names.matrix_csv, summary)
    class_names = summary["class_names"]
    reports.plot_confusion(
        folder / names.matrix_png, summary["confusion_matrix"], class_names, title
    )
    reports.plot_misclassified(
        folder / names.misclassified_png,
        evaluation.split.images,
        result.labels,
        result.predictions,
        result.confidences,
        class_names,
    )
