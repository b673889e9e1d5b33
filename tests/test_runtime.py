from __future__ import annotations

import os
import random

import numpy as np
import pytest
import torch

from mlptrain.errors import UsageError
from mlptrain.model.mlp import ModelSpec
from mlptrain.training import runtime
from mlptrain.training.arithmetic import BF16_MARGIN, training_gemms
from mlptrain.training.runtime import (
    resolve_amp,
    resolve_device,
    restore_rng_state,
    rng_state,
    seed_everything,
    set_deterministic,
)


def test_auto_and_cpu_devices():
    assert resolve_device("cpu") == torch.device("cpu")
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto").type == expected


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_without_a_gpu_is_a_usage_error():
    with pytest.raises(UsageError, match="no usable CUDA GPU"):
        resolve_device("cuda:0")


def test_bf16_autocast_needs_a_cpu_with_bf16_instructions(monkeypatch):
    cpu = torch.device("cpu")
    assert resolve_amp("none", cpu).dtype is None
    monkeypatch.setattr(runtime, "cpu_has_bf16", lambda: False)
    with pytest.raises(UsageError, match="needs bfloat16 support.*set training.amp: none or auto"):
        resolve_amp("bf16", cpu)
    assert resolve_amp("auto", cpu).dtype is None  # auto falls back to full precision
    monkeypatch.setattr(runtime, "cpu_has_bf16", lambda: True)
    assert resolve_amp("bf16", cpu).dtype is torch.bfloat16
    assert resolve_amp("auto", cpu).dtype is torch.bfloat16  # no shapes to time


@pytest.mark.parametrize("speedup, expected", [(3.0, torch.bfloat16), (1.1, None), (0.5, None)])
def test_amp_auto_on_a_cpu_takes_bf16_only_where_it_measures_faster(monkeypatch, speedup, expected):
    """Native bf16 instructions are not enough: auto times the step's own products."""
    monkeypatch.setattr(runtime, "cpu_has_bf16", lambda: True)
    monkeypatch.setattr(
        runtime, "bf16_pays_off", lambda gemms, device: (speedup >= BF16_MARGIN, speedup)
    )
    gemms = training_gemms(ModelSpec(hidden=(64,)), 32)
    amp = resolve_amp("auto", torch.device("cpu"), gemms)
    assert amp.dtype is expected
    assert f"measured {speedup:.2f}x float32's speed" in amp.reason
    assert amp.reason.startswith("bf16" if expected else "float32")


def test_bf16_autocast_elsewhere_is_a_usage_error():
    with pytest.raises(UsageError, match="CUDA devices and bf16-capable CPUs only"):
        resolve_amp("bf16", torch.device("meta"))


def test_seeding_repeats_every_generator():
    draws = []
    for _ in range(2):
        seed_everything(11)
        draws.append((random.random(), np.random.rand(), torch.rand(1).item()))
    assert draws[0] == draws[1]


def test_deterministic_switch(monkeypatch):
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    try:
        set_deterministic(True)
        assert torch.are_deterministic_algorithms_enabled()
        assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"
    finally:
        set_deterministic(False)
    assert not torch.are_deterministic_algorithms_enabled()


def test_rng_state_round_trip_is_checkpoint_safe(tmp_path):
    shuffle = torch.Generator().manual_seed(3)
    seed_everything(1)
    state = rng_state(shuffle)
    torch.save(state, tmp_path / "rng.pt")
    loaded = torch.load(tmp_path / "rng.pt", weights_only=True)
    expected = (
        random.random(),
        np.random.rand(),
        torch.rand(1).item(),
        torch.randperm(9, generator=shuffle).tolist(),
    )
    seed_everything(2)
    restore_rng_state(loaded, shuffle)
    again = (
        random.random(),
        np.random.rand(),
        torch.rand(1).item(),
        torch.randperm(9, generator=shuffle).tolist(),
    )
    assert again == expected
