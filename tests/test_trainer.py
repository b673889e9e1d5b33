from __future__ import annotations

import torch

from mlptrain.config import DataConfig, OptimizerConfig
from mlptrain.datasets import DataSplits, load_splits, pixel_stats
from mlptrain.model import MLP, ModelSpec
from mlptrain.optim import build_optimizer
from mlptrain.trainer import Hooks, evaluate, fit

CPU = torch.device("cpu")


def synthetic_splits(tmp_path, source, val_fraction=0.2) -> DataSplits:
    config = DataConfig(
        dataset="mnist",
        root=str(tmp_path / "data"),
        source=str(source),
        verify=False,
        val_fraction=val_fraction,
    )
    return load_splits(config, 0, CPU)


def build(splits: DataSplits, seed: int = 0):
    torch.manual_seed(seed)
    mean, std = pixel_stats(splits.train)
    model = MLP(ModelSpec(hidden=(32,), mean=mean, std=std))
    return model, build_optimizer(model.parameters(), OptimizerConfig(lr=0.003))


class Recorder(Hooks):
    def __init__(self):
        self.best_flags: list[bool] = []
        self.samples = 0

    def batch_end(self, samples):
        self.samples += samples

    def epoch_end(self, record, is_best):
        self.best_flags.append(is_best)


def run_fit(model, optimizer, splits, epochs=4, hooks=None):
    return fit(
        model,
        optimizer,
        splits,
        epochs=epochs,
        batch_size=32,
        eval_batch_size=50,
        seed=1,
        hooks=hooks,
    )


def test_training_lowers_the_loss_and_learns(tmp_path, synthetic_source):
    splits = synthetic_splits(tmp_path, synthetic_source)
    model, optimizer = build(splits)
    before = evaluate(model, splits.test, 64)
    result = run_fit(model, optimizer, splits)
    after = evaluate(model, splits.test, 64)
    losses = [row["train_loss"] for row in result.history]
    assert losses[-1] < losses[0]
    assert after.loss < before.loss
    assert after.accuracy > 0.9  # the synthetic classes are easy to tell apart


def test_history_has_every_metric_per_epoch(tmp_path, synthetic_source):
    splits = synthetic_splits(tmp_path, synthetic_source)
    model, optimizer = build(splits)
    hooks = Recorder()
    result = run_fit(model, optimizer, splits, epochs=2, hooks=hooks)
    assert [row["epoch"] for row in result.history] == [1, 2]
    for row in result.history:
        assert {
            "train_loss",
            "train_accuracy",
            "val_loss",
            "val_accuracy",
            "lr",
            "epoch_seconds",
            "samples_per_second",
        } <= set(row)
    assert hooks.samples == 2 * len(splits.train)


def test_best_epoch_is_the_best_validation_accuracy(tmp_path, synthetic_source):
    splits = synthetic_splits(tmp_path, synthetic_source)
    model, optimizer = build(splits)
    hooks = Recorder()
    result = run_fit(model, optimizer, splits, epochs=5, hooks=hooks)
    accuracies = [row["val_accuracy"] for row in result.history]
    first_best = accuracies.index(max(accuracies)) + 1
    assert result.best_epoch == first_best
    assert result.best_val_accuracy == max(accuracies)
    running_best = [acc > max(accuracies[:i], default=-1) for i, acc in enumerate(accuracies)]
    assert hooks.best_flags == running_best


def test_without_validation_the_last_epoch_is_best(tmp_path, synthetic_source):
    splits = synthetic_splits(tmp_path, synthetic_source, val_fraction=0.0)
    assert splits.val is None
    model, optimizer = build(splits)
    hooks = Recorder()
    result = run_fit(model, optimizer, splits, epochs=3, hooks=hooks)
    assert hooks.best_flags == [True, True, True]
    assert result.best_epoch == 3
    assert "val_accuracy" not in result.history[0]


def test_same_seed_same_metrics(tmp_path, synthetic_source):
    splits = synthetic_splits(tmp_path, synthetic_source)
    histories = []
    for _ in range(2):
        model, optimizer = build(splits, seed=4)
        history = run_fit(model, optimizer, splits, epochs=2).history
        histories.append([(row["train_loss"], row["val_accuracy"]) for row in history])
    assert histories[0] == histories[1]


def test_a_trailing_single_sample_batch_does_not_break_batch_norm(tmp_path, synthetic_source):
    splits = synthetic_splits(tmp_path, synthetic_source)
    model = MLP(ModelSpec(hidden=(8,), batch_norm=True))
    optimizer = build_optimizer(model.parameters(), OptimizerConfig())
    batch_size = len(splits.train) - 1  # leaves exactly one sample for the last batch
    result = fit(
        model, optimizer, splits, epochs=1, batch_size=batch_size, eval_batch_size=100, seed=0
    )
    assert result.history[0]["train_loss"] > 0
