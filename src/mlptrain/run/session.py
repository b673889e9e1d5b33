"""Building a run: from a config (a new run) or from a checkpoint and its config (a
resumed one) to the device, data, model, optimizer, schedule and fit state."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from mlptrain.config.files import build_config, parse_override
from mlptrain.config.schema import Config
from mlptrain.data.splits import DataSplits, check_classes, load_splits, pixel_stats
from mlptrain.errors import UsageError
from mlptrain.model.mlp import MLP, ModelSpec
from mlptrain.training.arithmetic import Gemm, training_gemms
from mlptrain.training.augment import build_augment
from mlptrain.training.averaging import WeightAverage
from mlptrain.training.loop import FitState, LoopSettings
from mlptrain.training.mixing import Mixer
from mlptrain.training.optim import build_optimizer, build_schedule
from mlptrain.training.runtime import (
    Amp,
    resolve_amp,
    resolve_device,
    restore_rng_state,
    seed_everything,
    set_deterministic,
)

# Keys a resumed run may change: they do not alter what the finished epochs mean.
SAFE_ON_RESUME = (
    "training.epochs",
    "training.eval_batch_size",
    "device",
    "data.root",
    "data.source",
    "data.verify",
)


@dataclass(frozen=True)
class Session:
    """The built objects of a run."""

    config: Config
    device: torch.device
    splits: DataSplits
    model: MLP  # what checkpoints save (state.model may be its torch.compile wrapper)
    state: FitState
    settings: LoopSettings
    amp: Amp


def loop_settings(
    config: Config,
    amp_dtype: torch.dtype | None,
    num_classes: int,
    teacher: torch.nn.Module | None = None,
) -> LoopSettings:
    """What the training loop takes from the config (and the teacher, loaded)."""
    training, augment = config.training, config.augment
    stopping = training.early_stopping
    distill = training.distill
    return LoopSettings(
        epochs=training.epochs,
        batch_size=training.batch_size,
        eval_batch_size=training.eval_batch_size,
        amp_dtype=amp_dtype,
        on_nonfinite=training.on_nonfinite,
        label_smoothing=training.label_smoothing,
        grad_clip=training.grad_clip,
        augment=build_augment(augment),
        mix=Mixer(augment.mixup, augment.cutmix, num_classes) if augment.mixes else None,
        teacher=teacher,
        distill_weight=distill.weight if distill else 0.0,
        distill_temperature=distill.temperature if distill else 1.0,
        select_best_by=training.select_best_by,
        patience=stopping.patience if stopping else None,
        min_delta=stopping.min_delta if stopping else 0.0,
    )


def model_spec(config: Config, splits: DataSplits) -> ModelSpec:
    fixed = config.data.normalize
    mean, std = (fixed.mean, fixed.std) if fixed else pixel_stats(splits.train)
    height, width = splits.train.images.shape[1:]
    return ModelSpec(
        input_size=height * width,
        num_classes=len(splits.info.class_names),
        image_size=(height, width),
        hidden=tuple(config.model.hidden),
        activation=config.model.activation,
        dropout=config.model.dropout,
        batch_norm=config.model.batch_norm,
        mean=mean,
        std=std,
    )


def step_gemms(config: Config) -> list[Gemm]:
    """The matrix products of the config's training step (amp auto times them)."""
    height, width = config.data.image_size
    spec = ModelSpec(hidden=tuple(config.model.hidden), input_size=height * width)
    return training_gemms(spec, config.training.batch_size)


def build_session(config: Config, spec: ModelSpec | None = None) -> Session:
    """Device, seeds, data, model and optimizer; `spec` given when resuming."""
    device = resolve_device(config.device)
    amp = resolve_amp(config.training.amp, device, step_gemms(config))
    set_deterministic(config.training.deterministic)
    if config.training.threads is not None:
        torch.set_num_threads(config.training.threads)
    seed_everything(config.seed)
    splits = load_splits(config.data, config.seed, device)
    model = MLP(spec or model_spec(config, splits)).to(device)
    training = config.training
    optimizer = build_optimizer(model.parameters(), config.optimizer)
    steps_per_epoch = math.ceil(len(splits.train) / config.training.batch_size)
    schedule = build_schedule(optimizer, config.scheduler, config.training.epochs, steps_per_epoch)
    averaged = training.ema is not None or training.swa is not None
    state = FitState(
        # The compiled wrapper shares the parameters; checkpoints save the plain module.
        model=torch.compile(model) if training.compile else model,
        optimizer=optimizer,
        generator=torch.Generator().manual_seed(config.seed),
        schedule=schedule,
        average=WeightAverage(model, training.ema, training.swa) if averaged else None,
    )
    classes = len(splits.info.class_names)
    teacher = load_teacher(training.teacher, splits, device) if training.teacher else None
    settings = loop_settings(config, amp.dtype, classes, teacher)
    return Session(config, device, splits, model, state, settings, amp)


def load_teacher(paths: list[str], splits: DataSplits, device: torch.device) -> torch.nn.Module:
    """The teacher of a distilled run: one checkpoint, several (their ensemble), or a
    group folder (its members' best.pt), of the run's own classes and image size."""
    from mlptrain.evaluation.ensemble import teacher_checkpoints

    checkpoints, model = teacher_checkpoints(paths)
    for path, checkpoint in checkpoints.items():
        check_classes(splits.info, checkpoint["class_names"])
        size = tuple(checkpoint["model_spec"].get("image_size", (28, 28)))
        if size != tuple(splits.train.images.shape[1:]):
            raise UsageError(f"training.teacher {path} takes {size} images, not the run's")
    return model.to(device).eval().requires_grad_(False)


def resume_session(config: Config, checkpoint: dict[str, Any]) -> Session:
    """The session of a run saved in `checkpoint`, exactly where its last epoch ended."""
    session = build_session(config, ModelSpec.from_dict(checkpoint["model_spec"]))
    check_classes(session.splits.info, checkpoint["class_names"])
    # With averaged weights on, model_state is the average and the trained weights
    # are kept beside it.
    session.model.load_state_dict(checkpoint.get("training_weights") or checkpoint["model_state"])
    average = session.state.average
    if average is not None and checkpoint.get("average"):
        average.load(checkpoint["model_state"], checkpoint["average"])
    session.state.optimizer.load_state_dict(checkpoint["optimizer_state"])
    session.state.schedule.load_state_dict(checkpoint.get("scheduler_state"))
    restore_rng_state(checkpoint["rng"], session.state.generator)
    for record in checkpoint["metrics"]:
        session.state.add(dict(record), session.settings)
    return session


def resumed_config(
    run_path: Path, stored: dict[str, Any], overrides: list[str], settings: dict[str, Any]
) -> Config:
    """The stored config with the changes a resumed run allows (SAFE_ON_RESUME)."""
    changes = [(".".join(parse_override(text)[0]), f"--set {text!r}") for text in overrides]
    changes += [(key, "command line") for key in settings]
    for key, origin in changes:
        if key not in SAFE_ON_RESUME:
            raise UsageError(
                f"{origin}: {key} cannot change when a run is resumed (only "
                f"{', '.join(SAFE_ON_RESUME)} can); start a new run from its config instead: "
                f"mlp-train --config {run_path / 'config.yaml'} --set ..."
            )
    layers = [(str(run_path / "last.pt"), stored)]
    config = build_config(layers, overrides, settings, origin=f"config of {run_path}")
    if config.training.epochs != stored["training"]["epochs"] and config.scheduler.name in (
        "cosine",
        "onecycle",
    ):
        raise UsageError(
            f"training.epochs cannot change when resuming a run with the {config.scheduler.name} "
            "schedule: its learning rates are planned over the original number of epochs"
        )
    return config
