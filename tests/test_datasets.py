from __future__ import annotations

import gzip
import hashlib
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from mlptrain.config.schema import DataConfig
from mlptrain.data import registry as datafiles
from mlptrain.data.registry import FILES, find_source, prepare_files, read_idx
from mlptrain.data.splits import (
    DATASETS,
    Split,
    batches,
    load_splits,
    load_test_split,
    pixel_stats,
    split_indices,
)
from mlptrain.errors import UsageError

from .conftest import TEST_COUNT, TRAIN_COUNT, write_dataset, write_idx

CPU = torch.device("cpu")


def data_config(tmp_path: Path, source: Path | None, **changes) -> DataConfig:
    settings = {"dataset": "mnist", "root": str(tmp_path / "data"), "verify": False}
    if source is not None:
        settings["source"] = str(source)
    return DataConfig(**{**settings, **changes})


def test_import_from_source_lands_in_torchvision_layout(tmp_path, synthetic_source):
    raw = prepare_files(DATASETS["mnist"], data_config(tmp_path, synthetic_source)).raw
    assert raw == tmp_path / "data" / "MNIST" / "raw"
    for name in FILES:
        expected = gzip.decompress((synthetic_source / "mnist" / f"{name}.gz").read_bytes())
        assert (raw / name).read_bytes() == expected
    assert not list(raw.glob(".*tmp"))


def test_load_splits_sizes_and_types(tmp_path, synthetic_source):
    splits = load_splits(data_config(tmp_path, synthetic_source, val_fraction=0.2), 0, CPU)
    assert (len(splits.train), len(splits.val), len(splits.test)) == (400, 100, TEST_COUNT)
    assert splits.train.images.dtype == torch.uint8
    assert splits.train.images.shape[1:] == (28, 28)
    assert splits.train.labels.dtype == torch.int64
    assert splits.info.class_names[0] == "0"


def test_plain_files_directly_in_the_source_folder(tmp_path):
    source = write_dataset(tmp_path / "flat", compress=False)
    splits = load_splits(data_config(tmp_path, source), 0, CPU)
    assert len(splits.test) == TEST_COUNT


def test_environment_variable_names_the_source(tmp_path, synthetic_source, monkeypatch):
    monkeypatch.setenv("MLPTRAIN_DATA_SOURCE", str(synthetic_source))
    assert len(load_splits(data_config(tmp_path, None), 0, CPU).test) == TEST_COUNT


def test_files_already_in_root_need_no_source(tmp_path, synthetic_source):
    load_splits(data_config(tmp_path, synthetic_source), 0, CPU)
    again = load_splits(data_config(tmp_path, tmp_path / "no-such-folder"), 0, CPU)
    assert len(again.test) == TEST_COUNT


def test_checksum_mismatch_names_the_file_and_writes_nothing(tmp_path, synthetic_source):
    with pytest.raises(UsageError, match=r"checksum mismatch for .*train-images-idx3-ubyte\.gz"):
        prepare_files(DATASETS["mnist"], data_config(tmp_path, synthetic_source, verify=True))
    raw = tmp_path / "data" / "MNIST" / "raw"
    assert not raw.exists() or not any(raw.iterdir())


@pytest.fixture
def synthetic_checksums(synthetic_source, monkeypatch) -> dict[str, bytes]:
    """The synthetic MNIST files' own MD5s as the published ones; returns their content."""
    raw_bytes = {
        name: gzip.decompress((synthetic_source / "mnist" / f"{name}.gz").read_bytes())
        for name in FILES
    }
    md5 = {name: hashlib.md5(content).hexdigest() for name, content in raw_bytes.items()}
    monkeypatch.setitem(DATASETS, "mnist", replace(DATASETS["mnist"], md5=md5))
    return raw_bytes


def test_matching_checksum_is_accepted(tmp_path, synthetic_source, synthetic_checksums):
    splits = load_splits(data_config(tmp_path, synthetic_source, verify=True), 0, CPU)
    assert len(splits.test) == TEST_COUNT


def test_each_file_is_checksummed_once_per_load(
    tmp_path, synthetic_source, synthetic_checksums, monkeypatch
):
    raw_bytes = synthetic_checksums
    hashed: list[int] = []
    real_md5 = hashlib.md5

    def counting_md5(content, **options):
        hashed.append(len(content))
        return real_md5(content, **options)

    monkeypatch.setattr(datafiles.hashlib, "md5", counting_md5)
    config = data_config(tmp_path, synthetic_source, verify=True)
    load_splits(config, 0, CPU)  # imports the files: checked while importing
    assert sorted(hashed) == sorted(len(content) for content in raw_bytes.values())
    hashed.clear()
    load_splits(config, 0, CPU)  # the files are in place: checked while reading
    assert len(hashed) == len(FILES)


def test_the_test_split_alone_reads_only_the_test_files(tmp_path, synthetic_source):
    split = load_test_split(data_config(tmp_path, synthetic_source), CPU)
    assert len(split) == TEST_COUNT
    raw = tmp_path / "data" / "MNIST" / "raw"
    assert sorted(path.name for path in raw.iterdir()) == sorted(
        ["t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"]
    )


def test_find_source_prefers_the_given_folder_then_the_environment(tmp_path, monkeypatch):
    checkout = tmp_path / "main"
    (tmp_path / "shared" / "datasets").mkdir(parents=True)
    assert find_source(None, beside=checkout) == str(tmp_path / "shared" / "datasets")
    monkeypatch.setenv("MLPTRAIN_DATA_SOURCE", "/from/env")
    assert find_source(None, beside=checkout) == "/from/env"
    assert find_source("/given", beside=checkout) == "/given"
    monkeypatch.delenv("MLPTRAIN_DATA_SOURCE")
    assert find_source(None, beside=tmp_path / "elsewhere" / "main") is None


def test_changed_file_in_root_fails_verification(tmp_path, synthetic_source):
    raw = prepare_files(DATASETS["mnist"], data_config(tmp_path, synthetic_source)).raw
    with pytest.raises(UsageError, match=r"checksum mismatch for .*t10k-labels"):
        read_idx(raw / "t10k-labels-idx1-ubyte", 1, md5="0" * 32)


def test_source_without_the_files_says_where_it_looked(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(UsageError, match=r"no MNIST files in the data source: .*empty/mnist"):
        prepare_files(DATASETS["mnist"], data_config(tmp_path, tmp_path / "empty"))


def test_source_that_is_not_a_folder(tmp_path):
    with pytest.raises(UsageError, match="is not a folder"):
        prepare_files(DATASETS["mnist"], data_config(tmp_path, tmp_path / "missing"))


def test_corrupt_gzip_is_named(tmp_path):
    source = write_dataset(tmp_path / "src")
    (source / "t10k-labels-idx1-ubyte.gz").write_bytes(b"\x1f\x8b\x08\x00garbage")
    with pytest.raises(UsageError, match=r"cannot read .*t10k-labels-idx1-ubyte\.gz"):
        prepare_files(DATASETS["mnist"], data_config(tmp_path, source))


def test_truncated_idx_file(tmp_path):
    path = write_idx(tmp_path / "images", np.zeros((3, 28, 28), np.uint8), compress=False)
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(UsageError, match="truncated or damaged"):
        read_idx(path, 3)


def test_wrong_magic_number(tmp_path):
    path = write_idx(tmp_path / "labels", np.zeros(5, np.uint8), compress=False)
    with pytest.raises(UsageError, match="not an IDX file of 3-dimensional"):
        read_idx(path, 3)


def test_images_of_the_wrong_size(tmp_path):
    source = write_dataset(tmp_path / "src", compress=False)
    write_idx(source / "t10k-images-idx3-ubyte", np.zeros((TEST_COUNT, 27, 27), np.uint8), False)
    with pytest.raises(UsageError, match=r"holds images of \(27, 27\), not 28x28"):
        load_splits(data_config(tmp_path, source), 0, CPU)


def test_labels_outside_range_and_count_mismatch(tmp_path):
    source = write_dataset(tmp_path / "src", compress=False)
    write_idx(source / "t10k-labels-idx1-ubyte", np.full(TEST_COUNT, 12, np.uint8), False)
    with pytest.raises(UsageError, match="labels outside 0-9"):
        load_splits(data_config(tmp_path, source), 0, CPU)
    source = write_dataset(tmp_path / "src2", compress=False)
    write_idx(source / "t10k-labels-idx1-ubyte", np.zeros(TEST_COUNT - 1, np.uint8), False)
    with pytest.raises(UsageError, match=f"has {TEST_COUNT} images but .* has {TEST_COUNT - 1}"):
        load_splits(data_config(tmp_path / "b", source), 0, CPU)


def test_unwritable_root_is_a_clear_error(tmp_path, synthetic_source):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    config = data_config(tmp_path, synthetic_source, root=str(blocker / "data"))
    with pytest.raises(UsageError, match="set data.root to a folder you can write"):
        prepare_files(DATASETS["mnist"], config)


def test_no_source_and_no_download_says_what_to_do(tmp_path, monkeypatch):
    import torchvision.datasets

    def offline(*args, **kwargs):
        raise RuntimeError("Error downloading train-images-idx3-ubyte.gz")

    monkeypatch.setattr(torchvision.datasets, "MNIST", offline)
    info = replace(DATASETS["mnist"], system_dirs=())
    with pytest.raises(UsageError) as caught:
        prepare_files(info, data_config(tmp_path, None))
    message = str(caught.value)
    assert "could not be downloaded (Error downloading train-images-idx3-ubyte.gz)" in message
    assert "--data-source DIR" in message and "MLPTRAIN_DATA_SOURCE" in message
    assert str(tmp_path / "data" / "MNIST" / "raw") in message
    assert f"the four files ({', '.join(FILES)}, optionally .gz) in a folder" in message


def test_the_download_asks_torchvision_for_the_training_set_into_data_root(
    tmp_path, monkeypatch, caplog
):
    # torchvision's own download (this machine is offline): a stand-in records the call
    # and lays the files out as torchvision does.
    import logging

    import torchvision.datasets

    calls = []

    def download(**kwargs):
        calls.append(kwargs)
        write_dataset(Path(kwargs["root"]) / "MNIST" / "raw", compress=False)

    monkeypatch.setattr(torchvision.datasets, "MNIST", download)
    info = replace(DATASETS["mnist"], system_dirs=())
    logger = logging.getLogger("mlptrain")  # may not propagate: commands set it up so
    logger.addHandler(caplog.handler)
    try:
        with caplog.at_level(logging.INFO, logger="mlptrain"):
            raw = prepare_files(info, data_config(tmp_path, None)).raw
    finally:
        logger.removeHandler(caplog.handler)
    assert calls == [{"root": str(tmp_path / "data"), "train": True, "download": True}]
    assert sorted(path.name for path in raw.iterdir()) == sorted(FILES)
    assert f"downloading MNIST into {raw} ..." in caplog.messages


def test_a_download_failure_without_a_message_is_named_by_its_type(tmp_path, monkeypatch):
    import torchvision.datasets

    def offline(**kwargs):
        raise ConnectionError()

    monkeypatch.setattr(torchvision.datasets, "MNIST", offline)
    with pytest.raises(UsageError, match=r"could not be downloaded \(ConnectionError\)"):
        prepare_files(replace(DATASETS["mnist"], system_dirs=()), data_config(tmp_path, None))


def test_split_is_deterministic_disjoint_and_complete():
    train, val = split_indices(1000, 0.1, None, seed=5)
    again_train, again_val = split_indices(1000, 0.1, None, seed=5)
    assert torch.equal(train, again_train) and torch.equal(val, again_val)
    assert (len(train), len(val)) == (900, 100)
    assert sorted(torch.cat([train, val]).tolist()) == list(range(1000))
    other_train, _ = split_indices(1000, 0.1, None, seed=6)
    assert not torch.equal(train, other_train)


def test_split_seed_fixes_the_split_across_run_seeds(tmp_path, synthetic_source):
    def val_images(seed: int, **changes) -> torch.Tensor:
        config = data_config(tmp_path, synthetic_source, val_fraction=0.2, **changes)
        return load_splits(config, seed, CPU).val.images

    assert not torch.equal(val_images(1), val_images(2))  # by default the run's seed carves
    assert torch.equal(val_images(1, split_seed=7), val_images(2, split_seed=7))
    assert not torch.equal(val_images(1, split_seed=7), val_images(1, split_seed=8))


def test_subset_then_validation():
    train, val = split_indices(1000, 0.25, 200, seed=1)
    assert (len(train), len(val)) == (150, 50)
    assert not set(train.tolist()) & set(val.tolist())


def test_zero_validation_fraction():
    train, val = split_indices(100, 0.0, None, seed=1)
    assert (len(train), len(val)) == (100, 0)


def test_subset_larger_than_the_data(tmp_path, synthetic_source):
    with pytest.raises(UsageError, match=f"the training set has {TRAIN_COUNT}"):
        load_splits(data_config(tmp_path, synthetic_source, subset={"train": 10**6}), 0, CPU)
    with pytest.raises(UsageError, match=f"the test set has {TEST_COUNT}"):
        load_splits(data_config(tmp_path, synthetic_source, subset={"test": 10**6}), 0, CPU)


def test_test_subset_takes_the_first_images(tmp_path, synthetic_source):
    full = load_splits(data_config(tmp_path, synthetic_source), 0, CPU)
    small = load_splits(data_config(tmp_path, synthetic_source, subset={"test": 7}), 0, CPU)
    assert torch.equal(small.test.labels, full.test.labels[:7])


def test_pixel_stats_match_a_float_computation():
    images = torch.randint(0, 256, (50, 28, 28), dtype=torch.uint8)
    mean, std = pixel_stats(Split(images, torch.zeros(50, dtype=torch.int64)))
    pixels = images.double() / 255
    assert mean == pytest.approx(pixels.mean().item(), rel=1e-9)
    assert std == pytest.approx(pixels.std(unbiased=False).item(), rel=1e-9)


def test_batches_cover_the_split_once():
    split = Split(torch.zeros(10, 28, 28, dtype=torch.uint8), torch.arange(10))
    order = torch.randperm(10)
    seen = torch.cat([labels for _, labels in batches(split, 3, order)])
    assert torch.equal(seen, order)
    sizes = [len(labels) for _, labels in batches(split, 4)]
    assert sizes == [4, 4, 2]
