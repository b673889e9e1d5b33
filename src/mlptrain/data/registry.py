"""Dataset files: the registry of datasets, finding their files (an offline source, an
OS package's folder, a download), importing them with their checksums checked, and
parsing IDX files into numpy arrays.

Files land uncompressed in data.root/<folder>/raw, torchvision's layout. Imports no
torch, so the exported-model path (mlp-eval --model) reads test files without it.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mlptrain.config.schema import DataConfig
from mlptrain.errors import UsageError
from mlptrain.util.files import atomic_write_bytes
from mlptrain.util.logs import get_logger

log = get_logger()

SOURCE_ENV = "MLPTRAIN_DATA_SOURCE"
TRAIN_IMAGES = "train-images-idx3-ubyte"
TRAIN_LABELS = "train-labels-idx1-ubyte"
TEST_IMAGES = "t10k-images-idx3-ubyte"
TEST_LABELS = "t10k-labels-idx1-ubyte"
FILES = (TRAIN_IMAGES, TRAIN_LABELS, TEST_IMAGES, TEST_LABELS)


@dataclass(frozen=True)
class DatasetInfo:
    name: str  # the config's name
    title: str  # for people
    folder: str  # torchvision's folder (and class) name: data.root/<folder>/raw/
    source_subfolders: tuple[str, ...]  # where a source folder may keep the files
    system_dirs: tuple[str, ...]  # where OS packages install the files
    class_names: tuple[str, ...]
    md5: dict[str, str]  # published MD5 of each uncompressed file


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
class Prepared:
    raw: Path  # the folder holding the uncompressed files
    verified: frozenset[str]  # files whose checksum was checked while importing them


def prepare_files(info: DatasetInfo, data: DataConfig, names: tuple[str, ...] = FILES) -> Prepared:
    """Make sure data.root/<folder>/raw holds the files `names` uncompressed.

    Order: files already there; the given source (data.source or $MLPTRAIN_DATA_SOURCE);
    an OS package's folder; torchvision's download.
    """
    raw = Path(data.root) / info.folder / "raw"
    missing = [name for name in names if not (raw / name).is_file()]
    if not missing:
        return Prepared(raw, frozenset())
    source = data.source or os.environ.get(SOURCE_ENV) or None
    if source is not None:
        folder = _find_source_folder(info, Path(source), names)
        return Prepared(raw, _import_files(info, folder, raw, missing, data.verify))
    for system_dir in map(Path, info.system_dirs):
        if all(_compressed_or_plain(system_dir, name) for name in missing):
            return Prepared(raw, _import_files(info, system_dir, raw, missing, data.verify))
    _download(info, Path(data.root), raw)
    return Prepared(raw, frozenset())


def find_source(given: str | None = None, beside: Path | None = None) -> str | None:
    """Where offline dataset files come from: `given`, else $MLPTRAIN_DATA_SOURCE, else a
    `shared/datasets` folder next to the checkout `beside` (how this project's machines
    keep them)."""
    source = given or os.environ.get(SOURCE_ENV)
    if source is None and beside is not None:
        shared = Path(beside).resolve().parent / "shared" / "datasets"
        source = str(shared) if shared.is_dir() else None
    return source


def _compressed_or_plain(folder: Path, name: str) -> Path | None:
    for candidate in (folder / name, folder / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    return None


def _find_source_folder(info: DatasetInfo, source: Path, names: tuple[str, ...]) -> Path:
    if not source.is_dir():
        raise UsageError(
            f"data source {source} is not a folder; it should hold the {info.title} files "
            f"({', '.join(names)}, optionally .gz)"
        )
    candidates = [source, *(source / sub for sub in info.source_subfolders)]
    for folder in candidates:
        if all(_compressed_or_plain(folder, name) for name in names):
            return folder
    looked = ", ".join(str(folder) for folder in candidates)
    raise UsageError(
        f"no {info.title} files in the data source: looked for {', '.join(names)} "
        f"(optionally .gz) in {looked}"
    )


def _import_files(
    info: DatasetInfo, folder: Path, raw: Path, names: list[str], verify: bool
) -> frozenset[str]:
    """Copy (and decompress) `names` into `raw`; returns the ones whose checksum it checked."""
    _make_writable_folder(raw)
    for name in names:
        path = _compressed_or_plain(folder, name)
        if path is None:
            raise UsageError(f"{folder} has no {name} or {name}.gz")
        content = _read_maybe_gzip(path)
        if verify:
            _check_md5(info, name, content, path)
        atomic_write_bytes(raw / name, content)
    log.info("imported %s from %s into %s", info.title, folder, raw)
    return frozenset(names) if verify else frozenset()


def _read_maybe_gzip(path: Path) -> bytes:
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as handle:
                return handle.read()
        return path.read_bytes()
    except (OSError, EOFError, zlib.error) as exc:
        raise UsageError(
            f"cannot read {path}: {exc} (is the file damaged or incomplete?)"
        ) from None


def _check_md5(info: DatasetInfo, name: str, content: bytes, path: Path) -> None:
    digest = hashlib.md5(content, usedforsecurity=False).hexdigest()
    if digest != info.md5[name]:
        raise UsageError(
            f"checksum mismatch for {path}: the uncompressed file's MD5 is {digest}, the "
            f"published {info.title} {name} has {info.md5[name]}. The file is damaged, "
            "truncated or from another dataset; replace it (or set data.verify: false to "
            "use a deliberately modified dataset)"
        )


def _make_writable_folder(folder: Path) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(
            f"cannot create the data folder {folder}: {exc.strerror}; set data.root to a "
            "folder you can write"
        ) from None
    if not os.access(folder, os.W_OK):
        raise UsageError(
            f"the data folder {folder} is not writable; set data.root to a folder you can write"
        )


def _download(info: DatasetInfo, root: Path, raw: Path) -> None:
    from torchvision import datasets as tv_datasets  # heavy, and only needed here

    _make_writable_folder(raw)
    log.info("downloading %s into %s ...", info.title, raw)
    try:
        getattr(tv_datasets, info.folder)(root=str(root), train=True, download=True)
    except Exception as exc:  # any network or server failure means the same to the user
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
        reason = lines[-1] if lines else type(exc).__name__
        raise UsageError(
            f"{info.title} is not in {raw} and could not be downloaded ({reason}).\n"
            f"On a machine without internet access, put the four files ({', '.join(FILES)}, "
            "optionally .gz) in a folder and name it with --data-source DIR, data.source in "
            f"the config, or the environment variable {SOURCE_ENV}=DIR"
        ) from None


# --- reading IDX files -------------------------------------------------------------------


def read_idx(path: Path, expected_dims: int, md5: str | None = None) -> np.ndarray:
    """Parse an uncompressed IDX file of unsigned bytes into a uint8 array."""
    content = bytearray(path.read_bytes())  # writable, so a tensor can share it
    if md5 is not None and hashlib.md5(content, usedforsecurity=False).hexdigest() != md5:
        raise UsageError(
            f"checksum mismatch for {path}: it differs from the published file. Delete it to "
            "import it again, or set data.verify: false to use a deliberately modified dataset"
        )
    if len(content) < 4 or content[0:3] != b"\x00\x00\x08" or content[3] != expected_dims:
        raise UsageError(
            f"{path} is not an IDX file of {expected_dims}-dimensional unsigned bytes "
            f"(its first bytes are {content[:4].hex() or 'missing'})"
        )
    header_size = 4 + 4 * expected_dims
    if len(content) < header_size:
        raise UsageError(f"{path} is truncated: its header is incomplete")
    dims = [int.from_bytes(content[4 + 4 * i : 8 + 4 * i], "big") for i in range(expected_dims)]
    count = 1
    for dim in dims:
        count *= dim
    if len(content) - header_size != count:
        raise UsageError(
            f"{path} has {len(content) - header_size} bytes of data, but its header "
            f"({' x '.join(map(str, dims))}) needs {count}: the file is truncated or damaged"
        )
    return np.frombuffer(content, dtype=np.uint8, offset=header_size).reshape(dims)


def read_pair(
    info: DatasetInfo, files: Prepared, images: str, labels: str, verify: bool
) -> tuple[np.ndarray, np.ndarray]:
    """An images file (uint8, N x 28 x 28) and its labels file (int64, N), checked."""
    raw = files.raw

    def md5(name: str) -> str | None:  # a file checked while importing it is not read twice
        return info.md5[name] if verify and name not in files.verified else None

    image_array = read_idx(raw / images, 3, md5(images))
    label_array = read_idx(raw / labels, 1, md5(labels))
    if tuple(image_array.shape[1:]) != IMAGE_SIZE:
        raise UsageError(
            f"{raw / images} holds images of {tuple(image_array.shape[1:])}, not 28x28"
        )
    if image_array.shape[0] != label_array.shape[0]:
        raise UsageError(
            f"{raw / images} has {image_array.shape[0]} images but {raw / labels} has "
            f"{label_array.shape[0]} labels"
        )
    if label_array.size and int(label_array.max()) >= NUM_CLASSES:
        raise UsageError(f"{raw / labels} has labels outside 0-{NUM_CLASSES - 1}")
    return image_array, label_array.astype(np.int64)


def read_test_files(data: DataConfig) -> tuple[np.ndarray, np.ndarray]:
    """The whole test split of `data.dataset` as arrays: only its two files are imported."""
    info = DATASETS[data.dataset]
    files = prepare_files(info, data, (TEST_IMAGES, TEST_LABELS))
    return read_pair(info, files, TEST_IMAGES, TEST_LABELS, data.verify)
