"""CSV files of pixel rows (a header, one image per row, one column per pixel and an
optional label column), read into uint8 images and integer labels; every bad line is a
UsageError naming the file, line and column. Imports no torch.
"""

from __future__ import annotations

import csv
import math
import warnings
from pathlib import Path

import numpy as np

from mlptrain.errors import UsageError


def read_pixel_csv(
    path: Path, size: tuple[int, int], label_column: str, labels_required: bool = True
) -> tuple[np.ndarray, np.ndarray | None]:
    """A CSV of pixel rows with a header: uint8 N x H x W and the integer labels of
    `label_column` (None when the file has no such column and `labels_required` is
    false, as Kaggle's test.csv)."""
    header = _header(path)
    label_at = header.index(label_column) if label_column in header else None
    if labels_required and label_at is None:
        shown = ", ".join(header[:5]) + (", ..." if len(header) > 5 else "")
        raise UsageError(
            f"{path} has no column {label_column!r} (its columns: {shown}); set "
            "data.label_column to the column that holds the labels"
        )
    pixels = len(header) - (label_at is not None)
    if pixels != size[0] * size[1]:
        raise UsageError(
            f"{path} has {pixels} pixel columns, but data.image_size {size[0]}x{size[1]} "
            f"needs {size[0] * size[1]} (rows are images, one column per pixel, row-major)"
        )
    try:
        with warnings.catch_warnings():  # no rows: said below, in words
            warnings.simplefilter("ignore", UserWarning)
            table = np.loadtxt(path, delimiter=",", skiprows=1, dtype=np.float64, ndmin=2)
    except ValueError:
        table = None
    if table is not None and table.size == 0:
        raise UsageError(f"{path} has a header but no rows")
    if table is None or table.shape[1] != len(header) or not _valid(table, label_at):
        _raise_first_bad_line(path, header, label_at)
        raise UsageError(f"{path} could not be read as a CSV of numbers")
    labels = None
    if label_at is not None:
        labels = table[:, label_at].astype(np.int64)
        table = np.delete(table, label_at, axis=1)
    return table.astype(np.uint8).reshape(-1, *size), labels


def _header(path: Path) -> list[str]:
    try:
        with path.open(newline="", encoding="utf-8") as handle:
            header = next(csv.reader(handle), None)
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"cannot read {path}: {exc}") from None
    if not header:
        raise UsageError(f"{path} is empty; a CSV needs a header row naming its columns")
    return [name.strip() for name in header]


def _valid(table: np.ndarray, label_at: int | None) -> bool:
    whole = np.all(table == np.round(table))
    pixels = table if label_at is None else np.delete(table, label_at, axis=1)
    return bool(whole and pixels.min(initial=0) >= 0 and pixels.max(initial=0) <= 255)


def _raise_first_bad_line(path: Path, header: list[str], label_at: int | None) -> None:
    """Find the first line that is wrong and say what is wrong with it."""
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.reader(handle)
        next(reader)
        for row in reader:
            line = reader.line_num
            if not row or row == [""]:
                continue
            if len(row) != len(header):
                raise UsageError(
                    f"{path}, line {line}: {len(row)} values, but the header has {len(header)} "
                    f"columns ({'a label and ' if label_at is not None else ''}"
                    f"{len(header) - (label_at is not None)} pixels)"
                )
            for column, text in enumerate(row):
                name = header[column]
                if column == label_at:
                    if not _is_integer(text):
                        raise UsageError(
                            f"{path}, line {line}: the label {text.strip()!r} is not an integer"
                        )
                elif not _is_integer(text) or not 0 <= float(text) <= 255:
                    raise UsageError(
                        f"{path}, line {line}, column {name!r}: the pixel {text.strip()!r} is "
                        "not an integer from 0 to 255"
                    )


def _is_integer(text: str) -> bool:
    try:
        value = float(text)
    except ValueError:
        return False
    return math.isfinite(value) and value == round(value)
