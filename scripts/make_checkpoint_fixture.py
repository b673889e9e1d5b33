"""Write tests/fixtures/checkpoint-format1.pt: a tiny checkpoint in today's format, which
every later mlptrain must still load and evaluate (tests/test_checkpoint.py), or refuse
with the documented message once that format is retired.

    python scripts/make_checkpoint_fixture.py

It trains one epoch of a [2] MLP with plain SGD on 300 synthetic images (so the file is
a few kilobytes), keeps its best.pt, and records beside it (checkpoint-format1.json) the
logits it gives on fixed pixels. Run it again only when a new checkpoint format is
introduced, under a new name; never overwrite an old fixture.
"""

from __future__ import annotations

import gzip
import json
import shutil
import struct
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

from mlptrain.api import resolve_config
from mlptrain.artifacts.checkpoint import FORMAT_VERSION, load_checkpoint, model_from_checkpoint
from mlptrain.run.runner import train
from mlptrain.util.logs import setup_logging

FIXTURES = Path(__file__).resolve().parents[1] / "tests" / "fixtures"


def fixture_pixels() -> torch.Tensor:
    """The fixed input whose logits the fixture records: 3 images of 28x28 uint8."""
    return (torch.arange(3 * 28 * 28) * 7 % 256).to(torch.uint8).view(3, 28, 28)


def write_idx(path: Path, array: np.ndarray) -> None:
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    path.write_bytes(gzip.compress(header + array.astype(np.uint8).tobytes()))


def synthetic_source(folder: Path) -> Path:
    rng = np.random.default_rng(0)
    for prefix, count in (("train", 300), ("t10k", 100)):
        labels = rng.integers(0, 10, size=count)
        images = rng.integers(0, 110, size=(count, 28, 28))
        for index, label in enumerate(labels):
            images[index, 2 + 2 * label : 4 + 2 * label, 4:24] = 180
        write_idx(folder / f"{prefix}-images-idx3-ubyte.gz", images)
        write_idx(folder / f"{prefix}-labels-idx1-ubyte.gz", labels)
    return folder


def main() -> int:
    target = FIXTURES / f"checkpoint-format{FORMAT_VERSION}.pt"
    if target.exists():
        print(f"{target} exists: fixtures of a format are never rewritten", file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory() as temporary:
        folder = Path(temporary)
        config = resolve_config(
            {
                "name": "fixture",
                "seed": 0,
                "device": "cpu",
                "data": {
                    "dataset": "mnist",
                    "root": str(folder / "data"),
                    "source": str(synthetic_source(folder)),
                    "verify": False,
                },
                "model": {"hidden": [2]},
                "optimizer": {"name": "sgd", "lr": 0.1, "momentum": 0.0},
                "training": {"epochs": 1, "batch_size": 32},
                "output": {"runs_dir": str(folder / "runs")},
            }
        )
        setup_logging(terminal=False)
        result = train(config, run_dir=folder / "run")
        FIXTURES.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(result.run_dir / "best.pt", target)
    checkpoint = load_checkpoint(target)
    model = model_from_checkpoint(checkpoint).eval()
    with torch.inference_mode():
        logits = model(fixture_pixels())
    record = {
        "format_version": FORMAT_VERSION,
        "written_by": checkpoint["versions"],
        "class_names": checkpoint["class_names"],
        "epoch": checkpoint["epoch"],
        "pixels": "(torch.arange(3 * 28 * 28) * 7 % 256).to(torch.uint8).view(3, 28, 28)",
        "logits": logits.tolist(),
    }
    target.with_suffix(".json").write_text(json.dumps(record, indent=1) + "\n")
    print(f"wrote {target} ({target.stat().st_size:,} bytes) and its .json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
