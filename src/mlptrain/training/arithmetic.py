"""The arithmetic limit of a training step: its matrix products, their FLOPs, and how
fast this machine multiplies matrices of those shapes in a dtype.

A fully-connected network's training step is, arithmetically, its matrix products: per
layer the forward product, the weight gradient and (except for the first layer, whose
input needs no gradient) the input gradient. Timing exactly those shapes on the device
gives the fastest the step could possibly run, the bound that `scripts/benchmark_presets.py`
compares the measured step with, and the evidence `training.amp: auto` chooses by.
"""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass

import torch

from mlptrain.model.mlp import ModelSpec

# amp auto takes bf16 only when its products are at least this much faster than float32,
# so that machine noise cannot flip the choice between two runs on one machine.
BF16_MARGIN = 1.2


@dataclass(frozen=True)
class Gemm:
    """One matrix product [m, k] @ [k, n] of a training step."""

    m: int
    k: int
    n: int
    role: str

    @property
    def flops(self) -> int:
        return 2 * self.m * self.k * self.n


def training_gemms(spec: ModelSpec, batch_size: int) -> list[Gemm]:
    """The matrix products of one training step of the MLP `spec` describes."""
    widths = [spec.input_size, *spec.hidden, spec.num_classes]
    gemms = []
    for layer, (inputs, outputs) in enumerate(itertools.pairwise(widths), 1):
        gemms.append(Gemm(batch_size, inputs, outputs, f"layer {layer} forward"))
        if layer > 1:
            gemms.append(Gemm(batch_size, outputs, inputs, f"layer {layer} input gradient"))
        gemms.append(Gemm(outputs, batch_size, inputs, f"layer {layer} weight gradient"))
    return gemms


@dataclass(frozen=True)
class StepLimit:
    """The fastest a training step's matrix products ran here in one dtype."""

    dtype: torch.dtype
    flops: int
    seconds: float  # per step: the arithmetic-bound step time

    @property
    def flops_per_second(self) -> float:
        return self.flops / self.seconds


def step_limit(
    gemms: list[Gemm],
    dtype: torch.dtype,
    device: torch.device,
    rounds: int = 5,
    passes: int = 4,
) -> StepLimit:
    """Time the step's products in `dtype` on `device`: the fastest of `rounds` rounds of
    `passes` back-to-back passes (noise only ever slows a round down)."""
    operands = [
        (
            torch.randn(gemm.m, gemm.k, device=device).to(dtype),
            torch.randn(gemm.k, gemm.n, device=device).to(dtype),
        )
        for gemm in gemms
    ]

    def one_pass() -> None:
        for left, right in operands:
            torch.mm(left, right)

    one_pass()  # warm-up: kernel selection, caches, allocations
    best = float("inf")
    for _ in range(rounds):
        _synchronize(device)
        start = time.perf_counter()
        for _ in range(passes):
            one_pass()
        _synchronize(device)
        best = min(best, (time.perf_counter() - start) / passes)
    return StepLimit(dtype, sum(gemm.flops for gemm in gemms), best)


def bf16_pays_off(gemms: list[Gemm], device: torch.device) -> tuple[bool, float]:
    """Whether bf16 products beat float32 here by BF16_MARGIN, and by how much (the float32
    time over the bf16 time) on this step's own shapes."""
    float32 = step_limit(gemms, torch.float32, device)
    bf16 = step_limit(gemms, torch.bfloat16, device)
    speedup = float32.seconds / bf16.seconds
    return speedup >= BF16_MARGIN, speedup


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
