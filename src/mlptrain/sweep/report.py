"""A sweep's outputs: results.csv, results.md, sweep.png, curves.png, best_config.yaml."""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path
from typing import Any

from mlptrain.artifacts.reports import pyplot, save
from mlptrain.config.files import config_to_yaml, load_config
from mlptrain.config.monitor import Monitor
from mlptrain.sweep.spec import encode
from mlptrain.sweep.trials import TrialResult
from mlptrain.util.files import atomic_write_text

SUMMARY_COLUMNS = TrialResult.columns()


def row_for(number: int, params: dict[str, Any], result: dict[str, Any]) -> dict[str, Any]:
    """One results row: the trial, its parameters, its outcome (curve kept for plots)."""
    return {"trial": number, "params": params, **result}


def _display(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return value if isinstance(value, str) else encode(value)


def _number(value: Any, digits: int) -> str:
    return "" if value is None else f"{value:.{digits}f}"


def score(row: dict[str, Any], monitor: Monitor) -> float | None:
    """The monitored metric at the trial's best epoch."""
    return row.get(f"best_{monitor.metric}")


def ranked(rows: list[dict[str, Any]], monitor: Monitor) -> list[dict[str, Any]]:
    """Best by the monitored metric first; trials without one last, in trial order."""
    return sorted(rows, key=lambda row: (*monitor.sort_key(score(row, monitor)), row["trial"]))


def write_reports(
    folder: Path,
    keys: list[str],
    rows: list[dict[str, Any]],
    monitor: Monitor,
    log_keys: frozenset[str] = frozenset(),
) -> None:
    """All outputs from the finished trials' rows, ranked by `monitor`; `log_keys` are
    plotted on a log scale."""
    rows = sorted(rows, key=lambda row: row["trial"])
    write_results_csv(folder / "results.csv", keys, rows)
    atomic_write_text(folder / "results.md", results_markdown(keys, rows, monitor))
    if any(row.get("curve") for row in rows):
        plot_sweep(folder / "sweep.png", keys, rows, monitor, log_keys)
        plot_curves(folder / "curves.png", rows, monitor)
    write_best_config(folder / "best_config.yaml", rows, monitor)


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


def results_markdown(keys: list[str], rows: list[dict[str, Any]], monitor: Monitor) -> str:
    header = ["rank", "trial", *keys, "best epoch", "val acc", "val loss", "test acc"]
    header += ["seconds", "status"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for rank, row in enumerate(ranked(rows, monitor), 1):
        cells = [
            str(rank),
            str(row["trial"]),
            *(f"`{_display(row['params'].get(key))}`" for key in keys),
            "" if row.get("best_epoch") is None else str(row["best_epoch"]),
            _number(row.get("best_val_accuracy"), 4),
            _number(row.get("best_val_loss"), 4),
            _number(row.get("test_accuracy"), 4),
            _number(row.get("train_seconds"), 1),
            row["status"] + (f": {row['message']}" if row.get("message") else ""),
        ]
        lines.append("| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |")
    lines += [
        "",
        f"Ranked by {monitor.label} (training.select_best_by). Every column describes the "
        "trial's best epoch, the one its best.pt holds.",
    ]
    return "\n".join(lines) + "\n"


def write_best_config(path: Path, rows: list[dict[str, Any]], monitor: Monitor) -> None:
    """The best finished trial's config; with a shared study, the best one run here."""
    best = next(
        (
            row
            for row in ranked(rows, monitor)
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
        f"# the best trial of this sweep: trial {best['trial']}, {monitor.label} "
        f"{score(best, monitor):.4f} (epoch {best['best_epoch']}), run {best['run_dir']}\n"
    )
    atomic_write_text(path, header + config_to_yaml(config))


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def plot_sweep(
    path: Path,
    keys: list[str],
    rows: list[dict[str, Any]],
    monitor: Monitor,
    log_keys: frozenset[str],
) -> None:
    """The monitored metric against each swept parameter; a heatmap for a full 2-key grid."""
    plt = pyplot()
    scored = [row for row in rows if score(row, monitor) is not None]
    if len(keys) == 2 and _is_full_grid(keys, rows):
        figure = _heatmap(plt, keys, scored, monitor)
    else:
        figure, axes = plt.subplots(1, len(keys), figsize=(4.2 * len(keys), 3.8), squeeze=False)
        for axis, key in zip(axes[0], keys, strict=True):
            _scatter(axis, key, scored, monitor, key in log_keys)
        axes[0][0].set_ylabel(f"best {monitor.label}")
        figure.suptitle(f"{len(scored)} trials: {monitor.label} per parameter")
    figure.tight_layout()
    save(figure, path)


def _is_full_grid(keys: list[str], rows: list[dict[str, Any]]) -> bool:
    first = {_display(row["params"][keys[0]]) for row in rows}
    second = {_display(row["params"][keys[1]]) for row in rows}
    return len(rows) == len(first) * len(second) and len(rows) > 1


def _heatmap(plt, keys: list[str], rows: list[dict[str, Any]], monitor: Monitor):
    ys = _ordered([row["params"][keys[0]] for row in rows])
    xs = _ordered([row["params"][keys[1]] for row in rows])
    sign = 1.0 if monitor.maximize else -1.0  # signed values: higher is better
    grid = [[math.nan] * len(xs) for _ in ys]
    for row in rows:
        y, x = ys.index(row["params"][keys[0]]), xs.index(row["params"][keys[1]])
        grid[y][x] = sign * score(row, monitor)
    figure, axis = plt.subplots(figsize=(1.3 * len(xs) + 3, 0.7 * len(ys) + 2.2))
    finite = sorted(value for line in grid for value in line if not math.isnan(value))
    low, high = (finite[0], finite[-1]) if finite else (0.0, 1.0)
    # One diverged trial must not wash out the differences among the good ones: the
    # colours span the better three quarters, and anything worse takes the darkest one.
    if finite:
        quartile = finite[len(finite) // 4]
        low = max(low, quartile - (high - quartile) * 0.5)
    shown = [[sign * value for value in line] for line in grid]
    limits = (low, high) if sign > 0 else (-high, -low)
    cmap = "viridis" if sign > 0 else "viridis_r"
    image = axis.imshow(shown, cmap=cmap, aspect="auto", vmin=limits[0], vmax=limits[1])
    axis.set_xticks(range(len(xs)), [_display(x) for x in xs])
    axis.set_yticks(range(len(ys)), [_display(y) for y in ys])
    axis.set_xlabel(keys[1])
    axis.set_ylabel(keys[0])
    middle = (low + high) / 2
    for y, line in enumerate(grid):
        for x, value in enumerate(line):
            text = "failed" if math.isnan(value) else f"{sign * value:.4f}"
            colour = "white" if math.isnan(value) or value < middle else "black"
            axis.text(x, y, text, ha="center", va="center", color=colour, fontsize=9)
    clipped = finite and finite[0] < low
    extend = ("min" if sign > 0 else "max") if clipped else "neither"
    figure.colorbar(image, ax=axis, label=f"best {monitor.label}", extend=extend)
    axis.set_title(f"best {monitor.label}")
    return figure


def _ordered(values: list[Any]) -> list[Any]:
    unique: list[Any] = []
    for value in values:
        if value not in unique:
            unique.append(value)
    if all(_is_number(value) for value in unique):
        return sorted(unique)
    return unique


def _scatter(axis, key: str, rows: list[dict[str, Any]], monitor: Monitor, log_scale: bool) -> None:
    values = [row["params"][key] for row in rows]
    scores = [score(row, monitor) for row in rows]
    numeric = all(_is_number(value) for value in values)
    if numeric:
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
    if scores:
        best = min(range(len(scores)), key=lambda i: monitor.sort_key(scores[i]))
        x = values[best] if numeric else _ordered(values).index(values[best])
        axis.scatter([x], [scores[best]], color="tab:red", s=80, zorder=3, label="best")
        axis.legend(loc="best", fontsize=8)
    axis.set_xlabel(key)
    axis.grid(alpha=0.3)


def plot_curves(path: Path, rows: list[dict[str, Any]], monitor: Monitor) -> None:
    """The monitored metric per epoch of every trial, the best one highlighted."""
    plt = pyplot()
    figure, axis = plt.subplots(figsize=(7, 4.5))
    best = next((row for row in ranked(rows, monitor) if row.get("curve")), None)
    for row in rows:
        if row.get("curve") and row is not best:
            epochs = range(1, len(row["curve"]) + 1)
            axis.plot(epochs, row["curve"], color="0.7", linewidth=1)
    if best is not None:
        epochs = range(1, len(best["curve"]) + 1)
        label = f"trial {best['trial']} (best: {score(best, monitor):.4f})"
        axis.plot(epochs, best["curve"], color="tab:red", linewidth=2.5, marker="o", label=label)
        axis.legend(loc="best")
    axis.set_xlabel("epoch")
    axis.xaxis.get_major_locator().set_params(integer=True)
    axis.set_ylabel(monitor.label)
    trials = sum(bool(row.get("curve")) for row in rows)
    axis.set_title(f"{monitor.label} per epoch, {trials} trials")
    axis.grid(alpha=0.3)
    figure.tight_layout()
    save(figure, path)
