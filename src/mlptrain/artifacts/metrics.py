"""Evaluation summaries: accuracy, loss, per-class report and confusion matrix."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np
    import torch


# Every field of an epoch record, in metrics.csv's column order; True marks the curves
# that trackers (TensorBoard, MLflow) log per epoch.
EPOCH_FIELDS = {
    "epoch": False,
    "train_loss": True,
    "train_accuracy": True,
    "val_loss": True,
    "val_accuracy": True,
    "lr": True,
    "epoch_seconds": False,
    "train_seconds": False,
    "samples_per_second": True,
    "skipped_batches": False,
}
METRIC_FIELDS = tuple(EPOCH_FIELDS)  # metrics.csv's columns
CURVES = tuple(name for name, curve in EPOCH_FIELDS.items() if curve)


@dataclass(frozen=True)
class EvalResult:
    """A model's loss, accuracy and predictions on one split (tensors on the CPU, or numpy
    arrays for an exported model run without torch)."""

    loss: float
    accuracy: float
    predictions: torch.Tensor | np.ndarray  # int64
    labels: torch.Tensor | np.ndarray  # int64
    confidences: torch.Tensor | np.ndarray  # the predicted class's probability

    @property
    def n(self) -> int:
        return int(self.labels.shape[0])


def summarize(result: EvalResult, class_names: list[str], **context: Any) -> dict[str, Any]:
    """A JSON-ready summary: `context` (split, checkpoint...) first, then the numbers."""
    import numpy as np
    from sklearn.metrics import classification_report, confusion_matrix  # slow import

    labels = list(range(len(class_names)))
    y_true, y_pred = np.asarray(result.labels), np.asarray(result.predictions)
    report = classification_report(
        y_true, y_pred, labels=labels, target_names=class_names, output_dict=True, zero_division=0
    )
    return {
        **context,
        "n": result.n,
        "loss": result.loss,
        "accuracy": result.accuracy,
        "class_names": list(class_names),
        "report": report,
        "confusion_matrix": confusion_matrix(y_true, y_pred, labels=labels).tolist(),
    }


def format_report(summary: dict[str, Any]) -> str:
    """The per-class table as text, for terminals and logs."""
    report = summary["report"]
    width = max(len(name) for name in [*summary["class_names"], "weighted avg"])
    lines = [f"{'':<{width}}  precision  recall  f1-score  support"]
    for name in [*summary["class_names"], "macro avg", "weighted avg"]:
        row = report[name]
        lines.append(
            f"{name:<{width}}  {row['precision']:9.4f}  {row['recall']:6.4f}  "
            f"{row['f1-score']:8.4f}  {int(row['support']):7d}"
        )
    return "\n".join(lines)
