"""The benchmark script must keep running: its quick mode, checked for shape, not speed."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from .conftest import REPO, require_real_data


@pytest.mark.realdata
@pytest.mark.slow
def test_quick_benchmark_reports_every_contestant(tmp_path):
    source = require_real_data()
    out = tmp_path / "bench.json"
    result = subprocess.run(
        [
            sys.executable,
            str(REPO / "scripts" / "benchmark.py"),
            "--quick",
            "--data-source",
            str(source),
            "--data-root",
            str(tmp_path / "data"),
            "--json-out",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(out.read_text())
    assert set(report["results"]) == {"reference", "floor", "floor_fused", "mlptrain"}
    for row in report["results"].values():
        assert row["seconds_per_epoch"] > 0 and row["samples_per_second"] > 0
        assert 0.0 <= row["test_accuracy"] <= 1.0
        assert row["peak_memory_mib"] > 0
    assert set(report["ratios"]) == {
        "mlptrain_vs_reference_samples_per_second",
        "mlptrain_vs_floor_seconds_per_epoch",
        "mlptrain_vs_fused_floor_seconds_per_epoch",
    }
    assert report["machine"]["device"] == "cpu"
    assert "mlptrain_vs_floor_seconds_per_epoch" in result.stdout
    assert "reference" in result.stdout and "floor" in result.stdout
