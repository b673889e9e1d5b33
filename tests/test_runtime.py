from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from mlptrain.errors import UsageError
from mlptrain.runtime import resolve_amp, resolve_device, seed_everything


def test_auto_and_cpu_devices():
    assert resolve_device("cpu") == torch.device("cpu")
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto").type == expected


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_without_a_gpu_is_a_usage_error():
    with pytest.raises(UsageError, match="no usable CUDA GPU"):
        resolve_device("cuda:0")


def test_bf16_autocast_is_cuda_only():
    assert resolve_amp("none", torch.device("cpu")) is None
    with pytest.raises(UsageError, match="CUDA devices only.*set training.amp: none"):
        resolve_amp("bf16", torch.device("cpu"))


def test_seeding_repeats_every_generator():
    draws = []
    for _ in range(2):
        seed_everything(11)
        draws.append((random.random(), np.random.rand(), torch.rand(1).item()))
    assert draws[0] == draws[1]
