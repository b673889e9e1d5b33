"""A sweep's outputs: results.csv, results.md, sweep.png, curves.png, best_config.yaml."""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path
from typing import Any

from mlptrain.config import config_to_yaml, load_config
from mlptrain.fsutil import atomic_write_text
from mlptrain.reports import pyplot, save
from mlptrain.sweep.spec import encode

SUMMARY_COLUMNS = (
    "best_val_accuracy",
    "best_epoch",
    "test_accuracy",
    "train_seconds",
    "status",
    "run_dir",
    "message",
)


def row_for(number: int, params: dict[str, Any], result: dict[str, Any]) -> dict[str, Any]:
    """One results row: the trial, its parameters, its outcome (curve kept for plots)."""
    return {"trial": number, "params": params, **result}


def _display(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return value if isinstance(value, str) else encode(value)


def _number(value: Any, digits: int) -> str:
    return "" if value is None else f"{value:.{digits}f}"


def ranked(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Best validation accuracy first; trials without one last, in trial order."""
    return sorted(
        rows,
        key=lambda row: (
            row.get("best_val_accuracy") is None,
            -(row.get("best_val_accuracy") or 0),
            row["trial"],
        ),
    )


def write_reports(
    folder: Path,
    keys: list[str],
    rows: list[dict[str, Any]],
    log_keys: frozenset[str] = frozenset(),
) -> None:
    """All outputs from the finished trials' rows; `log_keys` are plotted on a log scale."""
    rows = sorted(rows, key=lambda row: row["trial"])
    write_results_csv(folder / "results.csv", keys, rows)
    atomic_write_text(folder / "results.md", results_markdown(keys, rows))
    if any(row.get("curve") for row in rows):
        plot_sweep(folder / "sweep.png", keys, rows, log_keys)
        plot_curves(folder / "curves.png", rows)
    write_best_config(folder / "best_config.yaml", rows)


def write_results_csv(path: Path, keys: list[str], rows: list[dict[str, Any]]) -> None:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["trial", *keys, *SUMMARY_COLUMNS])
    for row in rows:
        params = [_exact(row["params"].get(key)) for key in keys]
        writer.writerow([row["trial"], *params, *(_csv(row.get(col)) for col in SUMMARY_COLUMNS)])
    atomic_write_text(path, buffer.getvalue())


def _exact(value: Any) -> str:
    return value if isinstance(value, str) else encode(value)


def _csv(value: Any) -> Any:
    return "" if value is None else value


def results_markdown(keys: list[str], rows: list[dict[str, Any]]) -> str:
    header = ["rank", "trial", *keys, "best val acc", "epoch", "test acc", "seconds", "status"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for rank, row in enumerate(ranked(rows), 1):
        cells = [
            str(rank),
            str(row["trial"]),
            *(f"`{_display(row['params'].get(key))}`" for key in keys),
            _number(row.get("best_val_accuracy"), 4),
            "" if row.get("best_epoch") is None else str(row["best_epoch"]),
            _number(row.get("test_accuracy"), 4),
            _number(row.get("train_seconds"), 1),
            row["status"] + (f": {row['message']}" if row.get("message") else ""),
        ]
        lines.append("| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |")
    return "\n".join(lines) + "\n"


def write_best_config(path: Path, rows: list[dict[str, Any]]) -> None:
    """The best finished trial's config; with a shared study, the best one run here."""
    best = next(
        (
            row
            for row in ranked(rows)
            if row.get("status") == "complete" and (Path(row["run_dir"]) / "config.yaml").exists()
        ),
        None,
    )
    if best is None:
        return
    config = load_config(Path(best["run_dir"]) / "config.yaml")
    # The sweep's threads per parallel worker is no setting for a run on its own.
    config = config.model_copy(
        update={"training": config.training.model_copy(update={"threads": None})}
    )
    header = (
        f"# the best trial of this sweep: trial {best['trial']}, validation accuracy "
        f"{best['best_val_accuracy']:.4f} (epoch {best['best_epoch']}), run {best['run_dir']}\n"
    )
    atomic_write_text(path, header + config_to_yaml(config))


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def plot_sweep(
    path: Path, keys: list[str], rows: list[dict[str, Any]], log_keys: frozenset[str]
) -> None:
    """Validation accuracy against each swept parameter; a heatmap for a full 2-key grid."""
    plt = pyplot()
    scored = [row for row in rows if row.get("best_val_accuracy") is not None]
    if len(keys) == 2 and _is_full_grid(keys, rows):
        figure = _heatmap(plt, keys, scored)
    else:
        figure, axes = plt.subplots(1, len(keys), figsize=(4.2 * len(keys), 3.8), squeeze=False)
        for axis, key in zip(axes[0], keys, strict=True):
            _scatter(axis, key, scored, key in log_keys)
        axes[0][0].set_ylabel("best validation accuracy")
        figure.suptitle(f"{len(scored)} trials: validation accuracy per parameter")
    figure.tight_layout()
    save(figure, path)


def _is_full_grid(keys: list[str], rows: list[dict[str, Any]]) -> bool:
    first = {_display(row["params"][keys[0]]) for row in rows}
    second = {_display(row["params"][keys[1]]) for row in rows}
    return len(rows) == len(first) * len(second) and len(rows) > 1


def _heatmap(plt, keys: list[str], rows: list[dict[str, Any]]):
    ys = _ordered([row["params"][keys[0]] for row in rows])
    xs = _ordered([row["params"][keys[1]] for row in rows])
    grid = [[math.nan] * len(xs) for _ in ys]
    for row in rows:
        y, x = ys.index(row["params"][keys[0]]), xs.index(row["params"][keys[1]])
        grid[y][x] = row["best_val_accuracy"]
    figure, axis = plt.subplots(figsize=(1.3 * len(xs) + 3, 0.7 * len(ys) + 2.2))
    finite = sorted(value for line in grid for value in line if not math.isnan(value))
    low, high = (finite[0], finite[-1]) if finite else (0.0, 1.0)
    # One diverged trial must not wash out the differences among the good ones: the
    # colours span the upper three quarters, and anything lower takes the darkest one.
    if finite:
        quartile = finite[len(finite) // 4]
        low = max(low, quartile - (high - quartile) * 0.5)
    image = axis.imshow(grid, cmap="viridis", aspect="auto", vmin=low, vmax=high)
    axis.set_xticks(range(len(xs)), [_display(x) for x in xs])
    axis.set_yticks(range(len(ys)), [_display(y) for y in ys])
    axis.set_xlabel(keys[1])
    axis.set_ylabel(keys[0])
    middle = (low + high) / 2
    for y, line in enumerate(grid):
        for x, value in enumerate(line):
            text = "failed" if math.isnan(value) else f"{value:.4f}"
            colour = "white" if math.isnan(value) or value < middle else "black"
            axis.text(x, y, text, ha="center", va="center", color=colour, fontsize=9)
    extend = "min" if finite and finite[0] < low else "neither"
    figure.colorbar(image, ax=axis, label="best validation accuracy", extend=extend)
    axis.set_title("best validation accuracy")
    return figure


def _ordered(values: list[Any]) -> list[Any]:
    unique: list[Any] = []
    for value in values:
        if value not in unique:
            unique.append(value)
    if all(_is_number(value) for value in unique):
        return sorted(unique)
    return unique


def _scatter(axis, key: str, rows: list[dict[str, Any]], log_scale: bool) -> None:
    values = [row["params"][key] for row in rows]
    scores = [row["best_val_accuracy"] for row in rows]
    if all(_is_number(value) for value in values):
        axis.scatter(values, scores, color="tab:blue")
        if log_scale:
            from matplotlib.ticker import NullFormatter

            axis.set_xscale("log")
            axis.xaxis.set_minor_formatter(NullFormatter())  # labelled minor ticks collide
    else:
        labels = _ordered(values)
        positions = [labels.index(value) for value in values]
        axis.scatter(positions, scores, color="tab:blue")
        axis.set_xticks(range(len(labels)), [_display(label) for label in labels], rotation=30)
    best = max(range(len(scores)), key=scores.__getitem__) if scores else None
    if best is not None:
        x = (
            values[best]
            if all(_is_number(v) for v in values)
            else _ordered(values).index(values[best])
        )
        axis.scatter([x], [scores[best]], color="tab:red", s=80, zorder=3, label="best")
        axis.legend(loc="lower right", fontsize=8)
    axis.set_xlabel(key)
    axis.grid(alpha=0.3)


def plot_curves(path: Path, rows: list[dict[str, Any]]) -> None:
    """Validation accuracy per epoch of every trial, the best one highlighted."""
    plt = pyplot()
    figure, axis = plt.subplots(figsize=(7, 4.5))
    best = next((row for row in ranked(rows) if row.get("curve")), None)
    for row in rows:
        if row.get("curve") and row is not best:
            epochs = range(1, len(row["curve"]) + 1)
            axis.plot(epochs, row["curve"], color="0.7", linewidth=1)
    if best is not None:
        epochs = range(1, len(best["curve"]) + 1)
        label = f"trial {best['trial']} (best: {best['best_val_accuracy']:.4f})"
        axis.plot(epochs, best["curve"], color="tab:red", linewidth=2.5, marker="o", label=label)
        axis.legend(loc="lower right")
    axis.set_xlabel("epoch")
    axis.xaxis.get_major_locator().set_params(integer=True)
    axis.set_ylabel("validation accuracy")
    axis.set_title(
        f"validation accuracy per epoch, {sum(bool(r.get('curve')) for r in rows)} trials"
    )
    axis.grid(alpha=0.3)
    figure.tight_layout()
    save(figure, path)
