"""The library entry points a notebook user calls: mlptrain.train and mlptrain.evaluate."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

import mlptrain
from mlptrain.errors import UsageError

from .conftest import config_document, write_config, write_dataset


def test_train_returns_the_run_and_evaluate_reproduces_it(tmp_path, synthetic_source):
    document = config_document(tmp_path, synthetic_source, "mnist", epochs=2)
    result = mlptrain.train(document, overrides=["optimizer.lr=0.01"], run_dir=tmp_path / "run")
    assert result.run_dir == tmp_path / "run"
    assert [record["epoch"] for record in result.history] == [1, 2]
    recorded = json.loads((result.run_dir / "test_metrics.json").read_text())
    assert result.test == recorded
    assert result.test_accuracy == recorded["accuracy"]
    assert "lr: 0.01" in (result.run_dir / "config.yaml").read_text()

    test = mlptrain.evaluate(result.run_dir / "best.pt")
    assert test.accuracy == result.test_accuracy
    assert test.summary["confusion_matrix"] == recorded["confusion_matrix"]
    val = mlptrain.evaluate(result.run_dir / "best.pt", split="val")
    assert val.accuracy == result.history[result.best_epoch - 1]["val_accuracy"]


def test_train_takes_a_path_and_reports_mistakes_as_usage_errors(tmp_path, synthetic_source):
    path = write_config(tmp_path, config_document(tmp_path, synthetic_source, epochs=1))
    result = mlptrain.train(path, verbose=False)
    assert result.run_dir.parent == tmp_path / "runs"
    with pytest.raises(UsageError, match="optimizer.lr"):
        mlptrain.train(path, overrides=["optimizer.lr=-1"])
    with pytest.raises(UsageError, match="exists already"):
        mlptrain.train(path, run_dir=result.run_dir, verbose=False)


def test_a_run_in_a_notebook_leaves_no_log_handlers_behind(tmp_path, synthetic_source):
    import logging

    logger = logging.getLogger("mlptrain")
    document = config_document(tmp_path, synthetic_source, epochs=1)
    mlptrain.train(document, run_dir=tmp_path / "a", verbose=False)
    before = list(logger.handlers)
    mlptrain.train(document, run_dir=tmp_path / "b", verbose=False)
    assert logger.handlers == before  # no file handler stays open after a run
    first_log = (tmp_path / "a" / "train.log").read_text()
    assert str(tmp_path / "b") not in first_log  # run b logged nothing into run a's file


def test_evaluating_the_test_split_needs_only_the_test_files(tmp_path, synthetic_source):
    document = config_document(tmp_path, synthetic_source, "mnist", epochs=1)
    result = mlptrain.train(document, run_dir=tmp_path / "run", verbose=False)
    # A fresh data folder and a source holding the test files alone.
    source = tmp_path / "test-only"
    write_dataset(source / "mnist", seed=1)
    for path in (source / "mnist").glob("train-*"):
        path.unlink()
    shutil.rmtree(tmp_path / "data")
    evaluation = mlptrain.evaluate(result.run_dir / "best.pt", data_source=str(source))
    assert evaluation.accuracy == result.test_accuracy
    assert not list((tmp_path / "data").rglob("train-*"))
    with pytest.raises(UsageError, match="train-images"):
        mlptrain.evaluate(result.run_dir / "best.pt", split="val", data_source=str(source))


def test_observers_see_every_epoch_after_the_run_folder_has_it(tmp_path, synthetic_source):
    from mlptrain.training.hooks import Hooks

    class Watcher(Hooks):
        def __init__(self):
            self.seen = []

        def epoch_end(self, record, is_best):
            rows = (tmp_path / "run" / "metrics.csv").read_text().splitlines()
            self.seen.append((record["epoch"], is_best, len(rows) - 1))

    watcher = Watcher()
    document = config_document(tmp_path, synthetic_source, epochs=2)
    result = mlptrain.train(document, run_dir=tmp_path / "run", verbose=False, observers=[watcher])
    assert [(epoch, rows) for epoch, _, rows in watcher.seen] == [(1, 1), (2, 2)]
    assert [is_best for _, is_best, _ in watcher.seen][result.best_epoch - 1]


def test_a_stopped_run_resumes_to_exactly_the_uninterrupted_run(tmp_path, synthetic_source):
    """Resume through the path users run (last.pt, its random-number states, the saved
    history), fast: the stop comes from an observer instead of a signal."""
    from mlptrain.api import resolve_config
    from mlptrain.artifacts.checkpoint import load_checkpoint
    from mlptrain.errors import EXIT_INTERRUPTED, StopRun
    from mlptrain.run.runner import resume, train
    from mlptrain.training.hooks import Hooks

    class StopAfterEpoch(Hooks):
        def __init__(self, epoch):
            self.epoch, self.done = epoch, 0

        def epoch_end(self, record, is_best):
            self.done = record["epoch"]

        def should_stop(self):
            return self.done >= self.epoch

    # Dropout and augmentation draw from the global generators, the batch order from
    # the run's own: all of them must be restored for the rest to repeat.
    document = config_document(tmp_path, synthetic_source, "mnist", epochs=4)
    document["model"] = {"hidden": [32], "dropout": 0.3}
    document["augment"] = {"translate": 2}
    config = resolve_config(document)
    whole = train(config, run_dir=tmp_path / "whole")
    with pytest.raises(StopRun) as stopped:
        train(config, run_dir=tmp_path / "parts", observers=[StopAfterEpoch(2)])
    assert stopped.value.status == EXIT_INTERRUPTED
    assert load_checkpoint(tmp_path / "parts" / "last.pt")["epoch"] == 2
    resumed = resume(tmp_path / "parts")
    keys = ("epoch", "train_loss", "train_accuracy", "val_loss", "val_accuracy", "lr")
    assert [[row[key] for key in keys] for row in resumed.history] == [
        [row[key] for key in keys] for row in whole.history
    ]
    expected = load_checkpoint(tmp_path / "whole" / "last.pt")["model_state"]
    got = load_checkpoint(tmp_path / "parts" / "last.pt")["model_state"]
    assert all(torch.equal(expected[key], got[key]) for key in expected)
    assert resumed.test == whole.test
