"""Your own data: image folders and CSV files as datasets (data.dataset images | csv),
their cache, every bad input, and the commands downstream of such a run."""

from __future__ import annotations

import csv
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from mlptrain.config.files import load_config
from mlptrain.config.schema import DataConfig
from mlptrain.data import userdata
from mlptrain.data.cache import cache_path
from mlptrain.data.userdata import load_user_data
from mlptrain.errors import UsageError
from tests.conftest import REPO, require_real_data, run_cli, write_config, write_idx

# --- small synthetic inputs -------------------------------------------------------------------


def write_png_folder(folder: Path, classes=("0", "1", "2"), per_class=4, size=(28, 28)) -> Path:
    rng = np.random.default_rng(0)
    for index, name in enumerate(classes):
        (folder / name).mkdir(parents=True, exist_ok=True)
        for number in range(per_class):
            pixels = rng.integers(0, 60, size=size).astype(np.uint8)
            pixels[:, index * 3 : index * 3 + 3] = 250
            Image.fromarray(pixels).save(folder / name / f"{number}.png")
    return folder


def write_pixel_csv(path: Path, rows: list[list], header: list[str] | None = None) -> Path:
    header = header or ["label", *(f"pixel{i}" for i in range(4))]
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def images_config(tmp_path: Path, path: Path, **data) -> DataConfig:
    return DataConfig(dataset="images", path=str(path), root=str(tmp_path / "data"), **data)


def csv_config(tmp_path: Path, path: Path, **data) -> DataConfig:
    data = {"image_size": (2, 2), **data}
    return DataConfig(dataset="csv", path=str(path), root=str(tmp_path / "data"), **data)


# --- reading ------------------------------------------------------------------------------------


def test_an_image_folder_with_training_and_testing_splits(tmp_path):
    write_png_folder(tmp_path / "set" / "training", classes=("2", "10", "1"))
    write_png_folder(tmp_path / "set" / "testing", classes=("2", "10", "1"), per_class=2)
    data = load_user_data(images_config(tmp_path, tmp_path / "set"))
    assert data.class_names == ("1", "2", "10")  # numeric names in numeric order
    assert data.train_images.shape == (12, 28, 28) and data.train_images.dtype == np.uint8
    assert data.test_images.shape == (6, 28, 28)
    assert np.bincount(data.train_labels).tolist() == [4, 4, 4]
    # The bright stripe of class "10" (written third) sits at columns 3-5.
    ten = data.train_images[data.train_labels == 2]
    assert (ten[:, :, 3:6] == 250).all()


def test_images_are_turned_grey_and_resized_and_names_sort_alphabetically(tmp_path):
    for name, colour in (("emu", (255, 0, 0)), ("cat", (0, 255, 0))):
        (tmp_path / "set" / name).mkdir(parents=True)
        for number in range(5):
            Image.new("RGB", (40 + number, 30), colour).save(
                tmp_path / "set" / name / f"{number}.jpg"
            )
    config = images_config(tmp_path, tmp_path / "set", image_size=(12, 16), test_fraction=0.4)
    data = load_user_data(config)
    assert data.class_names == ("cat", "emu")
    assert data.train_images.shape[1:] == (12, 16) and data.test_images.shape[1:] == (12, 16)
    # A class-stratified carve: 2 of each class's 5 images.
    assert np.bincount(data.test_labels).tolist() == [2, 2]
    assert np.bincount(data.train_labels).tolist() == [3, 3]
    grey_green = round(0.587 * 255)  # Pillow's L conversion
    assert abs(int(data.train_images[data.train_labels == 0].mean()) - grey_green) <= 1
    # The carve is the same on every load (a fixed seed), whatever the run's seed.
    again = load_user_data(config)
    assert np.array_equal(again.test_images, data.test_images)


def test_a_csv_with_a_test_file_and_label_values_as_class_names(tmp_path):
    train = write_pixel_csv(
        tmp_path / "train.csv", [[7, 0, 1, 2, 3], [3, 255, 0, 0, 9], [7, 4, 4, 4, 4]]
    )
    test = write_pixel_csv(tmp_path / "test.csv", [[3, 1, 1, 1, 1]])
    data = load_user_data(csv_config(tmp_path, train, test_path=str(test)))
    assert data.class_names == ("3", "7")
    assert data.train_labels.tolist() == [1, 0, 1]
    assert data.train_images[1].tolist() == [[255, 0], [0, 9]]  # row-major
    assert data.test_labels.tolist() == [0]


def test_the_label_column_can_be_anywhere_and_named_anything(tmp_path):
    header = ["p0", "p1", "digit", "p2", "p3"]
    rows = [[1, 2, 5, 3, 4], [0, 0, 6, 0, 0], [9, 9, 5, 9, 9], [8, 8, 6, 8, 8]]
    train = write_pixel_csv(tmp_path / "t.csv", rows, header)
    data = load_user_data(csv_config(tmp_path, train, label_column="digit", test_fraction=0.5))
    assert data.class_names == ("5", "6")
    assert sorted(data.test_labels.tolist()) == [0, 1]  # one of each class
    images = np.concatenate([data.train_images, data.test_images])
    expected = [[0, 0, 0, 0], [1, 2, 3, 4], [8, 8, 8, 8], [9, 9, 9, 9]]
    assert sorted(image.ravel().tolist() for image in images) == expected


# --- the cache --------------------------------------------------------------------------------


def count_decodes(monkeypatch) -> list[int]:
    calls: list[int] = []
    original = userdata._decode_all

    def counting(paths, size):
        calls.append(len(paths))
        return original(paths, size)

    monkeypatch.setattr(userdata, "_decode_all", counting)
    return calls


def test_the_cache_is_used_until_a_file_changes(tmp_path, monkeypatch):
    folder = write_png_folder(tmp_path / "set")
    config = images_config(tmp_path, folder, test_fraction=0.25)
    calls = count_decodes(monkeypatch)
    first = load_user_data(config)
    assert calls == [12] and cache_path(config).is_file()
    second = load_user_data(config)
    assert calls == [12]  # a hit: nothing decoded
    assert np.array_equal(first.train_images, second.train_images)

    image = folder / "1" / "0.png"
    Image.fromarray(np.full((28, 28), 77, dtype=np.uint8)).save(image)
    os.utime(image, ns=(1, 1))  # a changed file, whatever the clock's resolution
    third = load_user_data(config)
    assert calls == [12, 12]
    assert not np.array_equal(first.train_images, third.train_images) or not np.array_equal(
        first.test_images, third.test_images
    )
    Image.fromarray(np.zeros((28, 28), dtype=np.uint8)).save(folder / "2" / "new.png")
    added = load_user_data(config)
    assert len(added.train_labels) + len(added.test_labels) == 13 and calls == [12, 12, 13]


def test_a_setting_that_changes_what_is_read_is_not_served_from_the_cache(tmp_path, monkeypatch):
    """The same files read another way (another image size, test split, label column,
    skipping) are another dataset: each is read afresh, and each setting's own cache
    serves it again afterwards."""
    folder = write_png_folder(tmp_path / "set")
    calls = count_decodes(monkeypatch)
    square = load_user_data(images_config(tmp_path, folder, test_fraction=0.25))
    wide = load_user_data(images_config(tmp_path, folder, test_fraction=0.25, image_size=(8, 12)))
    assert calls == [12, 12]
    assert square.train_images.shape[1:] == (28, 28) and wide.train_images.shape[1:] == (8, 12)
    half = load_user_data(images_config(tmp_path, folder, test_fraction=0.5))
    assert calls == [12, 12, 12] and len(half.test_labels) == 6 != len(square.test_labels)
    again = load_user_data(images_config(tmp_path, folder, test_fraction=0.25, image_size=(8, 12)))
    assert calls == [12, 12, 12] and np.array_equal(again.train_images, wide.train_images)

    table = write_pixel_csv(
        tmp_path / "two.csv",
        [[0, 1, 0, 9, 1, 2], [1, 0, 1, 8, 3, 4], [0, 1, 0, 7, 5, 6], [1, 0, 1, 6, 7, 8]],
        header=["label", "kind", "p0", "p1", "p2", "p3"],
    )
    by_label = load_user_data(csv_config(tmp_path, table, test_fraction=0.5, image_size=(1, 5)))
    by_kind = load_user_data(
        csv_config(tmp_path, table, test_fraction=0.5, image_size=(1, 5), label_column="kind")
    )
    assert by_label.train_images[:, 0, 0].tolist() != by_kind.train_images[:, 0, 0].tolist()


def test_an_interrupted_read_leaves_no_cache_and_a_damaged_cache_is_read_again(
    tmp_path, monkeypatch, caplog
):
    folder = write_png_folder(tmp_path / "set")
    config = images_config(tmp_path, folder, test_fraction=0.25)

    def interrupted(paths, size):
        raise KeyboardInterrupt

    monkeypatch.setattr(userdata, "_decode_all", interrupted)
    with pytest.raises(KeyboardInterrupt):
        load_user_data(config)
    assert not cache_path(config).exists()
    assert (
        not list(cache_path(config).parent.glob("*"))
        if cache_path(config).parent.exists()
        else True
    )
    monkeypatch.undo()
    load_user_data(config)
    cache = cache_path(config)
    cache.write_bytes(cache.read_bytes()[:200])  # truncated
    calls = count_decodes(monkeypatch)
    with caplog.at_level(logging.WARNING, logger="mlptrain"):
        data = load_user_data(config)
    assert calls == [12] and len(data.train_labels) + len(data.test_labels) == 12
    assert "damaged" in caplog.text


# --- bad input --------------------------------------------------------------------------------


def raises(config: DataConfig, match: str) -> None:
    with pytest.raises(UsageError, match=match):
        load_user_data(config)
    assert not cache_path(config).exists()


def test_bad_image_folders_are_named(tmp_path):
    raises(images_config(tmp_path, tmp_path / "nowhere"), r"data.path .*nowhere does not exist")
    (tmp_path / "flat").mkdir()
    Image.new("L", (28, 28)).save(tmp_path / "flat" / "a.png")
    raises(
        images_config(tmp_path, tmp_path / "flat", test_fraction=0.2), r"flat has no class folders"
    )
    folder = write_png_folder(tmp_path / "set")
    (folder / "3").mkdir()
    raises(
        images_config(tmp_path, folder, test_fraction=0.2), r"class folder .*set/3 has no images"
    )
    (folder / "3").rmdir()
    raises(images_config(tmp_path, folder), r"set has no test split .*data.test_fraction")


def test_unreadable_files_are_counted_and_named_or_skipped(tmp_path, caplog):
    folder = write_png_folder(tmp_path / "set")
    (folder / "0" / "notes.txt").write_text("not an image")
    (folder / "1" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 20)
    config = images_config(tmp_path, folder, test_fraction=0.25)
    raises(
        config,
        r"2 file\(s\) are not images Pillow can read: .*notes.txt, .*broken.png; "
        r".*data.skip_unreadable: true",
    )
    skipping = images_config(tmp_path, folder, test_fraction=0.25, skip_unreadable=True)
    with caplog.at_level(logging.WARNING, logger="mlptrain"):
        data = load_user_data(skipping)
    assert len(data.train_labels) + len(data.test_labels) == 12
    assert "skipped 2 file(s)" in caplog.text


def test_training_and_test_folders_with_different_classes(tmp_path):
    write_png_folder(tmp_path / "set" / "train", classes=("0", "1", "2"))
    write_png_folder(tmp_path / "set" / "test", classes=("0", "1", "7"))
    raises(
        images_config(tmp_path, tmp_path / "set"),
        r"different classes: only in training: \['2'\]; only in test: \['7'\]",
    )


@pytest.mark.parametrize(
    "rows, header, match",
    [
        (
            [[1, 0, 0, 0, 0]],
            ["digit", "p0", "p1", "p2", "p3"],
            r"has no column 'label' \(its columns: digit, p0",
        ),
        ([[1, 0, 0, 0, 0], [2, 0, 0, 0]], None, r"t.csv, line 3: 4 values, but the header has 5"),
        (
            [[1, 0, 0, 0, 0], [2, 0, 256, 0, 0]],
            None,
            r"line 3, column 'pixel1': the pixel '256' is not an integer from 0 to 255",
        ),
        ([[1, 0, 0, 0, 0], [2, 0, -1, 0, 0]], None, r"line 3, column 'pixel1': the pixel '-1'"),
        ([[1.5, 0, 0, 0, 0]], None, r"t.csv, line 2: the label '1.5' is not an integer"),
        ([["cat", 0, 0, 0, 0]], None, r"line 2: the label 'cat' is not an integer"),
        (
            [[1, 0, 0, 0, 0, 0]],
            ["label", *(f"p{i}" for i in range(5))],
            r"has 5 pixel columns, but data.image_size 2x2 needs 4",
        ),
        ([], None, r"has a header but no rows"),
    ],
)
def test_bad_csv_files_name_the_file_and_line(tmp_path, rows, header, match):
    path = write_pixel_csv(tmp_path / "t.csv", rows, header)
    raises(csv_config(tmp_path, path, test_fraction=0.5), match)


def test_config_keys_fit_the_dataset():
    with pytest.raises(UsageError, match="data.dataset images reads your own files: set data.path"):
        load_config(None, ["data.dataset=images"])
    with pytest.raises(UsageError, match="data.path is for data.dataset images or csv"):
        load_config(None, ["data.dataset=mnist", "data.path=/tmp"])
    with pytest.raises(UsageError, match="data.image_size of mnist is 28x28"):
        load_config(None, ["data.dataset=mnist", "data.image_size=[32,32]"])


def test_a_bad_source_is_exit_2_and_leaves_no_run_folder(tmp_path):
    path = write_pixel_csv(tmp_path / "t.csv", [[1, 0, 0, 0, 0], [2, 0, 300, 0, 0]])
    document = {
        "data": {
            "dataset": "csv",
            "path": str(path),
            "image_size": [2, 2],
            "test_fraction": 0.5,
            "root": str(tmp_path / "data"),
        },
        "output": {"runs_dir": str(tmp_path / "runs")},
        "device": "cpu",
    }
    result = run_cli("train", "--config", str(write_config(tmp_path, document)), cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert "t.csv, line 3, column 'pixel1': the pixel '300'" in result.stderr
    assert "Traceback" not in result.stderr
    assert not list((tmp_path / "runs").glob("*"))


# --- real MNIST, converted by scripts/export_images.py -----------------------------------------

TRAIN, TEST = 1500, 400


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> dict[str, Path]:
    """The first TRAIN/TEST real MNIST images as PNG folders, as CSV, as Kaggle's CSV, and
    as IDX files (the same images, for the built-in path)."""
    source = require_real_data()
    root = tmp_path_factory.mktemp("exported")
    outputs = {}
    for kind in ("png", "csv", "kaggle"):
        outputs[kind] = root / kind
        subprocess.run(
            [
                sys.executable,
                str(REPO / "scripts" / "export_images.py"),
                "--dataset",
                "mnist",
                "--format",
                kind,
                "--train",
                str(TRAIN),
                "--test",
                str(TEST),
                "--out",
                str(outputs[kind]),
                "--data-source",
                str(source),
                "--data-root",
                str(root / "data"),
            ],
            check=True,
            capture_output=True,
            timeout=300,
        )
    from mlptrain.data.registry import DATASETS, FILES, prepare_files, read_pair

    info = DATASETS["mnist"]
    files = prepare_files(info, DataConfig(dataset="mnist", root=str(root / "data")), FILES)
    idx = root / "idx" / "mnist"
    for prefix, count in (("train", TRAIN), ("t10k", TEST)):
        images, labels = read_pair(
            info, files, f"{prefix}-images-idx3-ubyte", f"{prefix}-labels-idx1-ubyte", False
        )
        write_idx(idx / f"{prefix}-images-idx3-ubyte", images[:count])
        write_idx(idx / f"{prefix}-labels-idx1-ubyte", labels[:count].astype(np.uint8))
    outputs["idx"] = root / "idx"
    return outputs


def csv_data(exported: dict[str, Path]) -> dict:
    """The data section of a run on the exported CSV files."""
    folder = exported["csv"]
    return {
        "dataset": "csv",
        "path": str(folder / "train.csv"),
        "test_path": str(folder / "test.csv"),
    }


def train_run(tmp_path: Path, data: dict, name: str, *extra: str) -> Path:
    document = {
        "name": name,
        "seed": 5,
        "device": "cpu",
        "data": {"root": str(tmp_path / "data"), **data},
        "model": {"hidden": [64]},
        "training": {"epochs": 3, "batch_size": 64},
        "output": {"runs_dir": str(tmp_path / "runs")},
    }
    config = write_config(tmp_path, document, f"{name}.yaml")
    result = run_cli("train", "--config", str(config), "--quiet", *extra, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    (run,) = (tmp_path / "runs").glob(f"{name}-*")
    return run


def test_export_script_writes_both_layouts(exported):
    png = exported["png"]
    assert sorted(path.name for path in (png / "training").iterdir()) == [str(d) for d in range(10)]
    assert sum(1 for _ in (png / "testing").rglob("*.png")) == TEST
    with (exported["csv"] / "train.csv").open() as handle:
        header = next(csv.reader(handle))
    assert header[:2] == ["label", "pixel0"] and len(header) == 785
    with (exported["kaggle"] / "test.csv").open() as handle:
        assert next(csv.reader(handle))[0] == "pixel0"  # Kaggle's test file has no labels


@pytest.mark.slow("exports real MNIST as PNG and CSV and trains on each and on the IDX files")
def test_png_csv_and_idx_train_to_the_same_accuracy(tmp_path, exported):
    """The same images through three readers: the runs are identical, number for number."""
    png = train_run(tmp_path, {"dataset": "images", "path": str(exported["png"])}, "png")
    table = train_run(
        tmp_path,
        csv_data(exported),
        "csv",
    )
    idx = train_run(
        tmp_path,
        {"dataset": "mnist", "source": str(exported["idx"]), "verify": False},
        "idx",
    )
    results = [json.loads((run / "test_metrics.json").read_text()) for run in (png, table, idx)]
    accuracies = [result["accuracy"] for result in results]
    # The CSV keeps the IDX files' order: the runs are identical, number for number.
    assert accuracies[1] == accuracies[2], accuracies
    last_losses = [(run / "metrics.csv").read_text().splitlines()[-1] for run in (table, idx)]
    assert last_losses[0].split(",")[:5] == last_losses[1].split(",")[:5]
    # The folders hold the same images class by class, so the seeded validation split
    # takes other images: the accuracy agrees within noise (one standard error is 1.8 pp).
    assert abs(accuracies[0] - accuracies[2]) <= 0.04, accuracies
    assert min(accuracies) > 0.8
    assert results[0]["class_names"] == [str(digit) for digit in range(10)]


def test_image_folders_hold_exactly_the_idx_images(tmp_path, exported):
    folders = load_user_data(images_config(tmp_path, exported["png"]))
    table = load_user_data(
        csv_config(
            tmp_path,
            exported["csv"] / "train.csv",
            image_size=(28, 28),
            test_path=str(exported["csv"] / "test.csv"),
        )
    )
    order = np.argsort(table.train_labels, kind="stable")  # class by class, in file order
    assert np.array_equal(folders.train_images, table.train_images[order])
    assert np.array_equal(folders.train_labels, table.train_labels[order])
    assert len(folders.test_labels) == TEST


@pytest.mark.slow("every command, each in its own process, on a run of real MNIST PNGs")
def test_every_command_downstream_of_an_image_folder_run(tmp_path, exported):
    png = exported["png"]
    run = train_run(
        tmp_path, {"dataset": "images", "path": str(png), "image_size": [20, 20]}, "own"
    )
    recorded = json.loads((run / "test_metrics.json").read_text())["accuracy"]

    evaluated = run_cli("evaluate", "--checkpoint", str(run / "best.pt"), "--json", cwd=tmp_path)
    assert evaluated.returncode == 0, evaluated.stderr
    assert json.loads(evaluated.stdout)["accuracy"] == recorded

    seven = next((png / "testing" / "7").iterdir())  # 28x28, resized to the model's 20x20
    predicted = run_cli(
        "predict", "--checkpoint", str(run / "best.pt"), str(seven), "--jsonl", cwd=tmp_path
    )
    assert predicted.returncode == 0, predicted.stderr
    assert json.loads(predicted.stdout)["top"][0]["class"] == "7"

    exported_model = tmp_path / "own.onnx"
    result = run_cli(
        "export",
        "--checkpoint",
        str(run / "best.pt"),
        "--format",
        "onnx",
        "--out",
        str(exported_model),
        "--check-images",
        "100",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    on_onnx = run_cli(
        "predict", "--model", str(exported_model), str(seven), "--jsonl", cwd=tmp_path
    )
    assert json.loads(on_onnx.stdout)["top"][0]["class"] == "7"

    compared = run_cli("compare", str(tmp_path / "runs"), "--json", cwd=tmp_path)
    assert compared.returncode == 0, compared.stderr
    assert '"images"' in compared.stdout

    resumed = run_cli(
        "train", "--resume", str(run), "--set", "training.epochs=4", "--quiet", cwd=tmp_path
    )
    assert resumed.returncode == 0, resumed.stderr
    assert len((run / "metrics.csv").read_text().splitlines()) == 1 + 4


@pytest.mark.slow("predicts every row of real MNIST's test CSV in a process")
def test_predict_writes_a_csv_of_predictions_and_kaggle_s_format(tmp_path, exported):
    run = train_run(
        tmp_path,
        csv_data(exported),
        "table",
    )
    kaggle_test = exported["kaggle"] / "test.csv"
    out = tmp_path / "predictions.csv"
    result = run_cli(
        "predict",
        "--checkpoint",
        str(run / "best.pt"),
        "--csv",
        str(kaggle_test),
        "--out",
        str(out),
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    rows = list(csv.DictReader(out.open()))
    assert len(rows) == TEST and list(rows[0]) == ["id", "class", "probability"]
    assert rows[0]["id"] == "1" and 0 < float(rows[0]["probability"]) <= 1
    labels = np.loadtxt(exported["csv"] / "test.csv", delimiter=",", skiprows=1, usecols=0)
    accuracy = np.mean(
        [int(row["class"]) == label for row, label in zip(rows, labels, strict=True)]
    )
    recorded = json.loads((run / "test_metrics.json").read_text())["accuracy"]
    assert accuracy == pytest.approx(recorded)  # the labelled test file, predicted alike

    kaggle = run_cli(
        "predict",
        "--checkpoint",
        str(run / "best.pt"),
        "--csv",
        str(kaggle_test),
        "--kaggle",
        cwd=tmp_path,
    )
    lines = kaggle.stdout.splitlines()
    assert lines[0] == "ImageId,Label" and len(lines) == TEST + 1
    assert lines[1] == f"1,{rows[0]['class']}"

    wrong = write_pixel_csv(tmp_path / "wrong.csv", [[0, 0, 0, 0]], [f"pixel{i}" for i in range(4)])
    refused = run_cli(
        "predict", "--checkpoint", str(run / "best.pt"), "--csv", str(wrong), cwd=tmp_path
    )
    assert refused.returncode == 2
    assert "has 4 pixel columns, but data.image_size 28x28 needs 784" in refused.stderr


@pytest.mark.slow("an mlp-sweep process over real MNIST as CSV, a process per trial")
def test_a_sweep_over_a_csv_dataset(tmp_path, exported):
    document = {
        "seed": 1,
        "device": "cpu",
        "data": {
            "dataset": "csv",
            "path": str(exported["csv"] / "train.csv"),
            "test_path": str(exported["csv"] / "test.csv"),
            "root": str(tmp_path / "data"),
        },
        "model": {"hidden": [32]},
        "training": {"epochs": 1, "batch_size": 128},
        "output": {"runs_dir": str(tmp_path / "runs")},
    }
    config = write_config(tmp_path, document)
    result = run_cli(
        "sweep",
        "--config",
        str(config),
        "--grid",
        "optimizer.lr=0.001,0.003",
        "--name",
        "own",
        cwd=tmp_path,
        env={"MLPTRAIN_QUIET": "1"},
    )
    assert result.returncode == 0, result.stderr
    (folder,) = (tmp_path / "runs").glob("sweep-own-*")
    rows = list(csv.DictReader((folder / "results.csv").open()))
    assert [row["status"] for row in rows] == ["complete", "complete"]
    assert all(float(row["test_accuracy"]) > 0.3 for row in rows)
    for trial in (folder / "trials").iterdir():
        assert yaml.safe_load((trial / "config.yaml").read_text())["data"]["dataset"] == "csv"
