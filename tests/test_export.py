"""mlp-export to ONNX and pt2 from a run trained on real MNIST images; the exported
model's metadata, its parity with the checkpoint, and the torch-free predict and eval."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from mlptrain.artifacts.checkpoint import load_checkpoint, model_from_checkpoint
from mlptrain.data.registry import read_idx

from .conftest import config_document, require_real_data, run_cli, write_config

pytestmark = [
    pytest.mark.realdata,
    pytest.mark.slow(
        "trains on 2,000 real MNIST images, exports and checks on all 10,000 (module fixture)"
    ),
]
onnx = pytest.importorskip("onnx")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A batch-normalized model with dropout, trained with bf16 where the CPU has it, on
    2,000 real MNIST images and tested on the whole test split."""
    source = require_real_data()
    tmp_path = tmp_path_factory.mktemp("export")
    document = config_document(
        tmp_path,
        source,
        "mnist",
        {"hidden": [64, 32], "batch_norm": True, "dropout": 0.2},
        epochs=2,
        amp="auto",
    )
    document["data"].update(verify=True, subset={"train": 2000})
    result = run_cli(
        "train", "--config", str(write_config(tmp_path, document)), "--quiet", cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr
    (folder,) = (tmp_path / "runs").iterdir()
    return folder


def _export(run, *args: str):
    return run_cli("export", "--checkpoint", str(run / "best.pt"), *args, cwd=run)


@pytest.fixture(scope="module")
def onnx_file(run):
    result = _export(run, "--format", "onnx", "--out", str(run / "model.onnx"))
    assert result.returncode == 0, result.stderr
    assert "top-1 agreement 100.00% on 10,000 test images" in result.stdout
    return run / "model.onnx"


def _test_images(run, count: int) -> np.ndarray:
    """The first real MNIST test images, as the run imported them."""
    raw = run.parents[1] / "data" / "MNIST" / "raw"
    return read_idx(raw / "t10k-images-idx3-ubyte", 3)[:count].copy()


def _checkpoint_logits(run, images: np.ndarray) -> np.ndarray:
    model = model_from_checkpoint(load_checkpoint(run / "best.pt")).eval()
    with torch.inference_mode():
        return model(torch.from_numpy(images)).numpy()


def test_onnx_export_carries_its_metadata(run, onnx_file):
    meta = {prop.key: prop.value for prop in onnx.load(onnx_file).metadata_props}
    assert json.loads(meta["class_names"]) == [str(digit) for digit in range(10)]
    assert meta["dataset"] == "mnist" and meta["output"] == "logits"
    assert meta["input"].startswith("uint8 [N, 28, 28]")
    assert meta["checkpoint_sha256"] == hashlib.sha256((run / "best.pt").read_bytes()).hexdigest()
    recorded = json.loads((run / "test_metrics.json").read_text())["accuracy"]
    assert float(meta["test_accuracy"]) == recorded
    import mlptrain

    assert meta["mlptrain_version"] == mlptrain.__version__


def test_onnx_model_takes_any_batch_and_matches_the_checkpoint(run, onnx_file):
    from mlptrain.deploy.onnx_model import OnnxModel

    model = OnnxModel(onnx_file)
    images = _test_images(run, 300)
    expected = _checkpoint_logits(run, images)
    for count in (1, 7, 300):
        got = model(images[:count])
        assert got.dtype == np.float32 and got.shape == (count, 10)
        np.testing.assert_allclose(got, expected[:count], atol=1e-4)


def test_pt2_export_with_probabilities(run):
    from mlptrain.deploy.export import load_pt2

    result = _export(run, "--format", "pt2", "--probabilities", "--check-images", "500")
    assert result.returncode == 0, result.stderr
    assert "on 500 test images" in result.stdout
    module, meta = load_pt2(run / "best.pt2")  # the default name: the checkpoint's
    assert meta["output"] == "probabilities" and meta["dataset"] == "mnist"
    images = _test_images(run, 50)
    probabilities = module(torch.from_numpy(images)).detach().numpy()
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)
    expected = torch.from_numpy(_checkpoint_logits(run, images)).softmax(dim=1).numpy()
    np.testing.assert_allclose(probabilities, expected, atol=1e-6)


def _without_torch(module: str, *args: str, cwd) -> tuple[int, str, str]:
    """Run a command's main() in a fresh interpreter and report whether torch was imported."""
    code = (
        "import sys\n"
        f"from mlptrain.cli.{module} import main\n"
        f"status = main({list(args)!r})\n"
        "sys.stdout.flush()\n"
        "print('TORCH_IMPORTED' if 'torch' in sys.modules else 'NO_TORCH', file=sys.stderr)\n"
        "sys.exit(status)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True, timeout=300
    )
    return result.returncode, result.stdout, result.stderr


def test_predict_with_the_onnx_model_needs_no_torch_and_agrees(run, onnx_file, tmp_path):
    images = _test_images(run, 8)
    for index, image in enumerate(images):
        Image.fromarray(image).save(tmp_path / f"{index}.png")
    status, out, err = _without_torch(
        "predict", "--model", str(onnx_file), str(tmp_path), "--jsonl", "--top-k", "3", cwd=tmp_path
    )
    assert status == 0, err
    assert "NO_TORCH" in err
    exported = [json.loads(line) for line in out.splitlines()]
    reference = run_cli(
        "predict",
        "--checkpoint",
        str(run / "best.pt"),
        str(tmp_path),
        "--jsonl",
        "--top-k",
        "3",
        cwd=tmp_path,
    )
    expected = [json.loads(line) for line in reference.stdout.splitlines()]
    assert [row["path"] for row in exported] == [row["path"] for row in expected]
    for got, want in zip(exported, expected, strict=True):
        assert [entry["class"] for entry in got["top"]] == [entry["class"] for entry in want["top"]]
        for a, b in zip(got["top"], want["top"], strict=True):
            assert a["probability"] == pytest.approx(b["probability"], abs=1e-5)


def test_eval_with_the_onnx_model_needs_no_torch_and_agrees(run, onnx_file, tmp_path):
    source = str(require_real_data())
    status, out, err = _without_torch(
        "evaluate",
        "--model",
        str(onnx_file),
        "--json",
        "--data-source",
        source,
        "--data-root",
        str(tmp_path / "data"),
        cwd=tmp_path,
    )
    assert status == 0, err
    assert "NO_TORCH" in err
    exported = json.loads(out)
    checkpoint = json.loads((run / "test_metrics.json").read_text())
    assert exported["n"] == checkpoint["n"] == 10_000
    assert exported["accuracy"] == checkpoint["accuracy"]
    assert exported["confusion_matrix"] == checkpoint["confusion_matrix"]
    assert exported["loss"] == pytest.approx(checkpoint["loss"], abs=1e-4)


def test_a_failed_check_writes_nothing(run):
    target = run / "strict.onnx"
    result = _export(
        run, "--format", "onnx", "--out", str(target), "--tolerance", "0", "--check-images", "200"
    )
    assert result.returncode == 1
    assert "differs from the checkpoint" in result.stderr and "was not written" in result.stderr
    assert not target.exists()
    assert not [path for path in run.iterdir() if path.name.startswith(".strict.onnx")]


# --- bad input: one message each, exit 2 ------------------------------------------------


def test_a_damaged_or_foreign_checkpoint(run, tmp_path):
    damaged = tmp_path / "damaged.pt"
    damaged.write_bytes((run / "best.pt").read_bytes()[:5000])
    foreign = tmp_path / "foreign.pt"
    torch.save({"weights": torch.zeros(3)}, foreign)
    for path in (damaged, foreign):
        result = run_cli("export", "--checkpoint", str(path), "--format", "onnx", cwd=tmp_path)
        assert result.returncode == 2, result.stderr
        assert str(path) in result.stderr and "Traceback" not in result.stderr
        assert not path.with_suffix(".onnx").exists()


def test_an_unknown_format_lists_the_allowed_ones(run):
    result = _export(run, "--format", "tflite")
    assert result.returncode == 2
    assert "invalid choice: 'tflite'" in result.stderr
    assert "onnx" in result.stderr and "pt2" in result.stderr


def test_an_unwritable_output_path(run, tmp_path):
    for out, reason in ((tmp_path / "missing" / "m.onnx", "does not exist"), (tmp_path, "folder")):
        result = _export(run, "--format", "onnx", "--out", str(out))
        assert result.returncode == 2
        assert reason in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("module", "args", "package"),
    [
        ("export", ["--format", "onnx"], "onnxscript"),
        ("predict", ["--model", "MODEL", "IMAGE"], "onnxruntime"),
    ],
)
def test_a_missing_extra_names_the_install_line(run, onnx_file, tmp_path, module, args, package):
    args = [str(onnx_file) if a == "MODEL" else str(tmp_path) if a == "IMAGE" else a for a in args]
    if module == "export":
        args = ["--checkpoint", str(run / "best.pt"), *args, "--out", str(tmp_path / "m.onnx")]
    code = (
        f"import sys; sys.modules[{package!r}] = None\n"  # as if the package were absent
        f"from mlptrain.cli.{module} import main\n"
        f"sys.exit(main({args!r}))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 2, result.stderr
    assert package in result.stderr and "pip install 'mlptrain[export]'" in result.stderr


def test_a_damaged_or_foreign_onnx_file(run, onnx_file, tmp_path):
    from onnx import TensorProto, helper

    truncated = tmp_path / "truncated.onnx"
    truncated.write_bytes(onnx_file.read_bytes()[:2000])
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"this is not a model")
    foreign = tmp_path / "foreign.onnx"
    graph = helper.make_graph(
        [helper.make_node("Identity", ["pixels"], ["out"])],
        "other",
        [helper.make_tensor_value_info("pixels", TensorProto.UINT8, [None, 28, 28])],
        [helper.make_tensor_value_info("out", TensorProto.UINT8, [None, 28, 28])],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), foreign)
    image = tmp_path / "digit.png"
    Image.fromarray(_test_images(run, 1)[0]).save(image)
    for path, reason in (
        (truncated, "not a readable ONNX model"),
        (garbage, "not a readable ONNX model"),
        (foreign, "not one exported by mlp-export"),
    ):
        predicted = run_cli("predict", "--model", str(path), str(image), cwd=tmp_path)
        evaluated = run_cli("evaluate", "--model", str(path), cwd=tmp_path)
        for result in (predicted, evaluated):
            assert result.returncode == 2, result.stderr
            assert reason in result.stderr and str(path) in result.stderr
            assert "Traceback" not in result.stderr
