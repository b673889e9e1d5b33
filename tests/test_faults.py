"""Nothing lost: signals, resume, non-finite losses, concurrent runs, bad input.

Behaviour that involves the process (signals, exit codes) runs real subprocesses.
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from mlptrain.artifacts.checkpoint import load_checkpoint
from mlptrain.cli.train import main as train_main
from mlptrain.config.files import load_config
from mlptrain.config.schema import Config
from mlptrain.errors import UsageError
from mlptrain.util.files import atomic_write_text

from .conftest import REPO, config_document, run_cli, write_config, write_dataset


@pytest.fixture(scope="module")
def larger_source(tmp_path_factory) -> Path:
    """Enough synthetic images that an epoch lasts long enough to be interrupted."""
    root = tmp_path_factory.mktemp("larger")
    return write_dataset(root / "mnist", seed=4, train_count=6000, test_count=200).parent


def config_file(tmp_path: Path, source: Path, **training) -> Path:
    model = {"hidden": [64], "dropout": 0.1}
    training = {"epochs": 5, "batch_size": 8, **training}
    return write_config(tmp_path, config_document(tmp_path, source, "mnist", model, **training))


def start_training(*args: str, cwd: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "mlptrain.cli.train", *args, "--quiet"],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


def wait_for_rows(runs_dir: Path, rows: int, process: subprocess.Popen) -> Path:
    """Wait until the run's metrics.csv holds `rows` epochs; return the run folder."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        found = list(runs_dir.glob("*/metrics.csv"))
        if found and len(found[0].read_text().splitlines()) > rows:
            return found[0].parent
        assert process.poll() is None, process.communicate()
        time.sleep(0.01)
    raise AssertionError("the run did not reach its epochs in time")


def metrics_rows(run: Path) -> list[dict[str, str]]:
    with open(run / "metrics.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def leftovers(run: Path) -> list[str]:
    return [path.name for path in run.iterdir() if path.name.endswith(".tmp")]


@pytest.mark.slow("a real mlp-train process stopped by a real SIGINT mid-epoch, then resumed")
def test_interrupt_and_resume_match_an_uninterrupted_run(tmp_path, larger_source):
    whole_dir, parts_dir = tmp_path / "whole", tmp_path / "parts"
    whole_dir.mkdir(), parts_dir.mkdir()
    config = config_file(whole_dir, larger_source)
    whole = run_cli("train", "--config", str(config), "--quiet", cwd=whole_dir)
    assert whole.returncode == 0, whole.stderr

    config = config_file(parts_dir, larger_source)
    process = start_training("--config", str(config), cwd=parts_dir)
    run = wait_for_rows(parts_dir / "runs", 2, process)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr
    assert f"resume with: mlp-train --resume {run}" in stderr
    interrupted_at = load_checkpoint(run / "last.pt")["epoch"]
    assert 2 <= interrupted_at < 5
    assert len(metrics_rows(run)) == interrupted_at
    assert not (run / "test_metrics.json").exists()
    assert "SIGINT received" in (run / "train.log").read_text()
    assert not leftovers(run)

    resumed = run_cli("train", "--resume", str(run), "--quiet", cwd=parts_dir)
    assert resumed.returncode == 0, resumed.stderr
    (whole_run,) = (whole_dir / "runs").iterdir()
    expected, got = load_checkpoint(whole_run / "last.pt"), load_checkpoint(run / "last.pt")
    for key, tensor in expected["model_state"].items():
        assert torch.equal(tensor, got["model_state"][key]), key
    columns = ("epoch", "train_loss", "train_accuracy", "val_loss", "val_accuracy", "lr")
    assert [[row[c] for c in columns] for row in metrics_rows(run)] == [
        [row[c] for c in columns] for row in metrics_rows(whole_run)
    ]
    assert (
        json.loads((run / "test_metrics.json").read_text())["accuracy"]
        == json.loads((whole_run / "test_metrics.json").read_text())["accuracy"]
    )
    assert "# resumed" in (run / "config.yaml").read_text()
    assert isinstance(load_config(run / "config.yaml"), Config)


@pytest.mark.slow("a real mlp-train process stopped by a real SIGTERM mid-epoch")
def test_sigterm_stops_cleanly_with_status_143(tmp_path, larger_source):
    process = start_training("--config", str(config_file(tmp_path, larger_source)), cwd=tmp_path)
    run = wait_for_rows(tmp_path / "runs", 1, process)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 143, stderr
    assert "--resume" in stderr and "Traceback" not in stderr
    assert load_checkpoint(run / "last.pt")["epoch"] >= 1
    assert not leftovers(run)


@pytest.mark.slow("a real mlp-train process sent two SIGINTs mid-epoch")
def test_a_second_ctrl_c_exits_at_once_without_broken_files(tmp_path, larger_source):
    process = start_training("--config", str(config_file(tmp_path, larger_source)), cwd=tmp_path)
    run = wait_for_rows(tmp_path / "runs", 1, process)
    process.send_signal(signal.SIGINT)
    process.send_signal(signal.SIGINT)
    process.communicate(timeout=120)
    assert process.returncode == 130
    for name in ("last.pt", "best.pt"):
        assert load_checkpoint(run / name)["epoch"] >= 1
    assert not leftovers(run)


def finished_run(tmp_path: Path, source: Path, epochs: int = 1) -> Path:
    config = config_file(tmp_path, source, epochs=epochs, batch_size=64)
    assert train_main(["--config", str(config), "--quiet"]) == 0
    (run,) = (tmp_path / "runs").iterdir()
    return run


def test_resume_extends_a_finished_run_in_place(tmp_path, synthetic_source, capsys):
    run = finished_run(tmp_path, synthetic_source)
    assert train_main(["--resume", str(run), "--quiet"]) == 2
    assert "extend it with --set training.epochs=N" in capsys.readouterr().err
    assert train_main(["--resume", str(run), "--set", "training.epochs=3", "--quiet"]) == 0
    assert [row["epoch"] for row in metrics_rows(run)] == ["1", "2", "3"]
    assert load_checkpoint(run / "last.pt")["config"]["training"]["epochs"] == 3
    assert len(list((tmp_path / "runs").iterdir())) == 1


def test_resume_refuses_unsafe_changes(tmp_path, synthetic_source, capsys):
    run = finished_run(tmp_path, synthetic_source)
    status = train_main(["--resume", str(run), "--set", "optimizer.lr=0.5"])
    assert status == 2
    assert "optimizer.lr cannot change when a run is resumed" in capsys.readouterr().err
    assert train_main(["--resume", str(run), "--config", "x.yaml"]) == 2
    assert "--config cannot be used with it" in capsys.readouterr().err


def test_resume_of_a_folder_that_is_not_a_run(tmp_path, capsys):
    assert train_main(["--resume", str(tmp_path / "missing")]) == 2
    assert "no such run folder" in capsys.readouterr().err
    assert train_main(["--resume", str(tmp_path)]) == 2
    assert "has no last.pt" in capsys.readouterr().err


def test_a_nonfinite_loss_stops_with_status_3_and_keeps_best(
    tmp_path, synthetic_source, monkeypatch, capsys
):
    import mlptrain.training.loop as trainer

    real = trainer.F.cross_entropy
    calls = {"training": 0}

    def poisoned(logits, labels, **kwargs):
        if "reduction" not in kwargs:  # training batches only; evaluation sums
            calls["training"] += 1
            if calls["training"] == 18 + 3:  # epoch 2 (450 images in 18 batches), batch 3
                return real(logits, labels) * float("nan")
        return real(logits, labels, **kwargs)

    monkeypatch.setattr(trainer.F, "cross_entropy", poisoned)
    config = config_file(tmp_path, synthetic_source, epochs=3, batch_size=25)
    assert train_main(["--config", str(config), "--quiet"]) == 3
    message = capsys.readouterr().err
    assert "NaN or infinite in epoch 2, batch 3 (learning rate 0.001)" in message
    assert "Try a lower optimizer.lr" in message
    (run,) = (tmp_path / "runs").iterdir()
    assert load_checkpoint(run / "best.pt")["epoch"] == 1
    assert [row["epoch"] for row in metrics_rows(run)] == ["1"]
    assert not (run / "test_metrics.json").exists()


def test_checksum_mismatch_and_no_verify(tmp_path, synthetic_source, capsys):
    path = config_file(tmp_path, synthetic_source, epochs=1)
    document = yaml.safe_load(path.read_text())
    document["data"]["verify"] = True
    path.write_text(yaml.safe_dump(document))
    assert train_main(["--config", str(path), "--quiet"]) == 2
    assert "checksum mismatch" in capsys.readouterr().err
    assert train_main(["--config", str(path), "--quiet", "--no-verify"]) == 0
    assert "checksums are not checked" in capsys.readouterr().out


def test_unwritable_data_root_is_a_clear_error(tmp_path, synthetic_source, capsys):
    (tmp_path / "blocker").write_text("a file where a folder should be")
    status = train_main(
        [
            "--config",
            str(config_file(tmp_path, synthetic_source)),
            "--set",
            f"data.root={tmp_path / 'blocker' / 'data'}",
        ]
    )
    assert status == 2
    assert "set data.root to a folder you can write" in capsys.readouterr().err


def test_runs_started_at_the_same_moment_get_their_own_folders(tmp_path):
    start = time.time() + 1.5
    code = (
        "import sys, time; from datetime import datetime; "
        "from mlptrain.artifacts.rundir import RunDir; "
        f"time.sleep(max(0, {start} - time.time())); "
        f"print(RunDir.create(sys.argv[1], 'same', datetime(2026, 1, 1)).path)"
    )
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", code, str(tmp_path)], stdout=subprocess.PIPE, text=True
        )
        for _ in range(6)
    ]
    paths = [process.communicate(timeout=60)[0].strip() for process in processes]
    assert all(process.returncode == 0 for process in processes)
    assert len(set(paths)) == 6
    assert len(list(tmp_path.iterdir())) == 6


def test_failure_between_write_and_rename_keeps_the_old_file(tmp_path, monkeypatch):
    target = tmp_path / "config.yaml"
    atomic_write_text(target, "old: 1\n")

    def no_rename(source, destination):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", no_rename)
    with pytest.raises(OSError):
        atomic_write_text(target, "new: 2\n")
    monkeypatch.undo()
    assert target.read_text() == "old: 1\n"
    assert [path.name for path in tmp_path.iterdir()] == ["config.yaml"]


yaml_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=12,
)
config_keys = st.sampled_from(
    [
        "seed",
        "name",
        "device",
        "data",
        "data.subset.train",
        "model.hidden",
        "optimizer.lr",
        "optimizer.name",
        "training.epochs",
        "model",
        "lrr",
        "a.b.c",
    ]
)


@settings(max_examples=150, deadline=None)
@given(
    document=st.dictionaries(st.text(max_size=12) | config_keys, yaml_values, max_size=6),
    overrides=st.lists(
        st.tuples(config_keys | st.text(max_size=10), st.text(max_size=15)).map("=".join)
        | st.text(max_size=20),
        max_size=3,
    ),
)
def test_random_configs_load_or_raise_a_usage_error(tmp_path_factory, document, overrides):
    path = tmp_path_factory.mktemp("fuzz") / "config.yaml"
    path.write_text(yaml.safe_dump(document))
    try:
        assert isinstance(load_config(path, overrides), Config)
    except UsageError as exc:
        assert str(exc)


@settings(max_examples=150, deadline=None)
@given(text=st.text(max_size=80))
def test_random_yaml_text_loads_or_raises_a_usage_error(tmp_path_factory, text):
    path = tmp_path_factory.mktemp("fuzz") / "config.yaml"
    path.write_text(text, encoding="utf-8")
    with contextlib.suppress(UsageError):
        load_config(path)


def test_the_docs_name_the_exit_statuses():
    page = (REPO / "docs" / "troubleshooting.md").read_text()  # "When things go wrong"
    for status in ("130", "143", "| 3 |", "| 2 |"):
        assert status in page
