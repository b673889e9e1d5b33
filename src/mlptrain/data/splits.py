"""Datasets: loading the splits as tensors, and batches.

Each split lives as one uint8 tensor on the training device; batches are slices of
it, so the hot loop never touches Python per sample. The registry, finding, importing
and parsing the files is datafiles.py's job (no torch there).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch

from mlptrain.config.schema import DataConfig
from mlptrain.data.registry import (
    DATASETS,
    FILES,
    TEST_IMAGES,
    TEST_LABELS,
    TRAIN_IMAGES,
    TRAIN_LABELS,
    DatasetInfo,
    Prepared,
    prepare_files,
    read_pair,
)
from mlptrain.data.userdata import load_user_data
from mlptrain.errors import UsageError
from mlptrain.util.logs import get_logger

log = get_logger()


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
    image_array, label_array = read_pair(info, files, images, labels, verify)
    return Split(torch.from_numpy(image_array), torch.from_numpy(label_array))


_shared_reads: dict[str, tuple[DatasetInfo, Split, Split]] | None = None


@contextlib.contextmanager
def reading_once() -> Iterator[None]:
    """Within it, each dataset is read (and its checksums checked) once: the models of a
    group, trained together, share their dataset's files."""
    global _shared_reads
    outer = _shared_reads
    _shared_reads = {} if outer is None else outer
    try:
        yield
    finally:
        _shared_reads = outer


def _read_dataset(data: DataConfig, test_only: bool = False) -> tuple[DatasetInfo, Split, Split]:
    """The dataset's description, its whole training split (empty with `test_only`, where
    only a built-in dataset's test files are imported) and its test split."""
    if _shared_reads is None:
        return _read_files(data, test_only)
    key = data.model_dump_json() + str(test_only)
    if key not in _shared_reads:
        _shared_reads[key] = _read_files(data, test_only)
    return _shared_reads[key]


def _read_files(data: DataConfig, test_only: bool) -> tuple[DatasetInfo, Split, Split]:
    if not data.is_builtin:
        user = load_user_data(data)
        info = DatasetInfo(
            name=data.dataset,
            title=f"{data.dataset} from {data.path}",
            folder="",
            source_subfolders=(),
            system_dirs=(),
            class_names=user.class_names,
            md5={},
        )
        train = Split(torch.from_numpy(user.train_images), torch.from_numpy(user.train_labels))
        test = Split(torch.from_numpy(user.test_images), torch.from_numpy(user.test_labels))
        return info, train, test
    info = DATASETS[data.dataset]
    _warn_unverified(data)
    names = (TEST_IMAGES, TEST_LABELS) if test_only else FILES
    files = prepare_files(info, data, names)
    test = _read_pair(info, files, TEST_IMAGES, TEST_LABELS, data.verify)
    if test_only:
        return info, Split(test.images[:0], test.labels[:0]), test
    return info, _read_pair(info, files, TRAIN_IMAGES, TRAIN_LABELS, data.verify), test


# --- splits -------------------------------------------------------------------------------


def load_splits(data: DataConfig, seed: int, device: torch.device) -> DataSplits:
    """Load the dataset named by the config: train/val carved by data.split_seed (or else
    the run's seed), subsets applied."""
    info, full_train, test = _read_dataset(data)
    subset = data.subset
    split_seed = seed if data.split_seed is None else data.split_seed
    train_indices, val_indices = split_indices(
        len(full_train), data.val_fraction, subset.train if subset else None, split_seed
    )
    val = None
    if len(val_indices):
        val = Split(full_train.images[val_indices], full_train.labels[val_indices]).to(device)
    train = Split(full_train.images[train_indices], full_train.labels[train_indices])
    return DataSplits(info, train.to(device), val, _test_subset(test, data).to(device))


def load_test_split(
    data: DataConfig, device: torch.device, class_names: Sequence[str] | None = None
) -> Split:
    """The test split alone (of a built-in dataset, only its two test files are imported);
    `class_names`: the model's, which the data must still have."""
    info, _, test = _read_dataset(data, test_only=True)
    if class_names is not None:
        check_classes(info, class_names)
    return _test_subset(test, data).to(device)


def check_classes(info: DatasetInfo, class_names: Sequence[str]) -> None:
    """A model's classes against its data's: user data can change after training."""
    if tuple(class_names) != tuple(info.class_names):
        raise UsageError(
            f"the data ({info.title}) now has the classes {list(info.class_names)}, but the "
            f"model was trained on {list(class_names)}: the data changed since"
        )


def _test_subset(test: Split, data: DataConfig) -> Split:
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
