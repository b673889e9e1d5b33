"""Device resolution, seeding, random-number states and determinism switches."""

from __future__ import annotations

import os
import platform
import random
from typing import Any, NamedTuple

import numpy as np
import torch

from mlptrain.errors import UsageError
from mlptrain.training.arithmetic import Gemm, bf16_pays_off


def resolve_device(name: str) -> torch.device:
    """Turn the config's `device` (auto | cpu | cuda | cuda:N) into a usable torch.device."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise UsageError(
                f"device {name!r} was asked for, but this machine has no usable CUDA GPU; "
                "use device: cpu (or auto)"
            )
        count = torch.cuda.device_count()
        if device.index is not None and device.index >= count:
            raise UsageError(
                f"device {name!r} does not exist: this machine has {count} CUDA device(s), "
                f"cuda:0 to cuda:{count - 1}"
            )
    return device


def describe_machine(device: torch.device) -> dict[str, Any]:
    """What a recorded timing or result was measured on."""
    return {
        "cpu": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "torch": str(torch.__version__),
        "torch_threads": torch.get_num_threads(),
        "device": str(device),
        "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
    }


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.partition(":")[2].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


class Amp(NamedTuple):
    """The autocast dtype a run trains with (None: float32) and why, for its log."""

    dtype: torch.dtype | None
    reason: str


def resolve_amp(mode: str, device: torch.device, gemms: list[Gemm] | None = None) -> Amp:
    """The autocast dtype for `training.amp`.

    `auto` takes bf16 on CUDA GPUs that support it. On a CPU, bf16 instructions
    (AVX512-BF16 or AMX) are necessary but not enough: oneDNN's bf16 products are about 5x
    faster than float32 on an Intel Xeon with AMX, about 1.5x on an AMD EPYC with
    AVX512-BF16, and slower than float32 on an Intel Xeon with AVX512-BF16 but no AMX
    (docs/performance.md). So `auto` times the run's own matrix products (`gemms`, a few
    milliseconds) in both dtypes and takes bf16 only where it is faster by BF16_MARGIN.
    """
    if mode == "none":
        return Amp(None, "float32")
    if mode == "auto":
        if not _native_bf16(device):
            return Amp(None, "float32 (amp auto: no native bf16 on this device)")
        if device.type != "cpu" or gemms is None:
            return Amp(torch.bfloat16, "bf16 autocast")
        faster, speedup = bf16_pays_off(gemms, device)
        measured = f"bf16 matrix products measured {speedup:.2f}x float32's speed here"
        if faster:
            return Amp(torch.bfloat16, f"bf16 autocast (amp auto: {measured})")
        return Amp(None, f"float32 (amp auto: {measured})")
    if device.type not in ("cuda", "cpu"):
        raise UsageError(
            f"training.amp: {mode} runs on CUDA devices and bf16-capable CPUs only, and this "
            f"run is on {device}; set training.amp: none or auto"
        )
    if not _native_bf16(device):
        where = torch.cuda.get_device_name(device) if device.type == "cuda" else _cpu_model()
        raise UsageError(
            f"training.amp: {mode} needs bfloat16 support (a recent GPU, or a CPU with "
            f"AVX512-BF16 or AMX), and {where} has none, so it would run slower than float32; "
            "set training.amp: none or auto"
        )
    return Amp(torch.bfloat16, "bf16 autocast")


def _native_bf16(device: torch.device) -> bool:
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return device.type == "cpu" and cpu_has_bf16()


def cpu_has_bf16() -> bool:
    """Whether oneDNN runs bfloat16 matrix products natively on this CPU."""
    probe = getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", None)
    try:
        return bool(torch.backends.mkldnn.is_available() and probe is not None and probe())
    except RuntimeError:
        return False


def set_deterministic(enabled: bool) -> None:
    """PyTorch's deterministic algorithms (an error where an operation has none)."""
    if enabled:
        # cuBLAS needs this set before its first use to be deterministic.
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.backends.cudnn.benchmark = False
    # Only when it changes: the first call costs a second of lazy imports.
    if torch.are_deterministic_algorithms_enabled() != enabled:
        torch.use_deterministic_algorithms(enabled)


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (all devices) so a run repeats on the same machine."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state(shuffle: torch.Generator) -> dict[str, Any]:
    """Every random-number state a run uses, as tensors and primitives (checkpoint-safe)."""
    kind, keys, position, has_gauss, cached = np.random.get_state()
    return {
        "python": random.getstate(),
        "numpy": {
            "kind": kind,
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "position": int(position),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "shuffle": shuffle.get_state(),
    }


def restore_rng_state(state: dict[str, Any], shuffle: torch.Generator) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    numpy_state = state["numpy"]
    np.random.set_state(
        (
            numpy_state["kind"],
            numpy_state["keys"].numpy().astype(np.uint32),
            numpy_state["position"],
            numpy_state["has_gauss"],
            numpy_state["cached_gaussian"],
        )
    )
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    shuffle.set_state(state["shuffle"])
