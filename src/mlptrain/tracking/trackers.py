"""The trackers a run's config asks for (output.tensorboard, output.mlflow), opened as
one observer of the training loop."""

from __future__ import annotations

from pathlib import Path

from mlptrain.config.schema import Config
from mlptrain.tracking.base import Tracker, Trackers


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
