"""TensorBoard and MLflow, read back with their own readers: scalars, hparams, resume,
a local MLflow store, nested sweep runs, a real `mlflow server`, and one that is down."""

from __future__ import annotations

import csv
import json
import math
import os
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

import mlptrain
from mlptrain.errors import StopRun
from mlptrain.run.runner import resume
from mlptrain.training.hooks import Hooks

from .conftest import TRAIN_COUNT, config_document, run_cli, write_config

pytestmark = pytest.mark.slow(
    "real TensorBoard event files and MLflow stores and servers around real runs"
)
event_accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
mlflow = pytest.importorskip("mlflow")


def _document(tmp_path, source, **output):
    document = config_document(tmp_path, source, epochs=3)
    document["output"].update(output)
    return document


class _StopInEpoch(Hooks):
    """Asks to stop after `batches` batches of epoch `epoch`: an interrupt mid-epoch."""

    def __init__(self, epoch: int, batches: int) -> None:
        self.epoch, self.batches, self.seen, self.current = epoch, batches, 0, 0

    def epoch_start(self, epoch: int, batch_count: int) -> None:
        self.current = epoch

    def batch_end(self, samples: int) -> None:
        self.seen += self.current == self.epoch

    def should_stop(self) -> bool:
        return self.seen >= self.batches


def _events(folder):
    accumulator = event_accumulator.EventAccumulator(str(folder), size_guidance={"images": 0})
    accumulator.Reload()
    return accumulator


def _metrics(run):
    with open(run / "metrics.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def test_tensorboard_scalars_pictures_and_hparams(tmp_path, synthetic_source):
    document = _document(
        tmp_path, synthetic_source, tensorboard=True, tensorboard_every_n_batches=5
    )
    run = mlptrain.train(document, verbose=False).run_dir
    events = _events(run / "tensorboard")
    history = _metrics(run)
    val = events.Scalars("epoch/val_accuracy")
    assert [event.step for event in val] == [1, 2, 3]
    assert [event.value for event in val] == pytest.approx(
        [float(r["val_accuracy"]) for r in history]
    )
    for tag in ("epoch/train_loss", "epoch/val_loss", "epoch/lr", "epoch/samples_per_second"):
        assert len(events.Scalars(tag)) == 3
    test = json.loads((run / "test_metrics.json").read_text())
    assert events.Scalars("test/accuracy")[0].value == pytest.approx(test["accuracy"])
    assert {"test/confusion_matrix", "test/curves"} <= set(events.Tags()["images"])
    batches = _events(run / "tensorboard" / "batches").Scalars("batch/train_loss")
    assert batches and all(event.step % 5 == 0 for event in batches)
    hparams = _events(run / "tensorboard" / "hparams")
    content = hparams.PluginTagToContent("hparams")
    session = next(value for key, value in content.items() if "session_start" in key)
    assert b"optimizer.lr" in session and b"model.hidden" in session


def test_tensorboard_resume_purges_the_steps_after_the_saved_epoch(tmp_path, synthetic_source):
    document = _document(
        tmp_path, synthetic_source, tensorboard=True, tensorboard_every_n_batches=2
    )
    document["training"]["epochs"] = 4
    with pytest.raises(StopRun):
        mlptrain.train(document, verbose=False, observers=[_StopInEpoch(3, 7)])
    (run,) = (tmp_path / "runs").glob("tiny-*")
    saved = len(_metrics(run))  # epochs in last.pt: 2
    before = _events(run / "tensorboard" / "batches").Scalars("batch/train_loss")
    batches_per_epoch = math.ceil(TRAIN_COUNT * 0.9 / 32)  # the synthetic training split
    assert saved == 2 and max(e.step for e in before) > saved * batches_per_epoch  # epoch 3 began
    resume(run)
    epochs = [event.step for event in _events(run / "tensorboard").Scalars("epoch/val_accuracy")]
    assert epochs == [1, 2, 3, 4]
    steps = [
        event.step for event in _events(run / "tensorboard" / "batches").Scalars("batch/train_loss")
    ]
    assert steps == sorted(set(steps))  # no step twice, none out of order


def _client(uri):
    return mlflow.MlflowClient(tracking_uri=uri)


def test_mlflow_local_store_params_metrics_artifacts_and_resume(tmp_path, synthetic_source):
    document = _document(tmp_path, synthetic_source, mlflow={"experiment": "tests"})
    document["training"]["epochs"] = 4
    with pytest.raises(StopRun):
        mlptrain.train(document, verbose=False, observers=[_StopInEpoch(3, 3)])
    (run,) = (tmp_path / "runs").glob("tiny-*")
    record = json.loads((run / "mlflow.json").read_text())
    resume(run)  # continues the same MLflow run
    assert json.loads((run / "mlflow.json").read_text())["run_id"] == record["run_id"]
    client = _client(record["tracking_uri"])
    logged = client.get_run(record["run_id"])
    assert logged.info.status == "FINISHED"
    assert logged.data.params["optimizer.lr"] == "0.001"
    assert logged.data.params["model.hidden"] == "[32]"
    assert logged.data.tags["dataset"] == "fashion_mnist"
    assert logged.data.tags["mlptrain_version"] == mlptrain.__version__
    history = client.get_metric_history(record["run_id"], "val_accuracy")
    assert sorted(metric.step for metric in history) == [1, 2, 3, 4]
    test = json.loads((run / "test_metrics.json").read_text())
    assert logged.data.metrics["test_accuracy"] == pytest.approx(test["accuracy"])
    artifacts = {item.path for item in client.list_artifacts(record["run_id"])}
    assert {
        "config.yaml",
        "metrics.csv",
        "test_metrics.json",
        "report.md",
        "curves.png",
    } <= artifacts
    assert "best.pt" not in artifacts  # only with output.mlflow_log_checkpoints
    experiments = client.search_experiments()
    assert [e.name for e in experiments if e.experiment_id == logged.info.experiment_id] == [
        "tests"
    ]


def test_a_sqlite_store_keeps_its_artifacts_beside_it(tmp_path, synthetic_source, monkeypatch):
    """MLflow puts a database store's artifacts in ./mlruns of the current folder unless
    the experiment says otherwise; mlptrain's experiments keep them beside the database."""
    store = tmp_path / "store" / "mlflow.db"
    store.parent.mkdir()
    uri = f"sqlite:///{store}"
    document = _document(tmp_path, synthetic_source, mlflow={"tracking_uri": uri,
                                                             "experiment": "beside"})  # fmt: skip
    started_in = tmp_path / "elsewhere"
    started_in.mkdir()
    monkeypatch.chdir(started_in)
    result = mlptrain.train(document, verbose=False)
    record = json.loads((result.run_dir / "mlflow.json").read_text())
    assert record["tracking_uri"] == uri
    assert not (started_in / "mlruns").exists()
    experiment = _client(uri).get_experiment_by_name("beside")
    assert experiment.artifact_location == str(tmp_path / "store" / "mlartifacts" / "beside")
    logged = list((tmp_path / "store" / "mlartifacts" / "beside").rglob("test_metrics.json"))
    assert len(logged) == 1


def test_a_sweep_is_a_parent_run_with_nested_trials(tmp_path, synthetic_source):
    document = _document(tmp_path, synthetic_source, mlflow={"experiment": "sweeps"})
    document["training"]["epochs"] = 1
    config = write_config(tmp_path, document)
    result = run_cli("sweep", "--config", str(config), "--grid", "seed=1,2", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    (folder,) = (tmp_path / "runs").glob("sweep-*")
    parent = json.loads((folder / "mlflow.json").read_text())["run_id"]
    client = _client(f"sqlite:///{tmp_path / 'runs' / 'mlflow.db'}")
    (experiment,) = [e for e in client.search_experiments() if e.name == "sweeps"]
    runs = client.search_runs([experiment.experiment_id])
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent]
    assert len(children) == 2 and len(runs) == 3
    assert "results.csv" in {item.path for item in client.list_artifacts(parent)}
    compared = run_cli("compare", str(folder), "--no-group", "--json", cwd=tmp_path)
    rows = json.loads(compared.stdout)["rows"]  # mlp-compare reads a sweep folder's trials
    assert len(rows) == 2 and {row["seed"] for row in rows} == {1, 2}


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def mlflow_server(tmp_path):
    port = _free_port()
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mlflow",
            "server",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--backend-store-uri",
            f"sqlite:///{tmp_path / 'server.db'}",
            "--artifacts-destination",
            str(tmp_path / "artifacts"),
            "--workers",
            "1",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2):
                break
        except OSError:
            time.sleep(0.5)
    else:
        server.kill()
        pytest.fail("mlflow server did not start within 120 s")
    yield url
    os.killpg(server.pid, 15)
    server.wait(timeout=30)


def test_logging_to_a_real_tracking_server(tmp_path, synthetic_source, mlflow_server):
    config = write_config(tmp_path, _document(tmp_path, synthetic_source))
    result = run_cli(
        "train", "--config", str(config), "--mlflow", mlflow_server, "--quiet", cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr
    (run,) = (tmp_path / "runs").glob("tiny-*")
    record = json.loads((run / "mlflow.json").read_text())
    assert record["tracking_uri"] == mlflow_server
    client = _client(mlflow_server)
    logged = client.get_run(record["run_id"])
    assert logged.info.status == "FINISHED" and "val_accuracy" in logged.data.metrics
    assert "metrics.csv" in {item.path for item in client.list_artifacts(record["run_id"])}


def test_a_server_that_is_down_costs_one_warning_and_no_run(tmp_path, synthetic_source):
    config = write_config(tmp_path, _document(tmp_path, synthetic_source))
    down = f"http://127.0.0.1:{_free_port()}"
    result = run_cli("train", "--config", str(config), "--mlflow", down, "--quiet", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    output = result.stdout + result.stderr
    assert output.count("MLflow at") == 1 and "Traceback" not in output
    (run,) = (tmp_path / "runs").glob("tiny-*")
    assert (run / "test_metrics.json").exists() and (run / "report.md").exists()


def test_tracking_mistakes_are_exit_2_before_training(tmp_path, synthetic_source):
    config = write_config(tmp_path, _document(tmp_path, synthetic_source))
    bad_uri = run_cli("train", "--config", str(config), "--mlflow", "htp:/x", cwd=tmp_path)
    assert bad_uri.returncode == 2 and "output.mlflow.tracking_uri" in bad_uri.stderr
    store = f"sqlite:///{tmp_path / 'runs' / 'mlflow.db'}"
    client = _client(store)
    client.delete_experiment(client.create_experiment("gone", str(tmp_path / "artifacts")))
    deleted = run_cli(
        "train",
        "--config",
        str(config),
        "--mlflow",
        store,
        "--set",
        "output.mlflow.experiment=gone",
        cwd=tmp_path,
    )
    assert deleted.returncode == 2 and "'gone' was deleted" in deleted.stderr
    code = (
        "import sys; sys.modules['mlflow'] = None\n"
        "from mlptrain.cli.train import main\n"
        f"sys.exit(main(['--config', {str(config)!r}, '--mlflow']))\n"
    )
    missing = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=300
    )
    assert missing.returncode == 2 and "pip install 'mlptrain[tracking]'" in missing.stderr
    assert not list((tmp_path / "runs").glob("tiny-*"))  # no run folder was left


def test_mlflow_models_serve_answers_like_mlp_serve(tmp_path, synthetic_source):
    """The run's best.pt logged as an MLflow model (pyfunc from code) and served by the
    real `mlflow models serve --env-manager local`: JSON pixel arrays in, the same
    classes and probabilities out as mlp-serve gives for the same pixels."""
    import httpx
    import numpy as np

    from .conftest import synthetic_images
    from .servers import ServeProcess, free_port

    document = _document(tmp_path, synthetic_source, mlflow={"experiment": "served"})
    result = mlptrain.train(document, verbose=False)
    record = json.loads((result.run_dir / "mlflow.json").read_text())
    artifacts = {item.path for item in _client(record["tracking_uri"]).list_artifacts(
        record["run_id"], "model")}  # fmt: skip
    assert {"model/MLmodel", "model/input_example.json"} <= artifacts
    pixels = synthetic_images(np.array([2, 5, 9]), np.random.default_rng(1)).astype(int)
    port = free_port()
    bin_folder = os.path.dirname(sys.executable)  # mlflow starts `uvicorn` by name
    env = {**os.environ, "MLFLOW_TRACKING_URI": record["tracking_uri"],
           "PATH": bin_folder + os.pathsep + os.environ.get("PATH", "")}  # fmt: skip
    server = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "models", "serve", "-m",
         f"runs:/{record['run_id']}/model", "--env-manager", "local", "--host", "127.0.0.1",
         "--port", str(port)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/ping", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.5)
        answer = httpx.post(f"http://127.0.0.1:{port}/invocations",
                            json={"inputs": pixels.tolist()}, timeout=60).json()  # fmt: skip
    finally:
        os.killpg(server.pid, 15)
        server.wait(timeout=30)
    with ServeProcess(str(result.run_dir / "best.pt")) as ours:
        expected = httpx.post(f"{ours.url}/predict",
                              json={"images": pixels.tolist()}).json()  # fmt: skip
    served = answer["predictions"]
    assert [row["class"] for row in served] == [p["class"] for p in expected["predictions"]]
    for row, theirs in zip(served, expected["predictions"], strict=True):
        assert row["index"] == theirs["index"]
        assert [row[name] for name in expected["classes"]] == pytest.approx(
            theirs["probabilities"], abs=1e-6
        )
