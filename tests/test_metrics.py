"""Evaluation summaries, checked on labels and predictions whose matrix is known."""

from __future__ import annotations

import csv

import pytest
import torch

from mlptrain.artifacts.metrics import EvalResult, format_report, summarize
from mlptrain.artifacts.rundir import write_evaluation

NAMES = ["cat", "dog", "bird"]


def result(labels: list[int], predictions: list[int]) -> EvalResult:
    labels_tensor, predicted = torch.tensor(labels), torch.tensor(predictions)
    return EvalResult(
        loss=0.5,
        accuracy=float((labels_tensor == predicted).float().mean()),
        predictions=predicted,
        labels=labels_tensor,
        confidences=torch.full((len(labels),), 0.9),
    )


# Two cats called dogs, one dog right, one bird called cat, one bird right.
LABELS, PREDICTIONS = [0, 0, 1, 2, 2], [1, 1, 1, 0, 2]


def test_confusion_matrix_rows_are_true_classes_and_columns_predictions():
    summary = summarize(result(LABELS, PREDICTIONS), NAMES, split="test")
    assert summary["confusion_matrix"] == [
        [0, 2, 0],  # cats: both predicted dog
        [0, 1, 0],  # the dog: right
        [1, 0, 1],  # birds: one called cat, one right
    ]
    assert summary["split"] == "test" and summary["n"] == 5
    assert summary["accuracy"] == pytest.approx(0.4)


def test_per_class_report_follows_the_matrix():
    report = summarize(result(LABELS, PREDICTIONS), NAMES)["report"]
    assert report["cat"]["recall"] == 0.0 and report["cat"]["support"] == 2
    assert report["dog"]["precision"] == pytest.approx(1 / 3)  # 3 called dog, 1 was
    assert report["dog"]["recall"] == 1.0
    assert report["bird"]["precision"] == 1.0 and report["bird"]["recall"] == 0.5
    text = format_report(summarize(result(LABELS, PREDICTIONS), NAMES))
    assert text.splitlines()[2].split() == ["dog", "0.3333", "1.0000", "0.5000", "1"]


def test_a_class_that_never_occurs_still_has_its_row_and_column():
    summary = summarize(result([0, 0], [0, 1]), NAMES)
    assert summary["confusion_matrix"] == [[1, 1, 0], [0, 0, 0], [0, 0, 0]]


def test_the_matrix_csv_is_headed_by_predictions_with_a_row_per_true_class(tmp_path):
    summary = summarize(result(LABELS, PREDICTIONS), NAMES)
    write_evaluation(tmp_path, "m.json", "m.csv", summary)
    rows = list(csv.reader((tmp_path / "m.csv").read_text().splitlines()))
    assert rows[0] == ["true \\ predicted", *NAMES]
    assert rows[1] == ["cat", "0", "2", "0"]
    assert rows[3] == ["bird", "1", "0", "1"]


def test_a_class_never_predicted_has_precision_zero_and_the_loss_is_kept():
    summary = summarize(result([0, 1], [1, 1]), NAMES)
    assert summary["report"]["cat"]["precision"] == 0.0  # never predicted: 0, not 1
    assert summary["report"]["bird"]["precision"] == 0.0
    assert summary["loss"] == 0.5


def test_the_report_table_lines_up_under_its_header():
    lines = format_report(summarize(result(LABELS, PREDICTIONS), NAMES)).splitlines()
    width = len("weighted avg")
    assert lines[0] == " " * width + "  precision  recall  f1-score  support"
    assert lines[-1].startswith("weighted avg  ")
    assert len({len(line) for line in lines}) == 1
