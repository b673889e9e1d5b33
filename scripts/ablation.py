"""Run named variants of a config, several seeds each, one run at a time, and keep every
finished run in a JSON file as soon as it ends (so an interrupted study keeps what it
measured); --table prints the Markdown table of what the file holds.

    python scripts/ablation.py --config fashion --study fashion-levers --seeds 1 2 3 \\
        --variant base= --variant ema='training.ema={decay: 0.999}' \\
        --variant mixup='augment.mixup={alpha: 0.2}' --variant 'wide=model.hidden=[2048, 2048]'
    python scripts/ablation.py --table --study fashion-levers

A variant is NAME=OVERRIDE;OVERRIDE;... (--set syntax; empty: the config as it is). Each
run is an ordinary `mlp-train` run folder under runs/ablation-<study>/; a row records
the best validation accuracy (what chooses), the test accuracy of best.pt (reported,
never used to choose), the summed epoch seconds and the machine; a variant with an
`ensemble` records its group folder (the ensemble's test, its members' mean best
validation and their tests). A run already in the file (same study, variant and seed)
is not run again.
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
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "src"))

import torch  # noqa: E402

from mlptrain.training.runtime import describe_machine  # noqa: E402
from mlptrain.util.files import atomic_write_text  # noqa: E402


def parse_variant(text: str) -> tuple[str, list[str]]:
    name, _, overrides = text.partition("=")
    if not name:
        raise SystemExit(f"--variant {text!r}: give NAME=OVERRIDE;OVERRIDE")
    return name, [item.strip() for item in overrides.split(";") if item.strip()]


def read_run(folder: Path) -> dict:
    """What a finished run folder, or an ensemble's group folder, recorded."""
    if (folder / "group.json").is_file():
        return read_group(folder)
    with open(folder / "metrics.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    test = json.loads((folder / "test_metrics.json").read_text())
    vals = [float(row["val_accuracy"]) for row in rows if row.get("val_accuracy")]
    return {
        "best_val_accuracy": max(vals) if vals else None,
        "test_accuracy": test["accuracy"],
        "best_epoch": test.get("epoch"),
        "train_seconds": sum(float(row["epoch_seconds"]) for row in rows),
        "epochs": len(rows),
        "tta": test.get("tta", {}).get("mode", "none"),
    }


def read_group(folder: Path) -> dict:
    """An ensemble: its own test accuracy; validation, the mean of its members' best (an
    ensemble has no validation pass); training time, the members' epochs summed when
    they trained one after another, the longest member's when together."""
    group = json.loads((folder / "group.json").read_text())
    members = [read_run(folder / member["run_dir"]) for member in group["members"]]
    test = json.loads((folder / "test_metrics.json").read_text())
    combine = max if group["together"] else sum
    return {
        "best_val_accuracy": statistics.mean(m["best_val_accuracy"] for m in members),
        "test_accuracy": test["accuracy"],
        "best_epoch": None,
        "train_seconds": combine(m["train_seconds"] for m in members),
        "epochs": max(m["epochs"] for m in members),
        "tta": test.get("tta", {}).get("mode", "none"),
        "members_test_accuracy": [m["test_accuracy"] for m in members],
    }


def run_study(args: argparse.Namespace) -> None:
    results_path = Path(args.results)
    document = json.loads(results_path.read_text()) if results_path.is_file() else {"runs": []}
    done = {(r["study"], r["variant"], r["seed"]) for r in document["runs"]}
    machine = describe_machine(torch.device("cpu"))
    for text in args.variant:
        name, overrides = parse_variant(text)
        for seed in args.seeds:
            if (args.study, name, seed) in done:
                continue
            folder = REPO / "runs" / f"ablation-{args.study}" / f"{name}-seed{seed}"
            if folder.exists():
                raise SystemExit(f"{folder} exists from an unrecorded run; remove it first")
            command = [sys.executable, "-m", "mlptrain.cli.train", "--config", args.config,
                       "--quiet", "--run-dir", str(folder), "--set", f"seed={seed}"]  # fmt: skip
            for override in overrides:
                command += ["--set", override]
            print(" ".join(command), flush=True)
            finished = subprocess.run(command, cwd=REPO, stdout=subprocess.DEVNULL)
            if finished.returncode != 0:
                print(f"  failed with exit status {finished.returncode}", flush=True)
                continue
            row = {"study": args.study, "config": args.config, "variant": name,
                   "overrides": overrides, "seed": seed, **read_run(folder),
                   "date": datetime.date.today().isoformat(), "machine": machine,
                   "quiet": args.quiet, "run_dir": str(folder.relative_to(REPO))}  # fmt: skip
            document["runs"].append(row)
            atomic_write_text(results_path, json.dumps(document, indent=1) + "\n")
            print(f"  val {row['best_val_accuracy']:.4f}  test {row['test_accuracy']:.4f}  "
                  f"{row['train_seconds']:.0f} s", flush=True)  # fmt: skip


def table(args: argparse.Namespace) -> str:
    document = json.loads(Path(args.results).read_text())
    runs = [r for r in document["runs"] if r["study"] == args.study]
    lines = ["| variant | change | seeds | best val | test | training s |",
             "|---|---|---:|---:|---:|---:|"]  # fmt: skip
    for name in dict.fromkeys(r["variant"] for r in runs):
        rows = [r for r in runs if r["variant"] == name]

        def mean_std(key: str, rows=rows) -> str:
            values = [100 * r[key] for r in rows]
            spread = f" ± {statistics.stdev(values):.2f}" if len(values) > 1 else ""
            return f"{statistics.mean(values):.2f}%{spread}"

        change = "; ".join(f"`{o}`" for o in rows[0]["overrides"]) or "the preset"
        seconds = statistics.mean(r["train_seconds"] for r in rows)
        shared = "" if all(r.get("quiet") for r in rows) else "*"
        lines.append(f"| {name} | {change} | {len(rows)} | {mean_std('best_val_accuracy')} | "
                     f"{mean_std('test_accuracy')} | {seconds:.0f}{shared} |")  # fmt: skip
    if any(not r.get("quiet") for r in runs):
        lines += ["", "\\* measured while the machine ran other work: not a time to hold "
                  "against a limit"]  # fmt: skip
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", help="the base config (a path or a shipped name)")
    parser.add_argument("--study", required=True, help="the study's name in the results file")
    parser.add_argument("--variant", action="append", default=[], metavar="NAME=OVERRIDES")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--results", default=str(REPO / "docs" / "ablation.json"))
    parser.add_argument(
        "--quiet", action="store_true", help="record that nothing else ran (times count)"
    )
    parser.add_argument("--table", action="store_true", help="print the study's table")
    args = parser.parse_args()
    if args.table:
        print(table(args))
        return
    if not args.config or not args.variant:
        parser.error("--config and at least one --variant are needed to run a study")
    os.environ.setdefault("MLPTRAIN_DATA_SOURCE", str(REPO.parent / "shared" / "datasets"))
    run_study(args)


if __name__ == "__main__":
    main()
