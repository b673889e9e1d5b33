"""A sweep's settings: what sweep.json holds, typed, written and read in one place."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from mlptrain.monitor import Monitor
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

    @property
    def total(self) -> int:
        return len(self.points) if self.mode == "grid" else self.trials

    @property
    def objective(self) -> Monitor:
        return Monitor(self.monitor)

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
            )
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SweepSettings:
        values = dict(data)
        values["params"] = [ParamSpec.from_dict(spec) for spec in values.get("params", [])]
        # Sweeps written before the monitor was recorded compared validation accuracy.
        values.setdefault("monitor", "val_accuracy")
        return cls(**values)
