"""The schema's sections of the training loop: how images are changed (augment) and how
the loop trains (training), with the averaged weights and distillation it can add.
Part of the config schema (schema.py assembles the whole); imports only pydantic.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from mlptrain.config.monitor import MONITORS
from mlptrain.config.section import Section


class MixConfig(Section):
    """Mixup or cutmix: each training image mixed with another of its batch."""

    alpha: float = Field(
        gt=0.0, le=10.0, description="the mixing weight is drawn from Beta(alpha, alpha)"
    )
    probability: float = Field(1.0, gt=0.0, le=1.0, description="the share of images mixed")


class EraseConfig(Section):
    """Random erasing: a rectangle of each chosen training image set to noise."""

    probability: float = Field(0.5, gt=0.0, le=1.0, description="the share of images erased")
    area: tuple[float, float] = Field(
        (0.02, 0.25), description="the rectangle's area, as shares of the image: [low, high]"
    )

    @model_validator(mode="after")
    def _area_range(self) -> EraseConfig:
        low, high = self.area
        if not 0.0 < low <= high < 1.0:
            raise ValueError(
                f"area must be [low, high] with 0 < low <= high < 1, got {list(self.area)}"
            )
        return self


class AugmentConfig(Section):
    """Random changes of training images, per image, on the device; 0 or null means off."""

    translate: float = Field(0.0, ge=0.0, le=14.0, description="random shifts, pixels per axis")
    rotate: float = Field(0.0, ge=0.0, le=180.0, description="random rotations, degrees")
    scale: float = Field(0.0, ge=0.0, lt=1.0, description="random zoom in [1 - s, 1 + s]")
    shear: float = Field(0.0, ge=0.0, lt=90.0, description="random shear, degrees")
    hflip: bool = Field(False, description="mirror half the images (clothes, not digits)")
    elastic: float = Field(
        0.0, ge=0.0, le=100.0, description="elastic distortion strength, pixels (34: classic)"
    )
    elastic_sigma: float = Field(
        4.0, gt=0.0, le=10.0, description="smoothness of the elastic distortion, pixels"
    )
    erase: EraseConfig | None = Field(
        None, description="random erasing: {probability, area: [low, high]}"
    )
    mixup: MixConfig | None = Field(
        None, description="mix whole images and their labels: {alpha, probability}"
    )
    cutmix: MixConfig | None = Field(
        None, description="paste a box of another image, labels by area: {alpha, probability}"
    )

    @property
    def moves(self) -> bool:
        """Whether the affine or elastic change is on (one grid sample)."""
        return bool(
            self.translate or self.rotate or self.scale or self.shear or self.hflip or self.elastic
        )

    @property
    def mixes(self) -> bool:
        return self.mixup is not None or self.cutmix is not None


class EarlyStoppingConfig(Section):
    patience: int = Field(ge=1, description="epochs without improvement before stopping")
    min_delta: float = Field(0.0, ge=0.0, description="the least improvement that counts")


AMP_MODES = ("none", "bf16", "auto")
BEST_BY = tuple(MONITORS)  # the monitor's metrics
NONFINITE_ACTIONS = ("stop", "skip_batch")


class EmaConfig(Section):
    decay: float = Field(
        gt=0.0, lt=1.0, description="the average keeps this share of itself at each step"
    )


class SwaConfig(Section):
    start_epoch: int = Field(ge=1, description="the first epoch whose weights are averaged")
    lr: float = Field(gt=0.0, description="the constant learning rate from start_epoch on")


class DistillConfig(Section):
    weight: float = Field(
        gt=0.0, le=1.0, description="the teacher's share of the loss; the labels' is 1 - weight"
    )
    temperature: float = Field(
        4.0, gt=0.0, le=100.0, description="softens both models' probabilities"
    )


class TrainingConfig(Section):
    epochs: int = Field(10, ge=1, description="passes over the training split")
    batch_size: int = Field(64, ge=1, description="training batch size")
    eval_batch_size: int = Field(1000, ge=1, description="validation and test batch size")
    amp: Literal[AMP_MODES] = Field(
        "none", description="bf16 autocast; auto: bf16 where it measures faster here"
    )
    compile: bool = Field(False, description="torch.compile the model")
    on_nonfinite: Literal[NONFINITE_ACTIONS] = Field(
        "stop", description="when the training loss is NaN or infinite"
    )
    deterministic: bool = Field(False, description="PyTorch's deterministic algorithms")
    threads: int | None = Field(None, ge=1, description="CPU threads; null: torch's default")
    label_smoothing: float = Field(
        0.0, ge=0.0, lt=1.0, description="label smoothing of the training loss"
    )
    grad_clip: float | None = Field(None, gt=0.0, description="clip the gradient norm to this")
    early_stopping: EarlyStoppingConfig | None = Field(
        None, description="{patience, min_delta}: stop when select_best_by stalls"
    )
    select_best_by: Literal[BEST_BY] = Field(
        "val_accuracy", description="the metric that picks best.pt, early stopping, sweeps"
    )
    ema: EmaConfig | None = Field(
        None, description="{decay}: validate, keep and test a moving average of the weights"
    )
    swa: SwaConfig | None = Field(
        None, description="{start_epoch, lr}: average the weights of the last epochs"
    )
    teacher: list[str] | None = Field(
        None, description="checkpoints (or a group folder) whose probabilities are learned"
    )
    distill: DistillConfig | None = Field(
        None, description="{weight, temperature}: how much of the loss the teacher is"
    )

    @model_validator(mode="before")
    @classmethod
    def _one_teacher_path(cls, data: Any) -> Any:
        if isinstance(data, dict) and isinstance(data.get("teacher"), str):
            return {**data, "teacher": [data["teacher"]]}
        return data

    @model_validator(mode="after")
    def _extras_fit(self) -> TrainingConfig:
        if self.ema is not None and self.swa is not None:
            raise ValueError(
                "training.ema and training.swa are two kinds of averaged weights; choose one"
            )
        if self.swa is not None and self.swa.start_epoch > self.epochs:
            raise ValueError(
                f"training.swa.start_epoch {self.swa.start_epoch} is after the last epoch "
                f"({self.epochs})"
            )
        if (self.teacher is None) != (self.distill is None):
            raise ValueError(
                "training.teacher and training.distill go together: set both or neither"
            )
        if self.teacher is not None and not self.teacher:
            raise ValueError("training.teacher names no checkpoint")
        return self
