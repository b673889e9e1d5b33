from __future__ import annotations

import pytest
import torch
from torch import nn

from mlptrain.config.schema import ACTIVATIONS as CONFIG_ACTIVATIONS
from mlptrain.config.schema import OPTIMIZERS as CONFIG_OPTIMIZERS
from mlptrain.config.schema import OptimizerConfig
from mlptrain.model.mlp import ACTIVATIONS, MLP, Dropout, ModelSpec
from mlptrain.training.optim import FUSED, OPTIMIZERS, build_optimizer


def test_config_names_match_the_implementations():
    assert set(CONFIG_ACTIVATIONS) == set(ACTIVATIONS)
    assert set(CONFIG_OPTIMIZERS) == set(OPTIMIZERS)


@pytest.mark.parametrize("hidden", [(), (16,), (32, 16, 8)])
def test_logits_shape_and_layer_count(hidden):
    model = MLP(ModelSpec(hidden=hidden))
    logits = model(torch.randint(0, 256, (5, 28, 28), dtype=torch.uint8))
    assert logits.shape == (5, 10)
    linears = [module for module in model.modules() if isinstance(module, nn.Linear)]
    assert [layer.out_features for layer in linears] == [*hidden, 10]
    # Logits, not probabilities: the last layer is the Linear itself.
    assert isinstance(model.layers[-1], nn.Linear)


def test_batch_norm_and_dropout_are_built_when_asked():
    model = MLP(ModelSpec(hidden=(8, 8), batch_norm=True, dropout=0.5, activation="gelu"))
    kinds = [type(module) for module in model.layers]
    assert kinds.count(nn.BatchNorm1d) == 2
    assert kinds.count(Dropout) == 2
    assert kinds.count(nn.GELU) == 2
    assert MLP(ModelSpec(hidden=(8,))).layers[0].bias is not None
    assert model.layers[0].bias is None  # batch norm makes the bias redundant


def test_model_normalizes_raw_pixels_itself():
    model = MLP(ModelSpec(hidden=(4,), mean=0.3, std=0.2)).eval()
    pixels = torch.randint(0, 256, (3, 28, 28), dtype=torch.uint8)
    from_uint8 = model(pixels)
    from_float = model(pixels.float() / 255)
    assert torch.allclose(from_uint8, from_float, atol=1e-6)
    reference = model.layers(((pixels.float() / 255 - 0.3) / 0.2).flatten(1))
    assert torch.allclose(from_uint8, reference, atol=1e-5)


def test_every_parameter_gets_a_finite_gradient():
    model = MLP(ModelSpec(hidden=(16, 8), batch_norm=True, dropout=0.1))
    loss = nn.functional.cross_entropy(
        model(torch.randint(0, 256, (6, 28, 28), dtype=torch.uint8)), torch.arange(6)
    )
    loss.backward()
    for name, parameter in model.named_parameters():
        assert parameter.grad is not None, name
        assert torch.isfinite(parameter.grad).all(), name
        assert parameter.grad.abs().sum() > 0, name


def test_spec_round_trips_through_a_dict():
    spec = ModelSpec(hidden=(3, 2), activation="tanh", dropout=0.1, mean=0.2, std=0.4)
    assert ModelSpec.from_dict(spec.to_dict()) == spec


@pytest.mark.parametrize("name", CONFIG_OPTIMIZERS)
def test_optimizers_are_built_with_their_settings(name):
    momentum = 0.9 if name in ("sgd", "rmsprop") else 0.0
    config = OptimizerConfig(name=name, lr=0.05, weight_decay=0.01, momentum=momentum)
    optimizer = build_optimizer(MLP(ModelSpec(hidden=(4,))).parameters(), config)
    assert isinstance(optimizer, OPTIMIZERS[name])
    group = optimizer.param_groups[0]
    assert (group["lr"], group["weight_decay"]) == (0.05, 0.01)
    if momentum:
        assert group["momentum"] == 0.9
    # One fused kernel per step where PyTorch has one for the device (CPU here).
    assert group.get("fused") is (True if name in FUSED else None)


@pytest.mark.parametrize("name", CONFIG_OPTIMIZERS)
def test_optimizer_step_changes_every_parameter(name):
    model = MLP(ModelSpec(hidden=(4,)))
    optimizer = build_optimizer(model.parameters(), OptimizerConfig(name=name, lr=0.1))
    before = [parameter.detach().clone() for parameter in model.parameters()]
    pixels = torch.randint(0, 256, (8, 28, 28), dtype=torch.uint8)
    nn.functional.cross_entropy(model(pixels), torch.arange(8)).backward()
    optimizer.step()
    for old, new in zip(before, model.parameters(), strict=True):
        assert not torch.equal(old, new)
