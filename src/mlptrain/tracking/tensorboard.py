"""TensorBoard: event files in <run>/tensorboard/."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mlptrain.artifacts.metrics import CURVES
from mlptrain.config.schema import Config
from mlptrain.errors import UsageError
from mlptrain.tracking.base import INSTALL, Tracker, flat_config


class TensorBoardTracker(Tracker):
    """Event files in <run>/tensorboard/: per-epoch scalars (step = epoch), the batch loss
    every N batches in tensorboard/batches/, and at the end the test metrics, the
    pictures and the hyperparameters with the final metrics (the HParams tab)."""

    def __init__(self, config: Config, run: Path, start_epoch: int) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise UsageError(
                f"output.tensorboard needs the tensorboard package: {INSTALL}"
            ) from None
        self.config, self.every = config, config.output.tensorboard_every_n_batches
        folder = run / "tensorboard"
        # purge_step: a resumed run drops the steps after its last saved epoch.
        purge = start_epoch + 1 if start_epoch else None
        self.writer = SummaryWriter(str(folder), purge_step=purge)
        self.writer_type, self.folder, self.start_epoch = SummaryWriter, folder, start_epoch
        self.batches: Any = None  # opened at the first epoch, when the batch count is known
        self.batch_step = 0

    def epoch_start(self, epoch: int, batch_count: int) -> None:
        self.batch_step = (epoch - 1) * batch_count  # step = batches since the run began
        if self.every and self.batches is None:
            purge = self.batch_step + 1 if self.start_epoch else None
            self.batches = self.writer_type(str(self.folder / "batches"), purge_step=purge)

    def wants_batch_loss(self) -> bool:
        return bool(self.every)

    def batch_loss(self, loss) -> None:
        self.batch_step += 1
        if self.batches is not None and self.batch_step % self.every == 0:
            self.batches.add_scalar("batch/train_loss", loss.item(), self.batch_step)

    def epoch_end(self, record: dict[str, Any], is_best: bool) -> None:
        epoch = int(record["epoch"])
        for key in CURVES:
            if record.get(key) is not None:
                self.writer.add_scalar(f"epoch/{key}", float(record[key]), epoch)
        self.writer.flush()

    def finish(self, run: Path, summary: dict[str, Any]) -> None:
        import numpy as np
        from PIL import Image

        step = int(summary.get("epoch") or 0)
        self.writer.add_scalar("test/accuracy", summary["accuracy"], step)
        self.writer.add_scalar("test/loss", summary["loss"], step)
        for name in ("confusion_matrix.png", "curves.png"):
            if (run / name).exists():
                with Image.open(run / name) as picture:
                    pixels = np.asarray(picture.convert("RGB"))
                self.writer.add_image(
                    f"test/{name.removesuffix('.png')}", pixels, step, dataformats="HWC"
                )
        metrics = {"hparam/test_accuracy": summary["accuracy"], "hparam/test_loss": summary["loss"]}
        self.writer.add_hparams(flat_config(self.config), metrics, run_name="hparams")
        self.abort("finished")

    def abort(self, status: str) -> None:
        self.writer.close()
        if self.batches is not None:
            self.batches.close()
