"""Shared fixtures: tiny synthetic IDX datasets (real file format) and small configs."""

from __future__ import annotations

import gzip
import os
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
# Read before the autouse fixture below hides it from the code under test.
_AMBIENT_SOURCE = os.environ.get("MLPTRAIN_DATA_SOURCE")
TRAIN_COUNT, TEST_COUNT = 500, 200


def write_idx(path: Path, array: np.ndarray, compress: bool = True) -> Path:
    """Write `array` (uint8) as an IDX file, gzip-compressed unless told otherwise."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    content = header + array.tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    if compress:
        path = path.with_name(path.name + ".gz")
        path.write_bytes(gzip.compress(content))
    else:
        path.write_bytes(content)
    return path


def synthetic_images(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Noise plus a faint bar whose row depends on the class, jittered by a row so that
    neighbouring classes overlap: learnable, but a small model stays well below 100%
    and its accuracy differs between splits, so tests can tell right from wrong."""
    images = rng.integers(0, 110, size=(len(labels), 28, 28))
    for index, label in enumerate(labels):
        row = 2 + 2 * int(label) + int(rng.integers(-1, 2))
        images[index, row : row + 2, 4:24] = rng.integers(90, 200, size=(2, 20))
    return images.astype(np.uint8)


def write_dataset(
    folder: Path,
    seed: int = 0,
    compress: bool = True,
    train_count: int = TRAIN_COUNT,
    test_count: int = TEST_COUNT,
) -> Path:
    rng = np.random.default_rng(seed)
    for prefix, count in (("train", train_count), ("t10k", test_count)):
        labels = rng.integers(0, 10, size=count).astype(np.uint8)
        write_idx(folder / f"{prefix}-images-idx3-ubyte", synthetic_images(labels, rng), compress)
        write_idx(folder / f"{prefix}-labels-idx1-ubyte", labels, compress)
    return folder


@pytest.fixture(autouse=True)
def _no_ambient_data_source(monkeypatch: pytest.MonkeyPatch) -> None:
    # Tests say where data comes from; CI's MLPTRAIN_DATA_SOURCE must not leak into them.
    monkeypatch.delenv("MLPTRAIN_DATA_SOURCE", raising=False)


@pytest.fixture(scope="session")
def synthetic_source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A source folder laid out like ../shared/datasets, with synthetic files."""
    root = tmp_path_factory.mktemp("source")
    write_dataset(root / "mnist", seed=1)
    write_dataset(root / "fashion-mnist", seed=2)
    return root


def config_document(
    tmp_path: Path,
    source: Path,
    dataset: str = "fashion_mnist",
    model: dict | None = None,
    **training,
) -> dict:
    """A config on synthetic data in `source`, with data and runs inside `tmp_path`."""
    return {
        "name": "tiny",
        "seed": 3,
        "device": "cpu",
        "data": {
            "dataset": dataset,
            "root": str(tmp_path / "data"),
            "source": str(source),
            "verify": False,  # synthetic files cannot match the published checksums
        },
        "model": model or {"hidden": [32]},
        "training": {"epochs": 3, "batch_size": 32, "eval_batch_size": 64, **training},
        "output": {"runs_dir": str(tmp_path / "runs")},
    }


def write_config(tmp_path: Path, document: dict, name: str = "config.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(document))
    return path


@pytest.fixture
def tiny_config(tmp_path: Path, synthetic_source: Path) -> dict:
    """A config document that trains in about a second on the synthetic data."""
    return config_document(tmp_path, synthetic_source)


@pytest.fixture(scope="session")
def checkpoint(tmp_path_factory, synthetic_source):
    """best.pt of a small MNIST run on the synthetic data (mlp-predict, mlp-serve)."""
    from mlptrain.cli.train import main as train_main

    tmp_path = tmp_path_factory.mktemp("predict")
    document = config_document(tmp_path, synthetic_source, "mnist", epochs=3)
    assert train_main(["--config", str(write_config(tmp_path, document)), "--quiet"]) == 0
    (run,) = (tmp_path / "runs").iterdir()
    return run / "best.pt"


def whole_and_resumed(tmp_path: Path, source: Path, **training):
    """A 3-epoch run on the synthetic MNIST (batch norm, dropout: random draws to restore)
    trained whole, and again 2 epochs then resumed to 3: both results and last.pt's."""
    from mlptrain.api import resolve_config
    from mlptrain.artifacts.checkpoint import load_checkpoint
    from mlptrain.run.runner import resume, train

    document = config_document(tmp_path, source, "mnist", epochs=3, **training)
    document["model"] = {"hidden": [32], "batch_norm": True, "dropout": 0.2}
    whole = train(resolve_config(document), run_dir=tmp_path / "whole")
    document["training"]["epochs"] = 2
    train(resolve_config(document), run_dir=tmp_path / "parts")
    resumed = resume(tmp_path / "parts", ["training.epochs=3"])
    assert [row["train_loss"] for row in resumed.history] == [
        row["train_loss"] for row in whole.history
    ]
    assert [row["val_loss"] for row in resumed.history] == [
        row["val_loss"] for row in whole.history
    ]
    last = [load_checkpoint(tmp_path / run / "last.pt") for run in ("whole", "parts")]
    return whole, resumed, *last


def require_real_data() -> Path:
    """The real datasets (CI keeps them beside the checkout); skips the test without them."""
    from mlptrain.data.registry import find_source

    source = find_source(_AMBIENT_SOURCE, beside=REPO)
    if source and (Path(source) / "mnist").is_dir():
        return Path(source).resolve()
    pytest.skip("no real datasets: ../shared/datasets is absent and MLPTRAIN_DATA_SOURCE unset")


def run_cli(module: str, *args: str, cwd: Path, env: dict | None = None):
    """Run `python -m mlptrain.cli.<module>` as a user would, capturing its output."""
    return subprocess.run(
        [sys.executable, "-m", f"mlptrain.cli.{module}", *args],
        cwd=cwd,
        env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
        capture_output=True,
        text=True,
        timeout=300,
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        slow = item.get_closest_marker("slow")
        if slow is not None and not (slow.args and isinstance(slow.args[0], str)):
            raise pytest.UsageError(
                f"{item.nodeid} is marked slow without a reason: "
                '@pytest.mark.slow("why it cannot be fast, in one line")'
            )
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU; this machine has none")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
