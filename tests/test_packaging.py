"""The wheel is complete: built from the sources, installed into a fresh environment and
used from a folder outside the clone, it trains a shipped preset by name."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from .conftest import REPO, require_real_data

WHEEL_SOURCES = ("pyproject.toml", "README.md", "src", "configs")


def test_the_package_list_names_every_package_under_src():
    tomllib = pytest.importorskip("tomllib")  # Python 3.11 and later
    listed = set(
        tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    )
    found = {
        ".".join(init.parent.relative_to(REPO / "src").parts)
        for init in (REPO / "src").rglob("__init__.py")
    }
    assert found <= listed, f"add to pyproject's packages: {sorted(found - listed)}"


def _run(*command: str | Path, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [str(part) for part in command],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, f"{command}\n{result.stdout}\n{result.stderr}"
    return result


def _build_wheel(tmp_path: Path) -> Path:
    """A wheel built from a copy of the sources (nothing written into the clone)."""
    tree = tmp_path / "tree"
    for name in WHEEL_SOURCES:
        source = REPO / name
        if source.is_dir():
            shutil.copytree(source, tree / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            tree.mkdir(exist_ok=True)
            shutil.copy2(source, tree / name)
    pip = [sys.executable, "-m", "pip"]
    # No build isolation: the build uses this environment's setuptools, so no download.
    _run(
        *pip,
        "wheel",
        "--no-deps",
        "--no-build-isolation",
        "-w",
        tmp_path / "dist",
        tree,
        cwd=tmp_path,
        env=dict(os.environ),
    )
    (wheel,) = (tmp_path / "dist").glob("mlptrain-*.whl")
    return wheel


def _fresh_environment(tmp_path: Path, wheel: Path) -> Path:
    """A new virtual environment with the wheel installed and this environment's
    dependencies (torch and the rest) visible through a .pth file, not reinstalled."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", venv], check=True)
    python = venv / "bin" / "python"
    purelib = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    # A directory named in a .pth file joins sys.path, but the .pth files inside it are
    # not read, so this environment's editable install of mlptrain stays invisible.
    Path(purelib, "dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    _run(
        sys.executable,
        "-m",
        "pip",
        "--python",
        python,
        "install",
        "--no-deps",
        "--no-index",
        wheel,
        cwd=tmp_path,
        env=dict(os.environ),
    )
    return venv / "bin"


@pytest.mark.slow("builds the wheel, installs it into a new venv and trains from it")
@pytest.mark.realdata
def test_the_wheel_trains_a_shipped_preset_outside_the_clone(tmp_path):
    source = require_real_data()
    wheel = _build_wheel(tmp_path)
    bin_dir = _fresh_environment(tmp_path, wheel)
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    env["MLPTRAIN_DATA_SOURCE"] = str(source)

    where = _run(
        bin_dir / "python", "-c", "import mlptrain; print(mlptrain.__file__)", cwd=outside, env=env
    ).stdout
    assert Path(where.strip()).is_relative_to(bin_dir.parent), where  # the wheel, not src/
    listed = _run(bin_dir / "mlp-train", "--list-configs", cwd=outside, env=env).stdout
    assert "fashion " in listed and "recipes/mnist-adam-128-64" in listed
    version = _run(bin_dir / "mlp-train", "--version", cwd=outside, env=env).stdout
    assert version.startswith("mlptrain ") and "torch " in version
    printed = _run(
        bin_dir / "mlp-train", "--config", "fashion", "--print-config", cwd=outside, env=env
    ).stdout
    assert "name: fashion-mlp" in printed

    _run(bin_dir / "mlp-train", "--config", "smoke", "--quiet", cwd=outside, env=env)
    (run,) = (outside / "runs").iterdir()
    report = json.loads((run / "test_metrics.json").read_text())
    assert report["n"] == 500 and report["accuracy"] > 0.8
    evaluated = _run(
        bin_dir / "mlp-eval", "--checkpoint", run / "best.pt", "--json", cwd=outside, env=env
    ).stdout
    assert json.loads(evaluated)["accuracy"] == report["accuracy"]
