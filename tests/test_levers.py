"""The accuracy levers, each against what it claims: the moving average against its
closed form, mixup's loss against the mixed cross-entropy by hand, cutmix and erasing
against the pixels they say they change, test-time augmentation against the mean of
the variants' probabilities, distillation against the teacher it follows, and averaged
weights resumed exactly."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import mlptrain
from mlptrain.artifacts.checkpoint import load_checkpoint
from mlptrain.config.training_schema import EmaConfig, EraseConfig, MixConfig, SwaConfig
from mlptrain.data.splits import Split
from mlptrain.errors import UsageError
from mlptrain.evaluation.evaluator import load_model
from mlptrain.evaluation.tta import TestTimeAugmented
from mlptrain.model.mlp import MLP, ModelSpec
from mlptrain.training.averaging import WeightAverage
from mlptrain.training.hooks import Hooks
from mlptrain.training.loop import FitState, LoopSettings, fit, train_one_epoch
from mlptrain.training.mixing import Erase, Mixer
from mlptrain.training.objective import distillation_term, training_loss
from mlptrain.training.optim import build_optimizer

from .conftest import config_document, whole_and_resumed
from .test_trainer import synthetic_splits

CPU = torch.device("cpu")


def tiny_model(seed: int = 0, batch_norm: bool = True) -> MLP:
    torch.manual_seed(seed)
    return MLP(ModelSpec(hidden=(16,), batch_norm=batch_norm, input_size=16, image_size=(4, 4)))


def tiny_split(count: int = 64, seed: int = 0) -> Split:
    generator = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (count, 4, 4), dtype=torch.uint8, generator=generator)
    labels = torch.randint(0, 10, (count,), generator=generator)
    return Split(images, labels)


# --- weight averaging -------------------------------------------------------------------


class WeightLog(Hooks):
    """The trained weights after every optimizer step."""

    def __init__(self, model):
        self.model, self.steps = model, []

    def batch_end(self, samples):
        self.steps.append({k: v.clone() for k, v in self.model.state_dict().items()})


def test_ema_is_the_closed_form_average_of_the_steps():
    model = tiny_model()
    decay = 0.8
    initial = {k: v.clone() for k, v in model.state_dict().items()}
    from mlptrain.config.schema import OptimizerConfig

    optimizer = build_optimizer(model.parameters(), OptimizerConfig(lr=0.05))
    state = FitState(model, optimizer, torch.Generator().manual_seed(1))
    state.average = WeightAverage(model, EmaConfig(decay=decay), None)
    log = WeightLog(model)
    settings = LoopSettings(epochs=1, batch_size=16, eval_batch_size=64)
    train_one_epoch(state, tiny_split(), settings, log)
    steps = len(log.steps)
    assert steps == 4 and state.average.count == 4
    averaged = state.average.model.state_dict()
    for key, start in initial.items():
        if not start.is_floating_point():
            continue  # num_batches_tracked: not averaged
        # average_T = d^T w_0 + sum_t (1 - d) d^(T - t) w_t
        expected = decay**steps * start
        for t, weights in enumerate(log.steps, 1):
            expected = expected + (1 - decay) * decay ** (steps - t) * weights[key]
        assert torch.allclose(averaged[key], expected, atol=1e-6), key
        if key.endswith("weight"):  # not just a copy of the last step
            assert not torch.allclose(averaged[key], log.steps[-1][key]), key


def test_swa_averages_epoch_ends_holds_the_lr_and_recomputes_batch_norm(tmp_path, synthetic_source):
    from mlptrain.config.schema import OptimizerConfig

    splits = synthetic_splits(tmp_path, synthetic_source)
    torch.manual_seed(0)
    from mlptrain.data.splits import pixel_stats

    mean, std = pixel_stats(splits.train)
    model = MLP(ModelSpec(hidden=(32,), batch_norm=True, mean=mean, std=std))
    optimizer = build_optimizer(model.parameters(), OptimizerConfig(lr=0.01))
    state = FitState(model, optimizer, torch.Generator().manual_seed(1))
    state.average = WeightAverage(model, None, SwaConfig(start_epoch=2, lr=0.002))

    class EpochEnds(Hooks):
        def __init__(self):
            self.weights, self.lrs = [], []

        def epoch_end(self, record, is_best):
            self.weights.append({k: v.clone() for k, v in model.named_parameters()})
            self.lrs.append(record["lr"])

    ends = EpochEnds()
    fit(state, splits, LoopSettings(epochs=4, batch_size=32, eval_batch_size=50), ends)
    assert ends.lrs[0] == pytest.approx(0.01) and ends.lrs[1:] == [pytest.approx(0.002)] * 3
    assert state.average.count == 3
    averaged = dict(state.average.model.named_parameters())
    for name, value in averaged.items():
        expected = sum(epoch[name] for epoch in ends.weights[1:]) / 3
        assert torch.allclose(value, expected, atol=1e-6), name
    # Batch norm's statistics are those of the averaged weights on the training split:
    # the plain mean over its batches (of 50, as eval_batch_size) of each batch's own.
    norm = state.average.model.layers[1]
    with torch.no_grad():
        x = splits.train.images.flatten(1).float() / 255.0
        hidden = state.average.model.layers[0]((x - model.mean) / model.std)
    parts = [part for part in hidden.split(50) if len(part) > 1]
    means = torch.stack([part.mean(dim=0) for part in parts]).mean(dim=0)
    variances = torch.stack([part.var(dim=0) for part in parts]).mean(dim=0)
    assert torch.allclose(norm.running_mean, means, atol=1e-4)
    assert torch.allclose(norm.running_var, variances, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize(
    "average", [{"ema": {"decay": 0.9}}, {"swa": {"start_epoch": 2, "lr": 0.001}}]
)
def test_averaged_weights_resume_exactly(tmp_path, synthetic_source, average):
    whole, resumed, expected, got = whole_and_resumed(tmp_path, synthetic_source, **average)
    assert got["average"] == expected["average"] and got["average"]["count"] > 0
    for part in ("model_state", "training_weights"):
        assert all(torch.equal(expected[part][k], got[part][k]) for k in expected[part]), part
    # Readers of model_state see the average, which differs from the trained weights.
    assert not torch.equal(got["model_state"]["layers.0.weight"],
                           got["training_weights"]["layers.0.weight"])  # fmt: skip
    assert resumed.test == whole.test


# --- mixing and erasing -----------------------------------------------------------------


def test_mixup_blends_whole_images_and_its_loss_is_the_mixed_cross_entropy():
    torch.manual_seed(0)
    mixer = Mixer(MixConfig(alpha=0.4), None, 10)
    pixels = torch.rand(32, 4, 4)
    labels = torch.randint(0, 10, (32,))
    plan = mixer.plan(pixels.shape, 1, CPU)
    mixed, targets = mixer.apply(pixels, labels, plan)
    lam = plan.lam.view(-1, 1, 1)
    assert ((plan.lam > 0) & (plan.lam < 1)).all()
    assert torch.allclose(mixed, lam * pixels + (1 - lam) * pixels[plan.partner])
    logits = torch.randn(32, 10)
    smoothing = 0.1
    by_hand = torch.stack(
        [
            plan.lam[i] * F.cross_entropy(logits[i], labels[i], label_smoothing=smoothing)
            + (1 - plan.lam[i])
            * F.cross_entropy(logits[i], labels[plan.partner[i]], label_smoothing=smoothing)
            for i in range(32)
        ]
    ).mean()
    assert training_loss(logits, targets, smoothing) == pytest.approx(by_hand.item(), rel=1e-5)


def test_cutmix_pastes_the_partners_box_and_labels_by_its_area():
    torch.manual_seed(1)
    mixer = Mixer(None, MixConfig(alpha=1.0), 10)
    pixels = torch.rand(64, 8, 8)
    labels = torch.randint(0, 10, (64,))
    plan = mixer.plan(pixels.shape, 1, CPU)
    mixed, targets = mixer.apply(pixels, labels, plan)
    others = pixels[plan.partner]
    for i in range(64):
        box = plan.box[i]
        assert torch.equal(mixed[i][box], others[i][box])  # the box: the partner's pixels
        assert torch.equal(mixed[i][~box], pixels[i][~box])  # the rest: untouched
        if box.any():  # one rectangle
            rows, columns = box.any(dim=1).nonzero(), box.any(dim=0).nonzero()
            assert box.sum() == len(rows) * len(columns)
            assert len(rows) == rows.max() - rows.min() + 1
        kept = 1 - box.float().mean()
        assert plan.lam[i] == pytest.approx(kept.item())
        expected = torch.zeros(10)
        expected[labels[i]] += kept
        expected[labels[plan.partner[i]]] += 1 - kept
        assert torch.allclose(targets[i], expected)
    assert plan.box.any(dim=(1, 2)).float().mean() > 0.8


def test_with_both_on_cut_images_paste_and_the_others_blend():
    torch.manual_seed(5)
    mixer = Mixer(MixConfig(alpha=0.4), MixConfig(alpha=1.0), 10)
    pixels, labels = torch.rand(256, 8, 8), torch.randint(0, 10, (256,))
    plan = mixer.plan(pixels.shape, 1, CPU)
    mixed, targets = mixer.apply(pixels, labels, plan)
    others = pixels[plan.partner]
    cut, blended = plan.cut, ~plan.cut & (plan.lam < 1)
    assert cut.sum() > 50 and blended.sum() > 50  # each image takes one method
    assert not plan.box[~cut].any()  # only cut images have a box
    assert torch.equal(mixed[cut], torch.where(plan.box, others, pixels)[cut])
    lam = plan.lam[blended].view(-1, 1, 1)
    assert torch.allclose(mixed[blended], lam * pixels[blended] + (1 - lam) * others[blended])
    kept = 1 - plan.box[cut].flatten(1).float().mean(dim=1)
    assert torch.allclose(plan.lam[cut], kept)
    assert torch.allclose(targets.sum(dim=1), torch.ones(256))


def test_mixing_pairs_images_only_within_their_model_s_block():
    torch.manual_seed(2)
    mixer = Mixer(MixConfig(alpha=1.0), MixConfig(alpha=1.0), 10)
    plan = mixer.plan(torch.Size((3 * 20, 4, 4)), 3, CPU)
    blocks = torch.arange(60) // 20
    assert torch.equal(blocks[plan.partner], blocks)
    assert (plan.partner != torch.arange(60)).any()


def test_probability_leaves_the_other_images_unmixed():
    torch.manual_seed(3)
    mixer = Mixer(MixConfig(alpha=1.0, probability=0.3), None, 10)
    pixels, labels = torch.rand(2000, 4, 4), torch.randint(0, 10, (2000,))
    plan = mixer.plan(pixels.shape, 1, CPU)
    mixed, targets = mixer.apply(pixels, labels, plan)
    untouched = plan.lam == 1
    assert 0.6 < untouched.float().mean() < 0.8
    assert torch.equal(mixed[untouched], pixels[untouched])
    assert torch.equal(targets[untouched].argmax(dim=1), labels[untouched])


def test_erasing_fills_one_rectangle_of_the_claimed_area_and_nothing_else():
    torch.manual_seed(4)
    pixels = torch.full((500, 28, 28), 0.5)
    erased = Erase(EraseConfig(probability=0.5, area=(0.05, 0.2)))(pixels)
    changed = erased != pixels
    touched = changed.any(dim=(1, 2))
    assert 0.4 < touched.float().mean() < 0.6
    for mask in changed[touched]:
        rows, columns = mask.any(dim=1).nonzero(), mask.any(dim=0).nonzero()
        height, width = rows.max() - rows.min() + 1, columns.max() - columns.min() + 1
        # Noise equal to 0.5 is possible but rare: the rectangle is nearly all changed.
        assert mask.sum() >= 0.95 * height * width and mask.sum() <= height * width
        assert 0.03 <= float(height * width) / (28 * 28) <= 0.23  # rounding of the sides
    assert ((erased >= 0) & (erased <= 1)).all()


# --- test-time augmentation and distillation ---------------------------------------------


@pytest.mark.parametrize("mode", ["hflip", "shift"])
def test_tta_probabilities_are_the_mean_of_the_variants(mode):
    model = tiny_model(batch_norm=False).eval()
    images = tiny_split(8).images
    padded = F.pad(images, (1, 1, 1, 1))  # shifted by hand: crops of a zero border
    if mode == "hflip":
        shown = [images, images.flip(-1)]
    else:
        shown = [images, padded[:, :-2, 1:-1], padded[:, 2:, 1:-1], padded[:, 1:-1, :-2],
                 padded[:, 1:-1, 2:]]  # fmt: skip
    with torch.no_grad():
        expected = torch.stack([model(x).softmax(dim=1) for x in shown]).mean(dim=0)
        got = TestTimeAugmented(model, mode)(images).softmax(dim=1)
    assert torch.allclose(got, expected, atol=1e-6)


def test_the_distillation_term_is_the_tempered_kl_divergence():
    logits, teacher = torch.randn(16, 10), torch.randn(16, 10)
    temperature = 3.0
    expected = (
        F.kl_div(
            (logits / temperature).log_softmax(dim=1),
            (teacher / temperature).softmax(dim=1),
            reduction="batchmean",
        )
        * temperature**2
    )
    assert distillation_term(logits, teacher, temperature).mean() == pytest.approx(
        expected.item(), rel=1e-5
    )
    hard = F.cross_entropy(logits, torch.zeros(16, dtype=torch.long))
    loss = training_loss(logits, torch.zeros(16, dtype=torch.long), 0.0, teacher, 0.25, 3.0)
    assert loss == pytest.approx(0.75 * hard.item() + 0.25 * expected.item(), rel=1e-5)


def test_a_student_with_weight_1_and_temperature_1_follows_the_teacher(tmp_path, synthetic_source):
    def run(name, seed=3, **training):
        document = config_document(tmp_path, synthetic_source, "mnist", epochs=8, **training)
        document["optimizer"] = {"lr": 0.01}
        document["seed"] = seed
        return mlptrain.train(document, run_dir=tmp_path / name, verbose=False)

    teacher = run("teacher")
    distill = {"teacher": str(teacher.run_dir / "last.pt"), "distill": {"weight": 1.0,
               "temperature": 1.0}}  # fmt: skip
    student = run("student", seed=9, **distill)
    plain = run("plain", seed=9)
    images = synthetic_splits(tmp_path, synthetic_source).train.images

    def probabilities(result):
        _, model = load_model(result.run_dir / "last.pt", CPU)  # the final weights
        with torch.no_grad():
            return model.eval()(images).softmax(dim=1)

    target = probabilities(teacher)

    def divergence(result):
        return F.kl_div(probabilities(result).log(), target, reduction="batchmean").item()

    # The student learned the teacher's probabilities, not the labels' one-hot ones
    # (measured: 0.07 against 0.29).
    assert divergence(student) < 0.4 * divergence(plain)
    assert (probabilities(student).argmax(1) == target.argmax(1)).float().mean() > 0.95


def test_distilling_from_a_group_folder_uses_every_member(tmp_path, synthetic_source):
    from mlptrain.evaluation.ensemble import Ensemble
    from mlptrain.run.session import load_teacher

    document = config_document(tmp_path, synthetic_source, "mnist", epochs=1)
    group = mlptrain.train_together(document, seeds=[1, 2], group_dir=tmp_path / "g",
                                    verbose=False)  # fmt: skip
    splits = synthetic_splits(tmp_path, synthetic_source)
    teacher = load_teacher([str(group.folder)], splits, CPU)
    assert isinstance(teacher, Ensemble) and len(teacher.members) == 2
    with pytest.raises(UsageError, match="no best.pt"):
        load_teacher([str(tmp_path)], splits, CPU)


# --- ensembles as a config ----------------------------------------------------------------


def ensemble_config(tmp_path, source, ensemble: dict, **training) -> str:
    from .conftest import write_config

    document = config_document(tmp_path, source, "mnist", epochs=2, **training)
    document["ensemble"] = ensemble
    document["evaluation"] = {"tta": "hflip"}
    return str(write_config(tmp_path, document, "ensemble.yaml"))


def test_an_ensemble_config_trains_its_members_and_tests_them_as_one(tmp_path, synthetic_source):
    import json

    from mlptrain.cli.export import main as export_main
    from mlptrain.cli.train import main as train_main

    config = ensemble_config(tmp_path, synthetic_source, {"seeds": [1, 2, 3]})
    group = tmp_path / "group"
    assert train_main(["--config", config, "--run-dir", str(group), "--quiet"]) == 0
    assert sorted(p.name for p in group.iterdir() if p.is_dir()) == ["seed-1", "seed-2", "seed-3"]
    assert json.loads((group / "group.json").read_text())["ensemble"] is True
    assert "ensemble:" in (group / "config.yaml").read_text()
    test = json.loads((group / "test_metrics.json").read_text())
    assert len(test["members"]) == 3 and test["tta"]["mode"] == "hflip"
    for picture in ("confusion_matrix.png", "misclassified.png"):
        assert (group / picture).stat().st_size > 0
    members = [str(group / f"seed-{seed}" / "best.pt") for seed in (1, 2, 3)]
    assert "together" in (group / "seed-1" / "train.log").read_text()
    out = tmp_path / "ensemble.onnx"
    assert export_main(["--ensemble", *members, "--format", "onnx", "--out", str(out)]) == 0
    assert out.stat().st_size > 0


def test_members_that_differ_in_shape_train_one_after_another(tmp_path, synthetic_source):
    import json

    from mlptrain.cli.train import main as train_main

    members = {"members": [{"seed": 1}, {"seed": 2, "model": {"hidden": [16, 16]}}]}
    config = ensemble_config(tmp_path, synthetic_source, members, ema={"decay": 0.9})
    group = tmp_path / "group"
    assert train_main(["--config", config, "--run-dir", str(group), "--quiet"]) == 0
    log = (group / "seed-2" / "train.log").read_text()
    assert "one after another" in log
    second = load_checkpoint(group / "seed-2" / "best.pt")
    assert second["model_spec"]["hidden"] == [16, 16] and second["average"]["kind"] == "ema"
    assert len(json.loads((group / "test_metrics.json").read_text())["members"]) == 2


def test_an_interrupted_ensemble_is_tested_when_its_last_member_finishes(
    tmp_path, synthetic_source
):
    import json

    from mlptrain.api import resolve_config
    from mlptrain.errors import StopRun
    from mlptrain.run.runner import resume_group, train_ensemble

    class StopInEpoch2(Hooks):
        def epoch_start(self, epoch, batch_count):
            self.epoch = epoch

        def should_stop(self):
            return getattr(self, "epoch", 0) >= 2

    config = resolve_config(ensemble_config(tmp_path, synthetic_source, {"seeds": [1, 2]},
                                            swa={"start_epoch": 2, "lr": 0.01}))  # fmt: skip
    import mlptrain.run.lifecycle as lifecycle

    real_start = lifecycle.Running.start.__func__

    def start_with_stop(cls, session, run, scope, observers=()):
        return real_start(cls, session, run, scope, [*observers, StopInEpoch2()])

    group = tmp_path / "group"
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(lifecycle.Running, "start", classmethod(start_with_stop))
        with pytest.raises(StopRun):
            train_ensemble(config, group_dir=group)
    assert not (group / "test_metrics.json").exists()
    result = resume_group(group)
    assert result.test is not None and len(result.test["members"]) == 2
    assert (
        json.loads((group / "test_metrics.json").read_text())["accuracy"] == result.test["accuracy"]
    )


def test_eval_tta_is_recorded(tmp_path, synthetic_source):
    import json

    from mlptrain.cli.evaluate import main as eval_main

    document = config_document(tmp_path, synthetic_source, "mnist", epochs=1)
    run = mlptrain.train(document, run_dir=tmp_path / "run", verbose=False)
    out = tmp_path / "eval"
    assert eval_main(["--checkpoint", str(run.run_dir / "best.pt"), "--tta", "shift",
                      "--out-dir", str(out), "--json"]) == 0  # fmt: skip
    summary = json.loads((out / "eval_test_metrics.json").read_text())
    assert summary["tta"]["mode"] == "shift"
    assert summary["accuracy"] != run.test["accuracy"] or summary["loss"] != run.test["loss"]
