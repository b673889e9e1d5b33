"""Models trained together (mlptrain.stack): the same arithmetic as separate runs."""

from __future__ import annotations

import copy
import csv
import json
import math
import signal
import statistics
import subprocess
import sys
import time
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import mlptrain
from mlptrain.artifacts.checkpoint import load_checkpoint, model_from_checkpoint
from mlptrain.cli.evaluate import main as eval_main
from mlptrain.cli.export import main as export_main
from mlptrain.cli.train import main as train_main
from mlptrain.config.files import load_config
from mlptrain.config.schema import validate
from mlptrain.deploy.onnx_model import OnnxModel
from mlptrain.errors import UsageError
from mlptrain.evaluation.evaluator import evaluate_ensemble
from mlptrain.run.runner import resume, train_group
from mlptrain.run.session import build_session
from mlptrain.stack.compat import stack_refusal
from mlptrain.stack.trainer import Member, fit_group, stacked_cross_entropy
from mlptrain.training.hooks import Hooks
from mlptrain.training.loop import fit

from .conftest import (
    config_document,
    require_real_data,
    run_cli,
    write_config,
    write_dataset,
)


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


class Trained(Hooks):
    """A trained session's model and fit state, and its optimizer state as each epoch's
    checkpoint saved it (`saved`)."""

    def __init__(self, session):
        self.model, self.state, self.saved = session.model, session.state, []

    def epoch_end(self, record, is_best):
        self.saved.append(copy.deepcopy(self.state.optimizer.state_dict()["state"]))


def train_separately(configs_):
    trained = []
    for session in map(build_session, configs_):
        trained.append(Trained(session))
        fit(session.state, session.splits, session.settings, trained[-1])
    return trained


def train_together(configs_):
    sessions = [build_session(config) for config in configs_]
    trained = [Trained(session) for session in sessions]
    fit_group(
        [
            Member(s.model, s.state, s.settings, s.splits, hooks)
            for s, hooks in zip(sessions, trained, strict=True)
        ]
    )
    return trained


def train_both(configs_):
    """The configs trained separately and stacked, from the same initial weights."""
    return train_separately(configs_), train_together(configs_)


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


def test_the_stacked_loss_is_each_models_own_cross_entropy():
    """One smoothing for all (F.cross_entropy's kernel) and one per model (the formula)
    both give each model's own F.cross_entropy, and its gradient."""
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 16, 10, generator=generator, requires_grad=True)
    labels = torch.randint(0, 10, (3, 16), generator=generator)
    for smoothing in (0.0, 0.2):
        expected = torch.stack(
            [F.cross_entropy(logits[k], labels[k], label_smoothing=smoothing) for k in range(3)]
        )
        (expected_grad,) = torch.autograd.grad(expected.sum(), logits)
        for given in (smoothing, torch.full((3, 1), smoothing)):
            losses = stacked_cross_entropy(logits, labels, given)
            (grad,) = torch.autograd.grad(losses.sum(), logits)
            assert torch.allclose(losses, expected, atol=1e-6)
            assert torch.allclose(grad, expected_grad, atol=1e-7)


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


def assert_same_optimizer_state(separate, stacked):
    """At every epoch's end (what the checkpoints hold) and after training."""
    for alone, together in zip(separate, stacked, strict=True):
        states = [alone.state.optimizer.state_dict()["state"], *alone.saved]
        others = [together.state.optimizer.state_dict()["state"], *together.saved]
        assert len(states) == len(others)
        for a, b in zip(states, others, strict=True):
            assert a.keys() == b.keys()
            for index in a:
                assert float(a[index]["step"]) == float(b[index]["step"])
                for name in ("exp_avg", "exp_avg_sq"):
                    assert torch.allclose(a[index][name], b[index][name], atol=1e-6, rtol=1e-3)


@pytest.mark.parametrize("name", ["adam", "adamw"])
def test_seeds_of_one_config_take_one_adam_step_together(
    tmp_path, synthetic_source, monkeypatch, name
):
    """Equal hyperparameters: each step is one fused call on the stacked tensors, and
    each member ends with the weights and the optimizer state (what its checkpoint
    saves) of its separate run."""
    import mlptrain.stack.optim as stack_optim

    sizes = []
    real = stack_optim._kernel

    def counting(key, params, *rest):
        sizes.append(len(params))
        real(key, params, *rest)

    monkeypatch.setattr(stack_optim, "_kernel", counting)
    variants = [{"seed": seed, "optimizer.name": name, "optimizer.weight_decay": 0.01}
                for seed in (1, 2, 3)]  # fmt: skip
    separate, stacked = train_both(configs(tmp_path, synthetic_source, variants))
    assert_same_training(separate, stacked)
    assert_same_optimizer_state(separate, stacked)
    parameters = len(list(stacked[0].model.parameters()))
    assert sizes and set(sizes) == {parameters}  # one call for the three models


def test_a_skipped_batch_is_skipped_as_alone(tmp_path, synthetic_source, monkeypatch):
    """on_nonfinite: skip_batch. Model 2's third batch has a NaN loss, so it skips that
    step and the models' step counts differ from then on: each still trains exactly as
    it does alone with the same batch skipped."""
    import mlptrain.stack.trainer as stack_trainer
    import mlptrain.training.objective as objective

    real_stacked, real_single = stack_trainer.stacked_cross_entropy, F.cross_entropy

    def stacked(logits, labels, smoothing):
        losses = real_stacked(logits, labels, smoothing)
        calls["stacked"] += 1
        if calls["stacked"] == 3:
            losses = losses * torch.tensor([1.0, float("nan")])
        return losses

    def single(logits, labels, **options):
        loss = real_single(logits, labels, **options)
        if "label_smoothing" in options:  # a training batch, not validation
            calls["single"] += 1
            if calls["single"] == 3 and calls["poison"]:
                loss = loss * float("nan")
        return loss

    calls = {"stacked": 0, "single": 0, "poison": False}
    monkeypatch.setattr(stack_trainer, "stacked_cross_entropy", stacked)
    monkeypatch.setattr(objective, "F", SimpleNamespace(cross_entropy=single))
    variants = [{"seed": 1}, {"seed": 2}]
    configs_ = configs(tmp_path, synthetic_source, variants,
                       training={"on_nonfinite": "skip_batch"})  # fmt: skip
    separate = train_separately(configs_[:1])  # model 1 alone: nothing skipped
    calls.update(single=0, poison=True)
    separate += train_separately(configs_[1:])  # model 2 alone, its third batch skipped
    stacked_ = train_together(configs_)
    assert_same_training(separate, stacked_)
    assert_same_optimizer_state(separate, stacked_)
    steps = [
        {float(state["step"]) for state in s.state.optimizer.state_dict()["state"].values()}
        for s in stacked_
    ]
    assert len(steps[0]) == 1 and steps[1] == {steps[0].pop() - 1}
    assert [row["skipped_batches"] for row in stacked_[1].state.history] == [1, 0]


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
    # A finished member resumes alone, as any run: extended by an epoch, in Python or
    # with mlp-train --resume on its folder; the other member is left as it was.
    resumed = resume(group / "seed-7", ["training.epochs=3"])
    assert [row["epoch"] for row in resumed.history] == [1, 2, 3]
    command = ["--resume", str(group / "seed-4"), "--set", "training.epochs=3", "--quiet"]
    assert train_main(command) == 0
    assert [row["epoch"] for row in metrics_rows(group / "seed-4")] == ["1", "2", "3"]
    assert train_main(["--resume", str(group), "--quiet"]) == 2
    assert "every model of the group has ended" in capsys.readouterr().err


def test_train_together_in_python(tmp_path, synthetic_source):
    document = config_document(tmp_path, synthetic_source, "mnist", epochs=1)
    result = mlptrain.train_together(document, seeds=[5, 6], group_dir=tmp_path / "g",
                                     verbose=False)  # fmt: skip
    assert result.folder == tmp_path / "g" and not result.failed
    assert [r.run_dir.name for r in result.results] == ["seed-5", "seed-6"]
    assert all(0 <= r.test_accuracy <= 1 for r in result.results)


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
        assert f"must agree on {key}" in stack_refusal(pair)
    allowed = configs(tmp_path, synthetic_source, [base, {
        "seed": 2, "optimizer.lr": 0.01, "model.dropout": 0.3, "training.grad_clip": 1.0,
        "training.label_smoothing": 0.1, "optimizer.weight_decay": 0.1}])  # fmt: skip
    assert stack_refusal(allowed) is None


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


@pytest.mark.slow(
    "a group of models in a real process stopped by a signal, resumed, against separate runs"
)
def test_an_interrupted_group_resumes_to_the_same_weights(tmp_path, tmp_path_factory):
    """Ctrl-C during a group's third epoch, then --resume on one member's folder: every
    member ends exactly as in an uninterrupted group (dropout included)."""
    root = tmp_path_factory.mktemp("larger")
    source = write_dataset(root / "mnist", seed=4, train_count=3000, test_count=200).parent
    folders = {}
    for part in ("whole", "parts"):
        folder = tmp_path / part
        folder.mkdir()
        document = config_document(
            folder, source, "mnist", {"hidden": [64], "dropout": 0.1}, epochs=4, batch_size=8
        )
        config = write_config(folder, document)
        folders[part] = (folder, config)
    folder, config = folders["whole"]
    whole = run_cli("train", "--config", str(config), "--seeds", "1,2", "--quiet", cwd=folder)
    assert whole.returncode == 0, whole.stderr

    folder, config = folders["parts"]
    process = subprocess.Popen(
        [sys.executable, "-m", "mlptrain.cli.train", "--config", str(config),
         "--seeds", "1,2", "--quiet"],
        cwd=folder, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    deadline = time.monotonic() + 120
    while (
        not list(folder.glob("runs/*/seed-2/metrics.csv"))
        or len(next(folder.glob("runs/*/seed-2/metrics.csv")).read_text().splitlines()) <= 2
    ):
        assert process.poll() is None and time.monotonic() < deadline, process.communicate()
        time.sleep(0.01)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr
    (group,) = (folder / "runs").iterdir()
    assert f"resume with: mlp-train --resume {group}" in stderr
    assert not (group / "seed-1" / "test_metrics.json").exists()

    resumed = run_cli("train", "--resume", str(group / "seed-2"), "--quiet", cwd=folder)
    assert resumed.returncode == 0, resumed.stderr
    (whole_group,) = (folders["whole"][0] / "runs").iterdir()
    for member in ("seed-1", "seed-2"):
        expected = load_checkpoint(whole_group / member / "last.pt")
        got = load_checkpoint(group / member / "last.pt")
        assert got["epoch"] == 4
        for key, tensor in expected["model_state"].items():
            assert torch.equal(tensor, got["model_state"][key]), (member, key)
        assert (
            metrics_rows(group / member)[-1]["val_loss"]
            == (metrics_rows(whole_group / member)[-1]["val_loss"])
        )
    statuses = [m["status"] for m in json.loads((group / "group.json").read_text())["members"]]
    assert statuses == ["finished", "finished"]


# --- ensembles ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def trained_group(tmp_path_factory, synthetic_source):
    """Three seeds trained together on synthetic MNIST; their best.pt files."""
    folder = tmp_path_factory.mktemp("group")
    config = seeds_config(folder, synthetic_source, epochs=2)
    assert train_main(["--config", str(config), "--seeds", "1,2,3", "--quiet"]) == 0
    (group,) = (folder / "runs").iterdir()
    return group, [group / f"seed-{seed}" / "best.pt" for seed in (1, 2, 3)]


def test_an_ensemble_averages_its_members_probabilities(trained_group, capsys):
    group, checkpoints = trained_group
    evaluation, ensemble = evaluate_ensemble(checkpoints, {"device": "cpu"})
    test = load_checkpoint(checkpoints[0])
    members = [mlptrain.evaluate(path, device="cpu") for path in checkpoints]
    images = members[0].split.images
    with torch.inference_mode():
        averaged = torch.stack(
            [model_from_checkpoint(load_checkpoint(p))(images).softmax(dim=1) for p in checkpoints]
        ).mean(dim=0)
        ours = ensemble(images).softmax(dim=1)
    assert torch.allclose(ours, averaged, atol=1e-6)
    expected = (averaged.argmax(dim=1) == members[0].split.labels).float().mean().item()
    assert evaluation.accuracy == pytest.approx(expected)
    assert mlptrain.evaluate_ensemble(checkpoints, device="cpu").accuracy == evaluation.accuracy
    assert [m["accuracy"] for m in evaluation.summary["members"]] == [
        member.accuracy for member in members
    ]
    assert test["dataset"] == "mnist"
    # The command writes its results beside the run folders: in the group folder.
    assert eval_main(["--ensemble", *map(str, checkpoints), "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert f"test accuracy {evaluation.accuracy:.4f}" in out and "ensemble of 3" in out
    written = json.loads((group / "ensemble_test_metrics.json").read_text())
    assert written["accuracy"] == evaluation.accuracy


def test_an_ensemble_of_different_datasets_is_refused(trained_group, tmp_path, synthetic_source):
    _, checkpoints = trained_group
    document = config_document(tmp_path, synthetic_source, "fashion_mnist", epochs=1)
    other = mlptrain.train(document, verbose=False).run_dir / "best.pt"
    with pytest.raises(UsageError, match=r"must be of one dataset.*dataset and classes"):
        evaluate_ensemble([checkpoints[0], other])
    assert eval_main(["--ensemble", str(checkpoints[0]), "--split", "val"]) == 2


def test_an_ensemble_exports_as_one_onnx_model(trained_group, tmp_path):
    _, checkpoints = trained_group
    out = tmp_path / "ensemble.onnx"
    assert export_main(["--ensemble", *map(str, checkpoints), "--format", "onnx",
                        "--out", str(out)]) == 0  # fmt: skip
    exported = OnnxModel(out)
    assert json.loads(exported.metadata["source_checkpoint"]) == list(map(str, checkpoints))
    evaluation, ensemble = evaluate_ensemble(checkpoints, {"device": "cpu"})
    images = evaluation.split.images[:50]
    with torch.inference_mode():
        expected = ensemble(images).softmax(dim=1).numpy()
    got = exported(images.numpy())
    assert np.allclose(np.exp(got) / np.exp(got).sum(1, keepdims=True), expected, atol=1e-5)
    assert export_main(["--ensemble", *map(str, checkpoints), "--format", "onnx"]) == 2


@pytest.mark.realdata
def test_stacked_runs_are_statistically_separate_runs_on_real_data(tmp_path):
    """Three seeds of a dropout MLP on real MNIST, trained separately and together: the
    random streams differ (dropout masks, the global generator), so the runs are not
    identical, but the mean test accuracies agree within noise."""
    source = require_real_data()
    document = {
        "device": "cpu",
        "data": {"dataset": "mnist", "source": str(source), "root": str(tmp_path / "data"),
                 "subset": {"train": 10000, "test": 2000}},
        "model": {"hidden": [128, 64], "dropout": 0.2},
        "training": {"epochs": 3, "batch_size": 64},
        "output": {"runs_dir": str(tmp_path / "runs")},
    }  # fmt: skip
    configs_ = [validate({**document, "seed": seed}) for seed in (1, 2, 3)]
    alone = [mlptrain.train(config, verbose=False).test_accuracy for config in configs_]
    together = [result.test_accuracy for result in train_group(configs_).results]
    assert len(together) == 3 and together != alone
    noise = math.sqrt(statistics.variance(alone) / 3 + statistics.variance(together) / 3)
    difference = abs(statistics.fmean(alone) - statistics.fmean(together))
    assert difference <= max(3 * noise, 0.005), (alone, together)
    assert min(together) > 0.9  # and they learned: 3 epochs of 9,000 images
