"""bf16 training without recasting (training/bf16.py) against autocast, which it
replaces: the same losses and weights to bf16 tolerance, far fewer casts per step, exact
resumption, and float32 checkpoints of the usual format."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch.profiler import ProfilerActivity, profile

import mlptrain
from mlptrain.artifacts.checkpoint import load_checkpoint
from mlptrain.config.schema import OptimizerConfig
from mlptrain.data.splits import Split
from mlptrain.model.mlp import MLP, ModelSpec
from mlptrain.training.bf16 import Bf16Weights
from mlptrain.training.loop import FitState, LoopSettings, train_one_epoch
from mlptrain.training.optim import build_optimizer

from .conftest import config_document, whole_and_resumed

BF16 = torch.bfloat16


def fixed_batch(count=64, seed=0):
    generator = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (count, 28, 28), dtype=torch.uint8, generator=generator)
    return Split(images, torch.randint(0, 10, (count,), generator=generator))


def model_pair(dropout=0.0):
    torch.manual_seed(0)
    spec = ModelSpec(hidden=(64, 32), batch_norm=True, dropout=dropout, mean=0.3, std=0.35)
    plain = MLP(spec)
    return plain, copy.deepcopy(plain)


def test_the_same_losses_and_weights_as_autocast_after_20_adamw_steps():
    """bf16 tolerance, measured: after 20 AdamW steps the weights differ from autocast's
    by less than autocast's differ from float32 training's (Adam turns rounding in small
    gradients into whole steps, so no elementwise tolerance is meaningful)."""
    autocast_model, bf16_model = model_pair()
    float32_model = copy.deepcopy(autocast_model)
    weights = Bf16Weights(bf16_model)
    batch = fixed_batch()
    config = OptimizerConfig(name="adamw", lr=0.003, weight_decay=0.01)
    models = (autocast_model, bf16_model, float32_model)
    optimizers = [build_optimizer(model.parameters(), config) for model in models]
    for step in range(20):
        with torch.autocast("cpu", dtype=BF16):
            expected = F.cross_entropy(autocast_model(batch.images).float(), batch.labels)
        got = F.cross_entropy(weights.forward(batch.images).float(), batch.labels)
        plain = F.cross_entropy(float32_model(batch.images), batch.labels)
        assert got.item() == pytest.approx(expected.item(), rel=1e-2), step
        for optimizer, loss in zip(optimizers, (expected, got, plain), strict=True):
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
        weights.gather_grads()
        for optimizer in optimizers:
            optimizer.step()
        weights.refresh()

    def flat(model):
        return torch.cat([p.detach().flatten() for p in model.parameters()])

    ours, theirs, full = flat(bf16_model), flat(autocast_model), flat(float32_model)
    assert (ours - theirs).norm() < 0.6 * (theirs - full).norm()  # measured: 0.35
    for (name, a), b in zip(autocast_model.state_dict().items(),
                            bf16_model.state_dict().values(), strict=True):  # fmt: skip
        assert b.dtype == a.dtype, name  # the masters and statistics stay float32
    start = flat(model_pair()[0])
    assert (theirs - start).norm() > 10 * (ours - theirs).norm()  # the steps did move them


def test_the_gradients_reach_the_masters_as_autocasts_do():
    autocast_model, bf16_model = model_pair()
    weights = Bf16Weights(bf16_model)
    batch = fixed_batch()
    with torch.autocast("cpu", dtype=BF16):
        F.cross_entropy(autocast_model(batch.images).float(), batch.labels).backward()
    F.cross_entropy(weights.forward(batch.images).float(), batch.labels).backward()
    weights.gather_grads()
    for (name, a), b in zip(autocast_model.named_parameters(), bf16_model.parameters(),
                            strict=True):  # fmt: skip
        assert b.grad is not None and b.grad.dtype == torch.float32, name
        scale = a.grad.abs().max()
        assert (a.grad - b.grad).abs().max() <= 0.03 * scale, name


def tensor_casts_per_step(state, split, settings) -> float:
    """The profiler's aten::copy_ calls on tensors with elements (casts, copies), per
    step; 0-dim ones (the optimizer's step counters, cross-entropy's constants) aside."""
    train_one_epoch(state, split, settings)  # warm-up
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as profiler:
        train_one_epoch(state, split, settings)
    copies = [event for event in profiler.events() if event.name == "aten::copy_"]
    sized = [event for event in copies if event.input_shapes and event.input_shapes[0]]
    return len(sized) / (len(split) // settings.batch_size)


def test_a_step_casts_at_most_8_tensors_where_autocast_cast_many_more():
    batch = fixed_batch(640)
    settings = LoopSettings(epochs=1, batch_size=64, eval_batch_size=64, amp_dtype=BF16)
    counts = {}
    for kind in ("autocast", "bf16"):
        model, _ = model_pair(dropout=0.2)
        bf16 = Bf16Weights(model) if kind == "bf16" else None
        optimizer = build_optimizer(model.parameters(), OptimizerConfig(name="adamw"))
        state = FitState(model, optimizer, torch.Generator().manual_seed(1), bf16=bf16)
        counts[kind] = tensor_casts_per_step(state, batch, settings)
    assert counts["bf16"] <= 8
    assert counts["autocast"] >= 2 * counts["bf16"], counts  # measured: 13 against 6


def test_a_bf16_run_resumes_exactly_and_saves_float32(tmp_path, synthetic_source):
    _, _, expected, got = whole_and_resumed(tmp_path, synthetic_source, amp="bf16")
    assert all(torch.equal(expected["model_state"][k], got["model_state"][k])
               for k in expected["model_state"])  # fmt: skip
    assert all(t.dtype in (torch.float32, torch.int64) for t in got["model_state"].values())
    assert set(got) == set(load_checkpoint(tmp_path / "whole" / "best.pt"))


def test_without_bf16_nothing_changes(tmp_path, synthetic_source):
    from mlptrain.api import resolve_config
    from mlptrain.run.session import build_session

    for amp, expected in (("none", False), ("bf16", True)):
        document = config_document(tmp_path, synthetic_source, "mnist", amp=amp)
        session = build_session(resolve_config(document))
        assert (session.state.bf16 is not None) is expected
    document = config_document(tmp_path, synthetic_source, "mnist", amp="bf16", compile=True)
    assert build_session(resolve_config(document)).state.bf16 is None  # compile: autocast
    assert mlptrain  # the package imports
