"""scripts/ablation.py: what it records of a run folder and of an ensemble's group folder."""

from __future__ import annotations

import importlib.util
import json

import pytest

from .conftest import REPO

spec = importlib.util.spec_from_file_location("ablation", REPO / "scripts" / "ablation.py")
ablation = importlib.util.module_from_spec(spec)
spec.loader.exec_module(ablation)

HEADER = "epoch,train_loss,train_accuracy,val_loss,val_accuracy,lr,epoch_seconds\n"


def write_run(folder, val_accuracies, seconds, test_accuracy, tta="none"):
    folder.mkdir(parents=True)
    rows = [f"{n},0.5,0.9,0.3,{val},0.001,{seconds}\n" for n, val in enumerate(val_accuracies, 1)]
    (folder / "metrics.csv").write_text(HEADER + "".join(rows))
    test = {"accuracy": test_accuracy, "epoch": 2, "tta": {"mode": tta}}
    (folder / "test_metrics.json").write_text(json.dumps(test))


def test_a_run_records_its_best_validation_and_summed_epochs(tmp_path):
    write_run(tmp_path / "run", [0.90, 0.93, 0.92], 2.0, 0.91)
    row = ablation.read_run(tmp_path / "run")
    assert row["best_val_accuracy"] == 0.93 and row["test_accuracy"] == 0.91
    assert (row["train_seconds"], row["epochs"], row["best_epoch"]) == (6.0, 3, 2)


@pytest.mark.parametrize("together, seconds", [(False, 10.0), (True, 6.0)])
def test_an_ensemble_records_its_own_test_and_its_members(tmp_path, together, seconds):
    group = tmp_path / "group"
    write_run(group / "seed-1", [0.90, 0.92], 3.0, 0.91)
    write_run(group / "seed-2", [0.94, 0.93], 2.0, 0.92)
    members = [{"run_dir": "seed-1", "status": "finished"}, {"run_dir": "seed-2"}]
    (group / "group.json").write_text(json.dumps({"members": members, "together": together}))
    (group / "test_metrics.json").write_text(
        json.dumps({"accuracy": 0.95, "tta": {"mode": "hflip"}})
    )
    row = ablation.read_run(group)
    assert row["test_accuracy"] == 0.95 and row["tta"] == "hflip"
    assert row["best_val_accuracy"] == pytest.approx(0.93)  # the members' mean best
    assert row["members_test_accuracy"] == [0.91, 0.92]
    assert row["train_seconds"] == seconds  # one after another: summed; together: the longest
