"""Learning-rate schedules, the training features accuracy needs, and augmentation."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
import torch.nn.functional as F
import yaml

from mlptrain.artifacts.checkpoint import load_checkpoint
from mlptrain.cli.train import main as train_main
from mlptrain.config.schema import OptimizerConfig, SchedulerConfig, validate
from mlptrain.config.training_schema import AugmentConfig
from mlptrain.errors import UsageError
from mlptrain.model.mlp import MLP, ModelSpec
from mlptrain.training.augment import RandomAffine, _base_grid
from mlptrain.training.loop import FitState, LoopSettings, evaluate, fit, train_one_epoch
from mlptrain.training.optim import build_optimizer, build_schedule, current_lr

from .conftest import config_document, write_config
from .test_trainer import build, synthetic_splits


def lrs(config: SchedulerConfig, epochs=4, steps=5, lr=0.1) -> list[list[float]]:
    """The learning rate at every batch of every epoch under the schedule."""
    model = MLP(ModelSpec(hidden=(2,)))
    optimizer = build_optimizer(model.parameters(), OptimizerConfig(name="sgd", lr=lr))
    schedule = build_schedule(optimizer, config, epochs, steps)
    seen = []
    for _ in range(epochs):
        epoch = []
        for _ in range(steps):
            epoch.append(current_lr(optimizer))
            optimizer.step()
            schedule.batch_end()
        schedule.epoch_end()
        seen.append(epoch)
    return seen


def test_no_schedule_keeps_the_rate():
    assert {lr for epoch in lrs(SchedulerConfig()) for lr in epoch} == {0.1}


def test_step_schedule_decays_per_epoch():
    seen = lrs(SchedulerConfig(name="step", step_size=2, gamma=0.5))
    assert [epoch[0] for epoch in seen] == pytest.approx([0.1, 0.1, 0.05, 0.05])
    assert all(len(set(epoch)) == 1 for epoch in seen)  # constant within an epoch


def test_cosine_warms_up_then_decays_to_min_lr():
    flat = [
        lr
        for epoch in lrs(SchedulerConfig(name="cosine", warmup_epochs=1, min_lr=0.01))
        for lr in epoch
    ]
    assert flat[:5] == pytest.approx([0.02, 0.04, 0.06, 0.08, 0.1])  # linear warm-up
    decay = flat[5:]
    assert all(a >= b for a, b in itertools.pairwise(decay))
    assert decay[-1] == pytest.approx(0.01, abs=2e-3)


def test_onecycle_peaks_at_max_lr_per_batch():
    flat = [
        lr
        for epoch in lrs(SchedulerConfig(name="onecycle", max_lr=0.5, pct_start=0.25))
        for lr in epoch
    ]
    assert max(flat) == pytest.approx(0.5, rel=1e-3)
    assert 4 <= flat.index(max(flat)) <= 5  # a quarter of the 20 steps
    assert flat[0] < 0.05 and flat[-1] < 0.01


def test_scheduler_state_survives_a_checkpoint_round_trip(tmp_path):
    model = MLP(ModelSpec(hidden=(2,)))
    optimizer = build_optimizer(model.parameters(), OptimizerConfig(lr=0.1))
    schedule = build_schedule(optimizer, SchedulerConfig(name="onecycle"), 3, 4)
    for _ in range(5):
        optimizer.step()
        schedule.batch_end()
    torch.save(schedule.state_dict(), tmp_path / "s.pt")
    other_optimizer = build_optimizer(model.parameters(), OptimizerConfig(lr=0.1))
    other = build_schedule(other_optimizer, SchedulerConfig(name="onecycle"), 3, 4)
    other.load_state_dict(torch.load(tmp_path / "s.pt", weights_only=True))
    optimizer.step(), other_optimizer.step()
    schedule.batch_end(), other.batch_end()
    assert current_lr(other_optimizer) == pytest.approx(current_lr(optimizer))


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ({"optimizer": {"name": "sgd", "nesterov": True}}, "nesterov needs"),
        ({"optimizer": {"name": "sgd", "betas": [0.9, 0.99]}}, "betas are used by adam"),
        ({"optimizer": {"betas": [0.9, 1.0]}}, "betas must lie in"),
        ({"scheduler": {"name": "cosin"}}, "did you mean 'cosine'"),
        (
            {"training": {"early_stopping": {"min_delta": 0.1}}},
            "early_stopping.patience is required",
        ),
        ({"training": {"label_smoothing": 1.0}}, "training.label_smoothing"),
        ({"augment": {"translate": -1}}, "augment.translate"),
        ({"scheduler": {"name": "cosine", "min_lr": 0.01}}, "min_lr 0.01 must be below"),
        ({"data": {"normalize": {"mean": 0.5, "std": 0}}}, "data.normalize.std"),
    ],
)
def test_feature_keys_are_validated(document, message):
    with pytest.raises(UsageError, match=message):
        validate(document)


def test_optimizer_options_reach_the_optimizer():
    params = MLP(ModelSpec(hidden=(2,))).parameters()
    sgd = build_optimizer(params, OptimizerConfig(name="sgd", momentum=0.9, nesterov=True))
    assert sgd.param_groups[0]["nesterov"] is True
    adam = build_optimizer(
        MLP(ModelSpec(hidden=(2,))).parameters(), OptimizerConfig(name="adamw", betas=(0.8, 0.95))
    )
    assert adam.param_groups[0]["betas"] == (0.8, 0.95)


def test_gradient_clipping_bounds_each_update(tmp_path, synthetic_source):
    splits = synthetic_splits(tmp_path, synthetic_source)
    model = MLP(ModelSpec(hidden=(8,)))
    optimizer = build_optimizer(model.parameters(), OptimizerConfig(name="sgd", lr=1.0))
    before = torch.cat([p.detach().flatten().clone() for p in model.parameters()])
    settings = LoopSettings(epochs=1, batch_size=50, eval_batch_size=50, grad_clip=1e-3)
    state = FitState(model, optimizer, torch.Generator().manual_seed(0))
    train_one_epoch(state, splits.train, settings)
    after = torch.cat([p.detach().flatten() for p in model.parameters()])
    steps = math.ceil(len(splits.train) / 50)
    assert (after - before).norm() <= steps * 1e-3 * (1 + 1e-4)


def test_label_smoothing_is_in_the_training_loss_only(tmp_path, synthetic_source):
    splits = synthetic_splits(tmp_path, synthetic_source)
    records = []
    for smoothing in (0.0, 0.5):
        model, optimizer = build(splits, seed=1)
        settings = LoopSettings(
            epochs=1, batch_size=32, eval_batch_size=50, label_smoothing=smoothing
        )
        result = fit(FitState(model, optimizer, torch.Generator().manual_seed(0)), splits, settings)
        records.append(result.history[0])
    assert records[1]["train_loss"] > records[0]["train_loss"] + 0.2
    # Validation loss stays plain cross-entropy: exactly what evaluate() reports.
    assert records[1]["val_loss"] == pytest.approx(evaluate(model, splits.val, 50).loss)


def test_early_stopping_ends_a_run_that_stopped_improving(tmp_path, synthetic_source):
    splits = synthetic_splits(tmp_path, synthetic_source)
    model, _ = build(splits)
    frozen = torch.optim.SGD(model.parameters(), lr=0.0)  # validation accuracy cannot change
    settings = LoopSettings(epochs=6, batch_size=50, eval_batch_size=50, patience=2)
    result = fit(FitState(model, frozen, torch.Generator().manual_seed(0)), splits, settings)
    assert result.stopped_early
    assert [row["epoch"] for row in result.history] == [1, 2, 3]
    assert result.best_epoch == 1


def test_best_by_validation_loss():
    settings = LoopSettings(epochs=3, batch_size=1, eval_batch_size=1, select_best_by="val_loss")
    result = FitState(None, None, None)
    flags = [
        result.add({"epoch": 1, "val_accuracy": 0.80, "val_loss": 0.50}, settings),
        result.add({"epoch": 2, "val_accuracy": 0.85, "val_loss": 0.55}, settings),
        result.add({"epoch": 3, "val_accuracy": 0.82, "val_loss": 0.45}, settings),
    ]
    assert flags == [True, False, True]
    assert result.best_epoch == 3


def test_augmentation_touches_training_batches_only(tmp_path, synthetic_source):
    splits = synthetic_splits(tmp_path, synthetic_source)
    model, optimizer = build(splits)
    calls = []
    shift = RandomAffine(AugmentConfig(translate=2))

    def counting(images):
        calls.append(len(images))
        return shift(images)

    settings = LoopSettings(epochs=1, batch_size=50, eval_batch_size=50, augment=counting)
    fit(FitState(model, optimizer, torch.Generator().manual_seed(0)), splits, settings)
    assert sum(calls) == len(splits.train)
    clean = evaluate(model, splits.val, 50)
    assert sum(calls) == len(splits.train)  # evaluation never augments
    assert clean.n == len(splits.val)


def test_affine_identity_translation_and_flip():
    images = torch.zeros(64, 28, 28, dtype=torch.uint8)
    images[:, 13, 13] = 255
    assert torch.equal(RandomAffine(AugmentConfig())(images), images.float() / 255)
    generator = torch.Generator().manual_seed(0)
    moved = RandomAffine(AugmentConfig(translate=3))(images, generator)
    assert moved.min() >= 0 and moved.max() <= 1
    rows, cols = torch.meshgrid(torch.arange(28.0), torch.arange(28.0), indexing="ij")
    mass = moved.sum(dim=(1, 2))
    centre_r = (moved * rows).sum(dim=(1, 2)) / mass
    centre_c = (moved * cols).sum(dim=(1, 2)) / mass
    assert (centre_r - 13).abs().max() <= 3.01 and (centre_c - 13).abs().max() <= 3.01
    assert (centre_r - 13).abs().max() > 1  # it does move them
    again = RandomAffine(AugmentConfig(translate=3))(images, torch.Generator().manual_seed(0))
    assert torch.equal(moved, again)
    asymmetric = torch.zeros(200, 28, 28, dtype=torch.uint8)
    asymmetric[:, 5, 3] = 255
    flipped = RandomAffine(AugmentConfig(hflip=True))(asymmetric)
    mirrored = (flipped[:, 5, 24] > 0.9).sum().item()
    kept = (flipped[:, 5, 3] > 0.9).sum().item()
    assert mirrored + kept == 200 and 50 < mirrored < 150


def test_rotation_keeps_a_centred_blob_in_place():
    images = torch.zeros(16, 28, 28, dtype=torch.uint8)
    images[:, 12:16, 12:16] = 255
    turned = RandomAffine(AugmentConfig(rotate=30, scale=0.1, shear=10))(images)
    assert turned.shape == (16, 28, 28)
    assert turned[:, 13:15, 13:15].min() > 0.5  # the centre stays covered


def test_elastic_distortion_bends_images_smoothly():
    columns = torch.arange(28.0)
    ramp = (columns / 27).expand(8, 28, 28).clone()  # each pixel's value says its column
    bent = RandomAffine(AugmentConfig(elastic=34))(ramp, torch.Generator().manual_seed(0))
    shift = (bent * 27 - columns)[:, 6:22, 6:22]  # horizontal displacement, away from edges
    assert shift.abs().max() < 8
    assert (shift.flatten(1).std(dim=1) > 0.1).all()  # each image bends: no rigid shift
    step = (shift[:, :, 1:] - shift[:, :, :-1]).abs().mean()
    assert step < 0.3 * shift.abs().mean()  # neighbouring pixels move alike
    same = RandomAffine(AugmentConfig(elastic=34))(ramp, torch.Generator().manual_seed(0))
    assert torch.equal(bent, same)


def test_the_sampling_grid_is_affine_grid_s():
    """The augmentation builds its sampling grid as one product with a cached base
    instead of F.affine_grid: the same grid, on a non-square image so x and y differ."""
    theta = torch.randn(5, 2, 3, generator=torch.Generator().manual_seed(0))
    expected = F.affine_grid(theta, [5, 1, 20, 36], align_corners=False)
    ours = (theta.view(10, 3) @ _base_grid(20, 36, torch.device("cpu"))).view(5, 2, 20, 36)
    assert torch.allclose(ours.permute(0, 2, 3, 1), expected, atol=1e-6)


def run_config(tmp_path, source, **sections):
    document = config_document(tmp_path, source, "mnist", epochs=4)
    for section, values in sections.items():
        document.setdefault(section, {}).update(values)
    return write_config(tmp_path, document)


@pytest.mark.slow(
    "an mlp-train process with every feature on: schedule, augmentation, early stopping"
)
def test_a_run_with_every_feature(tmp_path, synthetic_source, capsys):
    path = run_config(
        tmp_path,
        synthetic_source,
        scheduler={"name": "onecycle", "max_lr": 0.01},
        training={
            "label_smoothing": 0.1,
            "grad_clip": 1.0,
            "select_best_by": "val_loss",
            "early_stopping": {"patience": 1, "min_delta": 5.0},
        },
        augment={"translate": 2, "rotate": 10},
        data={"normalize": {"mean": 0.5, "std": 0.5}},
        optimizer={"name": "adamw", "betas": [0.9, 0.99]},
    )
    assert train_main(["--config", str(path), "--quiet"]) == 0
    out = capsys.readouterr().out
    # Early stopping watches val_loss too: a fall of 5.0 is never met.
    assert "stopped early after epoch 2: validation loss has not improved" in out
    (run,) = (tmp_path / "runs").iterdir()
    best = load_checkpoint(run / "best.pt")
    assert best["normalization"] == {"mean": 0.5, "std": 0.5}
    assert best["scheduler_state"]["total_steps"] == 4 * math.ceil(450 / 32)  # planned run
    assert (run / "test_metrics.json").exists()
    lrs_logged = [row["lr"] for row in load_checkpoint(run / "last.pt")["metrics"]]
    assert lrs_logged[0] < lrs_logged[1]  # the one-cycle warm-up, per epoch in metrics.csv


@pytest.mark.slow("trains a run with a planned schedule before resuming it")
def test_resume_refuses_new_epochs_for_a_planned_schedule(tmp_path, synthetic_source, capsys):
    path = run_config(tmp_path, synthetic_source, scheduler={"name": "cosine"})
    document = yaml.safe_load(path.read_text())
    document["training"]["epochs"] = 1
    path.write_text(yaml.safe_dump(document))
    assert train_main(["--config", str(path), "--quiet"]) == 0
    (run,) = (tmp_path / "runs").iterdir()
    assert train_main(["--resume", str(run), "--set", "training.epochs=3"]) == 2
    assert "planned over the original number of epochs" in capsys.readouterr().err


def test_cosine_follows_its_formula_after_the_warm_up():
    flat = [
        lr
        for epoch in lrs(SchedulerConfig(name="cosine", warmup_epochs=1, min_lr=0.01))
        for lr in epoch
    ]
    floor, warmup, total = 0.1, 5, 20  # min_lr / lr; one epoch of 5 steps; 4 epochs
    expected = [
        0.1 * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * (step - warmup) / 15)))
        for step in range(warmup, total)
    ]
    assert flat[warmup:] == pytest.approx(expected)


def test_onecycle_keeps_momentum_and_peaks_where_pct_start_says():
    model = MLP(ModelSpec(hidden=(2,)))
    optimizer = build_optimizer(model.parameters(), OptimizerConfig(name="adam", lr=0.1))
    schedule = build_schedule(optimizer, SchedulerConfig(name="onecycle", pct_start=0.5), 4, 5)
    seen = []
    for _ in range(20):
        seen.append(current_lr(optimizer))
        optimizer.step()
        schedule.batch_end()
    assert optimizer.param_groups[0]["betas"] == (0.9, 0.999)  # momentum is not cycled
    assert seen.index(max(seen)) == 9  # half of the 20 steps


def test_without_a_scheduler_there_is_no_state_to_save_or_restore():
    from mlptrain.training.optim import Schedule

    assert Schedule().state_dict() is None
    Schedule().load_state_dict({"last_epoch": 3})  # nothing to restore into: no error
    model = MLP(ModelSpec(hidden=(2,)))
    optimizer = build_optimizer(model.parameters(), OptimizerConfig(lr=0.1))
    schedule = build_schedule(optimizer, SchedulerConfig(name="step", step_size=1), 3, 4)
    schedule.load_state_dict(None)  # a checkpoint saved without a schedule
    assert schedule.state_dict()["last_epoch"] == 0
