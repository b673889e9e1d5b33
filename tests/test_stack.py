"""Models trained together (mlptrain.stack): the same arithmetic as separate runs."""

from __future__ import annotations

import csv
import json

import pytest
import torch

import mlptrain
from mlptrain.checkpoint import load_checkpoint
from mlptrain.cli.train import main as train_main
from mlptrain.config import load_config, validate
from mlptrain.errors import UsageError
from mlptrain.run.group import train_group
from mlptrain.run.runner import resume
from mlptrain.run.session import build_session
from mlptrain.stack.compat import check_stackable
from mlptrain.stack.trainer import Member, fit_group
from mlptrain.trainer import fit

from .conftest import config_document, write_config


def configs(tmp_path, source, variants, **shared):
    """One validated config per variant (dotted key -> value), on synthetic data."""
    result = []
    for variant in variants:
        training = {"epochs": 2, **shared.get("training", {})}
        document = config_document(tmp_path, source, **training)
        document["data"]["subset"] = {"train": 400, "test": 100}
        extra = {key: value for key, value in shared.items() if key != "training"}
        for key, value in {**extra, **variant}.items():
            *parents, last = key.split(".")
            target = document
            for part in parents:
                target = target.setdefault(part, {})
            target[last] = value
        result.append(validate(document))
    return result


def train_both(configs_):
    """The configs trained separately and stacked, from the same initial weights."""
    separate = [build_session(config) for config in configs_]
    for session in separate:
        fit(session.state, session.splits, session.settings)
    stacked = [build_session(config) for config in configs_]
    members = [Member(s.model, s.state, s.settings, s.splits) for s in stacked]
    fit_group(members)
    return separate, stacked


def assert_same_training(separate, stacked, tolerance=2e-4):
    for alone, together in zip(separate, stacked, strict=True):
        for (name, a), (_, b) in zip(
            alone.model.state_dict().items(), together.model.state_dict().items(), strict=True
        ):
            assert torch.allclose(a.float(), b.float(), atol=tolerance, rtol=1e-3), name
        for a, b in zip(alone.state.history, together.state.history, strict=True):
            assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-4)
            assert a["val_accuracy"] == pytest.approx(b["val_accuracy"], abs=0.011)
            assert a["lr"] == pytest.approx(b["lr"])


OPTIMIZER_VARIANTS = {
    "adam": [
        {"seed": 1, "optimizer.lr": 0.003},
        {"seed": 2, "optimizer.lr": 0.01, "optimizer.weight_decay": 0.01,
         "optimizer.betas": [0.8, 0.99]},
    ],
    "adamw": [
        {"seed": 1, "optimizer.weight_decay": 0.1},
        {"seed": 2, "optimizer.lr": 0.002, "optimizer.weight_decay": 0.0},
    ],
    "sgd": [
        {"seed": 1, "optimizer.lr": 0.05, "optimizer.momentum": 0.9},
        {"seed": 2, "optimizer.lr": 0.1, "optimizer.momentum": 0.5, "optimizer.weight_decay": 1e-3},
    ],
    "rmsprop": [
        {"seed": 1, "optimizer.lr": 0.001},
        {"seed": 2, "optimizer.lr": 0.0005, "optimizer.momentum": 0.5},
    ],
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(OPTIMIZER_VARIANTS))
def test_each_optimizer_trains_as_it_does_alone(tmp_path, synthetic_source, name):
    """Per-model learning rates, decays, momenta and betas, with batch norm and per-model
    clipping and label smoothing: the same weights as separate runs after 2 epochs."""
    variants = [
        {**variant, "optimizer.name": name, "training.grad_clip": clip,
         "training.label_smoothing": smoothing}
        for variant, clip, smoothing in zip(
            OPTIMIZER_VARIANTS[name], [0.5, None], [0.0, 0.1], strict=True
        )
    ]  # fmt: skip
    batch_norm = name in ("adam", "sgd")
    configs_ = configs(tmp_path, synthetic_source, variants, **{"model.batch_norm": batch_norm})
    assert_same_training(*train_both(configs_))


# --- groups of run folders ----------------------------------------------------------------


def seeds_config(tmp_path, source, **training):
    document = config_document(tmp_path, source, "mnist", {"hidden": [32]}, **training)
    document["data"]["subset"] = {"train": 500, "test": 200}
    return write_config(tmp_path, document)


def test_seeds_train_ordinary_run_folders_together(tmp_path, synthetic_source, capsys):
    config = seeds_config(tmp_path, synthetic_source, epochs=2)
    assert train_main(["--config", str(config), "--seeds", "4,7", "--quiet"]) == 0
    (group,) = (tmp_path / "runs").iterdir()
    members = json.loads((group / "group.json").read_text())["members"]
    assert [(m["run_dir"], m["status"]) for m in members] == [
        ("seed-4", "finished"),
        ("seed-7", "finished"),
    ]
    for seed in (4, 7):
        run = group / f"seed-{seed}"
        for name in ("best.pt", "last.pt", "metrics.csv", "test_metrics.json", "curves.png"):
            assert (run / name).is_file(), name
        assert load_config(run / "config.yaml").seed == seed
        assert "trained together with 1 other model" in (run / "config.yaml").read_text()
        log = (run / "train.log").read_text()
        assert "trained together with 1 other model" in log
        assert log.count("epoch 2/2") == 1  # its own lines, not the other model's
        # An ordinary checkpoint: mlp-eval's path reproduces the recorded test accuracy.
        recorded = json.loads((run / "test_metrics.json").read_text())["accuracy"]
        assert mlptrain.evaluate(run / "best.pt", device="cpu").accuracy == recorded
    # Different seeds: different initializations, batch orders and validation splits.
    first, second = (load_checkpoint(group / f"seed-{s}" / "best.pt") for s in (4, 7))
    assert not torch.equal(first["model_state"]["layers.0.weight"],
                           second["model_state"]["layers.0.weight"])  # fmt: skip
    # Each member resumes alone, as any run: extended by an epoch.
    capsys.readouterr()
    resumed = resume(group / "seed-7", ["training.epochs=3"])
    assert [row["epoch"] for row in resumed.history] == [1, 2, 3]


def test_one_seed_is_an_ordinary_run(tmp_path, synthetic_source):
    config = seeds_config(tmp_path, synthetic_source, epochs=1)
    assert train_main(["--config", str(config), "--seeds", "4", "--quiet"]) == 0
    (run,) = (tmp_path / "runs").iterdir()
    assert (run / "best.pt").is_file() and not (run / "group.json").exists()
    assert "together" not in (run / "train.log").read_text()


def test_configs_that_cannot_share_a_stack_are_refused_by_key(tmp_path, synthetic_source):
    base = {"seed": 1}
    for key, value in [("model.hidden", [16]), ("training.batch_size", 16),
                       ("augment.rotate", 5.0), ("data.dataset", "mnist")]:  # fmt: skip
        pair = configs(tmp_path, synthetic_source, [base, {"seed": 2, key: value}])
        with pytest.raises(UsageError, match=rf"must agree on {key}"):
            check_stackable(pair)
    allowed = configs(tmp_path, synthetic_source, [base, {
        "seed": 2, "optimizer.lr": 0.01, "model.dropout": 0.3, "training.grad_clip": 1.0,
        "training.label_smoothing": 0.1, "optimizer.weight_decay": 0.1}])  # fmt: skip
    check_stackable(allowed)


def test_a_member_with_a_nonfinite_loss_stops_and_the_others_go_on(
    tmp_path, synthetic_source, monkeypatch, capsys
):
    import mlptrain.stack.trainer as stack_trainer

    real = stack_trainer.stacked_cross_entropy
    calls = {"count": 0}

    def poisoned(logits, labels, smoothing):
        losses = real(logits, labels, smoothing)
        calls["count"] += 1
        if calls["count"] == 8 + 3:  # epoch 2 (450 images in 8 batches of 64), batch 3
            losses = losses * torch.tensor([1.0, float("nan")])
        return losses

    monkeypatch.setattr(stack_trainer, "stacked_cross_entropy", poisoned)
    config = seeds_config(tmp_path, synthetic_source, epochs=3, batch_size=64)
    assert train_main(["--config", str(config), "--seeds", "1,2", "--quiet"]) == 3
    message = capsys.readouterr().err
    assert "1 of the group's models stopped on a non-finite loss" in message
    (group,) = (tmp_path / "runs").iterdir()
    statuses = [m["status"] for m in json.loads((group / "group.json").read_text())["members"]]
    assert statuses == ["finished", "failed"]
    good, bad = group / "seed-1", group / "seed-2"
    assert len(metrics_rows(good)) == 3 and (good / "test_metrics.json").is_file()
    assert [row["epoch"] for row in metrics_rows(bad)] == ["1"]
    assert load_checkpoint(bad / "best.pt")["epoch"] == 1
    assert not (bad / "test_metrics.json").exists()
    assert "NaN or infinite in epoch 2, batch 3" in (bad / "train.log").read_text()


def test_each_member_stops_early_on_its_own(tmp_path, synthetic_source):
    """A model whose learning rate is too small to improve stops after its patience;
    the other trains all its epochs."""
    variants = [{"seed": 1, "optimizer.lr": 0.003}, {"seed": 2, "optimizer.lr": 1e-9}]
    pair = configs(tmp_path, synthetic_source, variants, training={
        "epochs": 4, "select_best_by": "val_loss",
        "early_stopping": {"patience": 1, "min_delta": 1e-4}})  # fmt: skip
    result = train_group(pair, [tmp_path / "a", tmp_path / "b"])
    epochs = {r.run_dir.name: [row["epoch"] for row in r.history] for r in result.results}
    assert epochs == {"a": [1, 2, 3, 4], "b": [1, 2]}


def metrics_rows(run):
    with open(run / "metrics.csv", newline="") as handle:
        return list(csv.DictReader(handle))
