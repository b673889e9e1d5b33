"""One metric decides "best" everywhere: best.pt, early stopping, sweep objectives and
every "best epoch" column. Each consumer is tested with a run (or records) in which
validation accuracy and validation loss pick different epochs."""

from __future__ import annotations

import csv
import dataclasses
import importlib.util
import json
import sys
import threading
from pathlib import Path

import pytest
import torch

import mlptrain
from mlptrain.artifacts.checkpoint import load_checkpoint
from mlptrain.config.monitor import Monitor
from mlptrain.sweep.trials import run_trials, summarize_history
from mlptrain.training.loop import FitState, LoopSettings

from .conftest import REPO, config_document, run_cli, write_config

# Validation accuracy is best at epoch 2, validation loss at epoch 3.
RECORDS = [
    {"epoch": 1, "val_accuracy": 0.80, "val_loss": 0.60},
    {"epoch": 2, "val_accuracy": 0.90, "val_loss": 0.50},
    {"epoch": 3, "val_accuracy": 0.85, "val_loss": 0.40},
    {"epoch": 4, "val_accuracy": 0.86, "val_loss": 0.45},
]


def settings(best_by: str, **changes) -> LoopSettings:
    return LoopSettings(
        epochs=4, batch_size=1, eval_batch_size=1, select_best_by=best_by, **changes
    )


def test_the_monitor_picks_the_first_best_epoch_of_its_metric():
    assert Monitor("val_accuracy").best_epoch(RECORDS) == 2
    assert Monitor("val_loss").best_epoch(RECORDS) == 3
    assert Monitor("val_loss").best_epoch([{"epoch": 1}, {"epoch": 2}]) == 2  # no validation
    assert Monitor("val_loss").direction == "minimize"
    assert Monitor("val_accuracy").direction == "maximize"


@pytest.mark.parametrize(("best_by", "best"), [("val_accuracy", 2), ("val_loss", 3)])
def test_fit_state_and_monitor_agree(best_by, best):
    state = FitState(None, None, None)
    for record in RECORDS:
        state.add(dict(record), settings(best_by))
    assert state.best_epoch == best == Monitor(best_by).best_epoch(RECORDS)


def test_early_stopping_watches_the_monitored_metric():
    # Accuracy stalls after epoch 2 while the loss still improves at epoch 3.
    by_loss, by_accuracy = FitState(None, None, None), FitState(None, None, None)
    for record in RECORDS[:3]:
        by_loss.add(dict(record), settings("val_loss", patience=1))
        by_accuracy.add(dict(record), settings("val_accuracy", patience=1))
    assert not by_loss.should_stop_early(settings("val_loss", patience=1))
    assert by_accuracy.should_stop_early(settings("val_accuracy", patience=1))
    # min_delta counts in the metric's own direction: a loss fall of 0.1 is not above 0.2.
    strict = FitState(None, None, None)
    for record in RECORDS[:3]:
        strict.add(dict(record), settings("val_loss", patience=2, min_delta=0.2))
    assert strict.should_stop_early(settings("val_loss", patience=2, min_delta=0.2))


def test_trial_summary_describes_the_epoch_best_pt_holds():
    rows = [{key: str(value) for key, value in record.items()} for record in RECORDS]
    result = summarize_history(rows, Monitor("val_loss"))
    assert (result.best_epoch, result.best_val_loss, result.best_val_accuracy) == (3, 0.40, 0.85)
    assert result.curve == [0.60, 0.50, 0.40, 0.45]


def test_best_pt_holds_the_best_epoch_not_the_last(tmp_path, synthetic_source, monkeypatch):
    """Validation accuracy peaks at epoch 2 of 4 (the real validation results, with the
    accuracy scripted), so best.pt and the test are epoch 2's and last.pt epoch 4's."""
    import mlptrain.run.lifecycle
    import mlptrain.training.loop as loop

    real, scripted = loop.evaluate, iter([0.5, 0.9, 0.7, 0.6])

    def peaking(model, split, batch_size, amp_dtype=None):
        result = real(model, split, batch_size, amp_dtype)
        return dataclasses.replace(result, accuracy=next(scripted))

    monkeypatch.setattr(loop, "evaluate", peaking)  # fit's validation only
    document = config_document(tmp_path, synthetic_source, "mnist", epochs=4)
    result = mlptrain.train(document, run_dir=tmp_path / "run", verbose=False)
    best = load_checkpoint(result.run_dir / "best.pt")
    last = load_checkpoint(result.run_dir / "last.pt")
    assert (result.best_epoch, best["epoch"], last["epoch"], result.test["epoch"]) == (2, 2, 4, 2)
    assert any(
        not torch.equal(best["model_state"][key], last["model_state"][key])
        for key in best["model_state"]
    )
    assert mlptrain.evaluate(result.run_dir / "best.pt").accuracy == result.test_accuracy


def metrics_rows(run: Path) -> list[dict[str, str]]:
    return list(csv.DictReader((run / "metrics.csv").read_text().splitlines()))


@pytest.fixture(scope="module")
def disagreeing_run(tmp_path_factory, synthetic_source) -> Path:
    """A real run selecting by validation loss, in which validation accuracy would pick
    another epoch."""
    folder = tmp_path_factory.mktemp("disagree")
    document = config_document(folder, synthetic_source, "mnist", epochs=6)
    document["training"]["select_best_by"] = "val_loss"
    result = mlptrain.train(document, run_dir=folder / "run", verbose=False)
    by_accuracy = Monitor("val_accuracy").best_epoch(result.history)
    by_loss = Monitor("val_loss").best_epoch(result.history)
    assert by_accuracy != by_loss, "the two metrics must pick different epochs for these tests"
    return result.run_dir


@pytest.mark.slow("uses the module's 6-epoch run that selects by validation loss")
def test_best_pt_holds_the_monitored_metrics_best_epoch(disagreeing_run):
    rows = metrics_rows(disagreeing_run)
    best_by_loss = Monitor("val_loss").best_epoch(rows)
    assert load_checkpoint(disagreeing_run / "best.pt")["epoch"] == best_by_loss
    summary = json.loads((disagreeing_run / "test_metrics.json").read_text())
    assert (summary["epoch"], summary["selected_by"]) == (best_by_loss, "val_loss")


@pytest.mark.slow("a real trial process, which imports torch, trains and tests")
def test_a_trial_reports_best_pts_epoch(disagreeing_run, tmp_path):
    config = disagreeing_run / "config.yaml"
    (result,) = run_trials(
        config, [({}, tmp_path / "trial")], tmp_path / "trial.json", 1, threading.Event(),
        Monitor("val_loss"),
    )  # fmt: skip
    assert result.status == "complete", result.message
    assert result.best_epoch == load_checkpoint(tmp_path / "trial" / "best.pt")["epoch"]
    rows = metrics_rows(tmp_path / "trial")
    assert result.best_val_accuracy == float(rows[result.best_epoch - 1]["val_accuracy"])
    assert result.best_epoch != Monitor("val_accuracy").best_epoch(rows)


def read_results(folder: Path) -> list[dict[str, str]]:
    with open(folder / "results.csv", newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.mark.slow("an mlp-sweep process and a process per trial")
def test_a_grid_sweep_ranks_and_reports_by_validation_loss(tmp_path, synthetic_source):
    document = config_document(tmp_path, synthetic_source, "mnist", epochs=4)
    document["training"]["select_best_by"] = "val_loss"
    config = write_config(tmp_path, document)
    done = run_cli(
        "sweep", "--config", str(config), "--grid", "optimizer.lr=0.001,0.01", cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr
    (folder,) = (tmp_path / "runs").glob("sweep-*")
    rows = read_results(folder)
    for row in rows:
        best = load_checkpoint(Path(row["run_dir"]) / "best.pt")
        assert int(row["best_epoch"]) == best["epoch"]
        history = best["metrics"]
        # metrics.csv, which the sweep reads, keeps 6 significant digits.
        expected = history[best["epoch"] - 1]["val_loss"]
        assert float(row["best_val_loss"]) == pytest.approx(expected, rel=1e-5)
    markdown = (folder / "results.md").read_text()
    assert "Ranked by validation loss" in markdown
    lowest = min(rows, key=lambda row: float(row["best_val_loss"]))
    assert f"trial {lowest['trial']}," in (folder / "best_config.yaml").read_text()


def test_sweeping_the_monitored_metric_is_refused(tmp_path, synthetic_source):
    config = write_config(tmp_path, config_document(tmp_path, synthetic_source, "mnist"))
    done = run_cli(
        "sweep",
        "--config",
        str(config),
        "--grid",
        "training.select_best_by=val_loss,val_accuracy",
        cwd=tmp_path,
    )
    assert done.returncode == 2
    assert "cannot be swept" in done.stderr


@pytest.mark.slow("an mlp-sweep process and a process per Optuna trial")
def test_an_optuna_sweep_minimizes_validation_loss(tmp_path, synthetic_source):
    optuna = pytest.importorskip("optuna")
    document = config_document(tmp_path, synthetic_source, "mnist", epochs=3)
    document["training"]["select_best_by"] = "val_loss"
    config = write_config(tmp_path, document)
    done = run_cli(
        "sweep",
        "--config",
        str(config),
        "--search",
        "optuna",
        "--trials",
        "2",
        "--param",
        "optimizer.lr=loguniform:1e-3:1e-2",
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    (folder,) = (tmp_path / "runs").glob("sweep-*")
    study = optuna.load_study(study_name="tiny", storage=f"sqlite:///{folder / 'study.db'}")
    assert study.direction == optuna.study.StudyDirection.MINIMIZE
    for trial, row in zip(study.trials, read_results(folder), strict=True):
        best = load_checkpoint(Path(row["run_dir"]) / "best.pt")
        expected = best["metrics"][best["epoch"] - 1]["val_loss"]
        assert trial.value == pytest.approx(expected, rel=1e-5)
        assert int(row["best_epoch"]) == best["epoch"]


@pytest.mark.slow("scripts/reproduce.py starts a trial process per seed")
def test_reproduce_records_best_pts_epoch(disagreeing_run, tmp_path):
    spec = importlib.util.spec_from_file_location("reproduce", REPO / "scripts" / "reproduce.py")
    reproduce = importlib.util.module_from_spec(spec)
    sys.modules["reproduce"] = reproduce
    spec.loader.exec_module(reproduce)
    entry = reproduce.Entry("probe", str(disagreeing_run / "config.yaml"), "probe", None)
    args = reproduce.parse_args(["--seeds", "1"])
    (run,) = reproduce.run_entry(entry, [3], tmp_path, args, threading.Event())
    best = load_checkpoint(REPO / run["run_dir"] / "best.pt")
    assert run["best_epoch"] == best["epoch"]
    expected = best["metrics"][best["epoch"] - 1]["val_accuracy"]
    assert run["val_accuracy"] == pytest.approx(expected, rel=1e-5)


def test_tables_rank_best_first_by_the_monitor_with_missing_values_last():
    from mlptrain.sweep.report import ranked

    rows = [
        {"trial": 0, "best_val_accuracy": 0.8, "best_val_loss": 0.5},
        {"trial": 1, "best_val_accuracy": None, "best_val_loss": None},
        {"trial": 2, "best_val_accuracy": 0.9, "best_val_loss": 0.6},
        {"trial": 3, "best_val_accuracy": 0.8, "best_val_loss": 0.4},
    ]
    assert [row["trial"] for row in ranked(rows, Monitor("val_accuracy"))] == [2, 0, 3, 1]
    assert [row["trial"] for row in ranked(rows, Monitor("val_loss"))] == [3, 0, 2, 1]
