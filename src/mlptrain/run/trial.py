"""One trial of a sweep, run in a process of its own: `python -m mlptrain.run.trial SPEC`.

The trial spec (a JSON file, TrialSpec) names the config files, the overrides and the
run folder of each model (one: an ordinary run; several: trained together), the device
and the threads. The process trains them through the same library calls as mlp-train,
then leaves OUTCOME_FILE in each model's run folder: how it ended (status), the process's
exit status, a message for people and the epochs it finished. A sweep reads that file
and the run folder's own records; it never reads the process's output. A process that
dies without writing it (killed, out of memory) is a failed trial to its sweep.

Statuses: complete (best.pt tested), nonfinite (stopped on a NaN or infinite loss),
interrupted (a signal: a sweep stopping or pruning it), failed (a user error such as
an invalid config, or a crash).
"""

from __future__ import annotations

import json
import sys
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from mlptrain.artifacts.rundir import RunDir
from mlptrain.errors import EXIT_INTERRUPTED, EXIT_NONFINITE, EXIT_USAGE, StopRun, UsageError
from mlptrain.util.files import atomic_write_text

OUTCOME_FILE = "outcome.json"
COMPLETE, NONFINITE, INTERRUPTED, FAILED = "complete", "nonfinite", "interrupted", "failed"
EXIT_CRASHED = 1  # an unexpected exception (a bug, or the machine)


@dataclass(frozen=True)
class TrialMember:
    """One model of a trial: its run folder (created by the trial; it must not exist) and
    its own overrides (KEY=VALUE), applied after the spec's."""

    run_dir: str
    overrides: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class TrialSpec:
    """What a trial process trains; written as JSON by the sweep, read by the trial."""

    config: list[str]  # config files or shipped names, layered in order
    members: list[TrialMember]  # one: an ordinary run; several: trained together
    overrides: list[str] = field(default_factory=list)  # every member's, before its own
    device: str | None = None  # the config's device when None
    threads: int | None = None  # training.threads when not None

    def write(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, json.dumps(asdict(self), indent=1) + "\n")

    @classmethod
    def read(cls, path: str | Path) -> TrialSpec:
        try:
            document = json.loads(Path(path).read_text(encoding="utf-8"))
            members = [TrialMember(**member) for member in document.pop("members")]
            spec = cls(members=members, **document)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise UsageError(f"the trial spec {path} cannot be read: {exc}") from None
        if not spec.members:
            raise UsageError(f"the trial spec {path} names no run folder")
        return spec

    def settings(self) -> dict[str, Any]:
        """The dotted keys the spec sets itself (device, training.threads)."""
        settings: dict[str, Any] = {}
        if self.threads is not None:
            settings["training.threads"] = self.threads
        if self.device is not None:
            settings["device"] = self.device
        return settings


@dataclass(frozen=True)
class Outcome:
    """How one model of a trial ended: OUTCOME_FILE in its run folder."""

    status: str  # COMPLETE, NONFINITE, INTERRUPTED or FAILED
    exit_status: int  # the trial process's (0 when every model completed)
    message: str = ""
    epochs_done: int = 0

    def write(self, run_dir: Path) -> None:
        run_dir.mkdir(parents=True, exist_ok=True)  # a config error comes before the folder
        atomic_write_text(run_dir / OUTCOME_FILE, json.dumps(asdict(self), indent=1) + "\n")

    @classmethod
    def read(cls, run_dir: Path) -> Outcome | None:
        """The outcome a trial left in `run_dir`; None when it left none (it was killed)."""
        try:
            return cls(**json.loads((run_dir / OUTCOME_FILE).read_text(encoding="utf-8")))
        except (OSError, ValueError, TypeError):
            return None


def run_trial(spec: TrialSpec) -> int:
    """Train the spec's models, write each one's outcome, return the process's exit status.
    A crash writes FAILED outcomes, then raises (its traceback is for people)."""
    from mlptrain.config.files import load_config
    from mlptrain.util.logs import setup_logging

    run_dirs = [Path(member.run_dir) for member in spec.members]
    taken = [str(path) for path in run_dirs if path.exists()]
    if taken:  # not this trial's folders: nothing is written into them
        raise UsageError(f"the trial's run folders must not exist yet: {', '.join(taken)}")
    try:
        configs = [
            load_config(spec.config, [*spec.overrides, *member.overrides], spec.settings())
            for member in spec.members
        ]
        setup_logging(terminal=False)
        outcomes = _train(configs, run_dirs)
    except UsageError as exc:
        outcomes = [Outcome(FAILED, EXIT_USAGE, str(exc)) for _ in run_dirs]
    except StopRun as exc:
        status = NONFINITE if exc.status == EXIT_NONFINITE else INTERRUPTED
        outcomes = [Outcome(status, exc.status, str(exc)) for _ in run_dirs]
    except BaseException as exc:  # a crash, or a second signal ending it at once
        for run_dir in run_dirs:
            _ended_by(exc, _epochs_done(run_dir)).write(run_dir)
        raise
    for outcome, run_dir in zip(outcomes, run_dirs, strict=True):
        replace(outcome, epochs_done=_epochs_done(run_dir)).write(run_dir)
    return max(outcome.exit_status for outcome in outcomes)


def _train(configs: list, run_dirs: list[Path]) -> list[Outcome]:
    """One run, or several trained together; how each ended (errors raise)."""
    from mlptrain.run.runner import train_group

    result = train_group(configs, run_dirs)
    failed = {path.resolve(): message for path, message in result.failed.items()}
    code = EXIT_NONFINITE if failed else 0
    outcomes = []
    for run_dir in run_dirs:
        message = failed.get(run_dir.resolve())
        outcomes.append(Outcome(COMPLETE, code) if message is None else
                        Outcome(NONFINITE, code, message))  # fmt: skip
    return outcomes


def _ended_by(exc: BaseException, epochs_done: int) -> Outcome:
    """The outcome of an exception that ends the process: a bug is FAILED; a second
    Ctrl-C (KeyboardInterrupt) or SIGTERM (SystemExit with its status) is INTERRUPTED."""
    if isinstance(exc, Exception):
        return Outcome(FAILED, EXIT_CRASHED, f"{type(exc).__name__}: {exc}", epochs_done)
    code = exc.code if isinstance(exc, SystemExit) else EXIT_INTERRUPTED
    return Outcome(INTERRUPTED, code if isinstance(code, int) else EXIT_CRASHED, "stopped at once",
                   epochs_done)  # fmt: skip


def _epochs_done(run_dir: Path) -> int:
    rows = RunDir(run_dir).read_metrics()
    return int(rows[-1]["epoch"]) if rows else 0


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m mlptrain.run.trial SPEC.json", file=sys.stderr)
        return EXIT_USAGE
    try:
        return run_trial(TrialSpec.read(args[0]))
    except UsageError as exc:  # the spec itself is wrong: there is no run folder to tell
        print(f"mlptrain.run.trial: error: {exc}", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
