"""The one metric that decides "best": `training.select_best_by`.

It picks the epoch that best.pt holds, drives early stopping, is a sweep's objective
(Optuna's direction and pruning follow it) and fills every table's "best epoch" and
"best val" columns. No torch here: sweeps and reports read metrics.csv with it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

# metric -> True when higher is better
MONITORS = {"val_accuracy": True, "val_loss": False}


@dataclass(frozen=True)
class Monitor:
    metric: str = "val_accuracy"

    def __post_init__(self) -> None:
        if self.metric not in MONITORS:
            raise ValueError(f"unknown monitored metric {self.metric!r}")

    @property
    def maximize(self) -> bool:
        return MONITORS[self.metric]

    @property
    def direction(self) -> str:
        """Optuna's word for it."""
        return "maximize" if self.maximize else "minimize"

    @property
    def label(self) -> str:
        return self.metric.replace("_", " ").replace("val ", "validation ")

    def value(self, record: Mapping[str, Any]) -> float | None:
        """The metric in an epoch record (a metrics.csv row's text is read as a number)."""
        value = record.get(self.metric)
        if value is None or value == "":
            return None
        return float(value)

    def better(self, value: float, than: float | None, min_delta: float = 0.0) -> bool:
        """Whether `value` improves on `than` by more than `min_delta` (None: always)."""
        if than is None:
            return True
        return value > than + min_delta if self.maximize else value < than - min_delta

    def sort_key(self, value: float | None) -> tuple[bool, float]:
        """Best first when sorted; a missing value last."""
        if value is None:
            return (True, 0.0)
        return (False, -value if self.maximize else value)

    def best_epoch(self, history: Iterable[Mapping[str, Any]]) -> int | None:
        """The epoch best.pt holds after these records: the first best on ties; without
        validation, the last epoch; None for no epochs."""
        best_epoch, best = None, None
        for record in history:
            value = self.value(record)
            if value is None:
                best_epoch = int(record["epoch"])
            elif self.better(value, best):
                best_epoch, best = int(record["epoch"]), value
        return best_epoch
