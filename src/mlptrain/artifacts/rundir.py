"""The run folder: created exclusively, filled with atomic writes."""

from __future__ import annotations

import csv
import io
import json
import os
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from mlptrain.artifacts.metrics import METRIC_FIELDS
from mlptrain.errors import UsageError
from mlptrain.util.files import atomic_write_text


@dataclass(frozen=True)
class RunDir:
    path: Path

    @classmethod
    def create(cls, runs_dir: str | Path, name: str, now: datetime | None = None) -> RunDir:
        """Make `runs_dir/<name>-<YYYYmmdd-HHMMSS>[-N]`, never reusing an existing folder."""
        runs_dir = Path(runs_dir)
        stamp = (now or datetime.now()).strftime("%Y%m%d-%H%M%S")
        try:
            runs_dir.mkdir(parents=True, exist_ok=True)
            for attempt in range(1, 1000):
                path = runs_dir / (f"{name}-{stamp}" + (f"-{attempt}" if attempt > 1 else ""))
                try:
                    path.mkdir()  # exclusive: two processes never get the same folder
                except FileExistsError:
                    continue
                return cls(path)
        except OSError as exc:
            raise UsageError(
                f"cannot create a run folder in {runs_dir}: {exc.strerror}; "
                "set output.runs_dir to a folder you can write"
            ) from None
        raise UsageError(f"too many runs named {name}-{stamp} in {runs_dir}")

    @classmethod
    def create_exactly(cls, path: str | Path) -> RunDir:
        """Make the run folder `path`, which must not exist yet (its parents may not either)."""
        path = Path(path)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.mkdir()
        except FileExistsError:
            raise UsageError(
                f"the run folder {path} exists already; runs never share one"
            ) from None
        except OSError as exc:
            raise UsageError(f"cannot create the run folder {path}: {exc.strerror}") from None
        return cls(path)

    @property
    def metrics_csv(self) -> Path:
        return self.path / "metrics.csv"

    @property
    def log_file(self) -> Path:
        return self.path / "train.log"

    def write_text(self, name: str, text: str) -> None:
        atomic_write_text(self.path / name, text)

    def append_metrics(self, record: dict[str, Any]) -> None:
        """Append one epoch's row (the header first); each row goes down in one write."""
        text = _metrics_csv([record], header=not self.metrics_csv.exists())
        with open(self.metrics_csv, "a", encoding="utf-8", newline="") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())

    def read_metrics(self) -> list[dict[str, str]]:
        """metrics.csv's rows as text (the finished epochs); none before the first ends."""
        try:
            with open(self.metrics_csv, newline="", encoding="utf-8") as handle:
                return list(csv.DictReader(handle))
        except FileNotFoundError:
            return []

    def write_metrics(self, records: list[dict[str, Any]]) -> None:
        """Replace metrics.csv with exactly these rows (a resumed run's saved history)."""
        atomic_write_text(self.metrics_csv, _metrics_csv(records, header=True))


def _metrics_csv(records: list[dict[str, Any]], header: bool) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=METRIC_FIELDS, extrasaction="ignore")
    if header:
        writer.writeheader()
    for record in records:
        writer.writerow({key: _csv_value(record.get(key)) for key in METRIC_FIELDS})
    return buffer.getvalue()


def _csv_value(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.6g}"
    return value


def write_evaluation(
    folder: Path, metrics_name: str, matrix_name: str, summary: dict[str, Any]
) -> None:
    """Write an evaluation summary as JSON and its confusion matrix as CSV."""
    atomic_write_text(folder / metrics_name, json.dumps(summary, indent=2) + "\n")
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["true \\ predicted", *summary["class_names"]])
    for name, row in zip(summary["class_names"], summary["confusion_matrix"], strict=True):
        writer.writerow([name, *row])
    atomic_write_text(folder / matrix_name, buffer.getvalue())
