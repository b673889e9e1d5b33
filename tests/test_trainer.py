from __future__ import annotations

import pytest
import torch
from torch import nn

from mlptrain.config.schema import DataConfig, OptimizerConfig
from mlptrain.data.splits import DataSplits, load_splits, pixel_stats
from mlptrain.model.mlp import MLP, ModelSpec
from mlptrain.training.loop import (
    FitState,
    Hooks,
    LoopSettings,
    NonFiniteLoss,
    TrainingInterrupted,
    evaluate,
    fit,
)
from mlptrain.training.optim import build_optimizer

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


def settings(epochs=4, batch_size=32, **changes) -> LoopSettings:
    return LoopSettings(epochs=epochs, batch_size=batch_size, eval_batch_size=50, **changes)


def run_fit(model, optimizer, splits, epochs=4, hooks=None, **changes):
    state = FitState(model, optimizer, torch.Generator().manual_seed(1))
    return fit(state, splits, settings(epochs, **changes), hooks)


def test_training_lowers_the_loss_and_learns(tmp_path, synthetic_source):
    splits = synthetic_splits(tmp_path, synthetic_source)
    model, optimizer = build(splits)
    before = evaluate(model, splits.test, 64)
    result = run_fit(model, optimizer, splits)
    after = evaluate(model, splits.test, 64)
    losses = [row["train_loss"] for row in result.history]
    assert losses[-1] < losses[0]
    assert after.loss < before.loss
    assert after.accuracy > before.accuracy + 0.3  # well above chance (0.1), below 1.0


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
    assert result.best_value == max(accuracies)
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


@pytest.mark.parametrize("batch_norm", [True, False])
def test_a_trailing_single_sample_is_dropped_only_for_batch_norm(
    tmp_path, synthetic_source, batch_norm
):
    splits = synthetic_splits(tmp_path, synthetic_source)
    model = MLP(ModelSpec(hidden=(8,), batch_norm=batch_norm))
    optimizer = build_optimizer(model.parameters(), OptimizerConfig())
    batch_size = len(splits.train) - 1  # leaves exactly one sample for the last batch
    state = FitState(model, optimizer, torch.Generator().manual_seed(0))
    hooks = Recorder()
    result = fit(state, splits, settings(1, batch_size), hooks)
    assert result.history[0]["train_loss"] > 0
    assert hooks.samples == len(splits.train) - (1 if batch_norm else 0)


def test_resuming_from_saved_states_repeats_the_uninterrupted_run(tmp_path, synthetic_source):
    splits = synthetic_splits(tmp_path, synthetic_source)
    model, optimizer = build(splits, seed=2)
    whole = run_fit(model, optimizer, splits, epochs=4).history

    model, optimizer = build(splits, seed=2)
    state = fit(FitState(model, optimizer, torch.Generator().manual_seed(1)), splits, settings(2))
    # What a checkpoint keeps: weights, optimizer state, the batch-order generator, history.
    saved = (model.state_dict(), optimizer.state_dict(), state.generator.get_state())
    model, optimizer = build(splits, seed=99)
    model.load_state_dict(saved[0])
    optimizer.load_state_dict(saved[1])
    generator = torch.Generator()
    generator.set_state(saved[2])
    resumed = FitState(model, optimizer, generator)
    for record in state.history:
        resumed.add(record, settings(4))
    rest = fit(resumed, splits, settings(4))
    assert [row["epoch"] for row in rest.history] == [1, 2, 3, 4]
    keys = ("train_loss", "val_loss", "val_accuracy")
    assert [[row[k] for k in keys] for row in rest.history] == [
        [row[k] for k in keys] for row in whole
    ]


class StopAfter(Hooks):
    def __init__(self, batches):
        self.batches, self.seen = batches, 0

    def batch_end(self, samples):
        self.seen += 1

    def should_stop(self):
        return self.seen >= self.batches


def test_a_stop_request_ends_training_after_the_current_batch(tmp_path, synthetic_source):
    splits = synthetic_splits(tmp_path, synthetic_source)
    model, optimizer = build(splits)
    per_epoch = -(-len(splits.train) // 32)
    with pytest.raises(TrainingInterrupted) as caught:
        run_fit(model, optimizer, splits, epochs=3, hooks=StopAfter(per_epoch + 2))
    assert (caught.value.epoch, caught.value.batch) == (2, 2)


class NaNAt(nn.Module):
    """Wraps a model; its forward returns NaN logits on the chosen calls."""

    def __init__(self, model, bad_calls):
        super().__init__()
        self.model, self.bad_calls, self.calls = model, set(bad_calls), 0

    def forward(self, pixels):
        self.calls += 1
        logits = self.model(pixels)
        return logits * float("nan") if self.calls in self.bad_calls else logits


def test_nonfinite_loss_stops_with_its_epoch_and_batch(tmp_path, synthetic_source):
    splits = synthetic_splits(tmp_path, synthetic_source)
    model, optimizer = build(splits)
    per_epoch = -(-len(splits.train) // 32)
    # Training calls come first in an epoch, then validation's 2 calls (100 images / 50).
    wrapped = NaNAt(model, {per_epoch + 2 + 3})
    with pytest.raises(NonFiniteLoss) as caught:
        run_fit(wrapped, optimizer, splits, epochs=3)
    assert (caught.value.epoch, caught.value.batch) == (2, 3)
    assert caught.value.lr == pytest.approx(0.003)


def test_the_device_flag_check_finds_the_first_bad_batch(tmp_path, synthetic_source):
    # The strategy CUDA runs use (no per-step synchronization), exercised on the CPU.
    splits = synthetic_splits(tmp_path, synthetic_source)
    model, optimizer = build(splits)
    wrapped = NaNAt(model, {3, 5})
    with pytest.raises(NonFiniteLoss) as caught:
        run_fit(wrapped, optimizer, splits, epochs=1, nonfinite_check="device_flag")
    assert (caught.value.epoch, caught.value.batch) == (1, 3)
    # Read once at the end of this short epoch (or every 32 batches), not per step.
    assert wrapped.calls == -(-len(splits.train) // 32)


def test_skip_batch_skips_only_the_bad_batches(tmp_path, synthetic_source):
    splits = synthetic_splits(tmp_path, synthetic_source)
    model, optimizer = build(splits)
    wrapped = NaNAt(model, {2, 5})
    result = run_fit(wrapped, optimizer, splits, epochs=1, on_nonfinite="skip_batch")
    record = result.history[0]
    assert record["skipped_batches"] == 2
    assert all(torch.isfinite(parameter).all() for parameter in model.parameters())
    assert record["train_loss"] == record["train_loss"]  # not NaN
