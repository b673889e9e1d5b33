"""Starting runs: a new run or a group of runs trained together, or resuming them, then
handing them to the one lifecycle (lifecycle.py) that fits, tests and records them.

A single run and a group take the same steps here: build each session (errors before
any folder), make the folders, write config.yaml, open the trackers, save a first
last.pt (so that even a run stopped in its first epoch resumes). The caller (a CLI, a
notebook, a trial process) decides what to print and which exit status to return.
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from mlptrain.artifacts.checkpoint import load_checkpoint
from mlptrain.artifacts.rundir import RunDir
from mlptrain.config.files import config_to_yaml, ensemble_configs, load_config
from mlptrain.config.schema import Config
from mlptrain.data.splits import reading_once
from mlptrain.errors import EXIT_NONFINITE, StopRun, UsageError
from mlptrain.run.console import describe_data, describe_model, describe_training
from mlptrain.run.group import GROUP_FILE, TRAINING, GroupFile
from mlptrain.run.lifecycle import GroupResult, Running, RunResult, drive, test_ensemble
from mlptrain.run.session import build_session, resume_session, resumed_config
from mlptrain.stack.compat import stack_refusal
from mlptrain.training.hooks import Hooks
from mlptrain.util.logs import LogFile, get_logger, member_scope

log = get_logger()


def train(
    config: Config,
    *,
    run_dir: str | Path | None = None,
    show_bar: bool = False,
    observers: Sequence[Hooks] = (),
) -> RunResult:
    """Train, keep best/last checkpoints, test best.pt; everything lands in a new run folder
    (`run_dir` exactly, when given: it must not exist yet). `observers` see every batch
    and epoch record after the run folder has recorded it. A non-finite loss raises
    StopRun (EXIT_NONFINITE) with best.pt and last.pt intact."""
    if config.ensemble is not None:
        raise UsageError(
            f"config {config.name} is an ensemble of {len(ensemble_configs(config))} models: "
            "train it with mlp-train (or mlptrain.train_together)"
        )
    run_dirs = None if run_dir is None else [run_dir]
    return _alone(_train_runs([config], run_dirs, None, show_bar, observers))


def train_group(
    configs: Sequence[Config],
    run_dirs: Sequence[str | Path] | None = None,
    *,
    group_dir: str | Path | None = None,
    show_bar: bool = False,
) -> GroupResult:
    """Train `configs` together, each into its own run folder: `run_dirs` exactly, or
    `seed-N` folders in `group_dir` (default: a new folder in the runs folder), with
    group.json. One config is an ordinary run (in `run_dirs[0]` or `group_dir`). Configs
    the stack cannot train together (stack.compat) are trained one after another."""
    if run_dirs is not None and len(run_dirs) != len(configs):
        raise ValueError("one run folder per config")
    if len(configs) == 1 and run_dirs is None and group_dir is not None:
        run_dirs = [group_dir]
    return _train_runs(list(configs), run_dirs, group_dir, show_bar)


def train_ensemble(
    config: Config, *, group_dir: str | Path | None = None, show_bar: bool = False
) -> GroupResult:
    """The members of `config.ensemble` trained as a group (together where the stack
    allows, one after another where not) in `group_dir` (default: a new folder in the
    runs folder), then tested as one model: the group folder gets config.yaml, and the
    ensemble's test_metrics.json and pictures."""
    return _train_runs(ensemble_configs(config), None, group_dir, show_bar, ensemble=config)


def seed_configs(config: Config, seeds: Sequence[int]) -> list[Config]:
    """The config once per seed."""
    if config.ensemble is not None:
        raise UsageError("--seeds and the config's ensemble both name the models; use one")
    if len(set(seeds)) != len(seeds):
        raise UsageError(f"--seeds names a seed twice: {list(seeds)}")
    return [config.model_copy(update={"seed": seed}) for seed in seeds]


def _train_runs(
    configs: list[Config],
    run_dirs: Sequence[str | Path] | None,
    group_dir: str | Path | None,
    show_bar: bool,
    observers: Sequence[Hooks] = (),
    ensemble: Config | None = None,
) -> GroupResult:
    together = len(configs) > 1
    refusal = stack_refusal(configs) if together else None
    with LogFile() as log_file:
        with reading_once():  # errors before any folder
            sessions = [build_session(config) for config in configs]
        first = configs[0]
        folder = None
        if together and group_dir is not None:
            folder = RunDir.create_exactly(group_dir).path
        elif together and run_dirs is None:
            folder = RunDir.create(first.output.runs_dir, first.name).path
        if run_dirs is not None:
            runs = [RunDir.create_exactly(path) for path in run_dirs]
        elif folder is not None:
            runs = [RunDir.create_exactly(folder / f"seed-{config.seed}") for config in configs]
        else:
            runs = [RunDir.create(first.output.runs_dir, first.name)]
        group = None
        if folder is not None:
            paths = [run.path for run in runs]
            group = GroupFile.create(folder, paths, ensemble is not None, refusal is None)
            if ensemble is not None:
                RunDir(folder).write_text("config.yaml", config_to_yaml(ensemble))
        where = folder or ", ".join(str(run.path) for run in runs)
        note = f"trained together with {len(configs) - 1} other model(s) in one process ({where})"
        if refusal is not None:
            note = f"trained in a group of {len(configs)}, one after another ({where})"
        running = []
        try:
            for session, run in zip(sessions, runs, strict=True):
                scope = run.path.name if together else None
                log_file.open(run.log_file, member=scope)
                with member_scope(scope):
                    comment = f"# {note}\n" if together else ""
                    run.write_text("config.yaml", comment + config_to_yaml(session.config))
                    log.info("run folder: %s", run.path)
                    if together:
                        log.info(note)
                    running.append(_start(session, run, scope, observers))
        except UsageError:  # refused before training (a tracker): no folders left behind
            for path in [folder] if folder else [run.path for run in runs]:
                shutil.rmtree(path, ignore_errors=True)
            raise
        for item in running:
            item.recorder.save(is_best=False)  # a run stopped in its first epoch resumes
        return _drive(running, group, show_bar, refusal)


def _drive(
    running: list[Running], group: GroupFile | None, show_bar: bool, refusal: str | None
) -> GroupResult:
    """The runs together (drive), or one after another when `refusal` says why not; then
    an ensemble group whose members have all finished is tested as one model."""
    if refusal is None or len(running) == 1:
        result = drive(running, group, show_bar)
    else:
        log.info("the %d models are trained one after another: %s", len(running), refusal)
        result = GroupResult(group.path.parent if group else None)
        for item in running:
            part = drive([item], group, show_bar)
            result.results += part.results
            result.failed.update(part.failed)
    if group is not None and group.ensemble:
        folder = group.path.parent
        if group.finished:
            members = [group.folder_of(member) for member in group.members]
            ensemble = load_config(folder / "config.yaml")
            result.test = test_ensemble(folder, ensemble, members)
        else:
            log.info("the ensemble in %s is not tested: not every member finished", folder)
    return result


def _start(session, run: RunDir, scope: str | None, observers: Sequence[Hooks]) -> Running:
    log.info(describe_data(session.splits, session.device))
    log.info(describe_model(session.model.spec, session.model))
    log.info(describe_training(session.config, session.amp))
    return Running.start(session, run, scope, observers)


def resume(
    run_path: str | Path,
    overrides: Sequence[str] = (),
    settings: dict[str, Any] | None = None,
    *,
    show_bar: bool = False,
    observers: Sequence[Hooks] = (),
) -> RunResult:
    """Continue a run in its own folder from last.pt, exactly where its last epoch ended.

    `overrides` (KEY=VALUE) and `settings` (dotted key -> value) may change only the keys
    in SAFE_ON_RESUME."""
    run_path = Path(run_path)
    if not run_path.is_dir():
        raise UsageError(f"--resume {run_path}: there is no such run folder")
    if not (run_path / "last.pt").is_file():
        raise UsageError(
            f"--resume {run_path}: the folder has no last.pt, so it is not an mlp-train run "
            "folder (or its run saved nothing); start a new run instead"
        )
    return _alone(_resume_runs([run_path], None, overrides, settings, show_bar, observers))


def resume_group(
    path: str | Path,
    overrides: Sequence[str] = (),
    settings: dict[str, Any] | None = None,
    *,
    show_bar: bool = False,
) -> GroupResult:
    """Resume the members of the group at `path` (its folder or a member's) that were
    still training, together, each from its last.pt (`overrides` and `settings` as for
    one run: the keys in SAFE_ON_RESUME)."""
    path = Path(path)
    group = GroupFile.find(path)
    if group is None:
        raise UsageError(f"--resume {path}: not a group of models (no {GROUP_FILE})")
    todo = [group.folder_of(member) for member in group.members if member["status"] == TRAINING]
    if not todo:
        raise UsageError(
            f"--resume {path}: every model of the group has ended; to train one longer, "
            f"resume its own folder: mlp-train --resume {path}/seed-N --set training.epochs=N"
        )
    for run_path in todo:
        if not (run_path / "last.pt").is_file():
            raise UsageError(f"--resume {path}: {run_path} has no last.pt")
    return _resume_runs(todo, group, overrides, settings, show_bar)


def _resume_runs(
    run_paths: list[Path],
    group: GroupFile | None,
    overrides: Sequence[str],
    settings: dict[str, Any] | None,
    show_bar: bool,
    observers: Sequence[Hooks] = (),
) -> GroupResult:
    checkpoints = [load_checkpoint(path / "last.pt") for path in run_paths]
    configs = []
    for run_path, checkpoint in zip(run_paths, checkpoints, strict=True):
        if not checkpoint.get("rng"):
            raise UsageError(f"{run_path / 'last.pt'} holds no random-number states, so it "
                             "cannot be resumed")  # fmt: skip
        config = resumed_config(run_path, checkpoint["config"], list(overrides), settings or {})
        done = int(checkpoint["epoch"])
        if done >= config.training.epochs:
            raise UsageError(
                f"{run_path} has finished its {done} epochs; to train longer, extend it with "
                f"--set training.epochs=N (N > {done})"
            )
        configs.append(config)
    together = len(run_paths) > 1
    refusal = None
    if together:
        done = {int(checkpoint["epoch"]) for checkpoint in checkpoints}
        refusal = stack_refusal(configs)
        if refusal is None and len(done) != 1:
            refusal = f"they saved different epochs ({sorted(done)})"
    with LogFile() as log_file, reading_once():
        running = []
        for run_path, checkpoint, config in zip(run_paths, checkpoints, configs, strict=True):
            run = RunDir(run_path)
            scope = run.path.name if together else None
            log_file.open(run.log_file, member=scope)
            with member_scope(scope):
                session = resume_session(config, checkpoint)
                run.write_metrics(session.state.history)  # the saved epochs: no duplicate, no gap
                _note_resume_in_config(run, config, session.state.epochs_done)
                others = f", together with {len(run_paths) - 1} other model(s)" if together else ""
                log.info(
                    "resuming %s after epoch %d of %d%s",
                    run.path, session.state.epochs_done, config.training.epochs, others,
                )  # fmt: skip
                running.append(_start(session, run, scope, observers))
        return _drive(running, group, show_bar, refusal)


def _note_resume_in_config(run: RunDir, config: Config, done: int) -> None:
    try:
        lines = (run.path / "config.yaml").read_text(encoding="utf-8").splitlines()
    except OSError:
        lines = []
    comments = [line for line in lines if line.startswith("#")]
    stamp = datetime.now().strftime("%Y-%m-%d %H:%M:%S")
    comments.append(f"# resumed {stamp} after epoch {done} of {config.training.epochs}")
    run.write_text("config.yaml", "\n".join(comments) + "\n" + config_to_yaml(config))


def _alone(result: GroupResult) -> RunResult:
    """The one run's result; its non-finite loss as StopRun (its message was logged)."""
    if result.failed:
        (message,) = result.failed.values()
        raise StopRun(message, EXIT_NONFINITE)
    (run,) = result.results
    return run
