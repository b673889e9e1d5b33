"""The config schema (pydantic sections with their limits) and its validation, with
readable errors; reading, layering and writing YAML files is config_files.py.

Imports only the standard library and pydantic, so that a bad config is reported
before torch is loaded.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from pydantic import Field, ValidationError, model_validator

from mlptrain.config.messages import describe_errors
from mlptrain.config.section import Section
from mlptrain.config.training_schema import AugmentConfig, TrainingConfig
from mlptrain.errors import UsageError

BUILTIN_DATASETS = ("mnist", "fashion_mnist")
USER_DATASETS = ("images", "csv")  # the user's own files, at data.path
DATASETS = (*BUILTIN_DATASETS, *USER_DATASETS)
ACTIVATIONS = ("relu", "gelu", "tanh", "sigmoid", "leaky_relu")
OPTIMIZERS = ("sgd", "adam", "adamw", "rmsprop")
OPTIMIZERS_WITH_MOMENTUM = ("sgd", "rmsprop")


class SubsetConfig(Section):
    train: int | None = Field(
        None, ge=1, description="a seeded sample of this many training images (validation "
        "is carved from them)"
    )  # fmt: skip
    test: int | None = Field(None, ge=1, description="the first this many test images")


class NormalizeConfig(Section):
    """Fixed input normalization, on the 0-1 pixel scale (tutorials use 0.5/0.5)."""

    mean: float = Field(description="subtracted from every pixel (0-1 scale)")
    std: float = Field(gt=0.0, description="then divided by this")


class DataConfig(Section):
    dataset: Literal[DATASETS] = Field(
        "fashion_mnist", description="mnist or fashion_mnist; images or csv for your own data"
    )
    root: str = Field(
        "data", description="where dataset files are kept, and the cache of your own data"
    )
    source: str | None = Field(
        None, description="a folder to import the four IDX files from (offline machines)"
    )
    verify: bool = Field(True, description="check the files' MD5 against the published ones")
    val_fraction: float = Field(
        0.1, ge=0.0, lt=1.0, description="share of the training set kept for validation"
    )
    split_seed: int | None = Field(
        None, ge=0, description="seed of the train/validation split; null: the run's seed "
        "(fix it so runs of several seeds, such as a teacher's members, share one split)"
    )  # fmt: skip
    subset: SubsetConfig | None = Field(None, description="train on a sample: {train: N, test: M}")
    normalize: NormalizeConfig | None = Field(
        None, description="fixed {mean, std}; null: the training split's own mean and std"
    )
    # images and csv (docs: "Your own data"):
    path: str | None = Field(
        None, description="images: a folder of class folders (or of training/ and testing/); "
        "csv: the training file"
    )  # fmt: skip
    test_path: str | None = Field(
        None, description="csv: the test file; images: a folder of class folders for testing"
    )
    test_fraction: float = Field(
        0.0, ge=0.0, lt=1.0, description="set aside this share of each class as the test split"
    )
    label_column: str = Field("label", min_length=1, description="csv: the labels' column")
    image_size: tuple[int, int] = Field(
        (28, 28), description="height and width: images are turned grey and resized to it"
    )
    skip_unreadable: bool = Field(
        False, description="images: skip files that do not decode, with a warning"
    )

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


class ModelConfig(Section):
    hidden: list[int] = Field(
        default_factory=lambda: [256, 128], description="hidden layer widths; [] is linear"
    )
    activation: Literal[ACTIVATIONS] = Field("relu", description="after each hidden layer")
    dropout: float = Field(0.0, ge=0.0, lt=1.0, description="after each hidden activation")
    batch_norm: bool = Field(False, description="BatchNorm1d after each hidden Linear")

    @model_validator(mode="after")
    def _positive_widths(self) -> ModelConfig:
        bad = [width for width in self.hidden if width < 1]
        if bad:
            raise ValueError(f"hidden layer widths must be at least 1, got {bad}")
        return self


class OptimizerConfig(Section):
    name: Literal[OPTIMIZERS] = Field("adam", description="the optimizer")
    lr: float = Field(0.001, gt=0.0, description="learning rate")
    momentum: float = Field(0.0, ge=0.0, lt=1.0, description="sgd and rmsprop only")
    weight_decay: float = Field(0.0, ge=0.0, description="L2 penalty (decoupled for adamw)")
    nesterov: bool = Field(False, description="Nesterov momentum (sgd with a momentum)")
    betas: tuple[float, float] | None = Field(
        None, description="adam and adamw: [b1, b2]; null: 0.9, 0.999"
    )

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


class SchedulerConfig(Section):
    name: Literal[SCHEDULERS] = Field(
        "none", description="step (per epoch), cosine or onecycle (per batch)"
    )
    step_size: int = Field(10, ge=1, description="step: epochs between decays")
    gamma: float = Field(0.1, gt=0.0, le=1.0, description="step: the decay factor")
    warmup_epochs: float = Field(0.0, ge=0.0, description="cosine: linear warm-up from 0")
    min_lr: float = Field(0.0, ge=0.0, description="cosine: the final learning rate")
    max_lr: float | None = Field(None, gt=0.0, description="onecycle: the peak; null: optimizer.lr")
    pct_start: float = Field(0.3, gt=0.0, lt=1.0, description="onecycle: share of steps rising")


TTA_MODES = ("none", "hflip", "shift")


class EvaluationConfig(Section):
    tta: Literal[TTA_MODES] = Field(
        "none", description="the final test averages over mirrored (hflip) or shifted images"
    )


class EnsembleConfig(Section):
    """Several models from one config, trained and tested as one averaged model."""

    seeds: list[int] | None = Field(
        None, description="one member per seed, otherwise the same config"
    )
    members: list[dict[str, Any]] | None = Field(
        None, description="one member per entry: keys that differ from this config"
    )

    @model_validator(mode="after")
    def _members(self) -> EnsembleConfig:
        if (self.seeds is None) == (self.members is None):
            raise ValueError("ensemble takes seeds or members (one of the two)")
        count = len(self.seeds if self.seeds is not None else self.members)
        if count < 2:
            raise ValueError(f"an ensemble needs at least 2 members, got {count}")
        seeds = self.seeds or []
        if any(seed < 0 for seed in seeds) or len(set(seeds)) != len(seeds):
            raise ValueError(f"ensemble.seeds must be distinct and >= 0, got {seeds}")
        return self


class MlflowConfig(Section):
    """Log the run to MLflow: a tracking server's URI, or None for a local store under
    output.runs_dir; the experiment's name (None: "mlptrain")."""

    tracking_uri: str | None = Field(
        None,
        pattern=r"^(https?|file|sqlite|postgresql|mysql)(\+\w+)?:",
        description="a tracking server's URI; null: a local store in runs_dir",
    )
    experiment: str | None = Field(
        None,
        min_length=1,
        max_length=500,
        pattern=r"^[^\x00-\x1f]+$",
        description="the experiment's name; null: mlptrain",
    )


class OutputConfig(Section):
    runs_dir: str = Field("runs", description="where run folders are created")
    tensorboard: bool = Field(False, description="TensorBoard events in <run>/tensorboard/")
    tensorboard_every_n_batches: int | None = Field(
        None, ge=1, description="also the training loss every N batches"
    )
    mlflow: MlflowConfig | None = Field(None, description="log the run to MLflow")
    mlflow_log_checkpoints: bool = Field(False, description="also log best.pt and last.pt")


class Config(Section):
    name: str = Field(
        "mlp",
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$",
        max_length=100,
        description="the run folder's name prefix",
    )
    seed: int = Field(42, ge=0, description="seeds everything: weights, split, batch order")
    device: str = Field(
        "auto", pattern=r"^(auto|cpu|cuda|cuda:\d+)$", description="auto, cpu, cuda or cuda:N"
    )
    data: DataConfig = Field(default_factory=DataConfig, description="the dataset")
    model: ModelConfig = Field(default_factory=ModelConfig, description="the MLP")
    optimizer: OptimizerConfig = Field(default_factory=OptimizerConfig, description="its steps")
    scheduler: SchedulerConfig = Field(
        default_factory=SchedulerConfig, description="the learning rate over time"
    )
    training: TrainingConfig = Field(default_factory=TrainingConfig, description="the loop")
    augment: AugmentConfig = Field(
        default_factory=AugmentConfig, description="random changes of training images only"
    )
    evaluation: EvaluationConfig = Field(
        default_factory=EvaluationConfig, description="the final test of best.pt"
    )
    ensemble: EnsembleConfig | None = Field(
        None, description="{seeds: [...]} or {members: [...]}: train K models as one"
    )
    output: OutputConfig = Field(default_factory=OutputConfig, description="where results go")

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
