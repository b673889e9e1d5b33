"""The library entry points a notebook user calls; the commands call the same code.

    import mlptrain
    result = mlptrain.train("configs/fashion.yaml", overrides=["optimizer.lr=0.01"])
    print(result.run_dir, result.best_epoch, result.test_accuracy)
    evaluation = mlptrain.evaluate(result.run_dir / "best.pt", split="val")
    print(evaluation.accuracy)

Nothing heavy is imported until a function is called.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlptrain.config.files import ConfigSource, build_config, config_to_dict, load_config
from mlptrain.config.schema import Config

if TYPE_CHECKING:
    from mlptrain.evaluation.evaluator import Evaluation
    from mlptrain.run.lifecycle import GroupResult, RunResult
    from mlptrain.training.hooks import Hooks


ConfigLike = Config | Mapping[str, Any] | ConfigSource | Sequence[ConfigSource] | None


def resolve_config(config: ConfigLike, overrides: Sequence[str] = ()) -> Config:
    """A validated Config from a Config, a config dict, a YAML path or shipped name
    (`"fashion"`), a list of those layered in order, or None (the defaults), with
    `overrides` (KEY=VALUE, values parsed as YAML) applied."""
    if not isinstance(config, (Config, Mapping)):
        return load_config(config, overrides)
    document = config_to_dict(config) if isinstance(config, Config) else config
    origin = "config with overrides" if overrides else "config"
    return build_config([("config", document)], overrides, origin=origin)


def train(
    config: ConfigLike = None,
    overrides: Sequence[str] = (),
    run_dir: str | Path | None = None,
    *,
    verbose: bool = True,
    observers: Sequence[Hooks] = (),
) -> RunResult:
    """Train one run as `mlp-train` does; returns its folder, history and test metrics.

    `observers` (mlptrain.training.hooks.Hooks) see each batch and epoch record as it happens,
    for a live plot, say.

    A user mistake raises mlptrain.errors.UsageError; a run stopped by Ctrl-C or a
    non-finite loss raises StopRun, with everything finished already in its folder.
    """
    from mlptrain.run.runner import train as run_training
    from mlptrain.util.logs import setup_logging

    resolved = resolve_config(config, overrides)
    setup_logging(terminal=verbose)
    return run_training(resolved, run_dir=run_dir, observers=observers)


def train_together(
    config: ConfigLike = None,
    seeds: Sequence[int] | None = None,
    overrides: Sequence[str] = (),
    group_dir: str | Path | None = None,
    *,
    verbose: bool = True,
) -> GroupResult:
    """Train the config once per seed (default 1, 2, 3), all together in one process, as
    `mlp-train --seeds` does, or the members of the config's ensemble, as `mlp-train`
    does (then `.test` holds the ensemble's test): `.results` holds each finished run's
    RunResult, `.failed` the runs that stopped on a non-finite loss, `.folder` the group
    folder."""
    from mlptrain.errors import UsageError
    from mlptrain.run.runner import seed_configs, train_ensemble, train_group
    from mlptrain.util.logs import setup_logging

    resolved = resolve_config(config, overrides)
    setup_logging(terminal=verbose)
    if resolved.ensemble is not None:
        if seeds is not None:
            raise UsageError("seeds and the config's ensemble both name the models; use one")
        return train_ensemble(resolved, group_dir=group_dir)
    return train_group(seed_configs(resolved, list(seeds or (1, 2, 3))), group_dir=group_dir)


def evaluate(
    checkpoint: str | Path,
    split: str = "test",
    *,
    data_source: str | None = None,
    device: str = "auto",
    batch_size: int = 1000,
) -> Evaluation:
    """Evaluate a best.pt or last.pt on its run's test (or val) split, as `mlp-eval` does,
    without writing files. `.accuracy`, `.summary` (the JSON of mlp-eval)."""
    from mlptrain.evaluation.evaluator import evaluate_checkpoint

    settings: dict[str, Any] = {"device": device}
    if data_source is not None:
        settings["data.source"] = data_source
    evaluation, _ = evaluate_checkpoint(checkpoint, split, settings, batch_size)
    return evaluation


def evaluate_ensemble(
    checkpoints: Sequence[str | Path],
    *,
    data_source: str | None = None,
    device: str = "auto",
    batch_size: int = 1000,
) -> Evaluation:
    """Several checkpoints of one dataset as one model (the average of their
    probabilities) on the test split, as `mlp-eval --ensemble` does, without writing
    files. `.accuracy`; `.summary["members"]` holds each member's own accuracy."""
    from mlptrain.evaluation.evaluator import evaluate_ensemble as evaluate_all

    settings: dict[str, Any] = {"device": device}
    if data_source is not None:
        settings["data.source"] = data_source
    evaluation, _ = evaluate_all(list(checkpoints), settings, batch_size)
    return evaluation
