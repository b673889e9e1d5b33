"""mlp-compare's outputs: an aligned table, Markdown, CSV, JSON and the curves picture."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

from mlptrain.compare.runs import Row

FIXED = (
    "run",
    "dataset",
    "n",
    "status",
    "epochs",
    "best_epoch",
    "best_val",
    "test_accuracy",
    "train_seconds",
)
HEADERS = {
    "best_val": "best val",
    "test_accuracy": "test acc",
    "train_seconds": "train s",
    "best_epoch": "best ep",
}


def _cell(key: str, value: Any, row: Row) -> str:
    if value is None:
        return "-"
    if isinstance(value, tuple):
        mean, std = value
        digits = 1 if key == "train_seconds" else 4
        text = f"{mean:.{digits}f}"
        return text + (f" ± {std:.{digits}f}" if row.values["n"] > 1 else "")
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, list):
        return "[" + ", ".join(str(item) for item in value) + "]"
    return str(value)


def _cells(rows: list[Row], keys: list[str]) -> tuple[list[str], list[list[str]]]:
    columns = [*FIXED, *keys]
    headers = [HEADERS.get(column, column) for column in columns]
    headers[FIXED.index("best_val")] = _best_header(rows)
    body = []
    for row in rows:
        values = {**row.values, "run": row.label}
        body.append([_cell(column, values.get(column), row) for column in columns])
    return headers, body


def _best_header(rows: list[Row]) -> str:
    monitors = {row.values["monitor"] for row in rows}
    return f"best {monitors.pop()}" if len(monitors) == 1 else "best val (its metric)"


def table(rows: list[Row], keys: list[str]) -> str:
    headers, body = _cells(rows, keys)
    widths = [max(len(line[i]) for line in [headers, *body]) for i in range(len(headers))]
    lines = [
        "  ".join(text.ljust(width) for text, width in zip(line, widths, strict=True))
        for line in [headers, *body]
    ]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(line.rstrip() for line in lines) + "\n"


def markdown(rows: list[Row], keys: list[str]) -> str:
    headers, body = _cells(rows, keys)
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in line) + " |" for line in body]
    return "\n".join(lines) + "\n"


def records(rows: list[Row], keys: list[str]) -> list[dict[str, Any]]:
    """One plain dict per row, means and standard deviations as separate fields."""
    out = []
    for row in rows:
        record: dict[str, Any] = {
            "run": str(row.runs[0].folder),
            "runs": [str(run.folder) for run in row.runs],
        }
        for key in [*FIXED[1:], "monitor", *keys]:
            value = row.values.get(key)
            if isinstance(value, tuple):
                record[key], record[f"{key}_std"] = value
            else:
                record[key] = value
        out.append(record)
    return out


def to_csv(rows: list[Row], keys: list[str]) -> str:
    data = records(rows, keys)
    buffer = io.StringIO()
    fields = list(dict.fromkeys(key for record in data for key in record if key != "runs"))
    writer = csv.DictWriter(buffer, fieldnames=fields, extrasaction="ignore")
    writer.writeheader()
    for record in data:
        writer.writerow(
            {key: json.dumps(v) if isinstance(v, list) else v for key, v in record.items()}
        )
    return buffer.getvalue()


def to_json(rows: list[Row], keys: list[str]) -> str:
    return json.dumps({"varied": keys, "rows": records(rows, keys)}, indent=1) + "\n"


def legend(row: Row, keys: list[str]) -> str:
    """A row's legend: the differing keys' values, else the folder's name."""
    parts = [f"{key}={_cell(key, row.values.get(key), row)}" for key in keys]
    text = ", ".join(parts) if parts else row.runs[0].folder.name
    return text + (f" (n={len(row.runs)})" if len(row.runs) > 1 else "")


def _mean_curve(row: Row, metric: str, np):
    """The mean and std per epoch of a metric over a row's runs (their common epochs)."""
    curves = [[epoch.get(metric) for epoch in run.history] for run in row.runs]
    length = min((len(curve) for curve in curves), default=0)
    if not length or any(value is None for curve in curves for value in curve[:length]):
        return None
    values = np.array([curve[:length] for curve in curves], dtype=float)
    return values.mean(axis=0), values.std(axis=0)


def plot(rows: list[Row], keys: list[str], path: Path) -> None:
    """Validation accuracy and loss per epoch of every row; a group as its mean with a
    band of ± one standard deviation; each row's best epoch marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    from matplotlib.ticker import MaxNLocator

    figure, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    for row in rows:
        means = {metric: _mean_curve(row, metric, np) for metric in ("val_accuracy", "val_loss")}
        monitored = means.get(row.values["monitor"])
        best = None
        if monitored is not None:  # a group's best epoch: that of its mean curve
            pick = np.argmin if row.values["monitor"] == "val_loss" else np.argmax
            best = int(pick(monitored[0]))
        for axis, mean_std in zip(axes, means.values(), strict=True):
            if mean_std is None:
                continue
            mean, std = mean_std
            epochs = np.arange(1, len(mean) + 1)
            (line,) = axis.plot(epochs, mean, label=legend(row, keys))
            if len(row.runs) > 1:
                axis.fill_between(epochs, mean - std, mean + std, color=line.get_color(), alpha=0.2)
            if best is not None and best < len(mean):
                axis.plot([best + 1], [mean[best]], "o", color=line.get_color())
    for axis, title in zip(axes, ("validation accuracy", "validation loss"), strict=True):
        axis.set(title=f"{title} (dot: best epoch)", xlabel="epoch")
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))
        axis.grid(alpha=0.3)
    handles, labels = axes[0].get_legend_handles_labels()
    if handles:
        figure.legend(handles, labels, loc="lower center", ncol=min(3, len(labels)), fontsize=8)
        figure.subplots_adjust(bottom=0.12 + 0.05 * ((len(labels) + 2) // 3))
    figure.savefig(path, dpi=110)
    plt.close(figure)
