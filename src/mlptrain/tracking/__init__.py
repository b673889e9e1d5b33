"""A run seen by TensorBoard and MLflow (tensorboard.py, mlflow.py): observers of the
training loop that also record the end of the run (test metrics, pictures, hyperparameters).

Tracking never costs a run: a tracker that cannot write (a server that is down or
refuses) says once what was not logged and the training goes on. Only a mistake the user
can fix before training (a missing package, an experiment that was deleted) stops it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from mlptrain.config import Config
from mlptrain.config_files import config_to_dict
from mlptrain.trainer import HookList, Hooks

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


def open_trackers(config: Config, run: Path, start_epoch: int) -> Trackers:
    """The trackers of `config.output` for the run folder `run`, continuing after
    `start_epoch` finished epochs (0 for a new run)."""
    trackers: list[Tracker] = []
    output = config.output
    if output.tensorboard:
        from mlptrain.tracking.tensorboard import TensorBoardTracker

        trackers.append(TensorBoardTracker(config, run, start_epoch))
    if output.mlflow is not None:
        from mlptrain.tracking.mlflow import MlflowTracker

        trackers.append(MlflowTracker(config, run, start_epoch))
    return Trackers(trackers)
