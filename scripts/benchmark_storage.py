"""The cost of a shared study: a sweep on a PostgreSQL server against the SQLite default.

Two measurements, in one run:
  1. a 16-trial Optuna sweep of configs/smoke.yaml with 1 and with 2 mlp-sweep processes
     sharing the study (as two machines would), on SQLite (a file in a temporary folder)
     and on the given PostgreSQL database: wall time and trials per hour;
  2. the storage calls one trial makes (ask, its attributes, a report per epoch, the
     heartbeats, tell, and the reads that count trials and write the results), without
     the training, timed per trial: the overhead each storage adds to a trial.

    python scripts/benchmark_storage.py --storage postgresql://USER@127.0.0.1:5432/DB \
        [--data-source ../shared/datasets] [--trials 16]

The PostgreSQL database must exist and be empty of studies named bench-*; docs/distributed.md
shows how to start one.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from mlptrain.data.registry import find_source
from mlptrain.sweep.storage import import_optuna, open_storage, shown
from mlptrain.training.runtime import describe_machine

optuna = import_optuna()  # quiet: warnings only

REPO = Path(__file__).resolve().parents[1]
EPOCHS = 2  # configs/smoke.yaml's


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--storage", required=True, metavar="URL", help="a PostgreSQL URL")
    parser.add_argument("--data-source", metavar="DIR", help="the offline datasets")
    parser.add_argument("--trials", type=int, default=16)
    parser.add_argument("--calls", type=int, default=50, help="simulated trials per storage")
    parser.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    return parser.parse_args(argv)


def sweep(storage: str, study: str, processes: int, trials: int, folder: Path, source: str):
    command = [
        sys.executable,
        "-m",
        "mlptrain.cli.sweep",
        "--config",
        "smoke",
        "--set",
        f"output.runs_dir={folder}",
        "--set",
        f"data.root={folder / 'data'}",
        "--data-source",
        source,
        "--search",
        "optuna",
        "--trials",
        str(trials),
        "--param",
        "optimizer.lr=loguniform:1e-3:1e-1",
        "--storage",
        storage,
        "--study",
        study,
    ]
    start = time.perf_counter()
    running = [
        subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        for _ in range(processes)
    ]
    for process in running:
        _, errors = process.communicate()
        if process.returncode:
            raise SystemExit(f"the sweep failed:\n{errors}")
    return time.perf_counter() - start


def simulated_trial_seconds(storage_url: str, calls: int) -> float:
    """The storage calls of one trial as optuna_engine.OptunaEngine makes them, per trial."""
    storage = open_storage(optuna, storage_url)
    study = optuna.create_study(storage=storage, study_name=f"bench-calls-{time.time_ns()}")
    distributions = {"optimizer.lr": optuna.distributions.FloatDistribution(1e-3, 0.1, log=True)}
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))  # stale
        study.get_trials(deepcopy=False)  # count
        trial = study.ask(distributions)
        for key in ("sweep_dir", "heartbeat", "run_dir"):
            trial.set_user_attr(key, "x")
        study.get_trials(deepcopy=False)  # surplus check
        for epoch in range(1, EPOCHS + 1):
            trial.report(0.9, epoch)
            trial.set_user_attr("heartbeat", time.time())
        for key in (
            "best_epoch",
            "best_val_accuracy",
            "best_val_loss",
            "test_accuracy",
            "train_seconds",
            "run_dir",
            "message",
            "curve",
            "outcome",
        ):
            trial.set_user_attr(key, 0.5)
        study.tell(trial, 0.9)
        study.get_trials(deepcopy=False)  # the results files
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    source = find_source(args.data_source, beside=REPO)
    if source is None:
        raise SystemExit("no datasets: pass --data-source DIR or set MLPTRAIN_DATA_SOURCE")
    source = str(Path(source).resolve())
    report = {"machine": describe_machine(__import__("torch").device("cpu")), "rows": []}
    print(
        f"machine: {report['machine']['cpu']} ({os.cpu_count()} cores); "
        f"PostgreSQL: {shown(args.storage)}"
    )
    with tempfile.TemporaryDirectory() as temporary:
        folder = Path(temporary)
        storages = {"SQLite": f"sqlite:///{folder / 'study.db'}", "PostgreSQL": args.storage}
        calls = {name: simulated_trial_seconds(url, args.calls) for name, url in storages.items()}
        print(
            f"{'storage':<11} {'processes':>9} {'wall s':>8} {'trials/hour':>12} "
            f"{'storage ms/trial':>17}"
        )
        for name, url in storages.items():
            for processes in (1, 2):
                study = f"bench-{processes}-{time.time_ns()}"
                runs = folder / f"{name}-{processes}"
                seconds = sweep(url, study, processes, args.trials, runs, source)
                row = {
                    "storage": name,
                    "processes": processes,
                    "wall_seconds": seconds,
                    "trials_per_hour": args.trials * 3600 / seconds,
                    "storage_ms_per_trial": calls[name] * 1e3,
                }
                report["rows"].append(row)
                print(
                    f"{name:<11} {processes:>9} {seconds:8.1f} {row['trials_per_hour']:12.0f} "
                    f"{row['storage_ms_per_trial']:17.1f}"
                )
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
