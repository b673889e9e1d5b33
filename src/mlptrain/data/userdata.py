"""Your own data (data.dataset images or csv): class folders of image files, or CSV files
of pixel rows, read into the uint8 arrays every dataset becomes, and cached under
data.root so that a second run starts from the cache.

Images are turned grey and resized to data.image_size; class names are the folder names
(numeric names in numeric order) or a CSV's label values. Every bad input is a UsageError
naming the file (and line); nothing is cached until everything was read. Imports no
torch, so the exported-model path reads a test split without it.
"""

from __future__ import annotations

import concurrent.futures
import multiprocessing
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mlptrain.config.schema import DataConfig
from mlptrain.data.cache import Listing, cached_arrays
from mlptrain.data.pixel_csv import read_pixel_csv
from mlptrain.errors import UsageError
from mlptrain.util.logs import get_logger

log = get_logger()

# Folder pairs that hold a dataset's own split, as fastai's mnist_png (training/testing).
SPLIT_FOLDERS = (("training", "testing"), ("train", "test"))
CARVE_SEED = 0  # data.test_fraction: the same test images for every run of a dataset
CHUNK = 512  # images per decoding task
SHOWN = 5  # unreadable files named in a message


@dataclass(frozen=True)
class UserData:
    class_names: tuple[str, ...]
    train_images: np.ndarray  # uint8, N x H x W
    train_labels: np.ndarray  # int64, N: indices into class_names
    test_images: np.ndarray
    test_labels: np.ndarray


def load_user_data(data: DataConfig) -> UserData:
    """The dataset at data.path (and its test split), from the cache when it is current."""
    read = _read_images if data.dataset == "images" else _read_csv_dataset
    listing = _listing(data)
    arrays = cached_arrays(data, listing, lambda: read(data, listing))
    return UserData(
        tuple(str(name) for name in arrays["class_names"]),
        arrays["train_images"],
        arrays["train_labels"],
        arrays["test_images"],
        arrays["test_labels"],
    )


def user_path(text: str) -> Path:
    return Path(text).expanduser()


# --- what is there ------------------------------------------------------------------------


def _listing(data: DataConfig) -> Listing:
    """Every source file with its size and modification time, by split and class: what
    the cache is keyed by, and (for images) what is decoded."""
    path = user_path(data.path)
    if not path.exists():
        raise UsageError(f"data.path {path} does not exist")
    if data.dataset == "csv":
        files = {"train": {"": [_stat(path, "data.path")]}}
        if data.test_path is not None:
            files["test"] = {"": [_stat(user_path(data.test_path), "data.test_path")]}
        return Listing(files)
    if not path.is_dir():
        raise UsageError(
            f"data.path {path} is a file; data.dataset images reads a folder of class "
            "folders (or one with training/ and testing/ folders of them)"
        )
    folders = {"train": path}
    for train, test in SPLIT_FOLDERS:
        if (path / train).is_dir() and (path / test).is_dir():
            folders = {"train": path / train, "test": path / test}
            break
    if data.test_path is not None:
        folders["test"] = user_path(data.test_path)
        if not folders["test"].is_dir():
            raise UsageError(f"data.test_path {folders['test']} is not a folder")
    if "test" not in folders and data.test_fraction == 0:
        raise UsageError(
            f"{path} has no test split (no training/ and testing/ folders, nor train/ and "
            "test/): set data.test_fraction (e.g. 0.1) to set aside a class-stratified "
            "test split, or data.test_path to a folder of class folders"
        )
    return Listing({split: _class_files(folder) for split, folder in folders.items()})


def _stat(path: Path, key: str) -> tuple[str, int, int]:
    if not path.is_file():
        raise UsageError(f"{key} {path} " + ("is a folder" if path.is_dir() else "does not exist"))
    status = path.stat()
    return (str(path.resolve()), status.st_size, status.st_mtime_ns)


def _class_files(folder: Path) -> dict[str, list[tuple[str, int, int]]]:
    """Class name -> its files (path, size, mtime), classes in their order."""
    classes = [entry for entry in _visible(folder) if entry.is_dir()]
    if not classes:
        raise UsageError(
            f"{folder} has no class folders: put each class's images in a folder named "
            f"after the class, e.g. {folder / '0' / 'image.png'}"
        )
    files = {}
    numeric = all(entry.name.lstrip("-").isdigit() for entry in classes)
    for entry in sorted(classes, key=lambda entry: _class_order(entry.name, numeric)):
        found = [
            (item.path, status.st_size, status.st_mtime_ns)
            for item in _visible(Path(entry.path))
            if item.is_file() and (status := item.stat())
        ]
        if not found:
            raise UsageError(f"the class folder {entry.path} has no images")
        files[entry.name] = sorted(found)
    return files


def _visible(folder: Path) -> list[os.DirEntry]:
    with os.scandir(folder) as entries:
        return [entry for entry in entries if not entry.name.startswith(".")]


def _class_order(name: str, numeric: bool) -> tuple:
    """Numeric names in numeric order (2 before 10) when every name is a number."""
    return (int(name), name) if numeric else (0, name)


# --- image folders ------------------------------------------------------------------------


def _read_images(data: DataConfig, listing: Listing) -> dict[str, np.ndarray]:
    class_names = list(listing.files["train"])
    if "test" in listing.files and list(listing.files["test"]) != class_names:
        train_only = sorted(set(class_names) - set(listing.files["test"]))
        test_only = sorted(set(listing.files["test"]) - set(class_names))
        raise UsageError(
            "the training and test folders have different classes: only in training: "
            f"{train_only or 'none'}; only in test: {test_only or 'none'}"
        )
    arrays: dict[str, Any] = {"class_names": np.array(class_names)}
    for split, classes in listing.files.items():
        paths = [path for files in classes.values() for path, _, _ in files]
        labels = np.concatenate(
            [np.full(len(files), index) for index, files in enumerate(classes.values())]
        )
        images, unreadable = _decode_all(paths, tuple(data.image_size))
        if unreadable:
            _report_unreadable(paths, unreadable, data.skip_unreadable)
            keep = np.ones(len(paths), dtype=bool)
            keep[unreadable] = False
            images, labels = images[keep], labels[keep]
            for index, name in enumerate(class_names):
                if not (labels == index).any():
                    raise UsageError(
                        f"the class folder {name!r} of the {split} split has no readable images"
                    )
        arrays[f"{split}_images"], arrays[f"{split}_labels"] = images, labels.astype(np.int64)
    return _with_test_split(arrays, data)


def _decode_all(paths: list[str], size: tuple[int, int]) -> tuple[np.ndarray, list[int]]:
    """Decode every image (in parallel, with a progress bar): uint8 N x H x W and the
    indices of the files that would not decode."""
    from tqdm import tqdm

    chunks = [paths[start : start + CHUNK] for start in range(0, len(paths), CHUNK)]
    images, unreadable = np.zeros((len(paths), *size), dtype=np.uint8), []
    workers = min(os.cpu_count() or 1, len(chunks))
    bar = tqdm(total=len(paths), unit="image", desc="decoding images", disable=None, leave=False)
    with bar, _pool(workers) as pool:
        for index, (block, bad) in enumerate(pool.map(_decode_chunk, chunks, [size] * len(chunks))):
            start = index * CHUNK
            images[start : start + len(block)] = block
            unreadable += [start + offset for offset in bad]
            bar.update(len(block))
    return images, unreadable


def _pool(workers: int) -> concurrent.futures.Executor:
    if workers <= 1:
        return concurrent.futures.ThreadPoolExecutor(1)
    # fork: the workers need only Pillow and numpy, and start at once.
    methods = multiprocessing.get_all_start_methods()
    context = multiprocessing.get_context("fork" if "fork" in methods else None)
    return concurrent.futures.ProcessPoolExecutor(workers, mp_context=context)


def _decode_chunk(paths: list[str], size: tuple[int, int]) -> tuple[np.ndarray, list[int]]:
    from PIL import Image

    height, width = size
    block, bad = np.zeros((len(paths), height, width), dtype=np.uint8), []
    for index, path in enumerate(paths):
        try:
            with Image.open(path) as image:
                grey = image.convert("L")
                if grey.size != (width, height):
                    grey = grey.resize((width, height), Image.Resampling.BILINEAR)
                block[index] = np.asarray(grey)
        except Exception:  # any file Pillow cannot decode is unreadable
            bad.append(index)
    return block, bad


def _report_unreadable(paths: list[str], unreadable: list[int], skip: bool) -> None:
    names = ", ".join(paths[index] for index in unreadable[:SHOWN])
    more = f" and {len(unreadable) - SHOWN} more" if len(unreadable) > SHOWN else ""
    what = f"{len(unreadable)} file(s) are not images Pillow can read: {names}{more}"
    if not skip:
        raise UsageError(f"{what}; remove them, or set data.skip_unreadable: true to skip them")
    log.warning("warning: skipped %s", what)


# --- CSV files ------------------------------------------------------------------------------


def _read_csv_dataset(data: DataConfig, listing: Listing) -> dict[str, np.ndarray]:
    path = user_path(data.path)
    images, values = read_pixel_csv(path, tuple(data.image_size), data.label_column)
    class_values = np.unique(values)
    arrays: dict[str, Any] = {
        "class_names": np.array([str(value) for value in class_values]),
        "train_images": images,
        "train_labels": np.searchsorted(class_values, values).astype(np.int64),
    }
    if data.test_path is not None:
        test_path = user_path(data.test_path)
        size = tuple(data.image_size)
        test_images, test_values = read_pixel_csv(test_path, size, data.label_column)
        unknown = sorted(set(np.unique(test_values).tolist()) - set(class_values.tolist()))
        if unknown:
            raise UsageError(
                f"{test_path} has labels that {path} has not: {unknown[:10]}; the training "
                "and test files must have the same classes"
            )
        arrays["test_images"] = test_images
        arrays["test_labels"] = np.searchsorted(class_values, test_values).astype(np.int64)
    elif data.test_fraction == 0:
        raise UsageError(
            f"{path} is the training file and there is no test file: set data.test_path, or "
            "data.test_fraction (e.g. 0.1) to set aside a class-stratified test split"
        )
    return _with_test_split(arrays, data)


# --- the test split ------------------------------------------------------------------------


def _with_test_split(arrays: dict[str, Any], data: DataConfig) -> dict[str, Any]:
    """Carve the test split (data.test_fraction) when the data has none: per class, the
    same share, drawn with a fixed seed so that every run tests on the same images."""
    if "test_images" in arrays:
        return arrays
    images, labels = arrays["train_images"], arrays["train_labels"]
    rng = np.random.default_rng(CARVE_SEED)
    test = np.zeros(len(labels), dtype=bool)
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        count = round(len(members) * data.test_fraction)
        test[rng.permutation(members)[: max(count, 1) if len(members) > 1 else 0]] = True
    if test.all() or not test.any():
        raise UsageError(
            f"data.test_fraction {data.test_fraction} of {len(labels)} images leaves no "
            "training or no test images; change it or add images"
        )
    arrays.update(
        train_images=images[~test],
        train_labels=labels[~test],
        test_images=images[test],
        test_labels=labels[test],
    )
    return arrays
