"""The benchmark script must keep running: its quick mode, checked for shape, not speed."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from .conftest import REPO, require_real_data


def run_script(name, *arguments, cwd=None):
    """scripts/NAME with `arguments`; it must succeed."""
    result = subprocess.run(
        [sys.executable, str(REPO / "scripts" / name), *arguments],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=cwd,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def data_and_report(source, tmp_path, out):
    """The real data (imported under tmp_path) and where the JSON report goes."""
    return ["--data-source", str(source), "--data-root", str(tmp_path / "data"),
            "--json-out", str(out)]  # fmt: skip


@pytest.mark.realdata
@pytest.mark.slow(
    "runs scripts/benchmark.py --quick: the tutorial DataLoader pipeline and mlptrain train in turn"
)
def test_quick_benchmark_reports_every_contestant(tmp_path):
    source = require_real_data()
    out = tmp_path / "bench.json"
    result = run_script(
        "benchmark.py",
        "--quick",
        *data_and_report(source, tmp_path, out),
    )
    report = json.loads(out.read_text())
    assert set(report["results"]) == {
        "reference",
        "floor",
        "floor_fused",
        "mlptrain",
        "mlptrain_tracked",
    }
    for row in report["results"].values():
        assert row["seconds_per_epoch"] > 0 and row["samples_per_second"] > 0
        assert 0.0 <= row["test_accuracy"] <= 1.0
        assert row["peak_memory_mib"] > 0
    assert set(report["ratios"]) == {
        "mlptrain_vs_reference_samples_per_second",
        "mlptrain_vs_floor_seconds_per_epoch",
        "mlptrain_vs_fused_floor_seconds_per_epoch",
        "tracked_vs_untracked_seconds_per_epoch",
        "tracking_seconds_per_epoch",
    }
    assert 0 < report["ratios"]["tracking_seconds_per_epoch"] < 1
    assert report["machine"]["device"] == "cpu"
    assert "mlptrain_vs_floor_seconds_per_epoch" in result.stdout
    assert "reference" in result.stdout and "floor" in result.stdout


@pytest.mark.slow("exports ONNX and pt2, then times each engine in the script's own processes")
def test_inference_benchmark_reports_every_engine_and_path(tmp_path):
    out = tmp_path / "inference.json"
    run_script(
        "benchmark_inference.py",
        "--calls",
        "5",
        "--repeats",
        "2",
        "--batch",
        "50",
        "--cold-repeats",
        "1",
        "--json",
        str(out),
    )
    report = json.loads(out.read_text())
    for rows in report["models"].values():
        assert set(rows) == {"pytorch eager", "torch.export (.pt2)", "onnxruntime"}
        assert all(row["median_ms"] > 0 and row["images_per_second"] > 0 for row in rows.values())
    onnx_path, torch_path = report["cold_start"].values()
    assert onnx_path["peak_mb"] < torch_path["peak_mb"]  # the ONNX path never loads torch


@pytest.mark.realdata
@pytest.mark.slow("profiles every preset's training step against the arithmetic limit")
def test_preset_benchmark_reports_the_limit_and_the_profile(tmp_path):
    """scripts/benchmark_presets.py on the smoke config, with the current source as the
    "before" version: the table, the bound, the profile and the JSON are all there."""
    source = require_real_data()
    out = tmp_path / "presets.json"
    result = run_script(
        "benchmark_presets.py",
        "--presets",
        "smoke",
        "--epochs",
        "2",
        "--profile-steps",
        "4",
        "--before-src",
        str(REPO / "src"),
        *data_and_report(source, tmp_path, out),
    )
    row = json.loads(out.read_text())["presets"]["smoke"]
    assert row["dtype"] == "float32"  # smoke trains in full precision
    assert row["bound_ms"] > 0 and row["after_step_ms"] > 0 and row["before_step_ms"] > 0
    assert row["share_of_limit"] == pytest.approx(row["bound_ms"] / row["after_step_ms"])
    assert row["speedup"] == pytest.approx(row["before_epoch_s"] / row["after_epoch_s"])
    assert row["steps_per_epoch"] == 29  # 2,000 images less 10% validation, batches of 64
    assert row["profile"] and 0 < sum(op["share"] for op in row["profile"]) <= 1.0001
    assert "share of the limit" in result.stdout and "top operators" in result.stdout
    assert 0 <= row["tensor_copies_per_step"] <= row["all_copies_per_step"]
    assert "casts per step" in result.stdout


@pytest.mark.realdata
@pytest.mark.slow(
    "K separate trial processes against one stack, in two rounds (the round logic is what it tests)"
)
def test_stack_benchmark_compares_separate_and_stacked_trials(tmp_path):
    """scripts/benchmark_stack.py --quick at K = 2 in 2 rounds, given its data as a path
    relative to where it is started (its trials run in a folder of their own)."""
    source = require_real_data()
    out = tmp_path / "stack.json"
    result = run_script(
        "benchmark_stack.py",
        "--quick",
        "--ks",
        "2",
        "--repeats",
        "2",
        "--data-source",
        os.path.relpath(source, tmp_path),
        "--json-out",
        str(out),
        cwd=tmp_path,
    )
    (row,) = json.loads(out.read_text())["stack"]
    assert row["k"] == 2 and row["separate_seconds"] > 0 and row["stacked_seconds"] > 0
    assert row["speedup"] == pytest.approx(row["separate_seconds"] / row["stacked_seconds"])
    assert row["stacked_trials_per_hour"] == pytest.approx(2 * 3600 / row["stacked_seconds"])
    assert 0 < row["share_of_peak"] < 1.5
    assert len(row["speedups"]) == 2 and row["speedup"] == min(row["speedups"])
    assert result.stdout.count("K= 2: separate") == 2
    assert "K= 2: median of 2 rounds" in result.stdout


@pytest.mark.slow("starts mlp-serve and mlflow models serve, and loads each with wrk")
def test_serving_benchmark_drives_both_servers_and_checks_every_answer(tmp_path, checkpoint):
    import shutil

    if shutil.which("wrk") is None:
        if os.environ.get("CI"):
            pytest.fail("wrk is missing: .ci/run installs it (make tools)")
        pytest.skip("no wrk: run `make tools`")
    out = tmp_path / "serve.json"
    result = run_script("benchmark_serve.py", "--checkpoint", str(checkpoint), "--quick",
                        "--json-out", str(out))  # fmt: skip
    report = json.loads(out.read_text())
    servers = {row["server"] for row in report["rows"]}
    assert len(servers) == 3 and any("mlflow" in name for name in servers)
    for row in report["rows"]:
        assert row["good"] > 0 and row["wrong"] == 0 and row["errors"] == 0, row
        assert row["p50_ms"] <= row["p95_ms"] <= row["p99_ms"]
    mixed = report["mixed"]
    assert mixed["wrong"] == 0 and mixed["bad_refused"] > 0
    assert "| mlflow models serve (pyfunc) |" in result.stdout
