"""A sweep as a library object: create its folder, resume it, run its trials."""

from __future__ import annotations

import json
import os
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

from mlptrain.artifacts.rundir import RunDir
from mlptrain.config.files import build_config, config_to_dict, config_to_yaml, load_config
from mlptrain.config.schema import Config
from mlptrain.errors import EXIT_INTERRUPTED, StopRun, UsageError
from mlptrain.sweep.settings import SETTINGS_FILE, SweepSettings
from mlptrain.sweep.spec import overrides
from mlptrain.util.files import atomic_write_text
from mlptrain.util.logs import LogFile, get_logger
from mlptrain.util.stopping import TwoStageStop

log = get_logger()
BASE_CONFIG = "base_config.yaml"


def check_trial(base: Config, params: dict[str, Any]) -> None:
    """Every trial's config must validate before the sweep starts."""
    if "training.select_best_by" in params:
        raise UsageError(
            "training.select_best_by cannot be swept: a sweep compares its trials by one "
            "metric; set it in the base config"
        )
    origin = "trial config (" + ", ".join(overrides(params)) + ")"
    build_config([("base config", config_to_dict(base))], overrides(params), origin=origin)


def create_sweep(base: Config, settings: SweepSettings, name: str) -> tuple[Path, SweepSettings]:
    """Check every trial's config, import the data once and make the sweep folder."""
    if settings.mode == "grid":
        for point in settings.points:
            check_trial(base, point)
    else:
        for spec in settings.params:
            for example in spec.examples():
                check_trial(base, {spec.key: example})
    _prepare_data(base)
    folder = RunDir.create(base.output.runs_dir, f"sweep-{name}").path
    if settings.mode == "optuna" and settings.storage is None:
        storage = f"sqlite:///{(folder / 'study.db').resolve()}"
        settings = replace(settings, storage=storage, study=name)
    atomic_write_text(folder / BASE_CONFIG, config_to_yaml(base))
    atomic_write_text(folder / SETTINGS_FILE, json.dumps(settings.to_dict(), indent=1) + "\n")
    return folder, settings


def _prepare_data(base: Config) -> None:
    # Once, here: trials then find the files in place (or your own data decoded and
    # cached) instead of each importing or decoding them at once.
    if not base.data.is_builtin:
        from mlptrain.data.userdata import load_user_data

        load_user_data(base.data)
        return
    from mlptrain.data.registry import DATASETS, prepare_files

    prepare_files(DATASETS[base.data.dataset], base.data)


def load_sweep(folder: str | Path) -> tuple[Path, SweepSettings]:
    folder = Path(folder)
    try:
        data = json.loads((folder / SETTINGS_FILE).read_text())
    except (OSError, ValueError):
        raise UsageError(
            f"--resume {folder}: not a sweep folder (no readable {SETTINGS_FILE})"
        ) from None
    return folder, SweepSettings.from_dict(data)


def run_sweep(folder: Path, settings: SweepSettings, workers: int | None = None) -> None:
    """Run the sweep's remaining trials, `workers` at a time; its log is sweep.log.

    The first Ctrl-C lets running trials save their work and end, and starts no new
    one (StopRun, resumable); a second one stops at once."""
    from mlptrain.sweep.engines import GridEngine, SweepContext
    from mlptrain.sweep.optuna_engine import OptunaEngine
    from mlptrain.tracking.mlflow import SweepParent

    devices = settings.devices
    workers = workers or settings.workers
    settings.check_workers(workers)
    stop = TwoStageStop(on_first=_announce_stop)
    context = SweepContext.pinned(
        devices,
        folder=folder,
        base_config=folder / BASE_CONFIG,
        settings=settings,
        workers=workers,
        threads=max(1, (os.cpu_count() or 1) // workers),
        stop=stop.requested,
    )
    with LogFile() as log_file:
        log_file.open(folder / "sweep.log")
        if settings.mode == "grid":
            engine: Any = GridEngine(context)
        else:
            epochs = load_config(folder / BASE_CONFIG).training.epochs
            engine = OptunaEngine(context, epochs)
        log.info(
            "sweep folder: %s (%s, %d trials, %d worker(s), %d thread(s) each%s; by %s)",
            folder, settings.mode, settings.total, workers, context.threads,
            f", on {', '.join(devices)}" if devices else "", settings.objective.label,
        )  # fmt: skip
        parent = SweepParent(load_config(folder / BASE_CONFIG), folder)
        try:
            with stop:
                engine.run()
        finally:
            for process in list(context.processes):
                process.kill()  # only after a second Ctrl-C: the first lets trials end cleanly
            parent.finish("KILLED" if context.stop.is_set() else "FINISHED")
        if context.stop.is_set():
            raise StopRun(
                f"interrupted; resume with: mlp-sweep --resume {folder}", EXIT_INTERRUPTED
            )
        _summary(folder)


def _announce_stop(signum: int) -> None:
    print(
        "mlp-sweep: stopping: running trials save their work and end; no new ones "
        "start (Ctrl-C again to stop at once)",
        file=sys.stderr,
        flush=True,
    )


def _summary(folder: Path) -> None:
    results = folder / "results.md"
    if results.exists():
        lines = results.read_text().splitlines()
        log.info("results (best first):\n%s", "\n".join(lines[:12]))
    if (folder / "best_config.yaml").exists():
        best = folder / "best_config.yaml"
        log.info("best config: %s  (mlp-train --config %s)", best, best)
    log.info("sweep folder: %s", folder)
