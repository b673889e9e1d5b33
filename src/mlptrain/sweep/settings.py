"""A sweep's settings: what sweep.json holds, typed, written and read in one place."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from mlptrain.config.monitor import Monitor
from mlptrain.errors import UsageError
from mlptrain.sweep.spec import ParamSpec

SETTINGS_FILE = "sweep.json"


@dataclass(frozen=True)
class SweepSettings:
    mode: str  # "grid" | "optuna"
    keys: list[str]  # the swept config keys, in order
    workers: int = 1
    seed: int | None = None  # the sampler's seed; None when a shared study is used
    monitor: str = "val_accuracy"  # the base config's training.select_best_by
    points: list[dict[str, Any]] = field(default_factory=list)  # grid: every combination
    params: list[ParamSpec] = field(default_factory=list)  # optuna: the searched parameters
    trials: int = 0  # optuna: how many
    prune: bool = False
    storage: str | None = None  # optuna: the study's database URL
    study: str | None = None
    heartbeat: float = 10.0  # optuna: seconds between a running trial's signs of life
    grace: float = 60.0  # optuna: seconds without one before another sweep retries it
    devices: list[str] = field(default_factory=list)  # one worker per device; [] = unpinned
    stack: int = 0  # up to this many compatible trials trained together; 0: each alone

    @property
    def total(self) -> int:
        return len(self.points) if self.mode == "grid" else self.trials

    @property
    def objective(self) -> Monitor:
        return Monitor(self.monitor)

    def check_workers(self, workers: int) -> None:
        """Pinned workers need a device each."""
        if self.devices and workers > len(self.devices):
            raise UsageError(
                f"{workers} workers but {len(self.devices)} device(s): each worker needs its "
                "own; name a device twice to run two trials on it (--devices cuda:0,cuda:0)"
            )

    def log_keys(self) -> frozenset[str]:
        """Searched on a log scale, or grid values spanning more than 50x: plotted on one."""
        if self.mode == "optuna":
            return frozenset(spec.key for spec in self.params if spec.kind.startswith("log"))
        keys = set()
        for key in self.keys:
            values = [point[key] for point in self.points]
            numbers = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)
            if numbers and min(values) > 0 and max(values) / min(values) > 50:
                keys.add(key)
        return frozenset(keys)

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "mode": self.mode,
            "keys": self.keys,
            "workers": self.workers,
            "seed": self.seed,
            "monitor": self.monitor,
            "devices": self.devices,
            "stack": self.stack,
        }
        if self.mode == "grid":
            data["points"] = self.points
        else:
            data.update(
                params=[spec.to_dict() for spec in self.params],
                trials=self.trials,
                prune=self.prune,
                storage=self.storage,
                study=self.study,
                heartbeat=self.heartbeat,
                grace=self.grace,
            )
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SweepSettings:
        values = dict(data)
        values["params"] = [ParamSpec.from_dict(spec) for spec in values.get("params", [])]
        # Sweeps written before the monitor was recorded compared validation accuracy.
        values.setdefault("monitor", "val_accuracy")
        return cls(**values)


def parse_devices(text: str) -> list[str]:
    """`--devices`: `auto` (every visible GPU) or a comma list such as cuda:0,cuda:1 (a
    device named twice takes two workers); every device must exist on this machine."""
    import torch

    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if text.strip() == "auto":
        if not count:
            raise UsageError(
                "--devices auto: this machine has no visible CUDA GPU; use --devices cpu"
            )
        return [f"cuda:{index}" for index in range(count)]
    devices = [item.strip() for item in text.split(",")]
    for device in devices:
        if not re.fullmatch(r"cpu|cuda(:\d+)?", device):
            raise UsageError(f"--devices: {device!r} is not a device (cpu, cuda or cuda:N)")
        index = int(device.partition(":")[2] or 0) if device.startswith("cuda") else None
        if index is not None and index >= count:
            raise UsageError(
                f"--devices: {device} does not exist here ({count} visible CUDA GPU(s))"
            )
    return devices
