"""What every tracker shares: the Tracker observer, Trackers (several as one) and the flat
config they log.

Tracking never costs a run: a tracker that cannot write (a server that is down or
refuses) says once what was not logged and the training goes on. Only a mistake the user
can fix before training (a missing package, an experiment that was deleted) stops it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from mlptrain.config.files import config_to_dict, flatten
from mlptrain.config.schema import Config
from mlptrain.training.hooks import HookList, Hooks

INSTALL = "pip install 'mlptrain[tracking]'"


def flat_config(config: Config) -> dict[str, Any]:
    """The resolved config as dotted keys with plain values (lists as JSON text)."""
    return {
        key: value if isinstance(value, (int, float, str, bool)) else json.dumps(value)
        for key, value in flatten(config_to_dict(config)).items()
    }


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
