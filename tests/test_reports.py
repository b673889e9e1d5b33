from __future__ import annotations

import torch

from mlptrain.artifacts import reports

PNG = b"\x89PNG\r\n\x1a\n"


def test_curves_with_and_without_validation(tmp_path):
    history = [
        {
            "epoch": e,
            "train_loss": 1 / e,
            "train_accuracy": 0.5 + e / 10,
            "val_loss": 1.1 / e,
            "val_accuracy": 0.5 + e / 11,
            "lr": 0.1,
            "epoch_seconds": 1.0,
        }
        for e in (1, 2, 3)
    ]
    reports.plot_curves(tmp_path / "a.png", history, best_epoch=3)
    plain = [{k: v for k, v in row.items() if not k.startswith("val_")} for row in history]
    reports.plot_curves(tmp_path / "b.png", plain, best_epoch=3)
    assert (tmp_path / "a.png").read_bytes()[:8] == PNG
    assert (tmp_path / "b.png").read_bytes()[:8] == PNG


def test_misclassified_grid_even_when_nothing_is_wrong(tmp_path):
    images = torch.randint(0, 256, (10, 28, 28), dtype=torch.uint8)
    labels = torch.arange(10)
    names = [str(i) for i in range(10)]
    confidences = torch.full((10,), 0.9)
    reports.plot_misclassified(tmp_path / "none.png", images, labels, labels, confidences, names)
    wrong = (labels + 1) % 10
    reports.plot_misclassified(tmp_path / "all.png", images, labels, wrong, confidences, names)
    assert (tmp_path / "none.png").read_bytes()[:8] == PNG
    assert (tmp_path / "all.png").read_bytes()[:8] == PNG


def test_confusion_matrix_picture(tmp_path):
    reports.plot_confusion(tmp_path / "c.png", [[5, 1], [0, 0]], ["a", "b"], "title")
    assert (tmp_path / "c.png").read_bytes()[:8] == PNG
