"""The commands end to end, as subprocesses, the way a user runs them."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import yaml

from mlptrain.artifacts.checkpoint import load_checkpoint
from mlptrain.config.schema import validate
from mlptrain.training.runtime import cpu_has_bf16

from .conftest import REPO, config_document, require_real_data, run_cli, write_config

RUN_FILES = {
    "config.yaml",
    "metrics.csv",
    "best.pt",
    "last.pt",
    "test_metrics.json",
    "confusion_matrix.csv",
    "train.log",
    "curves.png",
    "confusion_matrix.png",
    "misclassified.png",
    "samples.png",
    "report.md",
}


def train(tmp_path: Path, config: dict, *args: str):
    path = write_config(tmp_path, config)
    result = run_cli("train", "--config", str(path), *args, cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    runs = sorted((tmp_path / "runs").iterdir())
    assert len(runs) == 1
    return result, runs[0]


@pytest.fixture(scope="module")
def trained(tmp_path_factory, synthetic_source):
    """One real mlp-train run on the synthetic data, shared by the tests below."""
    tmp_path = tmp_path_factory.mktemp("cli")
    config = config_document(tmp_path, synthetic_source)
    result, run = train(tmp_path, config, "--set", "optimizer.lr=3e-3", "--name", "cli-test")
    return tmp_path, result, run


def test_run_folder_holds_every_file(trained):
    _, result, run = trained
    assert {path.name for path in run.iterdir()} == RUN_FILES
    assert run.name.startswith("cli-test-")
    last_line = result.stdout.strip().splitlines()[-1]
    test_accuracy = json.loads((run / "test_metrics.json").read_text())["accuracy"]
    assert str(run) in last_line and f"test accuracy: {test_accuracy:.4f}" in last_line


def test_resolved_config_is_runnable_and_records_overrides(trained):
    _, _, run = trained
    config = validate(yaml.safe_load((run / "config.yaml").read_text()))
    assert config.optimizer.lr == 3e-3
    assert config.name == "cli-test"


def test_metrics_has_one_row_per_epoch(trained):
    _, _, run = trained
    with open(run / "metrics.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [row["epoch"] for row in rows] == ["1", "2", "3"]
    assert all(row["val_accuracy"] and row["train_loss"] for row in rows)


def test_best_checkpoint_is_the_best_validation_epoch(trained):
    _, _, run = trained
    best, last = load_checkpoint(run / "best.pt"), load_checkpoint(run / "last.pt")
    accuracies = [row["val_accuracy"] for row in last["metrics"]]
    assert last["epoch"] == 3
    assert best["epoch"] == accuracies.index(max(accuracies)) + 1
    report = json.loads((run / "test_metrics.json").read_text())
    assert report["epoch"] == best["epoch"]
    assert report["class_names"][0] == "T-shirt/top"
    assert set(report["report"]) >= {"Ankle boot", "macro avg", "weighted avg"}


def test_log_file_keeps_what_was_printed(trained):
    _, result, run = trained
    log = (run / "train.log").read_text()
    assert log.strip().splitlines() == result.stdout.strip().splitlines()


def test_confusion_matrix_csv(trained):
    _, _, run = trained
    with open(run / "confusion_matrix.csv", newline="") as handle:
        rows = list(csv.reader(handle))
    assert rows[0][1:] == json.loads((run / "test_metrics.json").read_text())["class_names"]
    counts = sum(int(cell) for row in rows[1:] for cell in row[1:])
    assert counts == json.loads((run / "test_metrics.json").read_text())["n"]


def test_pictures_and_report(trained):
    _, _, run = trained
    for name in ("curves.png", "confusion_matrix.png", "misclassified.png", "samples.png"):
        assert (run / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
    report = (run / "report.md").read_text()
    accuracy = json.loads((run / "test_metrics.json").read_text())["accuracy"]
    assert f"Test accuracy **{accuracy:.4f}**" in report
    assert "![curves.png](curves.png)" in report and "| Ankle boot |" in report
    assert "```yaml" in report


def test_eval_reproduces_the_recorded_test_accuracy(trained):
    tmp_path, _, run = trained
    recorded = json.loads((run / "test_metrics.json").read_text())
    result = run_cli("evaluate", "--checkpoint", str(run / "best.pt"), "--json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    printed = json.loads(result.stdout)
    assert printed["accuracy"] == recorded["accuracy"]
    assert printed["loss"] == pytest.approx(recorded["loss"], rel=1e-6)
    assert printed["confusion_matrix"] == recorded["confusion_matrix"]
    assert printed["n"] == recorded["n"]
    for name in (
        "metrics.json",
        "confusion_matrix.csv",
        "confusion_matrix.png",
        "misclassified.png",
    ):
        assert (run / f"eval_test_{name}").exists(), name


def test_eval_val_split_matches_the_training_record(trained):
    tmp_path, _, run = trained
    out = tmp_path / "eval-out"
    result = run_cli(
        "evaluate",
        "--checkpoint",
        str(run / "best.pt"),
        "--split",
        "val",
        "--out-dir",
        str(out),
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    best = load_checkpoint(run / "best.pt")
    recorded = best["metrics"][best["epoch"] - 1]["val_accuracy"]
    written = json.loads((out / "eval_val_metrics.json").read_text())
    assert written["accuracy"] == recorded
    assert "val accuracy" in result.stdout


def test_eval_refuses_a_broken_checkpoint(tmp_path):
    (tmp_path / "broken.pt").write_bytes(b"\x00" * 100)
    result = run_cli("evaluate", "--checkpoint", str(tmp_path / "broken.pt"), cwd=tmp_path)
    assert result.returncode == 2
    assert "broken.pt is not a readable mlptrain checkpoint" in result.stderr
    assert "Traceback" not in result.stderr


def test_missing_data_is_a_clear_error_and_leaves_no_run(tmp_path, tiny_config):
    tiny_config["data"]["source"] = str(tmp_path / "nowhere")
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(tiny_config))
    result = run_cli("train", "--config", str(path), cwd=tmp_path)
    assert result.returncode == 2
    assert "nowhere is not a folder" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "runs").exists()


def test_cuda_on_a_machine_without_it(tmp_path, tiny_config):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump({**tiny_config, "device": "cuda"}))
    result = run_cli("train", "--config", str(path), cwd=tmp_path)
    assert result.returncode == 2
    assert "no usable CUDA GPU" in result.stderr


@pytest.mark.realdata
@pytest.mark.slow("trains the smoke preset on the real MNIST files, checksums included")
def test_smoke_config_on_the_real_data(tmp_path):
    source = require_real_data()
    result = run_cli(
        "train",
        "--config",
        str(REPO / "configs" / "smoke.yaml"),
        "--data-source",
        str(source),
        "--set",
        f"data.root={tmp_path / 'data'}",
        "--set",
        f"output.runs_dir={tmp_path / 'runs'}",
        "--quiet",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    (run,) = (tmp_path / "runs").iterdir()
    report = json.loads((run / "test_metrics.json").read_text())
    assert report["n"] == 500
    assert report["accuracy"] > 0.8  # 2 epochs on 1,800 real MNIST images
    evaluated = run_cli("evaluate", "--checkpoint", str(run / "best.pt"), "--json", cwd=tmp_path)
    assert json.loads(evaluated.stdout)["accuracy"] == report["accuracy"]


@pytest.mark.slow("torch.compile compiles the model's graph (about 20 s on a CPU)")
def test_compiled_training_saves_plain_keys(tmp_path, tiny_config):
    tiny_config["training"].update(epochs=1, compile=True)
    _, run = train(tmp_path, tiny_config)
    state = load_checkpoint(run / "best.pt")["model_state"]
    assert state and not any(key.startswith("_orig_mod.") for key in state)
    recorded = json.loads((run / "test_metrics.json").read_text())["accuracy"]
    result = run_cli("evaluate", "--checkpoint", str(run / "best.pt"), "--json", cwd=tmp_path)
    assert json.loads(result.stdout)["accuracy"] == recorded


def test_amp_auto_takes_bf16_where_the_cpu_runs_it_natively(tmp_path, tiny_config):
    tiny_config["training"].update(amp="auto")
    result, run = train(tmp_path, tiny_config)
    # With bf16 instructions, auto times the model's products in both dtypes and says so.
    expected = "x float32's speed here)" if cpu_has_bf16() else "amp auto: no native bf16"
    assert expected in result.stdout
    recorded = json.loads((run / "test_metrics.json").read_text())["accuracy"]
    evaluated = run_cli("evaluate", "--checkpoint", str(run / "best.pt"), "--json", cwd=tmp_path)
    assert json.loads(evaluated.stdout)["accuracy"] == recorded  # the test runs in float32


@pytest.mark.gpu
def test_gpu_training_with_bf16_loads_on_cpu(tmp_path, tiny_config):
    tiny_config.update(device="cuda")
    tiny_config["training"].update(amp="bf16")
    _, run = train(tmp_path, tiny_config)
    recorded = json.loads((run / "test_metrics.json").read_text())["accuracy"]
    result = run_cli(
        "evaluate",
        "--checkpoint",
        str(run / "best.pt"),
        "--json",
        "--device",
        "cpu",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["accuracy"] == pytest.approx(recorded, abs=2e-3)
