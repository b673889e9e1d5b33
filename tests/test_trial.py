"""The trial protocol: a typed spec in, one outcome file per run folder out.

A sweep starts `python -m mlptrain.run.trial SPEC` and learns how each trial ended only
from the outcome file and the run folder (never from the process's output). These tests
end trials every way a trial ends: completed, a non-finite loss, a crash, a signal, a
config error, pruned by the sweep, and killed before it could write anything.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from mlptrain.artifacts.rundir import RunDir
from mlptrain.config.monitor import Monitor
from mlptrain.errors import UsageError
from mlptrain.run.trial import OUTCOME_FILE, Outcome, TrialMember, TrialSpec, run_trial
from mlptrain.sweep.trials import run_trials

from .conftest import config_document, write_config


def spec_for(tmp_path: Path, source: Path, *overrides: str, epochs: int = 3) -> TrialSpec:
    document = config_document(tmp_path, source, "mnist", {"hidden": [16]}, epochs=epochs)
    config = write_config(tmp_path, document)
    return TrialSpec(
        config=[str(config)],
        members=[TrialMember(str(tmp_path / "trial"), list(overrides))],
        threads=1,
    )


def outcome_of(run_dir: Path) -> dict:
    return json.loads((run_dir / OUTCOME_FILE).read_text())


def test_the_spec_reads_back_as_written_and_a_bad_one_is_a_usage_error(tmp_path):
    spec = TrialSpec(
        config=["a.yaml", "b.yaml"],
        members=[TrialMember("runs/t1", ["seed=1"]), TrialMember("runs/t2")],
        overrides=["training.epochs=2"],
        device="cpu",
        threads=2,
    )
    spec.write(tmp_path / "specs" / "t.json")
    assert TrialSpec.read(tmp_path / "specs" / "t.json") == spec
    assert spec.settings() == {"training.threads": 2, "device": "cpu"}
    (tmp_path / "bad.json").write_text('{"config": ["a.yaml"]}')
    with pytest.raises(UsageError, match="cannot be read"):
        TrialSpec.read(tmp_path / "bad.json")
    (tmp_path / "empty.json").write_text('{"config": ["a.yaml"], "members": []}')
    with pytest.raises(UsageError, match="names no run folder"):
        TrialSpec.read(tmp_path / "empty.json")


def test_a_completed_trial_says_so_with_its_epochs(tmp_path, synthetic_source):
    spec = spec_for(tmp_path, synthetic_source, "optimizer.lr=0.01")
    assert run_trial(spec) == 0
    run = tmp_path / "trial"
    assert outcome_of(run) == {"status": "complete", "exit_status": 0, "message": "",
                               "epochs_done": 3}  # fmt: skip
    assert (run / "test_metrics.json").is_file()
    assert "lr: 0.01" in (run / "config.yaml").read_text()


def test_a_nonfinite_loss_is_its_own_status(tmp_path, synthetic_source, monkeypatch):
    import mlptrain.training.loop as loop

    real = loop.F.cross_entropy
    calls = {"training": 0}

    def poisoned(logits, labels, **kwargs):
        if "reduction" not in kwargs:  # training batches only
            calls["training"] += 1
            if calls["training"] == 10 + 2:  # epoch 2 (500 images in 10 batches), batch 2
                return real(logits, labels) * float("nan")
        return real(logits, labels, **kwargs)

    monkeypatch.setattr(loop.F, "cross_entropy", poisoned)
    spec = spec_for(tmp_path, synthetic_source, "training.batch_size=50", "data.val_fraction=0")
    assert run_trial(spec) == 3
    outcome = outcome_of(tmp_path / "trial")
    assert (outcome["status"], outcome["exit_status"], outcome["epochs_done"]) == (
        "nonfinite", 3, 1)  # fmt: skip
    assert "NaN or infinite in epoch 2, batch 2" in outcome["message"]


def test_a_crash_is_failed_and_its_error_goes_on(tmp_path, synthetic_source, monkeypatch):
    import mlptrain.training.loop as loop

    real = loop.train_one_epoch

    def crashing(state, split, settings, hooks=None, epoch=1):
        if epoch == 2:
            raise RuntimeError("the machine fell over")
        return real(state, split, settings, hooks, epoch)

    monkeypatch.setattr(loop, "train_one_epoch", crashing)
    with pytest.raises(RuntimeError, match="fell over"):
        run_trial(spec_for(tmp_path, synthetic_source))
    assert outcome_of(tmp_path / "trial") == {
        "status": "failed", "exit_status": 1,
        "message": "RuntimeError: the machine fell over", "epochs_done": 1,
    }  # fmt: skip


def test_a_config_error_is_failed_with_status_2_before_any_training(tmp_path, synthetic_source):
    spec = spec_for(tmp_path, synthetic_source, "model.dropout=1.5")
    assert run_trial(spec) == 2
    outcome = outcome_of(tmp_path / "trial")
    assert (outcome["status"], outcome["exit_status"]) == ("failed", 2)
    assert "model.dropout" in outcome["message"]
    assert sorted(path.name for path in (tmp_path / "trial").iterdir()) == [OUTCOME_FILE]


def test_a_trial_writes_nothing_into_a_folder_that_is_not_its_own(tmp_path, synthetic_source):
    spec = spec_for(tmp_path, synthetic_source)
    (tmp_path / "trial").mkdir()
    (tmp_path / "trial" / "notes.txt").write_text("mine")
    with pytest.raises(UsageError, match="must not exist yet"):
        run_trial(spec)
    assert [path.name for path in (tmp_path / "trial").iterdir()] == ["notes.txt"]


def start(spec: TrialSpec, path: Path) -> subprocess.Popen:
    spec.write(path)
    return subprocess.Popen(
        [sys.executable, "-m", "mlptrain.run.trial", str(path)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_for_an_epoch(run_dir: Path, process: subprocess.Popen, seconds: float = 120) -> None:
    deadline = time.monotonic() + seconds
    while not RunDir(run_dir).read_metrics():
        assert process.poll() is None, process.stderr.read()
        assert time.monotonic() < deadline, "no epoch finished in time"
        time.sleep(0.05)


def test_a_signal_ends_the_trial_as_interrupted_with_its_status(tmp_path, synthetic_source):
    """A real process, stopped by a real SIGTERM."""
    spec = spec_for(tmp_path, synthetic_source, epochs=200)
    process = start(spec, tmp_path / "spec.json")
    wait_for_an_epoch(tmp_path / "trial", process)
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=60) == 128 + signal.SIGTERM
    outcome = outcome_of(tmp_path / "trial")
    assert (outcome["status"], outcome["exit_status"]) == ("interrupted", 143)
    assert outcome["epochs_done"] >= 1 and "mlp-train --resume" in outcome["message"]
    assert outcome["epochs_done"] == len(RunDir(tmp_path / "trial").read_metrics())


def test_the_sweep_side_records_pruned_and_killed_trials(tmp_path, synthetic_source):
    """Two real trial processes, one pruned after its first epoch, one killed."""
    spec = spec_for(tmp_path, synthetic_source, epochs=200)
    config, monitor = Path(spec.config[0]), Monitor("val_accuracy")
    pruned_dir = tmp_path / "pruned"
    (result,) = run_trials(
        config, [({}, pruned_dir)], tmp_path / "specs" / "pruned.json", 1, threading.Event(),
        monitor, on_epoch=lambda epoch, value: True,
    )  # fmt: skip
    assert result.status == "pruned" and result.best_epoch is not None
    assert Outcome.read(pruned_dir).status == "interrupted"  # what the trial itself saw

    processes: set[subprocess.Popen] = set()
    killed_dir = tmp_path / "killed"

    def kill_after_an_epoch() -> None:
        deadline = time.monotonic() + 120
        while not RunDir(killed_dir).read_metrics() and time.monotonic() < deadline:
            time.sleep(0.05)
        for process in list(processes):
            os.kill(process.pid, signal.SIGKILL)

    killer = threading.Thread(target=kill_after_an_epoch)
    killer.start()
    (result,) = run_trials(
        config, [({}, killed_dir)], tmp_path / "specs" / "killed.json", 1, threading.Event(),
        monitor, processes=processes,
    )  # fmt: skip
    killer.join()
    assert Outcome.read(killed_dir) is None
    assert result.status == "failed"
    assert result.message == "the trial process ended with exit status -9 and left no outcome"
