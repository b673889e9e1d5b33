"""Train every tutorial recipe and preset, several seeds each, and write docs/results.md.

Each run is an ordinary run folder (kept under runs/reproduce-<time>/). A recipe's seeds
are trained together in one process (one trial process: stacked weights, the small
tutorial models' fastest way); a preset's seeds, whose time limit is per run, one after
another (--separate: every entry that way). What each run reached is added to
docs/results.json as soon as it finishes, so an interrupted or partial reproduction
(--only) keeps everything finished and the table always shows every entry measured so
far, with its machine and date.

    python scripts/reproduce.py                       # everything, 3 seeds (about 1.5 h on 2 cores)
    python scripts/reproduce.py --only mnist fashion  # some entries; the rest stay as recorded
    python scripts/reproduce.py --quick --results /tmp/r.json --markdown /tmp/r.md  # a smoke test

The data comes from --data-source, $MLPTRAIN_DATA_SOURCE or ../shared/datasets.
"""

from __future__ import annotations

import argparse
import csv
import datetime
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from mlptrain.config.files import load_config, parse_override
from mlptrain.config.monitor import Monitor
from mlptrain.data.registry import find_source
from mlptrain.errors import EXIT_INTERRUPTED, UsageError
from mlptrain.sweep.trials import COMPLETE, INTERRUPTED, run_trials
from mlptrain.training.runtime import describe_machine
from mlptrain.util.files import atomic_write_text
from mlptrain.util.stopping import TwoStageStop

REPO = Path(__file__).resolve().parent.parent
# --quick: a few hundred images and one epoch, enough to run every entry end to end.
QUICK = {"training.epochs": 1, "data.subset.train": 400, "data.subset.test": 100}


@dataclass(frozen=True)
class Entry:
    name: str
    config: str  # relative to the repository
    what: str  # the workflow in a few words
    reference: float | None  # the tutorial's reported accuracy, or the preset's target
    metric: str = "test"  # which accuracy the reference is: "test" or "val"
    budget_seconds: float | None = None  # a preset's training-time limit; None for recipes

    @property
    def is_preset(self) -> bool:  # its reference is a target, not a reported result
        return self.budget_seconds is not None

    overrides: dict[str, Any] = field(default_factory=dict)


ENTRIES = [
    Entry("fashion-sgd-64", "configs/recipes/fashion-sgd-64.yaml",
          "Fashion, [64], SGD 0.1, batch 10, mean/std 0.5", 0.853),
    Entry("fashion-adam-256x2", "configs/recipes/fashion-adam-256x2.yaml",
          "Fashion, 80/20 split, [256, 256], Adam 7e-4, batch 128", 0.878),
    Entry("mnist-adam-128-64", "configs/recipes/mnist-adam-128-64.yaml",
          "MNIST, [128, 64], Adam 1e-3, batch 64, 0.1307/0.3081", 0.9776),
    Entry("fashion-adam-250-100", "configs/recipes/fashion-adam-250-100.yaml",
          "Fashion, 90/10 split, [250, 100], Adam, best val loss", None),
    Entry("mnist-sgd-30", "configs/recipes/mnist-sgd-30.yaml",
          "MNIST, [30], SGD 1e-3, batch 256, 40 epochs", 0.856, metric="val"),
    Entry("mnist-sgd-392-30", "configs/recipes/mnist-sgd-30.yaml",
          "the same, [392, 30], SGD 5e-3", 0.918, metric="val",
          overrides={"model.hidden": [392, 30], "optimizer.lr": 0.005}),
    Entry("mnist", "configs/mnist.yaml", "MNIST preset", 0.9955,
          budget_seconds=600),
    Entry("fashion", "configs/fashion.yaml", "Fashion preset", 0.915,
          budget_seconds=600),
    Entry("mnist-fast", "configs/mnist-fast.yaml", "MNIST fast preset", 0.992,
          budget_seconds=60),
    Entry("fashion-fast", "configs/fashion-fast.yaml", "Fashion fast preset", 0.905,
          budget_seconds=60),
    Entry("mnist-ensemble", "configs/mnist-ensemble.yaml", "MNIST, 5 MLPs as one", 0.9965,
          budget_seconds=1200),
    Entry("fashion-ensemble", "configs/fashion-ensemble.yaml", "Fashion, 5 MLPs as one", 0.920,
          budget_seconds=1200),
]  # fmt: skip
BY_NAME = {entry.name: entry for entry in ENTRIES}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--only",
        nargs="+",
        choices=list(BY_NAME),
        metavar="NAME",
        help=f"entries to run (default: all): {', '.join(BY_NAME)}",
    )
    parser.add_argument("--seeds", type=int, help="runs per entry (default 3; 1 with --quick)")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="one epoch on a small subset (one seed unless --seeds): checks the pipeline only",
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config key in every run, e.g. device=cuda",
    )
    parser.add_argument(
        "--separate",
        action="store_true",
        help="train each seed in its own process (default: a recipe's seeds together)",
    )
    parser.add_argument("--data-source", help="folder holding the four IDX files")
    parser.add_argument("--runs-dir", default=str(REPO / "runs"))
    parser.add_argument("--results", default=str(REPO / "docs" / "results.json"))
    parser.add_argument("--markdown", default=str(REPO / "docs" / "results.md"))
    parser.add_argument(
        "--render-only",
        action="store_true",
        help="rewrite the Markdown from the recorded results; train nothing",
    )
    args = parser.parse_args(argv)
    if args.seeds is None:
        args.seeds = 1 if args.quick else 3
    if args.seeds < 1:
        parser.error("--seeds must be at least 1")
    try:
        args.set = {
            ".".join(parts): value for parts, value in (parse_override(text) for text in args.set)
        }
    except UsageError as exc:
        parser.error(str(exc))
    return args


def load_results(path: Path) -> dict[str, Any]:
    if not path.exists():
        return {"entries": {}}
    return json.loads(path.read_text())


def run_ensemble(
    entry: Entry, seeds: list[int], folder: Path, args: argparse.Namespace, stop: threading.Event
) -> list[dict]:
    """An ensemble preset's replicates, one `mlp-train` process each, one after another.
    Replicate r takes the r-th block of member seeds (ensemble.seeds of K seeds: seeds
    K(r-1)+1 to Kr; members without seeds: the config's seed K(r-1)+1), so that no two
    replicates share a member. Its test accuracy is the ensemble's; validation accuracy
    the members' mean at their best epochs; training seconds the group's (the shared
    epochs once when trained together, every member's otherwise)."""
    config = load_config(REPO / entry.config)
    count = len(config.ensemble.seeds or config.ensemble.members)
    overrides = {**entry.overrides, **(QUICK if args.quick else {}), **args.set}
    runs = []
    for replicate in seeds:
        if stop.is_set():
            break
        first = count * (replicate - 1) + 1
        block = {"ensemble.seeds": list(range(first, first + count))} if config.ensemble.seeds \
            else {"seed": first}  # fmt: skip
        group = folder / f"{entry.name}-seed{replicate}"
        command = [sys.executable, "-m", "mlptrain.cli.train", "--config", str(REPO / entry.config),
                   "--quiet", "--run-dir", str(group)]  # fmt: skip
        for key, value in {**overrides, **block}.items():
            command += ["--set", f"{key}={json.dumps(value)}"]
        started = time.perf_counter()
        done = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
        wall = time.perf_counter() - started
        status = {0: COMPLETE, EXIT_INTERRUPTED: INTERRUPTED}.get(done.returncode, "failed")
        run = {"seed": replicate, "status": status, "message": "", "trained_together": 1,
               "wall_seconds": wall, "run_dir": os.path.relpath(group, REPO)}  # fmt: skip
        if status != COMPLETE:
            lines = done.stderr.strip().splitlines() or [f"exit status {done.returncode}"]
            run.update(message=lines[-1], test_accuracy=None, val_accuracy=None,
                       best_epoch=None, train_seconds=None)  # fmt: skip
        else:
            run.update(ensemble_summary(group))
        runs.append(run)
        if status == INTERRUPTED:
            break
    return runs


def ensemble_summary(group: Path) -> dict[str, Any]:
    test = json.loads((group / "test_metrics.json").read_text())
    document = json.loads((group / "group.json").read_text())
    vals, seconds = [], []
    for member in document["members"]:
        folder = group / member["run_dir"]
        rows = list(csv.DictReader((folder / "metrics.csv").open()))
        best = json.loads((folder / "test_metrics.json").read_text())["epoch"]
        vals.append(float(rows[best - 1]["val_accuracy"]))
        seconds.append(sum(float(row["epoch_seconds"]) for row in rows))
    together = document.get("together", True)
    return {
        "test_accuracy": test["accuracy"],
        "val_accuracy": statistics.fmean(vals),
        "best_epoch": None,
        "train_seconds": max(seconds) if together else sum(seconds),
        "members": [member["accuracy"] for member in test["members"]],
    }


def run_entry(
    entry: Entry, seeds: list[int], folder: Path, args: argparse.Namespace, stop: threading.Event
) -> list[dict]:
    """The entry's runs for `seeds`: several seeds of a recipe trained together in one
    process (one trial process), a preset's seeds (or everything with --separate) one
    run after another, since a preset's time limit is per run."""
    if load_config(REPO / entry.config).ensemble is not None:
        return run_ensemble(entry, seeds, folder, args, stop)
    params = [
        {**entry.overrides, "seed": seed, **(QUICK if args.quick else {}), **args.set}
        for seed in seeds
    ]
    run_dirs = [folder / f"{entry.name}-seed{seed}" for seed in seeds]
    threads = params[0].get("training.threads") or os.cpu_count() or 1
    for item in params:
        item.pop("training.threads", None)
    config = REPO / entry.config
    # The epoch best.pt holds, by the entry's own training.select_best_by.
    monitor = Monitor(load_config(config).training.select_best_by)
    together = len(seeds) > 1 and not entry.is_preset and not args.separate
    started = time.perf_counter()
    specs = folder / "specs"
    if together:
        members = list(zip(params, run_dirs, strict=True))
        spec = specs / f"{entry.name}.json"
        results = run_trials(config, members, spec, threads, stop, monitor)
        wall = [(time.perf_counter() - started) / len(seeds)] * len(seeds)
    else:
        results, wall = [], []
        for item, run_dir in zip(params, run_dirs, strict=True):
            spec = specs / f"{run_dir.name}.json"
            results += run_trials(config, [(item, run_dir)], spec, threads, stop, monitor)
            wall.append(time.perf_counter() - started - sum(wall))
            if results[-1].status == INTERRUPTED:
                break
    return [
        {
            "seed": seed,
            "status": result.status,
            "message": result.message,
            "test_accuracy": result.test_accuracy,
            "val_accuracy": result.best_val_accuracy,
            "best_epoch": result.best_epoch,
            "train_seconds": result.train_seconds,
            "wall_seconds": seconds,
            "trained_together": len(seeds) if together else 1,
            "run_dir": os.path.relpath(run_dir, REPO),
        }
        for seed, result, seconds, run_dir in zip(seeds, results, wall, run_dirs, strict=False)
    ]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    results_path, markdown_path = Path(args.results), Path(args.markdown)
    results = load_results(results_path)
    if args.render_only:
        atomic_write_text(markdown_path, render(results))
        return 0
    source = find_source(args.data_source, beside=REPO)
    if source is not None:
        os.environ["MLPTRAIN_DATA_SOURCE"] = source  # the runs inherit it
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    folder = Path(args.runs_dir) / f"reproduce-{stamp}"
    folder.mkdir(parents=True)
    with TwoStageStop() as stop:  # the first Ctrl-C: the current run saves and stops cleanly
        return run_entries(args, folder, results, stop.requested)


def run_entries(
    args: argparse.Namespace, folder: Path, results: dict[str, Any], stop: threading.Event
) -> int:
    results_path, markdown_path = Path(args.results), Path(args.markdown)
    machine = describe_machine(torch.device("cpu"))
    failed = 0
    for entry in [BY_NAME[name] for name in args.only] if args.only else ENTRIES:
        runs = []
        for run in run_entry(entry, list(range(1, args.seeds + 1)), folder, args, stop):
            if run["status"] == INTERRUPTED:
                print("interrupted: finished runs are recorded", file=sys.stderr)
                return EXIT_INTERRUPTED
            runs.append(run)
            failed += run["status"] != COMPLETE
            print(f"{entry.name} seed {run['seed']}: {summarize_run(run)}", flush=True)
            results["entries"][entry.name] = {
                "config": entry.config,
                "overrides": {**entry.overrides, **args.set},
                "quick": args.quick,
                "date": datetime.date.today().isoformat(),
                "machine": machine,
                "runs": runs,
            }
            atomic_write_text(results_path, json.dumps(results, indent=2) + "\n")
            atomic_write_text(markdown_path, render(results))
    print(f"wrote {results_path} and {markdown_path}")
    return 1 if failed else 0


def summarize_run(run: dict[str, Any]) -> str:
    if run["status"] != COMPLETE:
        return f"{run['status']}: {run['message']}"
    return (
        f"test {run['test_accuracy']:.4f}, val {run['val_accuracy']:.4f}, "
        f"training {run['train_seconds']:.0f} s ({run['run_dir']})"
    )


# --- the table ------------------------------------------------------------------------------


def mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def percent(value: float) -> str:
    return f"{100 * value:.2f}%"


def signed_points(difference: float) -> str:
    """A difference of fractions in percentage points; one that rounds to zero at two
    decimals gets a third, so that 'below target' never reads as -0.00."""
    points = 100 * difference
    text = f"{points:+.2f} pp"
    if points != 0 and round(points, 2) == 0:
        text = f"{points:+.3f} pp"
    return text


def row(entry: Entry, recorded: dict[str, Any] | None) -> str:
    reference = "–" if entry.reference is None else percent(entry.reference)
    if entry.is_preset:
        reference = f"≥ {reference} (target)"
    elif entry.metric == "val":
        reference += " (val)"
    cells = [f"`{entry.name}`", entry.what, reference]
    complete = [run for run in (recorded or {}).get("runs", []) if run["status"] == COMPLETE]
    if not complete:
        return "| " + " | ".join([*cells, "not run", "", "", ""]) + " |"
    accuracies = [run[f"{entry.metric}_accuracy"] for run in complete]
    mean, std = mean_std(accuracies)
    ours = f"{percent(mean)} ± {100 * std:.2f}" if len(accuracies) > 1 else percent(mean)
    if entry.metric == "val":
        ours += " (val)"
    seconds = statistics.fmean(
        run["train_seconds"] / run.get("trained_together", 1) for run in complete
    )
    time_cell = f"{seconds:.0f} s"
    if entry.budget_seconds is not None:
        time_cell += f" (limit {entry.budget_seconds:.0f} s)"
    if entry.reference is None:
        gap = "–"
    else:
        gap = signed_points(mean - entry.reference)
        if entry.is_preset:
            if mean < entry.reference:
                gap += " ✗ (below target)"
            elif max(run["train_seconds"] for run in complete) > entry.budget_seconds:
                gap += " ✗ (a run over the time limit)"
            else:
                gap += " ✓"
    return "| " + " | ".join([*cells, ours, str(len(complete)), time_cell, gap]) + " |"


def render(results: dict[str, Any]) -> str:
    entries = results["entries"]
    lines = [
        "# Results: the tutorial recipes and the presets",
        "",
        "Written by `python scripts/reproduce.py` from `docs/results.json` (do not edit by hand;",
        "`--render-only` rewrites it). Accuracy is on the official 10,000-image test set unless",
        "marked (val): those tutorials reported validation accuracy, so the best validation",
        "accuracy is compared. Ours is the mean ± standard deviation (percentage points) over",
        "seeds 1 to N (the seeds column). Training time is the mean of the runs' summed epoch",
        "seconds (training and validation; start-up and the final test excluded), per model:",
        "seeds trained together share their epochs, so each is counted its share. The gap is",
        "ours minus the reported number or the target, in percentage points.",
        "",
        "| entry | workflow | reported / target | ours | seeds | training time | gap |",
        "|---|---|---|---|---|---|---|",
    ]
    lines += [row(entry, entries.get(entry.name)) for entry in ENTRIES]
    lines += [
        "",
        "Where a preset is below its target, its row is the best we found. The search behind",
        "the presets (single runs, an `mlp-sweep` grid for MNIST, an Optuna study for",
        "Fashion-MNIST, then `scripts/ablation.py` studies of the accuracy levers), with every",
        "candidate and what it did not reach, round by round: [presets.md](presets.md).",
    ]
    measured = [entries[entry.name] for entry in ENTRIES if entry.name in entries]
    if any(record["quick"] for record in measured):
        lines += ["", "**Quick mode**: one epoch on a subset; the numbers check the pipeline only."]
    lines += ["", "## Where and how each entry was measured", ""]
    for entry in ENTRIES:
        record = entries.get(entry.name)
        if record is None:
            continue
        machine = record["machine"]
        command = f"mlp-train --config {entry.config}" + "".join(
            f" --set {key}={json.dumps(value).replace(' ', '')}"
            for key, value in record["overrides"].items()
        )
        runs = ", ".join(f"seed {run['seed']}: {summarize_run(run)}" for run in record["runs"])
        lines.append(
            f"- `{entry.name}` ({record['date']}, {machine['cpu']}, {machine['cpu_count']} "
            f"cores, torch {machine['torch']}): `{command} --set seed=N`; {runs}"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
