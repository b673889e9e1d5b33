"""The run folder's observer: after every epoch, last.pt (and best.pt when it is the
best), then its metrics.csv row. last.pt is written first: it is what a resumed run
trusts, its history included."""

from __future__ import annotations

from typing import Any

from mlptrain.artifacts.checkpoint import build_checkpoint, save_checkpoint
from mlptrain.artifacts.rundir import RunDir
from mlptrain.config.files import config_to_dict
from mlptrain.errors import UsageError
from mlptrain.run.session import Session
from mlptrain.training.hooks import Hooks
from mlptrain.training.runtime import rng_state


class RunRecorder(Hooks):
    def __init__(self, session: Session, run: RunDir) -> None:
        self.session, self.run = session, run
        self.config_dict = config_to_dict(session.config)
        self.saved_epoch = session.state.epochs_done  # what last.pt holds

    def save(self, is_best: bool) -> None:
        """last.pt (and best.pt) at the state's last finished epoch."""
        state = self.session.state
        average = state.average
        checkpoint = build_checkpoint(
            model=average.evaluated(state.epochs_done) if average else self.session.model,
            optimizer=state.optimizer,
            epoch=state.epochs_done,
            config=self.config_dict,
            class_names=list(self.session.splits.info.class_names),
            metrics=state.history,
            rng=rng_state(state.generator),
            scheduler=state.schedule.state_dict(),
            trained=self.session.model if average else None,
            average=average.state() if average else None,
        )
        copies = [self.run.path / "best.pt"] if is_best else []
        try:
            save_checkpoint(self.run.path / "last.pt", checkpoint, *copies)
        except OSError as exc:
            raise UsageError(
                f"cannot write a checkpoint into {self.run.path}: {exc.strerror or exc}; "
                "the previous checkpoints are intact"
            ) from None
        self.saved_epoch = state.epochs_done

    def epoch_end(self, record: dict[str, Any], is_best: bool) -> None:
        self.save(is_best)
        self.run.append_metrics(record)
