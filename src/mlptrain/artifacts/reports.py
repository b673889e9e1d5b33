"""Pictures and a Markdown report for a run folder (matplotlib, headless Agg backend)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mlptrain.util.files import atomic_write, atomic_write_text

GRID_LIMIT = 36  # images in the misclassified and sample grids


def pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save(figure, path: Path) -> None:
    # tight_layout leaves a placeholder engine behind, for which savefig would draw the
    # whole figure once more (rendering off) before drawing it for real.
    figure.set_layout_engine(None)
    atomic_write(path, lambda handle: figure.savefig(handle, format="png", dpi=110))
    pyplot().close(figure)


def plot_curves(path: Path, history: list[dict[str, Any]], best_epoch: int) -> None:
    """Loss and accuracy per epoch, training and validation, the best epoch marked."""
    plt = pyplot()
    figure, (loss_axis, accuracy_axis) = plt.subplots(1, 2, figsize=(11, 4.2))
    epochs = [row["epoch"] for row in history]
    for axis, metric, title in (
        (loss_axis, "loss", "loss"),
        (accuracy_axis, "accuracy", "accuracy"),
    ):
        axis.plot(epochs, [row[f"train_{metric}"] for row in history], marker="o", label="train")
        if all(f"val_{metric}" in row for row in history):
            values = [row[f"val_{metric}"] for row in history]
            axis.plot(epochs, values, marker="o", label="validation")
            if best_epoch:
                axis.scatter(
                    [best_epoch],
                    [values[best_epoch - 1]],
                    s=160,
                    facecolors="none",
                    edgecolors="tab:red",
                    linewidths=2,
                    zorder=3,
                    label=f"best (epoch {best_epoch})",
                )
        if best_epoch:
            axis.axvline(best_epoch, color="tab:red", linestyle=":", linewidth=1)
        axis.set_xlabel("epoch")
        axis.set_title(title)
        axis.xaxis.get_major_locator().set_params(integer=True)
        axis.grid(alpha=0.3)
        axis.legend()
    figure.tight_layout()
    save(figure, path)


def plot_confusion(path: Path, matrix: list[list[int]], class_names: list[str], title: str) -> None:
    """Counts in cells; colour by the share of each true class (row-normalized)."""
    plt = pyplot()
    size = len(class_names)
    shares = [[count / max(1, sum(row)) for count in row] for row in matrix]
    figure, axis = plt.subplots(figsize=(0.75 * size + 3.5, 0.65 * size + 2.5))
    image = axis.imshow(shares, cmap="Blues", vmin=0.0, vmax=1.0)
    axis.set_xticks(range(size), class_names, rotation=40, ha="right")
    axis.set_yticks(range(size), class_names)
    axis.set_xlabel("predicted class")
    axis.set_ylabel("true class")
    for row in range(size):
        for column in range(size):
            colour = "white" if shares[row][column] > 0.5 else "black"
            axis.text(
                column,
                row,
                str(matrix[row][column]),
                ha="center",
                va="center",
                color=colour,
                fontsize=8,
                in_layout=False,
            )
    figure.colorbar(image, ax=axis, label="share of the true class")
    axis.set_title(title)
    figure.tight_layout()
    save(figure, path)


def _image_grid(path: Path, images: torch.Tensor, titles: list[str], heading: str) -> None:
    """Up to six images a row, each with its title above it, drawn as one mosaic in one
    axes (an axes per image made these pictures ten times slower to draw)."""
    plt = pyplot()
    count = len(titles)
    columns = min(6, max(1, count))
    rows = max(1, math.ceil(count / columns))
    height, width = images.shape[1:] if count else (28, 28)
    pad, title_space = max(2, width // 7), max(8, height // 2)  # pixels around each image
    cell_height, cell_width = height + title_space, width + pad
    mosaic = np.zeros((rows * cell_height, columns * cell_width), dtype=np.uint8)
    pixels = images[:count].cpu().numpy()
    for index in range(count):
        row, column = divmod(index, columns)
        top, left = row * cell_height + title_space, column * cell_width + pad // 2
        mosaic[top : top + height, left : left + width] = pixels[index]
    figure, axis = plt.subplots(figsize=(2.0 * columns, 2.2 * rows + 0.4))
    axis.imshow(mosaic, cmap="gray_r", vmin=0, vmax=255, interpolation="nearest")
    axis.axis("off")
    for index, title in enumerate(titles):
        row, column = divmod(index, columns)
        axis.text(
            column * cell_width + cell_width / 2 - 0.5,
            row * cell_height + title_space - 1.5,
            title,
            ha="center",
            va="bottom",
            fontsize=8,
            in_layout=False,
        )
    if count == 0:
        axis.text(0.5, 0.5, "none", ha="center", va="center", transform=axis.transAxes)
    figure.suptitle(heading)
    figure.tight_layout()
    save(figure, path)


def plot_misclassified(
    path: Path,
    images: torch.Tensor,
    labels: torch.Tensor,
    predictions: torch.Tensor,
    confidences: torch.Tensor,
    class_names: list[str],
) -> None:
    """Up to 36 wrongly classified images, each titled true -> predicted (probability)."""
    wrong = (predictions != labels).nonzero().flatten()
    shown = wrong[:GRID_LIMIT]
    titles = [
        f"{class_names[labels[i]]} → {class_names[predictions[i]]}\n({confidences[i]:.2f})"
        for i in shown.tolist()
    ]
    heading = f"{len(wrong):,} of {len(labels):,} misclassified; the first {len(shown)}"
    _image_grid(path, images[shown.to(images.device)], titles, heading)


def plot_samples(
    path: Path, images: torch.Tensor, labels: torch.Tensor, class_names: list[str]
) -> None:
    """The first 36 training images with their labels."""
    count = min(GRID_LIMIT, len(labels))
    titles = [class_names[label] for label in labels[:count].tolist()]
    _image_grid(path, images[:count], titles, "training images")


def write_report(
    path: Path,
    config_yaml: str,
    history: list[dict[str, Any]],
    best_epoch: int,
    summary: dict[str, Any],
    pictures: list[str],
) -> None:
    """report.md: the run at a glance, readable in any Markdown viewer."""
    best = history[best_epoch - 1] if best_epoch else {}
    lines = [
        f"# Run {path.parent.name}",
        "",
        f"Test accuracy **{summary['accuracy']:.4f}** (loss {summary['loss']:.4f}, "
        f"{summary['n']:,} images) of `best.pt`, epoch {best_epoch} of {len(history)}"
        + (f", validation accuracy {best['val_accuracy']:.4f}." if "val_accuracy" in best else "."),
        "",
        "| epoch | train loss | train acc | val loss | val acc | lr | seconds |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in history:
        val_loss, val_accuracy = row.get("val_loss", math.nan), row.get("val_accuracy", math.nan)
        lines.append(
            f"| {row['epoch']} | {row['train_loss']:.4f} | {row['train_accuracy']:.4f} | "
            f"{val_loss:.4f} | {val_accuracy:.4f} | {row['lr']:.3g} | {row['epoch_seconds']:.1f} |"
        )
    lines += [
        "",
        "## Per class (test set)",
        "",
        "| class | precision | recall | f1 | support |",
        "|---|---:|---:|---:|---:|",
    ]
    for name in [*summary["class_names"], "macro avg", "weighted avg"]:
        row = summary["report"][name]
        lines.append(
            f"| {name} | {row['precision']:.4f} | {row['recall']:.4f} | "
            f"{row['f1-score']:.4f} | {int(row['support'])} |"
        )
    lines += ["", "## Pictures", ""]
    lines += [f"![{name}]({name})" for name in pictures]
    lines += ["", "## Config", "", "```yaml", config_yaml.rstrip(), "```", ""]
    atomic_write_text(path, "\n".join(lines))
