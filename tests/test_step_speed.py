"""The preset step's speed-ups compute what they replace: the cheap dropout mask, the
16-bit random draws and the arithmetic-limit bookkeeping (issue: presets at the limit)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from mlptrain.model.mlp import MLP, Dropout, ModelSpec
from mlptrain.model.random_bits import int16_bits, uniform_signed
from mlptrain.training.arithmetic import step_limit, training_gemms


def test_int16_bits_are_uniform_and_follow_the_generator():
    bits = int16_bits((400_000,), torch.Generator().manual_seed(0))
    assert bits.dtype == torch.int16 and bits.shape == (400_000,)
    counts = torch.bincount((bits.long() + 32768) // 4096, minlength=16).float()  # 16 bins
    expected = len(bits) / 16
    chi_square = ((counts - expected) ** 2 / expected).sum().item()
    assert chi_square < 40  # 15 degrees of freedom: p < 0.001 beyond 37.7
    # The four 16-bit lanes of a 64-bit draw are each uniform, the top one included.
    for lane in range(4):
        assert abs(bits.view(-1, 4)[:, lane].float().mean().item()) < 200
    again = int16_bits((400_000,), torch.Generator().manual_seed(0))
    assert torch.equal(bits, again)
    odd = uniform_signed((3, 5, 7), torch.Generator().manual_seed(1))
    assert odd.shape == (3, 5, 7) and odd.min() >= -1 and odd.max() < 1


@pytest.mark.parametrize("p", [0.1, 0.2, 0.5])
def test_dropout_keeps_one_minus_p_and_scales_by_the_exact_keep_rate(p):
    torch.manual_seed(0)
    layer = Dropout(p).train()
    x = torch.rand(256, 1024) + 0.5  # no zeros, so a zero output is a dropped element
    x.requires_grad_(True)
    out = layer(x)
    kept = out != 0
    rate = kept.float().mean().item()
    n = x.numel()
    assert abs(rate - (1 - p)) < 5 * math.sqrt(p * (1 - p) / n)
    kept_levels = round((1 - p) * 2**16)
    scale = 2**16 / kept_levels
    assert torch.allclose(out[kept], x.detach()[kept] * scale, rtol=1e-6)
    assert abs(scale - 1 / (1 - p)) < 1e-4
    out.sum().backward()  # the gradient goes through the same mask, scaled alike
    assert torch.allclose(x.grad, kept.float() * scale)
    # The expected output is the input: as nn.Dropout.
    assert abs(out.mean().item() / x.mean().item() - 1) < 0.01


def test_dropout_is_nn_dropout_in_inference_and_in_its_state():
    layer = Dropout(0.3)
    assert isinstance(layer, nn.Dropout) and layer.state_dict() == {}
    x = torch.randn(4, 8)
    assert torch.equal(layer.eval()(x), x)
    assert torch.equal(Dropout(0.0).train()(x), x)
    torch.manual_seed(3)
    first = Dropout(0.3).train()(x)
    torch.manual_seed(3)
    assert torch.equal(Dropout(0.3).train()(x), first)  # seeded like every other draw


def test_a_preset_shaped_model_trains_the_same_with_either_dropout():
    """Same weights and loss after a few steps as nn.Dropout, to the tolerance that
    different random masks allow: on a fixed batch, with the same start, the losses
    of 30 AdamW steps agree within a few percent and both fall."""

    def run(layer_type: type[nn.Module]) -> list[float]:
        torch.manual_seed(0)
        model = MLP(ModelSpec(hidden=(256, 256), dropout=0.2, batch_norm=True))
        for index, module in enumerate(model.layers):
            if isinstance(module, nn.Dropout):
                model.layers[index] = layer_type(0.2)
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
        generator = torch.Generator().manual_seed(1)
        images = torch.randint(0, 256, (512, 28, 28), dtype=torch.uint8, generator=generator)
        labels = torch.randint(0, 10, (512,), generator=generator)
        losses = []
        for _ in range(30):
            loss = F.cross_entropy(model(images), labels)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
        return losses

    ours, reference = run(Dropout), run(nn.Dropout)
    assert ours[-1] < 0.5 * ours[0] and reference[-1] < 0.5 * reference[0]
    assert ours[0] == pytest.approx(reference[0], rel=0.02)
    assert ours[-1] == pytest.approx(reference[-1], rel=0.25)


def test_training_gemms_count_the_step_s_arithmetic():
    spec = ModelSpec(hidden=(1024, 1024))
    gemms = training_gemms(spec, 128)
    # Forward and weight gradient per layer, input gradient for all but the first layer.
    assert len(gemms) == 3 + 3 + 2
    weights = 784 * 1024 + 1024 * 1024 + 1024 * 10
    first_input_gradient = 2 * 128 * 1024 * 784
    assert sum(gemm.flops for gemm in gemms) == 6 * weights * 128 - first_input_gradient
    assert {(gemm.m, gemm.k, gemm.n) for gemm in gemms if "layer 2" in gemm.role} == {
        (128, 1024, 1024),  # forward and input gradient
        (1024, 128, 1024),  # weight gradient
    }


def test_step_limit_times_the_products_in_the_dtype_asked_for():
    gemms = training_gemms(ModelSpec(hidden=(64,)), 32)
    limit = step_limit(gemms, torch.float32, torch.device("cpu"), rounds=2, passes=2)
    assert limit.dtype is torch.float32
    assert limit.flops == sum(gemm.flops for gemm in gemms)
    assert 0 < limit.seconds < 1 and limit.flops_per_second == limit.flops / limit.seconds
