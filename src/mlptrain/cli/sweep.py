"""`mlp-sweep`: a grid or an Optuna search over mlp-train runs, parallel and resumable."""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

from mlptrain.cli.common import add_config_arguments, log_to_file, run_command, setup_logging
from mlptrain.config import (
    Config,
    apply_overrides,
    config_to_dict,
    config_to_yaml,
    load_config,
    validate,
)
from mlptrain.errors import StopRun, UsageError
from mlptrain.fsutil import atomic_write_text
from mlptrain.rundir import RunDir
from mlptrain.sweep.spec import ParamSpec, grid_points, overrides, parse_grid, parse_param

SETTINGS_FILE = "sweep.json"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mlp-sweep",
        description="Run a hyperparameter study: every trial is an ordinary mlp-train run.",
        epilog="examples:\n"
        "  mlp-sweep --config configs/fashion.yaml --grid training.batch_size=16,64 "
        "--grid optimizer.lr=0.01,0.1\n"
        "  mlp-sweep --config configs/fashion.yaml --search optuna --trials 40 --prune "
        "--param optimizer.lr=loguniform:1e-4:1e-1 --param model.hidden=choice:[128],[256,128]\n"
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
    parser.add_argument("--workers", type=int, help="trials run in parallel (default 1)")
    parser.add_argument(
        "--storage",
        metavar="URL",
        help="Optuna storage shared by several sweeps, e.g. "
        "postgresql://user:password@host/db (default: SQLite in the folder)",
    )
    parser.add_argument("--study", metavar="NAME", help="Optuna study name (with --storage)")
    parser.add_argument("--resume", metavar="SWEEP", help="continue the sweep in folder SWEEP")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_command("mlp-sweep", lambda: sweep(args))


def sweep(args: argparse.Namespace) -> int:
    log = setup_logging()
    if args.workers is not None and args.workers < 1:
        raise UsageError(f"--workers must be at least 1, got {args.workers}")
    if args.resume is not None:
        folder, settings = _load_settings(args)
    else:
        folder, settings = _new_sweep(args)
    log_to_file(log, folder / "sweep.log")
    return _run(folder, settings, args.workers or settings["workers"])


def _new_sweep(args: argparse.Namespace) -> tuple[Path, dict[str, Any]]:
    mode = args.search or ("optuna" if args.param else "grid")
    extra: dict[str, Any] = {}
    if args.data_source is not None:
        extra["data.source"] = str(Path(args.data_source).resolve())
    base = load_config(args.config, args.overrides, extra)
    settings: dict[str, Any] = {"mode": mode, "workers": args.workers or 1, "seed": base.seed}
    if mode == "grid":
        if not args.grid or args.param or args.trials or args.prune or args.storage:
            raise UsageError(
                "a grid sweep takes --grid KEY=V1,V2,... (one or more) and none of --param, "
                "--trials, --prune, --storage; use --search optuna for those"
            )
        grid = [parse_grid(text) for text in args.grid]
        points = grid_points(grid)
        for point in points:
            _check_trial(base, point)
        settings.update(keys=[key for key, _ in grid], points=points)
    else:
        if args.grid or not args.param or not args.trials or args.trials < 1:
            raise UsageError(
                "--search optuna takes --trials N and one or more --param KEY=KIND:..., "
                "and no --grid"
            )
        if (args.storage is None) != (args.study is None):
            raise UsageError("--storage and --study go together: name the study to share")
        from mlptrain.sweep.engines import import_optuna

        import_optuna()  # a missing package is reported before anything starts
        specs = [parse_param(text) for text in args.param]
        if len({spec.key for spec in specs}) != len(specs):
            raise UsageError("each key may appear in one --param only")
        for spec in specs:
            for example in spec.examples():
                _check_trial(base, {spec.key: example})
        settings.update(
            keys=[spec.key for spec in specs],
            params=[spec.to_dict() for spec in specs],
            trials=args.trials,
            prune=args.prune,
            storage=args.storage,
            study=args.study,
            # Sweeps sharing a study must not draw the same "random" points in lockstep.
            seed=None if args.storage else base.seed,
        )
    _prepare_data(base)
    name = args.name or base.name
    folder = RunDir.create(base.output.runs_dir, f"sweep-{name}").path
    if settings.get("storage") is None and mode == "optuna":
        settings.update(storage=f"sqlite:///{(folder / 'study.db').resolve()}", study=name)
    atomic_write_text(folder / "base_config.yaml", config_to_yaml(base))
    atomic_write_text(folder / SETTINGS_FILE, json.dumps(settings, indent=1) + "\n")
    return folder, settings


def _check_trial(base: Config, params: dict[str, Any]) -> None:
    """Every trial's config must validate before the sweep starts."""
    document = apply_overrides(config_to_dict(base), overrides(params))
    validate(document, "trial config (" + ", ".join(overrides(params)) + ")")


def _prepare_data(base: Config) -> None:
    # Once, here: trials then find the files in place instead of importing them at once.
    from mlptrain.datasets import DATASETS, prepare_files

    prepare_files(DATASETS[base.data.dataset], base.data)


def _load_settings(args: argparse.Namespace) -> tuple[Path, dict[str, Any]]:
    given = [
        flag
        for flag, value in (
            ("--config", args.config),
            ("--grid", args.grid),
            ("--param", args.param),
            ("--set", args.overrides),
            ("--trials", args.trials),
            ("--storage", args.storage),
            ("--name", args.name),
        )
        if value
    ]
    if given:
        raise UsageError(
            f"--resume continues a sweep as it was set up; {', '.join(given)} cannot be used "
            "with it (only --workers)"
        )
    folder = Path(args.resume)
    try:
        settings = json.loads((folder / SETTINGS_FILE).read_text())
    except (OSError, ValueError):
        raise UsageError(
            f"--resume {folder}: not a sweep folder (no readable {SETTINGS_FILE})"
        ) from None
    return folder, settings


def _run(folder: Path, settings: dict[str, Any], workers: int) -> int:
    import logging

    from mlptrain.sweep.engines import GridEngine, OptunaEngine, SweepContext

    log = logging.getLogger("mlptrain")
    context = SweepContext(
        folder=folder,
        base_config=folder / "base_config.yaml",
        keys=settings["keys"],
        log_keys=_log_keys(settings),
        workers=workers,
        threads=max(1, (os.cpu_count() or 1) // workers),
    )
    if settings["mode"] == "grid":
        engine = GridEngine(context, settings["points"])
        total = len(settings["points"])
    else:
        engine = OptunaEngine(
            context,
            [ParamSpec.from_dict(spec) for spec in settings["params"]],
            settings["trials"],
            settings["prune"],
            settings["storage"],
            settings["study"],
            settings["seed"],
            validate_base(folder).training.epochs,
        )
        total = settings["trials"]
    log.info(
        "sweep folder: %s (%s, %d trials, %d worker(s), %d thread(s) each)",
        folder,
        settings["mode"],
        total,
        workers,
        context.threads,
    )
    previous = _install_stop_handlers(context)
    try:
        engine.run()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        for process in list(context.processes):
            process.kill()  # only after a second Ctrl-C: the first lets trials end cleanly
    if context.stop.is_set():
        raise StopRun(f"interrupted; resume with: mlp-sweep --resume {folder}", 130)
    _summary(folder, log)
    return 0


def _log_keys(settings: dict[str, Any]) -> frozenset[str]:
    """Searched on a log scale, or grid values spanning more than 50x: plotted on one."""
    if settings["mode"] == "optuna":
        return frozenset(
            spec["key"] for spec in settings["params"] if spec["kind"].startswith("log")
        )
    keys = set()
    for key in settings["keys"]:
        values = [point[key] for point in settings["points"]]
        numbers = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)
        if numbers and min(values) > 0 and max(values) / min(values) > 50:
            keys.add(key)
    return frozenset(keys)


def validate_base(folder: Path) -> Config:
    return load_config(folder / "base_config.yaml")


def _install_stop_handlers(context) -> dict[int, Any]:
    def handle(signum: int, frame: object) -> None:
        if context.stop.is_set():
            raise KeyboardInterrupt
        context.stop.set()
        print(
            "mlp-sweep: stopping: running trials save their work and end; no new ones "
            "start (Ctrl-C again to stop at once)",
            file=sys.stderr,
            flush=True,
        )

    return {sig: signal.signal(sig, handle) for sig in (signal.SIGINT, signal.SIGTERM)}


def _summary(folder: Path, log) -> None:
    results = folder / "results.md"
    if results.exists():
        lines = results.read_text().splitlines()
        log.info("results (best first):\n%s", "\n".join(lines[:12]))
    if (folder / "best_config.yaml").exists():
        log.info(
            "best config: %s  (mlp-train --config %s)",
            folder / "best_config.yaml",
            folder / "best_config.yaml",
        )
    log.info("sweep folder: %s", folder)


if __name__ == "__main__":
    sys.exit(main())
