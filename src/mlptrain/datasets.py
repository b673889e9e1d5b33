"""Datasets: the registry, loading the splits, and batches.

Each split lives as one uint8 tensor on the training device; batches are slices of
it, so the hot loop never touches Python per sample. Finding, importing and parsing
the files is datafiles.py's job.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass

import torch

from mlptrain.config import DataConfig
from mlptrain.datafiles import (
    TEST_IMAGES,
    TEST_LABELS,
    TRAIN_IMAGES,
    TRAIN_LABELS,
    DatasetInfo,
    Prepared,
    prepare_files,
    read_idx,
)
from mlptrain.errors import UsageError

log = logging.getLogger("mlptrain")

IMAGE_SIZE = (28, 28)
NUM_CLASSES = 10


DATASETS: dict[str, DatasetInfo] = {
    "mnist": DatasetInfo(
        name="mnist",
        title="MNIST",
        folder="MNIST",
        source_subfolders=("mnist", "MNIST", "MNIST/raw"),
        system_dirs=("/usr/share/datasets/mnist",),
        class_names=tuple(str(digit) for digit in range(10)),
        md5={
            TRAIN_IMAGES: "6bbc9ace898e44ae57da46a324031adb",
            TRAIN_LABELS: "a25bea736e30d166cdddb491f175f624",
            TEST_IMAGES: "2646ac647ad5339dbf082846283269ea",
            TEST_LABELS: "27ae3e4e09519cfbb04c329615203637",
        },
    ),
    "fashion_mnist": DatasetInfo(
        name="fashion_mnist",
        title="Fashion-MNIST",
        folder="FashionMNIST",
        source_subfolders=("fashion-mnist", "fashion_mnist", "FashionMNIST", "FashionMNIST/raw"),
        system_dirs=("/usr/share/datasets/fashion-mnist",),
        class_names=(
            "T-shirt/top",
            "Trouser",
            "Pullover",
            "Dress",
            "Coat",
            "Sandal",
            "Shirt",
            "Sneaker",
            "Bag",
            "Ankle boot",
        ),
        md5={
            TRAIN_IMAGES: "f4a8712d7a061bf5bd6d2ca38dc4d50a",
            TRAIN_LABELS: "9018921c3c673c538a1fc5bad174d6f9",
            TEST_IMAGES: "8181f5470baa50b63fa0f6fddb340f0a",
            TEST_LABELS: "15d484375f8d13e6eb1aabb0c3f46965",
        },
    ),
}


@dataclass(frozen=True)
class Split:
    images: torch.Tensor  # uint8, N x 28 x 28
    labels: torch.Tensor  # int64, N

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def to(self, device: torch.device) -> Split:
        return Split(self.images.to(device), self.labels.to(device))


@dataclass(frozen=True)
class DataSplits:
    info: DatasetInfo
    train: Split
    val: Split | None  # None when val_fraction is 0
    test: Split


# --- reading the files ----------------------------------------------------------------


def _read_pair(info: DatasetInfo, files: Prepared, images: str, labels: str, verify: bool) -> Split:
    raw = files.raw

    def md5(name: str) -> str | None:  # a file checked while importing it is not read twice
        return info.md5[name] if verify and name not in files.verified else None

    image_tensor = read_idx(raw / images, 3, md5(images))
    label_tensor = read_idx(raw / labels, 1, md5(labels))
    if tuple(image_tensor.shape[1:]) != IMAGE_SIZE:
        raise UsageError(
            f"{raw / images} holds images of {tuple(image_tensor.shape[1:])}, not 28x28"
        )
    if image_tensor.shape[0] != label_tensor.shape[0]:
        raise UsageError(
            f"{raw / images} has {image_tensor.shape[0]} images but {raw / labels} has "
            f"{label_tensor.shape[0]} labels"
        )
    if label_tensor.numel() and int(label_tensor.max()) >= NUM_CLASSES:
        raise UsageError(f"{raw / labels} has labels outside 0-{NUM_CLASSES - 1}")
    return Split(image_tensor, label_tensor.long())


# --- splits -------------------------------------------------------------------------------


def load_splits(data: DataConfig, seed: int, device: torch.device) -> DataSplits:
    """Load the dataset named by the config: train/val carved by the seed, subsets applied."""
    info = DATASETS[data.dataset]
    _warn_unverified(data)
    files = prepare_files(info, data)
    full_train = _read_pair(info, files, TRAIN_IMAGES, TRAIN_LABELS, data.verify)
    test = _test_split(info, files, data)
    subset = data.subset
    train_indices, val_indices = split_indices(
        len(full_train), data.val_fraction, subset.train if subset else None, seed
    )
    val = None
    if len(val_indices):
        val = Split(full_train.images[val_indices], full_train.labels[val_indices]).to(device)
    train = Split(full_train.images[train_indices], full_train.labels[train_indices])
    return DataSplits(info, train.to(device), val, test.to(device))


def load_test_split(data: DataConfig, device: torch.device) -> Split:
    """The test split alone: only the two test files are imported, read and checked."""
    info = DATASETS[data.dataset]
    _warn_unverified(data)
    files = prepare_files(info, data, (TEST_IMAGES, TEST_LABELS))
    return _test_split(info, files, data).to(device)


def _test_split(info: DatasetInfo, files: Prepared, data: DataConfig) -> Split:
    test = _read_pair(info, files, TEST_IMAGES, TEST_LABELS, data.verify)
    subset = data.subset
    if subset and subset.test:
        if subset.test > len(test):
            raise UsageError(f"data.subset.test is {subset.test}, but the test set has {len(test)}")
        test = Split(test.images[: subset.test], test.labels[: subset.test])
    return test


def _warn_unverified(data: DataConfig) -> None:
    if not data.verify:
        log.warning("warning: data.verify is false; the dataset's checksums are not checked")


def split_indices(
    total: int, val_fraction: float, subset: int | None, seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Seeded, disjoint train and validation indices into the official training set."""
    if subset is not None and subset > total:
        raise UsageError(f"data.subset.train is {subset}, but the training set has {total}")
    order = torch.randperm(total, generator=torch.Generator().manual_seed(seed))
    if subset is not None:
        order = order[:subset]
    val_count = round(len(order) * val_fraction)
    if val_fraction > 0:
        val_count = max(val_count, 1)
    if val_count >= len(order):
        raise UsageError(
            f"data.val_fraction {val_fraction} of {len(order)} training images leaves none to "
            "train on; lower it or use more images"
        )
    return order[val_count:].sort().values, order[:val_count].sort().values


def pixel_stats(split: Split) -> tuple[float, float]:
    """Mean and standard deviation of the split's pixels, on the 0-1 scale, computed exactly."""
    counts = torch.bincount(split.images.flatten(), minlength=256).double()
    values = torch.arange(256, dtype=torch.float64, device=counts.device) / 255.0
    total = counts.sum()
    mean = (counts * values).sum() / total
    variance = (counts * (values - mean) ** 2).sum() / total
    return float(mean), float(variance.sqrt())


def batches(
    split: Split, batch_size: int, order: torch.Tensor | None = None
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Mini-batches in `order` (a permutation on the split's device), or in file order."""
    for start in range(0, len(split), batch_size):
        if order is None:
            yield split.images[start : start + batch_size], split.labels[start : start + batch_size]
        else:
            index = order[start : start + batch_size]
            yield split.images[index], split.labels[index]
