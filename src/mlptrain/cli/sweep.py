"""`mlp-sweep`: a grid or an Optuna search over mlp-train runs, parallel and resumable."""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace

from mlptrain.cli.common import (
    add_config_arguments,
    add_version_argument,
    flag_settings,
    given_flags,
    run_command,
)
from mlptrain.config.files import load_config
from mlptrain.errors import UsageError
from mlptrain.sweep.settings import parse_devices, plan_sweep


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mlp-sweep",
        description="Run a hyperparameter study: every trial is an ordinary mlp-train run.",
        epilog="examples:\n"
        "  mlp-sweep --config configs/fashion.yaml --grid training.batch_size=16,64 "
        "--grid optimizer.lr=0.01,0.1\n"
        "  mlp-sweep --config configs/fashion.yaml --search optuna --trials 40 --prune "
        "--param optimizer.lr=loguniform:1e-4:1e-1 --param model.hidden=choice:[128],[256,128]\n"
        "  mlp-sweep --config configs/mnist.yaml --grid optimizer.lr=1e-3,3e-3,1e-2 "
        "--grid seed=1,2 --stack\n"
        "  mlp-sweep --resume runs/sweep-fashion-mlp-20261122-101500",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_config_arguments(parser, "the base config of every trial")
    parser.add_argument(
        "--grid",
        action="append",
        default=[],
        metavar="KEY=V1,V2,...",
        help="a grid axis; values are YAML, e.g. model.hidden=[128],[256,128]",
    )
    parser.add_argument("--search", choices=("grid", "optuna"), help="default: grid")
    parser.add_argument("--trials", type=int, help="number of Optuna trials")
    parser.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="KEY=KIND:...",
        help="an Optuna parameter: uniform:A:B, loguniform:A:B, int:A:B, "
        "logint:A:B or choice:V1,V2,...",
    )
    parser.add_argument(
        "--prune", action="store_true", help="stop unpromising Optuna trials early (median rule)"
    )
    parser.add_argument(
        "--stack",
        nargs="?",
        type=int,
        const=16,
        metavar="K",
        help="train up to K trials of one shape together in one process (default K: 16): a "
        "grid's compatible points, or Optuna trials asked K at a time; not with --prune",
    )
    parser.add_argument("--workers", type=int, help="trials run in parallel (default 1)")
    parser.add_argument(
        "--devices",
        metavar="LIST",
        help="one worker per device, each trial pinned to its worker's: cuda:0,cuda:1 or auto "
        "(every visible GPU); --workers defaults to their number",
    )
    parser.add_argument(
        "--storage",
        metavar="URL",
        help="Optuna storage shared by several sweeps: postgresql://USER@HOST:PORT/DB, or "
        "journal:PATH for a file on a shared folder (default: SQLite in the sweep folder)",
    )
    parser.add_argument("--study", metavar="NAME", help="Optuna study name (with --storage)")
    parser.add_argument(
        "--heartbeat",
        type=float,
        default=10.0,
        metavar="S",
        help="seconds between a running trial's heartbeats (default 10)",
    )
    parser.add_argument(
        "--grace",
        type=float,
        default=60.0,
        metavar="S",
        help="seconds without a heartbeat before another sweep fails a trial and queues its "
        "parameters again (default 60)",
    )
    parser.add_argument("--resume", metavar="SWEEP", help="continue the sweep in folder SWEEP")
    add_version_argument(parser)
    return parser


RESUME_TAKES = ("--resume", "--workers", "--devices")  # what --resume takes; the rest is refused
# The flags that describe a new sweep, each passed to plan_sweep under its own name.
PLAN_FLAGS = ("grid", "param", "search", "trials", "prune", "stack", "workers", "devices",
              "storage", "study", "heartbeat", "grace")  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    return run_command("mlp-sweep", lambda: sweep(args, parser))


def sweep(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from mlptrain.sweep.runner import create_sweep, load_sweep, run_sweep
    from mlptrain.util.logs import setup_logging

    setup_logging()
    if args.workers is not None and args.workers < 1:
        raise UsageError(f"--workers must be at least 1, got {args.workers}")
    if args.resume is not None:
        clashing = given_flags(parser, args, but=RESUME_TAKES)
        if clashing:
            raise UsageError(
                f"--resume continues a sweep as it was set up; {', '.join(clashing)} cannot be "
                "used with it (only --workers and --devices)"
            )
        folder, settings = load_sweep(args.resume)
        if args.devices is not None:  # another machine may resume with other devices
            settings = replace(settings, devices=parse_devices(args.devices))
    else:
        settings = flag_settings(args, absolute_source=True)
        name = settings.pop("name", None)
        base = load_config(args.config, args.overrides, settings)
        planned = plan_sweep(base, **{name: getattr(args, name) for name in PLAN_FLAGS})
        planned.check_workers(planned.workers)  # before the sweep folder exists
        folder, settings = create_sweep(base, planned, name or base.name)
    run_sweep(folder, settings, args.workers)
    return 0


if __name__ == "__main__":
    sys.exit(main())
