"""Inference speed of an exported model against the checkpoint's, measured in one run.

For the tutorial model (recipes/mnist-adam-128-64: [128, 64]) and the preset model
(configs/mnist.yaml: [1024, 1024] with batch norm), each as PyTorch eager, the torch.export
program (.pt2) and onnxruntime (.onnx):
  - single-image latency: median and p99 over --calls calls;
  - batch throughput: images per second at batch --batch (median of --repeats);
and, for each predict path, a fresh process's import-and-first-prediction time and its
peak memory (onnxruntime + numpy against torch).

    python scripts/benchmark_inference.py [--calls 1000] [--json docs/inference.json]

Weights are random: the time of a forward pass does not depend on their values.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mlptrain.artifacts.checkpoint import build_checkpoint, save_checkpoint
from mlptrain.config.files import config_to_dict, load_config
from mlptrain.deploy.export import Deployable, load_exported, serialize
from mlptrain.model.mlp import MLP, ModelSpec
from mlptrain.training.runtime import describe_machine

MODELS = {"tutorial [128, 64]": "recipes/mnist-adam-128-64", "preset [1024, 1024]": "mnist"}
METADATA = {
    "class_names": json.dumps([str(digit) for digit in range(10)]),
    "dataset": "mnist",
    "output": "logits",
}

# A fresh interpreter: import what the path needs, load the model, predict one image.
COLD_START = {
    "onnxruntime (mlp-predict --model)": (
        "from mlptrain.deploy.onnx_model import OnnxModel\n"
        "import numpy as np\n"
        "model = OnnxModel({onnx!r})\n"
        "model.top(np.zeros((28, 28), np.uint8), 3)\n"
    ),
    "torch (mlp-predict --checkpoint)": (
        "from mlptrain.deploy.prediction import Predictor\n"
        "import numpy as np\n"
        "model = Predictor({checkpoint!r})\n"
        "model.top(np.zeros((28, 28), np.uint8), 3)\n"
    ),
}
COLD_TEMPLATE = (
    "import time\n"
    "start = time.perf_counter()\n"
    "{body}"
    "seconds = time.perf_counter() - start\n"
    # VmHWM: this process's own peak (ru_maxrss would carry the parent's over exec).
    "status = open('/proc/self/status').read().split('VmHWM:')[1].split()\n"
    "peak = int(status[0]) * 1024\n"
    "print(seconds, peak)\n"
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=1000, help="single-image calls per engine")
    parser.add_argument("--batch", type=int, default=1000, help="batch size for throughput")
    parser.add_argument("--repeats", type=int, default=20, help="timed batches per engine")
    parser.add_argument("--cold-repeats", type=int, default=3, help="fresh processes per path")
    parser.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    return parser.parse_args(argv)


def preset_model(name: str) -> Deployable:
    config = load_config(name)
    model = config.model
    spec = ModelSpec(
        hidden=tuple(model.hidden),
        activation=model.activation,
        dropout=model.dropout,
        batch_norm=model.batch_norm,
        mean=0.13,
        std=0.31,
    )
    torch.manual_seed(0)
    return Deployable(MLP(spec), probabilities=False)


def engines(model: Deployable) -> dict[str, Any]:
    """Each engine as a function of a uint8 numpy batch to its outputs."""

    def eager(pixels: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return model(torch.from_numpy(pixels)).numpy()

    pt2 = load_exported("pt2", serialize(model, "pt2", METADATA), "pt2")

    def program(pixels: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return pt2(pixels)

    onnx = load_exported("onnx", serialize(model, "onnx", METADATA), "onnx")
    return {"pytorch eager": eager, "torch.export (.pt2)": program, "onnxruntime": onnx}


def call_seconds(run, pixels: np.ndarray, calls: int, warmup: int) -> list[float]:
    for _ in range(warmup):
        run(pixels)
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        run(pixels)
        times.append(time.perf_counter() - start)
    return sorted(times)


def latency(run, image: np.ndarray, calls: int) -> dict[str, float]:
    times = call_seconds(run, image, calls, warmup=20)
    p99 = times[min(len(times) - 1, int(0.99 * len(times)))]
    return {"median_ms": statistics.median(times) * 1e3, "p99_ms": p99 * 1e3}


def throughput(run, images: np.ndarray, repeats: int) -> float:
    return len(images) / statistics.median(call_seconds(run, images, repeats, warmup=1))


def cold_starts(model: Deployable, folder: Path, repeats: int) -> dict[str, dict[str, float]]:
    onnx = folder / "model.onnx"
    onnx.write_bytes(serialize(model, "onnx", METADATA))
    checkpoint = folder / "best.pt"
    config = config_to_dict(load_config("mnist"))
    save_checkpoint(
        checkpoint,
        build_checkpoint(
            model=model.model,
            optimizer=None,
            epoch=0,
            config=config,
            class_names=[str(d) for d in range(10)],
            metrics=[],
        ),
    )
    results = {}
    for name, body in COLD_START.items():
        code = COLD_TEMPLATE.format(body=body.format(onnx=str(onnx), checkpoint=str(checkpoint)))
        samples = []
        for _ in range(repeats):
            out = subprocess.run(
                [sys.executable, "-c", code], capture_output=True, text=True, check=True
            ).stdout.split()
            samples.append((float(out[0]), int(out[1])))
        results[name] = {
            "seconds": statistics.median(s for s, _ in samples),
            "peak_mb": statistics.median(m for _, m in samples) / 1e6,
        }
    return results


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (1, 28, 28), dtype=np.uint8)
    batch = rng.integers(0, 256, (args.batch, 28, 28), dtype=np.uint8)
    report: dict[str, Any] = {
        "machine": describe_machine(torch.device("cpu")),
        "torch_threads": torch.get_num_threads(),
        "models": {},
    }
    print(
        f"machine: {report['machine']['cpu']} ({report['machine']['cpu_count']} cores), "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads"
    )
    print(
        f"{'model':<20} {'engine':<20} {'1 image median':>15} {'p99':>9} "
        f"{'batch ' + str(args.batch):>14}"
    )
    for label, config_name in MODELS.items():
        model = preset_model(config_name)
        rows = {}
        for engine, run in engines(model).items():
            row = {
                **latency(run, image, args.calls),
                "images_per_second": throughput(run, batch, args.repeats),
            }
            rows[engine] = row
            print(
                f"{label:<20} {engine:<20} {row['median_ms']:12.3f} ms {row['p99_ms']:6.3f} ms "
                f"{row['images_per_second']:10,.0f} /s"
            )
        report["models"][label] = rows
    with tempfile.TemporaryDirectory() as folder:
        report["cold_start"] = cold_starts(preset_model("mnist"), Path(folder), args.cold_repeats)
    print("\nfresh process: import, load the preset model, predict one image")
    for name, row in report["cold_start"].items():
        print(f"  {name:<36} {row['seconds']:6.2f} s  peak memory {row['peak_mb']:6.0f} MB")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
