"""The cache of decoded user datasets: one .npz file per source under data.root/cache/,
holding the arrays and the manifest of the files they were read from.

The manifest lists every source file with its size and modification time; the cache is
used only when the files now on disk list the same, so a changed, added or removed file
means reading the source again. The file is written atomically after everything was read,
so an interrupted first run leaves no cache, not a half-written one.
"""

from __future__ import annotations

import hashlib
import io
import json
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mlptrain.config.schema import DataConfig
from mlptrain.errors import UsageError
from mlptrain.util.files import atomic_write_bytes
from mlptrain.util.logs import get_logger

log = get_logger()

CACHE_FORMAT = 1
ARRAYS = ("class_names", "train_images", "train_labels", "test_images", "test_labels")


@dataclass(frozen=True)
class Listing:
    """split -> class name ("" for a CSV file) -> [(path, size, mtime_ns), ...]."""

    files: dict[str, dict[str, list[tuple[str, int, int]]]]


def cache_path(data: DataConfig) -> Path:
    """The cache file of this source read this way (path, size, columns, skipping)."""
    identity = {
        "format": CACHE_FORMAT,
        "dataset": data.dataset,
        "path": str(Path(data.path).expanduser().resolve()),
        "test_path": str(Path(data.test_path).expanduser().resolve()) if data.test_path else None,
        "test_fraction": data.test_fraction,
        "label_column": data.label_column if data.dataset == "csv" else None,
        "image_size": list(data.image_size),
        "skip_unreadable": data.skip_unreadable,
    }
    digest = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]
    return Path(data.root) / "cache" / f"{data.dataset}-{digest}.npz"


def cached_arrays(
    data: DataConfig, listing: Listing, read: Callable[[], dict[str, Any]]
) -> dict[str, np.ndarray]:
    """The arrays for `listing`: from the cache when its manifest matches, else `read()`
    and cached."""
    path = cache_path(data)
    manifest = json.dumps(listing.files, sort_keys=True)
    arrays = _load(path, manifest)
    if arrays is not None:
        return arrays
    start = time.perf_counter()
    arrays = {name: np.asarray(value) for name, value in read().items()}
    count = len(arrays["train_labels"]) + len(arrays["test_labels"])
    log.info("read %d images from %s in %.1f s", count, data.path, time.perf_counter() - start)
    _store(path, manifest, arrays)
    return arrays


def _load(path: Path, manifest: str) -> dict[str, np.ndarray] | None:
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as stored:
            if str(stored["manifest"]) != manifest:
                log.info("the data changed since %s was cached; reading it again", path.name)
                return None
            return {name: stored[name] for name in ARRAYS}
    except (OSError, ValueError, KeyError, zipfile.BadZipFile, EOFError):
        log.warning("warning: the data cache %s is damaged; reading the data again", path)
        return None


def _store(path: Path, manifest: str, arrays: dict[str, np.ndarray]) -> None:
    buffer = io.BytesIO()
    np.savez(buffer, manifest=np.array(manifest), **arrays)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(path, buffer.getvalue())
    except OSError as exc:
        raise UsageError(
            f"cannot write the data cache {path}: {exc.strerror or exc}; set data.root to a "
            "folder you can write"
        ) from None
