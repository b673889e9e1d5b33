"""Dataset files: finding them (an offline source, an OS package's folder, a download),
importing them with their checksums checked, and parsing IDX files.

Files land uncompressed in data.root/<folder>/raw, torchvision's layout.
"""

from __future__ import annotations

import gzip
import hashlib
import logging
import os
import zlib
from dataclasses import dataclass
from pathlib import Path

import torch

from mlptrain.config import DataConfig
from mlptrain.errors import UsageError
from mlptrain.fsutil import atomic_write_bytes

log = logging.getLogger("mlptrain")

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


def read_idx(path: Path, expected_dims: int, md5: str | None = None) -> torch.Tensor:
    """Parse an uncompressed IDX file of unsigned bytes into a uint8 tensor."""
    content = bytearray(path.read_bytes())  # writable, so the tensor can share it
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
    if count == 0:
        return torch.zeros(dims, dtype=torch.uint8)
    return torch.frombuffer(content, dtype=torch.uint8, offset=header_size).view(*dims)
