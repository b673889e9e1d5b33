"""The Optuna study of a search: opened (or created) on its storage, its parameters'
distributions, and the heartbeat of a running trial."""

from __future__ import annotations

import contextlib
import threading
import time
from typing import Any

from mlptrain.errors import UsageError
from mlptrain.sweep.spec import ParamSpec
from mlptrain.sweep.storage import reason, shown


def open_study(
    optuna: Any,
    storage: Any,
    url: str | None,
    name: str,
    direction: str,
    pruner: Any,
    seed: int | None,
) -> Any:
    """The study `name` on `storage` (opened from `url`), created when it does not exist
    yet; sweeps starting at the same moment may race to create it, so each tries again."""
    for attempt in range(6):
        try:
            return optuna.create_study(
                storage=storage,
                study_name=name,
                direction=direction,
                load_if_exists=True,
                sampler=optuna.samplers.TPESampler(seed=seed),
                pruner=pruner,
            )
        except Exception as exc:  # two sweeps creating one study at the same moment
            error = exc
            time.sleep(0.5 * (attempt + 1))
    raise UsageError(f"cannot open the study {name!r} in {shown(url)}: {reason(error)}")


def distribution(optuna: Any, spec: ParamSpec) -> Any:
    """Optuna's distribution for a --param spec."""
    distributions = optuna.distributions
    if spec.kind == "choice":
        return distributions.CategoricalDistribution(list(spec.choices))
    if spec.kind in ("int", "logint"):
        return distributions.IntDistribution(
            int(spec.low), int(spec.high), log=spec.kind == "logint"
        )
    return distributions.FloatDistribution(spec.low, spec.high, log=spec.kind == "loguniform")


class Heartbeat:
    """Time stamps in a running trial's user attributes, every `interval` seconds."""

    def __init__(self, trial: Any, interval: float) -> None:
        self.trial, self.interval = trial, interval
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._beat, daemon=True)

    def _beat(self) -> None:
        while not self.done.wait(self.interval):
            # A storage hiccup is ignored here; the trial's end reports a lasting loss.
            with contextlib.suppress(Exception):
                self.trial.set_user_attr("heartbeat", time.time())

    def __enter__(self) -> Heartbeat:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.done.set()
        self.thread.join()
