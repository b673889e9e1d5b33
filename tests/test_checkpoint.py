from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from mlptrain.artifacts import checkpoint as checkpoint_module
from mlptrain.artifacts.checkpoint import (
    FORMAT_VERSION,
    build_checkpoint,
    load_checkpoint,
    model_from_checkpoint,
    save_checkpoint,
    unwrap,
)
from mlptrain.config.files import config_to_dict
from mlptrain.config.schema import Config
from mlptrain.errors import UsageError
from mlptrain.evaluation.evaluator import evaluate_checkpoint
from mlptrain.model.mlp import MLP, ModelSpec

from .conftest import TEST_COUNT


def make_checkpoint(epoch: int = 1) -> tuple[MLP, dict]:
    model = MLP(ModelSpec(hidden=(8,), batch_norm=True, mean=0.2, std=0.3))
    optimizer = torch.optim.Adam(model.parameters())
    model(torch.randint(0, 256, (4, 28, 28), dtype=torch.uint8)).sum().backward()
    optimizer.step()
    checkpoint = build_checkpoint(
        model=model,
        optimizer=optimizer,
        epoch=epoch,
        config=config_to_dict(Config()),
        class_names=[str(i) for i in range(10)],
        metrics=[{"epoch": 1, "val_accuracy": 0.5}],
    )
    return model, checkpoint


def test_round_trip_rebuilds_the_same_model(tmp_path: Path):
    model, checkpoint = make_checkpoint()
    save_checkpoint(tmp_path / "best.pt", checkpoint)
    loaded = load_checkpoint(tmp_path / "best.pt")
    rebuilt = model_from_checkpoint(loaded).eval()
    pixels = torch.randint(0, 256, (5, 28, 28), dtype=torch.uint8)
    assert torch.equal(rebuilt(pixels), model.eval()(pixels))
    assert loaded["normalization"] == {"mean": 0.2, "std": 0.3}
    assert loaded["format_version"] == FORMAT_VERSION
    assert loaded["optimizer_state"]["state"]  # Adam's moments survive
    assert loaded["metrics"] == [{"epoch": 1, "val_accuracy": 0.5}]


def test_checkpoint_is_plain_data(tmp_path: Path):
    _, checkpoint = make_checkpoint()
    save_checkpoint(tmp_path / "c.pt", checkpoint)
    # weights_only=True refuses anything but tensors and primitives.
    loaded = torch.load(tmp_path / "c.pt", weights_only=True)
    assert loaded["format_version"] == FORMAT_VERSION
    assert loaded["class_names"] == checkpoint["class_names"]
    for key, tensor in checkpoint["model_state"].items():
        assert torch.equal(loaded["model_state"][key], tensor), key


def test_compiled_wrapper_is_unwrapped():
    model = MLP(ModelSpec(hidden=(4,)))

    class Compiled(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self._orig_mod = model

    assert unwrap(Compiled()) is model
    assert unwrap(model) is model


def test_failed_write_keeps_the_previous_file(tmp_path: Path, monkeypatch):
    _, first = make_checkpoint(epoch=1)
    save_checkpoint(tmp_path / "best.pt", first)

    def broken_save(obj, handle):
        handle.write(b"partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(checkpoint_module.torch, "save", broken_save)
    _, second = make_checkpoint(epoch=2)
    with pytest.raises(OSError):
        save_checkpoint(tmp_path / "best.pt", second)
    monkeypatch.undo()
    assert load_checkpoint(tmp_path / "best.pt")["epoch"] == 1
    assert [path.name for path in tmp_path.iterdir()] == ["best.pt"]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "not a readable mlptrain checkpoint"),
        (b"hello, not a checkpoint", "not a readable mlptrain checkpoint"),
    ],
)
def test_foreign_files_are_refused(tmp_path: Path, content: bytes, message: str):
    path = tmp_path / "x.pt"
    path.write_bytes(content)
    with pytest.raises(UsageError, match=message):
        load_checkpoint(path)


def test_truncated_checkpoint(tmp_path: Path):
    _, checkpoint = make_checkpoint()
    save_checkpoint(tmp_path / "c.pt", checkpoint)
    data = (tmp_path / "c.pt").read_bytes()
    (tmp_path / "c.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(UsageError, match="truncated"):
        load_checkpoint(tmp_path / "c.pt")


def test_pickled_objects_are_never_executed(tmp_path: Path):
    marker = tmp_path / "executed"

    class Payload:  # unpickling this would create `marker`
        def __reduce__(self):
            return (marker.touch, ())

    path = tmp_path / "evil.pt"
    torch.save({"format_version": 1, "payload": Payload()}, path)
    with pytest.raises(UsageError, match="Python objects other than tensors"):
        load_checkpoint(path)
    assert not marker.exists()


def test_other_torch_files_and_newer_formats(tmp_path: Path):
    torch.save({"weights": torch.zeros(2)}, tmp_path / "other.pt")
    with pytest.raises(UsageError, match="not an mlptrain checkpoint"):
        load_checkpoint(tmp_path / "other.pt")
    _, checkpoint = make_checkpoint()
    save_checkpoint(tmp_path / "new.pt", {**checkpoint, "format_version": FORMAT_VERSION + 1})
    with pytest.raises(UsageError, match="newer than this mlptrain"):
        load_checkpoint(tmp_path / "new.pt")


def test_missing_checkpoint_and_folder(tmp_path: Path):
    with pytest.raises(UsageError, match="does not exist"):
        load_checkpoint(tmp_path / "nope.pt")
    with pytest.raises(UsageError, match="is a folder"):
        load_checkpoint(tmp_path)


def test_a_save_replaces_the_file_and_never_rewrites_it_in_place(tmp_path: Path):
    # A reader that opened best.pt before a save (mlp-eval, a copy, a crash mid-write)
    # must find the complete old checkpoint: the new one goes to a temporary file that
    # is renamed over it, never into the open file.
    _, first = make_checkpoint(epoch=1)
    _, second = make_checkpoint(epoch=2)
    save_checkpoint(tmp_path / "last.pt", first, tmp_path / "best.pt")
    with open(tmp_path / "best.pt", "rb") as reader:
        save_checkpoint(tmp_path / "last.pt", second, tmp_path / "best.pt")
        old = torch.load(reader, map_location="cpu", weights_only=True)
    assert old["epoch"] == 1
    assert load_checkpoint(tmp_path / "best.pt")["epoch"] == 2
    assert sorted(path.name for path in tmp_path.iterdir()) == ["best.pt", "last.pt"]


FIXTURE = Path(__file__).parent / "fixtures" / "checkpoint-format1.pt"


def test_a_checkpoint_of_format_1_still_loads_and_predicts_the_same():
    """Written by scripts/make_checkpoint_fixture.py with mlptrain 0.1.0."""
    recorded = json.loads(FIXTURE.with_suffix(".json").read_text())
    checkpoint = load_checkpoint(FIXTURE)
    assert checkpoint["class_names"] == recorded["class_names"]
    model = model_from_checkpoint(checkpoint, str(FIXTURE)).eval()
    pixels = (torch.arange(3 * 28 * 28) * 7 % 256).to(torch.uint8).view(3, 28, 28)
    with torch.inference_mode():
        logits = model(pixels)
    assert torch.allclose(logits, torch.tensor(recorded["logits"]), atol=1e-5)


def test_a_checkpoint_of_format_1_evaluates_on_its_dataset(tmp_path, synthetic_source):
    evaluation, _ = evaluate_checkpoint(
        FIXTURE,
        "test",
        {"data.source": str(synthetic_source), "data.root": str(tmp_path / "data")},
        batch_size=64,
    )
    assert evaluation.result.n == TEST_COUNT
    assert evaluation.summary["epoch"] == 1


def test_a_retired_format_is_refused_with_the_documented_message(monkeypatch):
    monkeypatch.setattr(checkpoint_module, "OLDEST_FORMAT_VERSION", 2)
    with pytest.raises(UsageError, match=r"format 1, which this mlptrain .* no longer reads"):
        load_checkpoint(FIXTURE)
