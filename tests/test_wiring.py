"""Config keys reach the loop: a run configured from a file computes the loss, clips the
gradients and augments the batches that its config says. Each run here is compared with
the same run without the key (same seed: same initial weights and batch order), so a
key dropped between the config and the loop makes the two identical and fails."""

from __future__ import annotations

import pytest

import mlptrain

from .conftest import config_document, write_config


def run(tmp_path, source, name: str, **sections) -> list[dict]:
    document = config_document(tmp_path, source, "mnist", epochs=2)
    for section, values in sections.items():
        document.setdefault(section, {}).update(values)
    path = write_config(tmp_path, document, f"{name}.yaml")
    return mlptrain.train(path, run_dir=tmp_path / name, verbose=False).history


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return tmp_path_factory.mktemp("wiring")


@pytest.fixture(scope="module")
def baseline(folder, synthetic_source) -> list[dict]:
    return run(folder, synthetic_source, "baseline")


def test_label_smoothing_raises_the_training_loss(folder, synthetic_source, baseline):
    smoothed = run(folder, synthetic_source, "smoothing", training={"label_smoothing": 0.5})
    # Smoothed targets keep the cross-entropy far from 0; validation loss stays plain.
    assert smoothed[0]["train_loss"] > baseline[0]["train_loss"] + 0.2


def test_gradient_clipping_slows_learning(folder, synthetic_source):
    # SGD: its steps scale with the gradient (Adam's would not notice the clipping).
    sgd = {"name": "sgd", "lr": 0.1}
    plain = run(folder, synthetic_source, "sgd", optimizer=sgd)
    clipped = run(folder, synthetic_source, "clipped", optimizer=sgd, training={"grad_clip": 1e-4})
    # Steps of norm 1e-5 leave the model near its start: its loss stays near ln(10).
    assert clipped[-1]["val_loss"] > plain[-1]["val_loss"] + 0.3
    assert clipped[-1]["val_loss"] == pytest.approx(2.3, abs=0.2)


def test_augmentation_changes_the_training_batches(folder, synthetic_source, baseline):
    shifted = run(folder, synthetic_source, "shifted", augment={"translate": 3, "rotate": 15})
    assert shifted[0]["train_loss"] != baseline[0]["train_loss"]
    # The first validation ran on the same untouched images with different weights.
    assert shifted[0]["val_loss"] != baseline[0]["val_loss"]


def test_dropout_and_weight_decay_reach_the_model_and_optimizer(folder, synthetic_source, baseline):
    dropped = run(folder, synthetic_source, "dropout", model={"hidden": [32], "dropout": 0.5})
    assert dropped[0]["train_loss"] > baseline[0]["train_loss"]
    decayed = run(
        folder,
        synthetic_source,
        "decay",
        optimizer={"name": "adamw", "weight_decay": 0.5},
    )
    plain = run(folder, synthetic_source, "adamw", optimizer={"name": "adamw", "weight_decay": 0})
    assert decayed[-1]["train_loss"] != plain[-1]["train_loss"]


@pytest.mark.parametrize(
    "augment",
    [
        {"mixup": {"alpha": 1.0}},
        {"cutmix": {"alpha": 1.0}},
        {"erase": {"probability": 1.0, "area": [0.3, 0.6]}},
    ],
    ids=["mixup", "cutmix", "erase"],
)
def test_mixing_and_erasing_change_the_training_batches(
    folder, synthetic_source, baseline, augment
):
    name = next(iter(augment))
    changed = run(folder, synthetic_source, name, augment=augment)
    # Harder (mixed or erased) batches: a higher training loss from the same start.
    assert changed[0]["train_loss"] > baseline[0]["train_loss"] + 0.05


@pytest.mark.parametrize(
    "average",
    [{"ema": {"decay": 0.5}}, {"swa": {"start_epoch": 1, "lr": 0.01}}],
    ids=["ema", "swa"],
)
def test_averaged_weights_are_what_validation_sees(folder, synthetic_source, baseline, average):
    name = next(iter(average))
    averaged = run(folder, synthetic_source, name, training=average)
    # The same training steps (EMA) or the same first epoch (SWA) ...
    if name == "ema":
        assert averaged[0]["train_loss"] == baseline[0]["train_loss"]
    # ... but validation of other weights.
    assert averaged[0]["val_loss"] != baseline[0]["val_loss"]


def test_a_teacher_changes_the_loss(folder, synthetic_source, baseline):
    teacher = folder / "baseline" / "best.pt"
    distilled = run(folder, synthetic_source, "distilled",
                    training={"teacher": str(teacher), "distill": {"weight": 0.5}})  # fmt: skip
    assert distilled[0]["train_loss"] != baseline[0]["train_loss"]


def test_evaluation_tta_reaches_the_final_test(folder, synthetic_source, baseline):
    import json

    run(folder, synthetic_source, "tta", evaluation={"tta": "shift"})
    test = json.loads((folder / "tta" / "test_metrics.json").read_text())
    assert test["tta"]["mode"] == "shift"
    assert "tta" not in json.loads((folder / "baseline" / "test_metrics.json").read_text())
