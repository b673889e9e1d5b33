"""mlp-compare on real run folders: groups of seeds, varied keys, statuses, filters,
outputs, damaged folders, and no torch import."""

from __future__ import annotations

import csv
import io
import json
import shutil
import statistics
import subprocess
import sys

import pytest

import mlptrain
from mlptrain.errors import StopRun

from .conftest import config_document, run_cli


@pytest.fixture(scope="module")
def runs(tmp_path_factory, synthetic_source):
    """Two learning rates x two seeds, finished; a run stopped by NaN; an interrupted one
    (a finished run's files without its test: what an interrupt leaves); a run that failed
    before its first checkpoint; a folder that is no run and a damaged run."""
    root = tmp_path_factory.mktemp("compare")
    for lr in (0.01, 0.003):
        for seed in (1, 2):
            document = config_document(root, synthetic_source, epochs=2)
            document.update(seed=seed, name=f"lr{lr}")
            document["optimizer"] = {"lr": lr}
            mlptrain.train(document, verbose=False)
    document = config_document(root, synthetic_source, epochs=2)
    document.update(name="nan", optimizer={"name": "sgd", "lr": 1e9})
    with pytest.raises(StopRun):
        mlptrain.train(document, verbose=False)
    folder = root / "runs"
    (finished, *_) = sorted(folder.glob("lr0.01-*"))
    interrupted = folder / "interrupted"
    shutil.copytree(finished, interrupted)
    (interrupted / "test_metrics.json").unlink()
    failed = folder / "failed"  # its config and log, and nothing else
    failed.mkdir()
    shutil.copy(finished / "config.yaml", failed / "config.yaml")
    (failed / "train.log").write_text("run folder: failed\n")
    artifacts = root / "runs" / "mlartifacts" / "1" / "abc" / "artifacts"  # MLflow's copies
    shutil.copytree(finished, artifacts, ignore=shutil.ignore_patterns("train.log", "*.pt"))
    (root / "runs" / "notes").mkdir()
    damaged = folder / "damaged"
    shutil.copytree(finished, damaged)
    (damaged / "metrics.csv").write_text("epoch,val_accuracy\n1,not-a-number\n")
    return folder


def _json(runs, *args):
    result = run_cli("compare", str(runs), "--json", *args, cwd=runs.parent)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout), result.stderr


def test_seeds_form_one_row_with_mean_and_std(runs):
    report, _ = _json(runs)
    assert report["varied"] == ["optimizer.name", "optimizer.lr"]  # seed is grouped away
    groups = {row["optimizer.lr"]: row for row in report["rows"] if row["status"] == "finished"}
    for lr in (0.01, 0.003):
        members = sorted(runs.glob(f"lr{lr}-*"))
        tests = [json.loads((m / "test_metrics.json").read_text())["accuracy"] for m in members]
        row = groups[lr]
        assert row["n"] == 2 and sorted(row["runs"]) == [str(m) for m in members]
        assert row["test_accuracy"] == pytest.approx(statistics.fmean(tests))
        assert row["test_accuracy_std"] == pytest.approx(statistics.stdev(tests))


def test_no_group_lists_each_run_and_shows_the_seed(runs):
    report, _ = _json(runs, "--no-group")
    assert "seed" in report["varied"]
    assert "name" not in report["varied"] and "output.runs_dir" not in report["varied"]
    assert len(report["rows"]) == 4 + 3  # four finished, NaN, interrupted, failed; no artifacts


def test_statuses_epochs_and_best_epoch_from_the_files(runs):
    report, _ = _json(runs, "--no-group")
    by_run = {row["run"].rsplit("/", 1)[-1]: row for row in report["rows"]}
    assert by_run["interrupted"]["status"] == "interrupted (resumable)"
    assert by_run["failed"]["status"] == "failed" and by_run["failed"]["epochs"] == "0/2"
    (nan,) = [row for name, row in by_run.items() if name.startswith("nan-")]
    assert nan["status"] == "NaN" and nan["test_accuracy"] is None
    finished = [row for row in report["rows"] if row["status"] == "finished"]
    for row in finished:
        test = json.loads((runs.parent / row["run"] / "test_metrics.json").read_text())
        assert row["best_epoch"] == str(test["epoch"]) and row["epochs"] == "2/2"


def test_damaged_and_foreign_folders_are_named_and_skipped(runs):
    _, warnings = _json(runs)
    assert "damaged: skipped, metrics.csv has a row that is not numbers" in warnings
    result = run_cli("compare", str(runs / "notes"), str(runs / "damaged"), cwd=runs.parent)
    assert result.returncode == 2  # nothing could be read
    assert "no run folder here" in result.stderr and "no run could be read" in result.stderr


def test_where_sort_and_top(runs):
    report, _ = _json(
        runs, "--no-group", "--where", "optimizer.lr=0.003", "--sort", "test_accuracy", "--top", "1"
    )
    (row,) = report["rows"]
    candidates = [
        json.loads((m / "test_metrics.json").read_text())["accuracy"]
        for m in runs.glob("lr0.003-*")
    ]
    assert "/lr0.003-" in row["run"] and row["test_accuracy"] == max(candidates)
    assert report["varied"] == ["seed"]  # within lr 0.003 only the seed differs


def test_markdown_when_piped_csv_and_plot(runs, tmp_path):
    piped = run_cli("compare", str(runs), "--plot", str(tmp_path / "c.png"), cwd=runs.parent)
    assert piped.stdout.startswith("| run | dataset | n | status |")
    assert (tmp_path / "c.png").read_bytes()[:4] == b"\x89PNG"
    table = run_cli("compare", str(runs), "--csv", cwd=runs.parent).stdout
    rows = list(csv.DictReader(io.StringIO(table)))
    assert {"test_accuracy", "test_accuracy_std", "optimizer.lr"} <= set(rows[0])


def test_compare_never_imports_torch(runs):
    code = (
        "import sys\n"
        "from mlptrain.cli.compare import main\n"
        f"main([{str(runs)!r}, '--json'])\n"
        "print('torch' in sys.modules, file=sys.stderr)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120
    )
    assert result.stderr.strip().endswith("False")
