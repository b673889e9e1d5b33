"""What every tracker shares: the Tracker observer, Trackers (several as one), the flat
config and the epoch keys they log."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from mlptrain.config.files import config_to_dict
from mlptrain.config.schema import Config
from mlptrain.training.loop import HookList, Hooks

INSTALL = "pip install 'mlptrain[tracking]'"
EPOCH_KEYS = (
    "train_loss",
    "train_accuracy",
    "val_loss",
    "val_accuracy",
    "lr",
    "samples_per_second",
)


def flat_config(config: Config) -> dict[str, Any]:
    """The resolved config as dotted keys with plain values (lists as text)."""

    def walk(node: dict[str, Any], prefix: str) -> dict[str, Any]:
        flat: dict[str, Any] = {}
        for key, value in node.items():
            if isinstance(value, dict):
                flat.update(walk(value, f"{prefix}{key}."))
            else:
                plain = value if isinstance(value, (int, float, str, bool)) else json.dumps(value)
                flat[f"{prefix}{key}"] = plain
        return flat

    return walk(config_to_dict(config), "")


class Tracker(Hooks):
    def finish(self, run: Path, summary: dict[str, Any]) -> None:
        """The run ended normally; `summary` is best.pt's test summary."""

    def abort(self, status: str) -> None:
        """The run stopped early (interrupted, NaN): close what is open."""


class Trackers(HookList):
    """The trackers the config asks for, as one observer."""

    def __init__(self, trackers: list[Tracker]) -> None:
        super().__init__(*trackers)
        self.trackers = trackers

    def finish(self, run: Path, summary: dict[str, Any]) -> None:
        for tracker in self.trackers:
            tracker.finish(run, summary)

    def abort(self, status: str) -> None:
        for tracker in self.trackers:
            tracker.abort(status)
