"""Exported models and predictions keep the checkpoint's class order and image shape:
Fashion-MNIST's named classes, whose order is not alphabetical, and your own images at a
size that is not square (12 high, 20 wide). The export, the ONNX model, mlp-predict on
either and mlp-eval of the ONNX file must agree with the checkpoint name for name."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

import mlptrain
from mlptrain.artifacts.checkpoint import load_checkpoint
from mlptrain.cli.evaluate import main as eval_main
from mlptrain.cli.export import main as export_main
from mlptrain.cli.predict import main as predict_main

from .conftest import config_document, synthetic_images

pytest.importorskip("onnxruntime")
FASHION_ORDER = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat"]  # the first five


def predictions(capsys, *arguments: str) -> list[dict]:
    capsys.readouterr()
    assert predict_main([*arguments, "--jsonl", "--top-k", "3"]) == 0
    return [json.loads(line) for line in capsys.readouterr().out.splitlines()]


def assert_same_predictions(from_checkpoint: list[dict], from_onnx: list[dict]) -> None:
    assert [row["path"] for row in from_onnx] == [row["path"] for row in from_checkpoint]
    for got, want in zip(from_onnx, from_checkpoint, strict=True):
        assert [(e["index"], e["class"]) for e in got["top"]] == [
            (e["index"], e["class"]) for e in want["top"]
        ]
        for a, b in zip(got["top"], want["top"], strict=True):
            assert a["probability"] == pytest.approx(b["probability"], abs=1e-5)


def test_named_classes_keep_their_order_through_export_predict_and_eval(
    tmp_path, synthetic_source, capsys
):
    document = config_document(tmp_path, synthetic_source, "fashion_mnist", epochs=3)
    run = mlptrain.train(document, run_dir=tmp_path / "run", verbose=False).run_dir
    names = load_checkpoint(run / "best.pt")["class_names"]
    assert names[:5] == FASHION_ORDER and names != sorted(names)
    onnx_file = tmp_path / "fashion.onnx"
    assert (
        export_main(
            ["--checkpoint", str(run / "best.pt"), "--format", "onnx", "--out", str(onnx_file)]
        )
        == 0
    )

    labels = np.array([1, 0, 8, 2])
    for index, image in enumerate(synthetic_images(labels, np.random.default_rng(5))):
        Image.fromarray(image).save(tmp_path / f"{index}.png")
    files = [str(tmp_path / f"{index}.png") for index in range(len(labels))]
    by_checkpoint = predictions(capsys, "--checkpoint", str(run / "best.pt"), *files)
    by_onnx = predictions(capsys, "--model", str(onnx_file), *files)
    assert_same_predictions(by_checkpoint, by_onnx)
    for row in by_onnx:
        assert all(entry["class"] == names[entry["index"]] for entry in row["top"])
    correct = [row["top"][0]["index"] for row in by_onnx] == labels.tolist()
    assert correct, "the synthetic classes are learnable: every image is recognised"

    data = ["--data-source", str(synthetic_source), "--no-verify"]
    data += ["--data-root", str(tmp_path / "data")]
    capsys.readouterr()
    assert eval_main(["--model", str(onnx_file), *data, "--json"]) == 0
    exported = json.loads(capsys.readouterr().out)
    assert exported["class_names"] == names
    recorded = json.loads((run / "test_metrics.json").read_text())
    assert exported["accuracy"] == pytest.approx(recorded["accuracy"], abs=1e-9)
    assert exported["confusion_matrix"] == recorded["confusion_matrix"]


def bar_image(column: int, height: int = 12, width: int = 20, seed: int = 0) -> np.ndarray:
    """Noise with a bright vertical bar at `column` (of 20): which third the bar is in
    is the class, so a model that swaps height and width cannot tell."""
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 50, size=(height, width)).astype(np.uint8)
    start = column * width // 20
    pixels[:, start : start + max(1, width // 10)] = 250
    return pixels


def test_a_non_square_model_predicts_through_export_as_its_checkpoint(
    tmp_path, synthetic_source, capsys
):
    classes = {"zebra": (0, 1, 2, 3, 4), "ant": (7, 8, 9, 10, 11), "mango": (15, 16, 17, 18)}
    root = tmp_path / "images"
    for name, columns in classes.items():
        (root / name).mkdir(parents=True)
        for number in range(24):
            image = bar_image(columns[number % len(columns)], seed=number)
            Image.fromarray(image).save(root / name / f"{number}.png")
    document = config_document(tmp_path, synthetic_source, epochs=15)
    document["data"] = {"dataset": "images", "path": str(root), "root": str(tmp_path / "data"),
                        "image_size": [12, 20], "test_fraction": 0.25}  # fmt: skip
    document["training"].update(batch_size=8)
    run = mlptrain.train(document, run_dir=tmp_path / "run", verbose=False).run_dir
    checkpoint = load_checkpoint(run / "best.pt")
    assert checkpoint["class_names"] == ["ant", "mango", "zebra"]
    assert checkpoint["model_spec"]["image_size"] in ([12, 20], (12, 20))
    onnx_file = tmp_path / "own.onnx"
    assert (
        export_main(
            ["--checkpoint", str(run / "best.pt"), "--format", "onnx", "--out", str(onnx_file)]
        )
        == 0
    )

    files = []
    for name, column in (("zebra", 2), ("ant", 9), ("mango", 16)):
        for scale in (1, 2):  # the model's own size, and twice it (resized on reading)
            image = Image.fromarray(bar_image(column, seed=99))
            path = tmp_path / f"new-{name}-{scale}.png"
            image.resize((20 * scale, 12 * scale), Image.Resampling.NEAREST).save(path)
            files.append(str(path))
    by_checkpoint = predictions(capsys, "--checkpoint", str(run / "best.pt"), *files)
    by_onnx = predictions(capsys, "--model", str(onnx_file), *files)
    assert_same_predictions(by_checkpoint, by_onnx)
    assert [row["top"][0]["class"] for row in by_onnx] == [
        "zebra", "zebra", "ant", "ant", "mango", "mango"
    ]  # fmt: skip
