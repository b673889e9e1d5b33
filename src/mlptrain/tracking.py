"""A run seen by TensorBoard and MLflow: observers of the training loop that also record
the end of the run (test metrics, pictures, hyperparameters).

Tracking never costs a run: a tracker that cannot write (a server that is down or
refuses) says once what was not logged and the training goes on. Only a mistake the user
can fix before training (a missing package, an experiment that was deleted) stops it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from mlptrain.config import Config, config_to_dict
from mlptrain.errors import UsageError
from mlptrain.logs import get_logger
from mlptrain.trainer import HookList, Hooks

log = get_logger()
INSTALL = "pip install 'mlptrain[tracking]'"
MLFLOW_RECORD = "mlflow.json"  # in the run folder: the MLflow run that --resume continues
PARENT_ENV = "MLPTRAIN_MLFLOW_PARENT_RUN"  # a sweep's parent run, for its trials
ARTIFACTS = (
    "config.yaml",
    "metrics.csv",
    "test_metrics.json",
    "confusion_matrix.csv",
    "curves.png",
    "confusion_matrix.png",
    "misclassified.png",
    "samples.png",
    "report.md",
)
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
        trackers.append(TensorBoardTracker(config, run, start_epoch))
    if output.mlflow is not None:
        trackers.append(MlflowTracker(config, run, start_epoch))
    return Trackers(trackers)


# --- TensorBoard --------------------------------------------------------------------------


class TensorBoardTracker(Tracker):
    """Event files in <run>/tensorboard/: per-epoch scalars (step = epoch), the batch loss
    every N batches in tensorboard/batches/, and at the end the test metrics, the
    pictures and the hyperparameters with the final metrics (the HParams tab)."""

    def __init__(self, config: Config, run: Path, start_epoch: int) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise UsageError(
                f"output.tensorboard needs the tensorboard package: {INSTALL}"
            ) from None
        self.config, self.every = config, config.output.tensorboard_every_n_batches
        folder = run / "tensorboard"
        # purge_step: a resumed run drops the steps after its last saved epoch.
        purge = start_epoch + 1 if start_epoch else None
        self.writer = SummaryWriter(str(folder), purge_step=purge)
        self.writer_type, self.folder, self.start_epoch = SummaryWriter, folder, start_epoch
        self.batches: Any = None  # opened at the first epoch, when the batch count is known
        self.batch_step = 0

    def epoch_start(self, epoch: int, batch_count: int) -> None:
        self.batch_step = (epoch - 1) * batch_count  # step = batches since the run began
        if self.every and self.batches is None:
            purge = self.batch_step + 1 if self.start_epoch else None
            self.batches = self.writer_type(str(self.folder / "batches"), purge_step=purge)

    def batch_loss(self, loss) -> None:
        self.batch_step += 1
        if self.batches is not None and self.batch_step % self.every == 0:
            self.batches.add_scalar("batch/train_loss", loss.item(), self.batch_step)

    def epoch_end(self, record: dict[str, Any], is_best: bool) -> None:
        epoch = int(record["epoch"])
        for key in EPOCH_KEYS:
            if record.get(key) is not None:
                self.writer.add_scalar(f"epoch/{key}", float(record[key]), epoch)
        self.writer.flush()

    def finish(self, run: Path, summary: dict[str, Any]) -> None:
        import numpy as np
        from PIL import Image

        step = int(summary.get("epoch") or 0)
        self.writer.add_scalar("test/accuracy", summary["accuracy"], step)
        self.writer.add_scalar("test/loss", summary["loss"], step)
        for name in ("confusion_matrix.png", "curves.png"):
            if (run / name).exists():
                with Image.open(run / name) as picture:
                    pixels = np.asarray(picture.convert("RGB"))
                self.writer.add_image(
                    f"test/{name.removesuffix('.png')}", pixels, step, dataformats="HWC"
                )
        metrics = {"hparam/test_accuracy": summary["accuracy"], "hparam/test_loss": summary["loss"]}
        self.writer.add_hparams(flat_config(self.config), metrics, run_name="hparams")
        self.abort("finished")

    def abort(self, status: str) -> None:
        self.writer.close()
        if self.batches is not None:
            self.batches.close()


# --- MLflow -------------------------------------------------------------------------------


def import_mlflow():
    # One try per request and a short timeout: a server that is down costs seconds, once.
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
    try:
        import mlflow  # noqa: F401
        from mlflow import MlflowClient
    except ImportError:
        raise UsageError(f"output.mlflow needs the mlflow package: {INSTALL}") from None
    return MlflowClient


def tracking_uri(config: Config) -> str:
    """The configured URI, or MLflow's own local backend (SQLite) under output.runs_dir."""
    uri = config.output.mlflow.tracking_uri
    return uri or f"sqlite:///{Path(config.output.runs_dir).resolve() / 'mlflow.db'}"


def experiment_id(client, config: Config) -> str:
    """The experiment's id, created when new; a deleted one is the user's to restore."""
    name = config.output.mlflow.experiment or "mlptrain"
    found = client.get_experiment_by_name(name)
    if found is not None:
        if found.lifecycle_stage == "deleted":
            raise UsageError(
                f"output.mlflow.experiment {name!r} was deleted in {tracking_uri(config)}; "
                "restore it (mlflow experiments restore) or choose another name"
            )
        return found.experiment_id
    location = None
    if not config.output.mlflow.tracking_uri:  # the local store keeps artifacts beside it
        location = str(Path(config.output.runs_dir).resolve() / "mlartifacts" / name)
    return client.create_experiment(name, artifact_location=location)


class MlflowTracker(Tracker):
    """One MLflow run per run folder: the config as params, per-epoch metrics (step =
    epoch), tags, the run's files as artifacts. Its id is kept in <run>/mlflow.json, so
    --resume continues it; a sweep's trials are nested under the sweep's run."""

    def __init__(self, config: Config, run: Path, start_epoch: int) -> None:
        client_type = import_mlflow()
        self.config, self.run, self.uri = config, run, tracking_uri(config)
        self.client = client_type(tracking_uri=self.uri)
        self.run_id: str | None = None
        self.failed = False
        try:
            self.run_id = self._continue() if start_epoch else None
            if self.run_id is None:
                self.run_id = self._create()
        except UsageError:
            raise
        except Exception as exc:  # down, refusing, unreachable: the run goes on untracked
            self._lost(exc, "the run")

    def _continue(self) -> str | None:
        try:
            record = json.loads((self.run / MLFLOW_RECORD).read_text())
        except (OSError, ValueError):
            return None
        self.client.update_run(record["run_id"], status="RUNNING")
        return record["run_id"]

    def _create(self) -> str:
        from mlflow.entities import Param

        import mlptrain

        tags = {
            "mlflow.runName": self.run.name,
            "dataset": self.config.data.dataset,
            "mlptrain_version": mlptrain.__version__,
            "run_folder": str(self.run.resolve()),
        }
        parent = os.environ.get(PARENT_ENV)
        if parent:
            tags["mlflow.parentRunId"] = parent
        created = self.client.create_run(experiment_id(self.client, self.config), tags=tags)
        run_id = created.info.run_id
        params = [Param(key, str(value)[:6000]) for key, value in flat_config(self.config).items()]
        for start in range(0, len(params), 100):
            self.client.log_batch(run_id, params=params[start : start + 100])
        record = {"run_id": run_id, "tracking_uri": self.uri}
        (self.run / MLFLOW_RECORD).write_text(json.dumps(record) + "\n")
        return run_id

    def _lost(self, exc: Exception, what: str) -> None:
        if not self.failed:
            reason = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
            log.warning(
                "warning: MLflow at %s is not reachable (%s); %s is not logged there, "
                "the run folder has everything",
                self.uri,
                reason,
                what,
            )
        self.failed = True

    def _call(self, what: str, function, *args, **kwargs) -> None:
        if self.run_id is None or self.failed:
            return
        try:
            function(*args, **kwargs)
        except Exception as exc:
            self._lost(exc, what)

    def epoch_end(self, record: dict[str, Any], is_best: bool) -> None:
        from mlflow.entities import Metric

        epoch, stamp = int(record["epoch"]), _now_ms()
        metrics = [
            Metric(key, float(record[key]), stamp, epoch)
            for key in EPOCH_KEYS
            if record.get(key) is not None
        ]
        self._call(f"epoch {epoch}", self.client.log_batch, self.run_id, metrics=metrics)

    def finish(self, run: Path, summary: dict[str, Any]) -> None:
        from mlflow.entities import Metric

        step, stamp = int(summary.get("epoch") or 0), _now_ms()
        metrics = [
            Metric(f"test_{key}", float(summary[key]), stamp, step) for key in ("accuracy", "loss")
        ]
        self._call("the test metrics", self.client.log_batch, self.run_id, metrics=metrics)
        names = [*ARTIFACTS]
        if self.config.output.mlflow_log_checkpoints:
            names += ["best.pt", "last.pt"]
        for name in names:
            if (run / name).exists():
                self._call(name, self.client.log_artifact, self.run_id, str(run / name))
        self._call("the end of the run", self.client.set_terminated, self.run_id, "FINISHED")
        if not self.failed and not self.config.output.mlflow.tracking_uri:
            log.info("MLflow: mlflow ui --backend-store-uri %s", self.uri)

    def abort(self, status: str) -> None:
        state = "KILLED" if status == "interrupted" else "FAILED"
        self._call("the end of the run", self.client.set_terminated, self.run_id, state)


def _now_ms() -> int:
    import time

    return int(time.time() * 1000)


class SweepParent:
    """A sweep's own MLflow run, with each trial's run nested under it (the trial
    processes find its id in the environment); kept in <sweep>/mlflow.json for --resume."""

    def __init__(self, config: Config, folder: Path) -> None:
        self.run_id: str | None = None
        if config.output.mlflow is None:
            return
        client_type = import_mlflow()
        self.client, self.folder = client_type(tracking_uri=tracking_uri(config)), folder
        record = folder / MLFLOW_RECORD
        try:
            if record.exists():
                self.run_id = json.loads(record.read_text())["run_id"]
                self.client.update_run(self.run_id, status="RUNNING")
            else:
                tags = {"mlflow.runName": folder.name, "sweep_folder": str(folder.resolve())}
                created = self.client.create_run(experiment_id(self.client, config), tags=tags)
                self.run_id = created.info.run_id
                record.write_text(json.dumps({"run_id": self.run_id}) + "\n")
        except UsageError:
            raise
        except Exception as exc:
            log.warning(
                "warning: MLflow is not reachable (%s); the sweep is not logged there",
                str(exc).splitlines()[0][:200],
            )
            self.run_id = None
            return
        os.environ[PARENT_ENV] = self.run_id

    def finish(self, status: str = "FINISHED") -> None:
        if self.run_id is None:
            return
        os.environ.pop(PARENT_ENV, None)
        try:
            for name in (
                "results.csv",
                "results.md",
                "sweep.png",
                "curves.png",
                "best_config.yaml",
            ):
                if (self.folder / name).exists():
                    self.client.log_artifact(self.run_id, str(self.folder / name))
            self.client.set_terminated(self.run_id, status)
        except Exception as exc:
            log.warning(
                "warning: MLflow: the sweep's results are not logged (%s)",
                str(exc).splitlines()[0][:200],
            )
