"""scripts/reproduce.py: its table arithmetic, and its quick mode end to end."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys

import pytest

from mlptrain.config.files import load_config

from .conftest import REPO

spec = importlib.util.spec_from_file_location("reproduce", REPO / "scripts" / "reproduce.py")
reproduce = importlib.util.module_from_spec(spec)
sys.modules["reproduce"] = reproduce  # its dataclasses look their module up
spec.loader.exec_module(reproduce)

MACHINE = {"cpu": "Test CPU", "cpu_count": 2, "torch": "0"}


def record(*accuracies: float, metric: str = "test", status: str = "complete") -> dict:
    runs = [
        {
            "seed": seed,
            "status": status,
            "message": "" if status == "complete" else "exit status 1",
            "test_accuracy": accuracy if metric == "test" else 0.5,
            "val_accuracy": accuracy if metric == "val" else 0.5,
            "best_epoch": 3,
            "train_seconds": 10.0 * seed,
            "run_dir": f"runs/x/seed{seed}",
        }
        for seed, accuracy in enumerate(accuracies, start=1)
    ]
    return {"overrides": {}, "quick": False, "date": "2026-11-22", "machine": MACHINE, "runs": runs}


def table_row(markdown: str, name: str) -> list[str]:
    line = next(line for line in markdown.splitlines() if line.startswith(f"| `{name}`"))
    return [cell.strip() for cell in line.strip("|").split("|")]


def test_every_entry_names_a_loadable_config() -> None:
    for entry in reproduce.ENTRIES:
        config = load_config(REPO / entry.config)
        assert config.data.dataset in ("mnist", "fashion_mnist")


def test_recipe_row_compares_the_mean_with_the_reported_number() -> None:
    markdown = reproduce.render({"entries": {"fashion-sgd-64": record(0.86, 0.87, 0.88)}})
    cells = table_row(markdown, "fashion-sgd-64")
    assert cells[2] == "85.30%"
    assert cells[3] == "87.00% ± 1.00"
    assert cells[4:] == ["3", "20 s", "+1.70 pp"]


def test_validation_metric_recipe_uses_validation_accuracy() -> None:
    markdown = reproduce.render({"entries": {"mnist-sgd-30": record(0.80, metric="val")}})
    cells = table_row(markdown, "mnist-sgd-30")
    assert cells[2] == "85.60% (val)"
    assert cells[3] == "80.00% (val)"  # one seed: no spread to show
    assert cells[6] == "-5.60 pp"


def test_preset_row_says_whether_target_and_time_limit_are_met() -> None:
    slow = record(0.9960, 0.9960, 0.9960)  # 10, 20 and 30 s: the mean is inside the limit
    slow["runs"][0]["train_seconds"] = 61.0  # but one run is not
    markdown = reproduce.render(
        {
            "entries": {
                "mnist": record(0.9957, 0.9955),
                "fashion": record(0.914, 0.913),
                "mnist-fast": slow,
            }
        }
    )
    assert table_row(markdown, "mnist")[5] == "15 s (limit 600 s)"
    assert table_row(markdown, "mnist")[6] == "+0.01 pp ✓"
    assert "below target" in table_row(markdown, "fashion")[6]
    assert table_row(markdown, "mnist-fast")[5] == "37 s (limit 60 s)"
    assert "over the time limit" in table_row(markdown, "mnist-fast")[6]


def test_a_gap_that_rounds_to_zero_keeps_its_sign() -> None:
    markdown = reproduce.render({"entries": {"mnist-fast": record(0.9912, 0.9925, 0.9922)}})
    assert table_row(markdown, "mnist-fast")[6] == "-0.003 pp ✗ (below target)"


def test_failed_runs_are_listed_but_not_averaged() -> None:
    markdown = reproduce.render({"entries": {"mnist": record(0.99, status="failed")}})
    assert table_row(markdown, "mnist")[3] == "not run"
    assert "failed: exit status 1" in markdown
    assert table_row(markdown, "fashion")[3] == "not run"  # never measured


@pytest.mark.slow("scripts/reproduce.py --quick starts a trial process per entry and seed")
def test_quick_mode_runs_entries_and_keeps_earlier_results(tmp_path, synthetic_source) -> None:
    results, markdown = tmp_path / "results.json", tmp_path / "results.md"
    results.write_text(json.dumps({"entries": {"fashion": record(0.93, 0.92)}}))

    def run(*names: str, seeds: int = 1) -> subprocess.CompletedProcess:
        return subprocess.run(
            [
                sys.executable,
                str(REPO / "scripts" / "reproduce.py"),
                "--quick",
                "--seeds",
                str(seeds),
                "--only",
                *names,
                "--data-source",
                str(synthetic_source),
                "--set",
                "data.verify=false",
                "--set",
                f"data.root={tmp_path / 'data'}",
                "--runs-dir",
                str(tmp_path / "runs"),
                "--results",
                str(results),
                "--markdown",
                str(markdown),
            ],
            capture_output=True,
            text=True,
            timeout=600,
        )

    # An ensemble preset: one mlp-train per replicate, its members' seeds a block of their own.
    done = run("fashion-ensemble", seeds=2)
    assert done.returncode == 0, done.stdout + done.stderr
    replicates = json.loads(results.read_text())["entries"]["fashion-ensemble"]["runs"]
    assert [replicate["status"] for replicate in replicates] == ["complete", "complete"]
    groups = [REPO / replicate["run_dir"] for replicate in replicates]
    assert {p.name for p in groups[1].glob("seed-*")} == {f"seed-{n}" for n in range(6, 11)}
    for replicate, group in zip(replicates, groups, strict=True):
        test = json.loads((group / "test_metrics.json").read_text())
        assert replicate["test_accuracy"] == test["accuracy"]
        assert len(replicate["members"]) == 5 and replicate["train_seconds"] > 0

    done = run("mnist-sgd-392-30", "fashion-fast")
    assert done.returncode == 0, done.stdout + done.stderr
    recorded = json.loads(results.read_text())["entries"]
    assert set(recorded) == {"fashion", "fashion-ensemble", "mnist-sgd-392-30", "fashion-fast"}
    (variant,) = recorded["mnist-sgd-392-30"]["runs"]
    assert variant["status"] == "complete" and 0.0 <= variant["test_accuracy"] <= 1.0
    run_config = load_config(REPO / variant["run_dir"] / "config.yaml")
    assert run_config.model.hidden == [392, 30] and run_config.optimizer.lr == 0.005
    assert run_config.training.epochs == 1 and run_config.seed == 1
    text = markdown.read_text()
    assert "Quick mode" in text
    assert table_row(text, "fashion")[3] == "92.50% ± 0.71"  # kept from before
    assert table_row(text, "fashion-fast")[4] == "1"

    # A recipe's seeds are trained together in one process; a preset's one by one.
    done = run("mnist-sgd-30", "mnist-fast", seeds=2)
    assert done.returncode == 0, done.stdout + done.stderr
    recorded = json.loads(results.read_text())["entries"]
    recipe, preset = recorded["mnist-sgd-30"]["runs"], recorded["mnist-fast"]["runs"]
    assert [run["trained_together"] for run in recipe] == [2, 2]
    assert [run["trained_together"] for run in preset] == [1, 1]
    for run in recipe:
        assert run["status"] == "complete"
        assert load_config(REPO / run["run_dir"] / "config.yaml").seed == run["seed"]
        assert "trained together" in (REPO / run["run_dir"] / "train.log").read_text()
