"""The config schema (pydantic sections with their limits) and its validation, with
readable errors; reading, layering and writing YAML files is config_files.py.

Imports only the standard library and pydantic, so that a bad config is reported
before torch is loaded.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from mlptrain.config.messages import describe_errors
from mlptrain.config.monitor import MONITORS
from mlptrain.errors import UsageError

BUILTIN_DATASETS = ("mnist", "fashion_mnist")
USER_DATASETS = ("images", "csv")  # the user's own files, at data.path
DATASETS = (*BUILTIN_DATASETS, *USER_DATASETS)
ACTIVATIONS = ("relu", "gelu", "tanh", "sigmoid", "leaky_relu")
OPTIMIZERS = ("sgd", "adam", "adamw", "rmsprop")
OPTIMIZERS_WITH_MOMENTUM = ("sgd", "rmsprop")


class _Section(BaseModel):
    # Unknown keys are errors (typos must not be ignored); a loaded config never changes.
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class SubsetConfig(_Section):
    train: int | None = Field(None, ge=1, description="images taken from the training set")
    test: int | None = Field(None, ge=1, description="images taken from the test set")


class NormalizeConfig(_Section):
    """Fixed input normalization, on the 0-1 pixel scale (tutorials use 0.5/0.5)."""

    mean: float
    std: float = Field(gt=0.0)


class DataConfig(_Section):
    dataset: Literal[DATASETS] = "fashion_mnist"
    root: str = "data"  # downloads, imports and the cache of decoded images/csv files
    source: str | None = None
    verify: bool = True
    val_fraction: float = Field(0.1, ge=0.0, lt=1.0)
    subset: SubsetConfig | None = None
    normalize: NormalizeConfig | None = None  # None: the training split's mean and std
    # images and csv (docs: README "Your own data"):
    path: str | None = None  # images: a folder of class folders (or of training/ + testing/)
    test_path: str | None = None  # csv: the test file; images: a folder of class folders
    test_fraction: float = Field(0.0, ge=0.0, lt=1.0)  # a carved, class-stratified test split
    label_column: str = Field("label", min_length=1)  # csv
    image_size: tuple[int, int] = (28, 28)  # height, width: images are resized to it
    skip_unreadable: bool = False  # images: skip files that do not decode, with a warning

    @model_validator(mode="after")
    def _paths_fit_the_dataset(self) -> DataConfig:
        if self.dataset in USER_DATASETS:
            if self.path is None:
                raise ValueError(
                    f"data.dataset {self.dataset} reads your own files: set data.path to "
                    + ("a folder of class folders" if self.dataset == "images" else "a CSV file")
                )
            if self.test_path is not None and self.test_fraction > 0:
                raise ValueError("data.test_path and data.test_fraction exclude each other")
        else:
            given = [
                key
                for key, value in (
                    ("path", self.path),
                    ("test_path", self.test_path),
                    ("test_fraction", self.test_fraction or None),
                )
                if value is not None
            ]
            if given:
                raise ValueError(
                    f"data.{given[0]} is for data.dataset images or csv; {self.dataset} is built in"
                )
            if self.image_size != (28, 28):
                raise ValueError(f"data.image_size of {self.dataset} is 28x28 and cannot change")
        if min(self.image_size) < 1 or max(self.image_size) > 512:
            raise ValueError(f"data.image_size {list(self.image_size)} must be 1 to 512 pixels")
        return self

    @property
    def is_builtin(self) -> bool:
        return self.dataset in BUILTIN_DATASETS


class AugmentConfig(_Section):
    """Random affine changes of training images, per image, on the device; 0 means off."""

    translate: float = Field(0.0, ge=0.0, le=14.0)  # pixels, each axis
    rotate: float = Field(0.0, ge=0.0, le=180.0)  # degrees
    scale: float = Field(0.0, ge=0.0, lt=1.0)  # zoom in [1 - scale, 1 + scale]
    shear: float = Field(0.0, ge=0.0, lt=90.0)  # degrees
    hflip: bool = False  # mirror half the images (clothes, not digits)
    elastic: float = Field(0.0, ge=0.0, le=100.0)  # elastic distortion strength (pixels)
    elastic_sigma: float = Field(4.0, gt=0.0, le=10.0)  # its smoothness (pixels)

    @property
    def enabled(self) -> bool:
        return bool(
            self.translate or self.rotate or self.scale or self.shear or self.hflip or self.elastic
        )


class ModelConfig(_Section):
    hidden: list[int] = Field(default_factory=lambda: [256, 128])
    activation: Literal[ACTIVATIONS] = "relu"
    dropout: float = Field(0.0, ge=0.0, lt=1.0)
    batch_norm: bool = False

    @model_validator(mode="after")
    def _positive_widths(self) -> ModelConfig:
        bad = [width for width in self.hidden if width < 1]
        if bad:
            raise ValueError(f"hidden layer widths must be at least 1, got {bad}")
        return self


class OptimizerConfig(_Section):
    name: Literal[OPTIMIZERS] = "adam"
    lr: float = Field(0.001, gt=0.0)
    momentum: float = Field(0.0, ge=0.0, lt=1.0)
    weight_decay: float = Field(0.0, ge=0.0)
    nesterov: bool = False  # sgd with momentum
    betas: tuple[float, float] | None = None  # adam / adamw; None: (0.9, 0.999)

    @model_validator(mode="after")
    def _options_only_where_used(self) -> OptimizerConfig:
        if self.momentum and self.name not in OPTIMIZERS_WITH_MOMENTUM:
            raise ValueError(
                f"momentum is used by {' and '.join(OPTIMIZERS_WITH_MOMENTUM)} only, "
                f"not by {self.name}; remove it or choose another optimizer"
            )
        if self.nesterov and (self.name != "sgd" or not self.momentum):
            raise ValueError("nesterov needs optimizer.name: sgd and a momentum above 0")
        if self.betas is not None:
            if self.name not in ("adam", "adamw"):
                raise ValueError(f"betas are used by adam and adamw only, not by {self.name}")
            if not all(0.0 <= beta < 1.0 for beta in self.betas):
                raise ValueError(f"betas must lie in [0, 1), got {list(self.betas)}")
        return self


SCHEDULERS = ("none", "step", "cosine", "onecycle")


class SchedulerConfig(_Section):
    name: Literal[SCHEDULERS] = "none"
    step_size: int = Field(10, ge=1)  # step: epochs between decays
    gamma: float = Field(0.1, gt=0.0, le=1.0)  # step: the decay factor
    warmup_epochs: float = Field(0.0, ge=0.0)  # cosine: linear warm-up from 0
    min_lr: float = Field(0.0, ge=0.0)  # cosine: the final learning rate
    max_lr: float | None = Field(None, gt=0.0)  # onecycle: the peak (None: optimizer.lr)
    pct_start: float = Field(0.3, gt=0.0, lt=1.0)  # onecycle: share of steps rising


class EarlyStoppingConfig(_Section):
    patience: int = Field(ge=1)  # epochs without select_best_by improving before stopping
    min_delta: float = Field(0.0, ge=0.0)  # the least gain of select_best_by that counts


AMP_MODES = ("none", "bf16", "auto")
BEST_BY = tuple(MONITORS)  # the monitor's metrics
NONFINITE_ACTIONS = ("stop", "skip_batch")


class TrainingConfig(_Section):
    epochs: int = Field(10, ge=1)
    batch_size: int = Field(64, ge=1)
    eval_batch_size: int = Field(1000, ge=1)
    amp: Literal[AMP_MODES] = "none"  # bf16 autocast; auto: bf16 where the device runs it natively
    compile: bool = False  # torch.compile the model
    on_nonfinite: Literal[NONFINITE_ACTIONS] = "stop"
    deterministic: bool = False  # PyTorch's deterministic algorithms
    threads: int | None = Field(None, ge=1)  # CPU threads for torch; None: torch's default
    label_smoothing: float = Field(0.0, ge=0.0, lt=1.0)
    grad_clip: float | None = Field(None, gt=0.0)  # max gradient norm
    early_stopping: EarlyStoppingConfig | None = None
    select_best_by: Literal[BEST_BY] = "val_accuracy"


class MlflowConfig(_Section):
    """Log the run to MLflow: a tracking server's URI, or None for a local store under
    output.runs_dir; the experiment's name (None: "mlptrain")."""

    tracking_uri: str | None = Field(
        None, pattern=r"^(https?|file|sqlite|postgresql|mysql)(\+\w+)?:"
    )
    experiment: str | None = Field(None, min_length=1, max_length=500, pattern=r"^[^\x00-\x1f]+$")


class OutputConfig(_Section):
    runs_dir: str = "runs"
    tensorboard: bool = False  # event files in <run>/tensorboard/
    tensorboard_every_n_batches: int | None = Field(None, ge=1)  # also the batch loss
    mlflow: MlflowConfig | None = None
    mlflow_log_checkpoints: bool = False


class Config(_Section):
    name: str = Field("mlp", pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$", max_length=100)
    seed: int = Field(42, ge=0)
    device: str = Field("auto", pattern=r"^(auto|cpu|cuda|cuda:\d+)$")
    data: DataConfig = Field(default_factory=DataConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    optimizer: OptimizerConfig = Field(default_factory=OptimizerConfig)
    scheduler: SchedulerConfig = Field(default_factory=SchedulerConfig)
    training: TrainingConfig = Field(default_factory=TrainingConfig)
    augment: AugmentConfig = Field(default_factory=AugmentConfig)
    output: OutputConfig = Field(default_factory=OutputConfig)

    @model_validator(mode="after")
    def _schedule_fits_the_optimizer(self) -> Config:
        if self.scheduler.name == "cosine" and self.scheduler.min_lr >= self.optimizer.lr:
            raise ValueError(
                f"scheduler.min_lr {self.scheduler.min_lr:g} must be below optimizer.lr "
                f"{self.optimizer.lr:g}: the cosine schedule decays from one to the other"
            )
        return self


# --- validation and error messages -----------------------------------------------------


def validate(
    document: dict[str, Any], origin: str = "config", origins: Mapping[str, str] | None = None
) -> Config:
    """Validate a plain dict against the schema; raise UsageError listing every problem
    (each with the file or flag its key came from, where `origins` says)."""
    try:
        return Config.model_validate(document)
    except ValidationError as exc:
        lines = describe_errors(exc.errors(), Config, origins)
        raise UsageError(
            f"invalid {origin}:\n" + "\n".join(f"  - {line}" for line in lines)
        ) from None
