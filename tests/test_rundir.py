from __future__ import annotations

import csv
import json
from datetime import datetime

import pytest

from mlptrain.artifacts.metrics import METRIC_FIELDS
from mlptrain.artifacts.rundir import RunDir, write_evaluation
from mlptrain.errors import UsageError

NOW = datetime(2026, 1, 2, 3, 4, 5)


def test_folder_name_and_suffix_for_the_same_second(tmp_path):
    first = RunDir.create(tmp_path / "runs", "exp", NOW)
    second = RunDir.create(tmp_path / "runs", "exp", NOW)
    assert first.path.name == "exp-20260102-030405"
    assert second.path.name == "exp-20260102-030405-2"


def test_runs_dir_that_cannot_be_created(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(UsageError, match="set output.runs_dir"):
        RunDir.create(tmp_path / "file" / "runs", "exp", NOW)


def test_metrics_rows_append_under_one_header(tmp_path):
    run = RunDir.create(tmp_path, "exp", NOW)
    run.append_metrics({"epoch": 1, "train_loss": 0.5, "val_accuracy": None, "extra": 1})
    run.append_metrics({"epoch": 2, "train_loss": 0.25})
    with open(run.metrics_csv, newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert tuple(rows[0]) == METRIC_FIELDS
    assert [row["epoch"] for row in rows] == ["1", "2"]
    assert rows[0]["val_accuracy"] == ""
    assert float(rows[1]["train_loss"]) == 0.25


def test_evaluation_files(tmp_path):
    summary = {"class_names": ["a", "b"], "confusion_matrix": [[3, 1], [0, 4]], "accuracy": 0.875}
    write_evaluation(tmp_path, "m.json", "cm.csv", summary)
    assert json.loads((tmp_path / "m.json").read_text()) == summary
    with open(tmp_path / "cm.csv", newline="") as handle:
        rows = list(csv.reader(handle))
    assert rows == [["true \\ predicted", "a", "b"], ["a", "3", "1"], ["b", "0", "4"]]
