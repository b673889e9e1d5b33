"""A sweep's settings: what sweep.json holds, typed, written and read in one place."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from mlptrain.config.monitor import Monitor
from mlptrain.config.schema import Config
from mlptrain.errors import UsageError
from mlptrain.sweep.spec import ParamSpec, grid_points, parse_grid, parse_param

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


def plan_sweep(
    base: Config,
    *,
    grid: Sequence[str] = (),
    param: Sequence[str] = (),
    search: str | None = None,
    trials: int | None = None,
    prune: bool = False,
    stack: int | None = None,
    workers: int | None = None,
    devices: str | None = None,
    storage: str | None = None,
    study: str | None = None,
    heartbeat: float = 10.0,
    grace: float = 60.0,
) -> SweepSettings:
    """The sweep that mlp-sweep's flags describe (each argument is the flag of that name,
    as given), checked for values and flags that do not go together."""
    mode = search or ("optuna" if param else "grid")
    pinned = parse_devices(devices) if devices is not None else []
    if stack is not None and stack < 2:
        raise UsageError(f"--stack takes at least 2 trials per group, got {stack}")
    if stack and prune:
        raise UsageError(
            "--stack and --prune do not go together: trials trained together end together, "
            "so one cannot be stopped alone (early stopping in the config still works)"
        )
    if stack and base.training.compile:
        raise UsageError("--stack cannot train models with training.compile: true together")
    common = {
        "workers": workers or len(pinned) or 1,
        "monitor": base.training.select_best_by,
        "devices": pinned,
        "stack": stack or 0,
    }
    if mode == "grid":
        if not grid or param or trials or prune or storage:
            raise UsageError(
                "a grid sweep takes --grid KEY=V1,V2,... (one or more) and none of --param, "
                "--trials, --prune, --storage; use --search optuna for those"
            )
        axes = [parse_grid(text) for text in grid]
        keys = [key for key, _ in axes]
        return SweepSettings("grid", keys, seed=base.seed, points=grid_points(axes), **common)
    if grid or not param or not trials or trials < 1:
        raise UsageError(
            "--search optuna takes --trials N and one or more --param KEY=KIND:..., and no --grid"
        )
    if (storage is None) != (study is None):
        raise UsageError("--storage and --study go together: name the study to share")
    if heartbeat <= 0 or grace <= heartbeat:
        raise UsageError("--heartbeat must be above 0 and --grace above --heartbeat")
    from mlptrain.sweep.storage import import_optuna, normalize, open_storage

    optuna = import_optuna()  # a missing package is reported before anything starts
    storage = normalize(storage) if storage else None
    if storage:
        open_storage(optuna, storage)  # unreachable, refused or driverless: exit 2 now
    specs = [parse_param(text) for text in param]
    if len({spec.key for spec in specs}) != len(specs):
        raise UsageError("each key may appear in one --param only")
    return SweepSettings(
        "optuna",
        [spec.key for spec in specs],
        # Sweeps sharing a study must not draw the same "random" points in lockstep.
        seed=None if storage else base.seed,
        params=specs,
        trials=trials,
        prune=prune,
        storage=storage,
        study=study,
        heartbeat=heartbeat,
        grace=grace,
        **common,
    )
