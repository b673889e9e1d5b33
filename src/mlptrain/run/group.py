"""Training a group of models together: K configs of one shape, K ordinary run folders.

The group folder holds group.json (its members' folders and how each one ended) and,
for `mlp-train --seeds`, the members' run folders. Each member's folder is an ordinary
run folder; its train.log and config.yaml note that it was trained in a group. A
member ends on its own (early stopping, a non-finite loss); the others go on.
`--resume` on the group folder or on a member still training resumes the members still
training; a member that has ended resumes alone, as any run.
"""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlptrain.artifacts.checkpoint import load_checkpoint
from mlptrain.artifacts.rundir import RunDir
from mlptrain.config.files import config_to_yaml
from mlptrain.config.schema import Config
from mlptrain.data.splits import reading_once
from mlptrain.errors import StopRun, UsageError, signal_status
from mlptrain.run.console import (
    EpochLines,
    ProgressBar,
    describe_data,
    describe_model,
    describe_training,
)
from mlptrain.run.recorder import RunRecorder
from mlptrain.run.runner import RunResult, StopWhenAsked, nonfinite_stop, test_best
from mlptrain.run.session import Session, build_session, resume_session, resumed_config
from mlptrain.stack.compat import check_stackable
from mlptrain.stack.trainer import Member, fit_group
from mlptrain.tracking.base import Trackers
from mlptrain.tracking.trackers import open_trackers
from mlptrain.training.loop import HookList, Hooks, TrainingInterrupted
from mlptrain.util.files import atomic_write_text
from mlptrain.util.logs import LogFile, get_logger, member_scope
from mlptrain.util.stopping import TwoStageStop

log = get_logger()
GROUP_FILE = "group.json"
TRAINING, FINISHED, FAILED = "training", "finished", "failed"


@dataclass
class GroupResult:
    """A group's finished members (as RunResult) and the failed ones (folder -> why)."""

    folder: Path | None  # where group.json is; None for a group of one
    results: list[RunResult] = field(default_factory=list)
    failed: dict[Path, str] = field(default_factory=dict)


class GroupFile:
    """group.json: each member's run folder (relative to the group folder when inside it)
    and its status; rewritten atomically whenever a member ends."""

    def __init__(self, path: Path, members: list[dict[str, str]]) -> None:
        self.path, self.members = path, members

    @classmethod
    def create(cls, folder: Path, run_dirs: Sequence[Path]) -> GroupFile:
        members = [{"run_dir": _relative(path, folder), "status": TRAINING} for path in run_dirs]
        group = cls(folder / GROUP_FILE, members)
        group.write()
        return group

    @classmethod
    def find(cls, path: Path) -> GroupFile | None:
        """The group of `path`: a group folder, or a member folder inside one."""
        for folder in (path, path.parent):
            candidate = folder / GROUP_FILE
            if candidate.is_file():
                try:
                    members = json.loads(candidate.read_text())["members"]
                except (OSError, ValueError, KeyError) as exc:
                    raise UsageError(f"{candidate} cannot be read: {exc}") from None
                return cls(candidate, members)
        return None

    @classmethod
    def training(cls, path: Path) -> bool:
        """Whether `--resume path` means the group: `path` is a group folder, or the run
        folder of a member still training (an ended member resumes alone, to be
        extended, say)."""
        group = cls.find(path)
        if group is None:
            return False
        if (path / GROUP_FILE).is_file():
            return True
        return any(
            group.folder_of(member).resolve() == path.resolve() and member["status"] == TRAINING
            for member in group.members
        )

    def folder_of(self, member: dict[str, str]) -> Path:
        return self.path.parent / member["run_dir"]

    def set_status(self, run_dir: Path, status: str) -> None:
        for member in self.members:
            if self.folder_of(member).resolve() == run_dir.resolve():
                member["status"] = status
        self.write()

    def write(self) -> None:
        document = {"members": self.members}
        atomic_write_text(self.path, json.dumps(document, indent=1) + "\n")


def _relative(path: Path, folder: Path) -> str:
    try:
        return str(path.resolve().relative_to(folder.resolve()))
    except ValueError:
        return str(path.resolve())


@dataclass
class _Running:
    """A member while the group trains: its session, folder, recorder and trackers."""

    name: str
    session: Session
    run: RunDir
    recorder: RunRecorder
    trackers: Trackers
    member: Member


class _MemberLines(Hooks):
    """One log line per finished epoch, in the member's scope."""

    def __init__(self, name: str, epochs: int) -> None:
        self.name, self.lines = name, EpochLines(epochs)

    def epoch_end(self, record: dict[str, Any], is_best: bool) -> None:
        with member_scope(self.name):
            self.lines.epoch_end(record, is_best)


def seed_configs(config: Config, seeds: Sequence[int]) -> list[Config]:
    """The config once per seed."""
    if len(set(seeds)) != len(seeds):
        raise UsageError(f"--seeds names a seed twice: {list(seeds)}")
    return [config.model_copy(update={"seed": seed}) for seed in seeds]


def train_group(
    configs: Sequence[Config],
    run_dirs: Sequence[str | Path] | None = None,
    *,
    group_dir: str | Path | None = None,
    show_bar: bool = False,
) -> GroupResult:
    """Train `configs` together, each into its own run folder: `run_dirs` exactly, or
    `seed-N` folders in `group_dir` (default: a new folder in the runs folder). One
    config is an ordinary run."""
    from mlptrain.run.runner import train

    check_stackable(configs)
    if run_dirs is not None and len(run_dirs) != len(configs):
        raise ValueError("one run folder per config")
    if len(configs) == 1:  # one model: the ordinary path
        run_dir = run_dirs[0] if run_dirs else group_dir
        return GroupResult(None, [train(configs[0], run_dir=run_dir, show_bar=show_bar)])
    with LogFile() as log_file:
        with reading_once():  # errors before any folder
            sessions = [build_session(config) for config in configs]
        first = configs[0]
        if group_dir is not None:
            folder = RunDir.create_exactly(group_dir).path
        elif run_dirs is None:
            folder = RunDir.create(first.output.runs_dir, first.name).path
        else:
            folder = None
        if run_dirs is None:
            run_dirs = [folder / f"seed-{config.seed}" for config in configs]
        runs = [RunDir.create_exactly(path) for path in run_dirs]
        group = GroupFile.create(folder, [run.path for run in runs]) if folder else None
        where = folder or ", ".join(str(run.path) for run in runs)
        note = f"trained together with {len(configs) - 1} other model(s) in one process ({where})"
        running = []
        for session, run in zip(sessions, runs, strict=True):
            log_file.open(run.log_file, member=run.path.name)
            with member_scope(run.path.name):
                run.write_text("config.yaml", f"# {note}\n" + config_to_yaml(session.config))
                log.info("run folder: %s", run.path)
                log.info(note)
                running.append(_start_member(session, run, 0, show_bar))
                running[-1].recorder.save(is_best=False)
        return _fit_and_test(running, group, show_bar)


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
    checkpoints = []
    for run_path in todo:
        last = run_path / "last.pt"
        if not last.is_file():
            raise UsageError(f"--resume {path}: {run_path} has no last.pt")
        checkpoints.append(load_checkpoint(last))
    done = {int(checkpoint["epoch"]) for checkpoint in checkpoints}
    if len(done) != 1:
        raise UsageError(
            f"--resume {path}: its models saved different epochs ({sorted(done)}); resume "
            "each alone with mlp-train --resume on its folder"
        )
    with LogFile() as log_file, reading_once():
        running = []
        for run_path, checkpoint in zip(todo, checkpoints, strict=True):
            config = resumed_config(run_path, checkpoint["config"], list(overrides), settings or {})
            run = RunDir(run_path)
            log_file.open(run.log_file, member=run.path.name)
            with member_scope(run.path.name):
                session = resume_session(config, checkpoint)
                run.write_metrics(session.state.history)
                epoch = session.state.epochs_done
                log.info(
                    "resuming %s after epoch %d of %d, together with %d other model(s)",
                    run.path, epoch, config.training.epochs, len(todo) - 1,
                )  # fmt: skip
                running.append(_start_member(session, run, epoch, show_bar))
        check_stackable([item.session.config for item in running])
        return _fit_and_test(running, group, show_bar)


def _start_member(session: Session, run: RunDir, done: int, show_bar: bool) -> _Running:
    """The member's lines, trackers and recorder (in its scope)."""
    log.info(describe_data(session.splits, session.device))
    log.info(describe_model(session.model.spec, session.model))
    log.info(describe_training(session.config, session.amp))
    trackers = open_trackers(session.config, run.path, done)
    recorder = RunRecorder(session, run)
    hooks = HookList(recorder, trackers, _MemberLines(run.path.name, session.settings.epochs))
    member = Member(session.model, session.state, session.settings, session.splits, hooks)
    return _Running(run.path.name, session, run, recorder, trackers, member)


def _fit_and_test(running: list[_Running], group: GroupFile | None, show_bar: bool) -> GroupResult:
    settings = running[0].session.settings
    bar = ProgressBar(settings.epochs) if show_bar else None
    log.info("training %d models together", len(running))
    start = time.perf_counter()
    with TwoStageStop() as stop:
        hooks = HookList(*([bar] if bar else []), StopWhenAsked(stop))
        try:
            fit_group([item.member for item in running], hooks)
        except TrainingInterrupted as exc:
            if bar:
                bar.close()
            raise _interrupted(exc, stop.received or signal.SIGINT, running, group) from None
    fit_seconds = time.perf_counter() - start
    result = GroupResult(group.path.parent if group else None)
    for item in running:
        with member_scope(item.name):
            failure = item.member.failure
            if failure is not None:
                item.trackers.abort("nonfinite")
                stop_run = nonfinite_stop(failure, item.session, item.recorder)
                result.failed[item.run.path] = str(stop_run)
                status = FAILED
            else:
                if item.session.state.stopped_early:
                    log.info(
                        "stopped early after epoch %d; testing best.pt",
                        item.session.state.epochs_done,
                    )
                tested = test_best(item.session, item.run, fit_seconds)
                item.trackers.finish(item.run.path, tested.test)
                result.results.append(tested)
                status = FINISHED
        if group is not None:
            group.set_status(item.run.path, status)
    return result


def _interrupted(
    exc: TrainingInterrupted, signum: int, running: list[_Running], group: GroupFile | None
) -> StopRun:
    for item in running:
        if item.member.active:
            item.trackers.abort("interrupted")
    where = f"during epoch {exc.epoch}" if exc.batch is not None else f"after epoch {exc.epoch}"
    target = group.path.parent if group else running[0].run.path
    log.info(
        "%s received %s; each model's last.pt holds its last finished epoch",
        signal.Signals(signum).name, where,
    )  # fmt: skip
    return StopRun(f"interrupted; resume with: mlp-train --resume {target}", signal_status(signum))
