"""MLflow: one MLflow run per run folder, and a sweep's parent run."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from mlptrain.artifacts.metrics import CURVES
from mlptrain.config.schema import Config
from mlptrain.errors import UsageError
from mlptrain.tracking.base import INSTALL, Tracker, flat_config
from mlptrain.util.files import atomic_write_text
from mlptrain.util.logs import get_logger

log = get_logger()
MLFLOW_RECORD = "mlflow.json"  # in the run folder: the MLflow run that --resume continues
MODEL_FOLDER = "model"  # the run's artifact folder holding best.pt as an MLflow model
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


def import_mlflow():
    # One try per request and a short timeout: a server that is down costs seconds, once.
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
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
    return client.create_experiment(name, artifact_location=artifact_location(config, name))


def artifact_location(config: Config, name: str) -> str | None:
    """A new experiment's artifacts: beside a SQLite store (the local one under
    output.runs_dir included), in mlartifacts/<experiment>/, not in ./mlruns of whatever
    folder the run started from (MLflow's default for database stores); None for a
    server or another database, whose own setting decides."""
    uri = tracking_uri(config)
    if not uri.startswith("sqlite:///"):
        return None
    database = Path(uri.removeprefix("sqlite:///"))  # sqlite:////abs/x.db: /abs/x.db
    return str(database.resolve().parent / "mlartifacts" / name)


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
        atomic_write_text(self.run / MLFLOW_RECORD, json.dumps(record) + "\n")
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
            for key in CURVES
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
        if (run / "best.pt").exists():
            self._call("the model", self._log_model, run / "best.pt")
        names = [*ARTIFACTS]
        if self.config.output.mlflow_log_checkpoints:
            names += ["best.pt", "last.pt"]
        for name in names:
            if (run / name).exists():
                self._call(name, self.client.log_artifact, self.run_id, str(run / name))
        self._call("the end of the run", self.client.set_terminated, self.run_id, "FINISHED")
        if not self.failed and not self.config.output.mlflow.tracking_uri:
            log.info("MLflow: mlflow ui --backend-store-uri %s", self.uri)

    def _log_model(self, checkpoint: Path) -> None:
        """best.pt as an MLflow model in the run's artifacts at model/ (serve it with
        mlflow models serve -m runs:/<run id>/model --env-manager local)."""
        import tempfile

        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / MODEL_FOLDER
            save_mlflow_model(checkpoint, path)
            self.client.log_artifacts(self.run_id, str(path), MODEL_FOLDER)

    def abort(self, status: str) -> None:
        state = "KILLED" if status == "interrupted" else "FAILED"
        self._call("the end of the run", self.client.set_terminated, self.run_id, state)


def save_mlflow_model(checkpoint: Path, path: Path) -> None:
    """A checkpoint as an MLflow pyfunc model (logged from code: tracking/mlflow_model.py)
    in the new folder `path`, with its input signature (N x H x W whole-number pixels)
    and an input example."""
    import logging

    import mlflow.pyfunc
    import numpy as np
    from mlflow.models import infer_signature

    from mlptrain.tracking import mlflow_model

    import_mlflow()
    model = mlflow_model.CheckpointModel()
    artifacts = {mlflow_model.CHECKPOINT: str(checkpoint)}
    context = mlflow.pyfunc.PythonModelContext(artifacts, None)
    model.load_context(context)
    height, width = model.model.spec.image_size
    example = np.zeros((2, height, width), dtype=np.int64)
    example[1, height // 4 : 3 * height // 4, width // 2 - 1 : width // 2 + 2] = 255
    signature = infer_signature(example, model.predict(context, example))
    chatty = logging.getLogger("mlflow")
    level = chatty.level
    chatty.setLevel(logging.WARNING)  # its notes on checking the example, not the run's
    try:
        mlflow.pyfunc.save_model(
            path,
            python_model=mlflow_model.__file__,
            artifacts=artifacts,
            signature=signature,
            input_example=example,
        )
    finally:
        chatty.setLevel(level)


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
                atomic_write_text(record, json.dumps({"run_id": self.run_id}) + "\n")
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
