"""Trials per hour: K models trained together against K separate `mlp-train` processes.

For each K, on the same machine in one run: K separate processes one after another
(`mlp-train --config C --set seed=S`, each paying its own start-up, data load, training
and test), then one process training the K seeds together (`mlp-train --config C
--seeds 1,...,K`). Both produce the same K ordinary run folders. It reports trials per
hour for both, and the stacked run's model-samples per second against the machine's
measured float32 matrix-multiply throughput. With --repeats R it does all this R times
per K, alternating which side goes first, and reports the round with the median ratio.

    python scripts/benchmark.py --stack                  # the MNIST tutorial recipe, K = 1 4 8 16
    python scripts/benchmark.py --stack --presets        # also configs/fashion.yaml at K = 4
    python scripts/benchmark.py --stack --ks 8 --repeats 3   # K = 8, the median of 3 rounds
    python scripts/benchmark_stack.py --ks 1 2 --quick --json-out /tmp/s.json   # a smoke run
    python scripts/benchmark.py --stack --ks 1 8 64 256 --set device=cuda    # on a GPU

The data comes from --data-source, $MLPTRAIN_DATA_SOURCE or ../shared/datasets.
"""

from __future__ import annotations

import argparse
import csv
import itertools
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from mlptrain.config.files import load_config
from mlptrain.data.registry import find_source
from mlptrain.model.mlp import ModelSpec
from mlptrain.training.arithmetic import Gemm, step_limit, training_gemms
from mlptrain.training.runtime import describe_machine, resolve_device

REPO = Path(__file__).resolve().parents[1]
TUTORIAL = "configs/recipes/mnist-adam-128-64.yaml"
PRESET = "configs/fashion.yaml"
QUICK = ["training.epochs=1", "data.subset.train=3000", "data.subset.test=500"]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default=TUTORIAL, help=f"the trials' config ({TUTORIAL})")
    parser.add_argument("--ks", type=int, nargs="*", default=[1, 4, 8, 16])
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument(
        "--repeats",
        type=int,
        default=1,
        help="rounds per K, alternating which side runs first; the median round is reported",
    )
    parser.add_argument("--presets", action="store_true", help=f"also {PRESET} at K = 4")
    parser.add_argument("--quick", action="store_true", help="3,000 images, 1 epoch")
    parser.add_argument("--data-source", default=None)
    parser.add_argument("--json-out", default=None)
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error("--repeats takes 1 or more")
    if args.quick:
        args.overrides = [*QUICK, *args.overrides]
    return args


def _train(arguments: list[str], workdir: Path, env: dict[str, str]) -> float:
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "mlptrain.cli.train", *arguments, "--quiet"],
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
    )
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"mlp-train {' '.join(arguments)} failed:\n{done.stderr}")
    return seconds


def _settings(config: Path, overrides: list[str], runs: Path) -> list[str]:
    items = ["--config", str(config)]
    for override in [*overrides, f"output.runs_dir={runs}"]:
        items += ["--set", override]
    return items


def _training_seconds(runs: Path) -> tuple[float, int]:
    """One member's summed train seconds and all members' trained samples (metrics.csv)."""
    seconds, samples = [], 0
    for metrics in runs.rglob("metrics.csv"):
        with open(metrics, newline="") as handle:
            rows = list(csv.DictReader(handle))
        seconds.append(sum(float(row["train_seconds"]) for row in rows))
        samples += sum(
            round(float(row["samples_per_second"]) * float(row["train_seconds"])) for row in rows
        )
    return max(seconds), samples


def compare(
    config: Path,
    k: int,
    overrides: list[str],
    work: Path,
    env: dict[str, str],
    round_: int = 0,
):
    """K separate processes and the K seeds in one (the stacked one first in odd rounds):
    the wall seconds of each."""
    seeds = list(range(1, k + 1))
    separate_runs = work / f"separate-{k}-{round_}"
    stacked_runs = work / f"stacked-{k}-{round_}"

    def run_separate() -> float:
        return sum(
            _train(_settings(config, [*overrides, f"seed={seed}"], separate_runs), work, env)
            for seed in seeds
        )

    def run_stacked() -> float:
        arguments = _settings(config, overrides, stacked_runs)
        return _train([*arguments, "--seeds", ",".join(map(str, seeds))], work, env)

    if round_ % 2:
        stacked, separate = run_stacked(), run_separate()
    else:
        separate, stacked = run_separate(), run_stacked()
    train_seconds, samples = _training_seconds(stacked_runs)
    separate_train, _ = _training_seconds(separate_runs)
    return {
        "k": k,
        "separate_seconds": separate,
        "stacked_seconds": stacked,
        "separate_trials_per_hour": k * 3600 / separate,
        "stacked_trials_per_hour": k * 3600 / stacked,
        "speedup": separate / stacked,
        "stacked_train_seconds": train_seconds,
        "separate_train_seconds_each": separate_train,
        "model_samples_per_second": samples / train_seconds,
    }


def median_round(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """The round with the median ratio (the lower of the two middle ones for an even
    count), with every round's ratio in `speedups`."""
    ordered = sorted(rounds, key=lambda row: row["speedup"])
    return {**ordered[(len(ordered) - 1) // 2], "speedups": [row["speedup"] for row in rounds]}


def machine_throughput(spec: ModelSpec, batch_size: int, device: torch.device) -> dict[str, float]:
    """float32 FLOP/s of a 2048 x 2048 product (the machine's practical peak) and of the
    model's own training products at its batch size (what one model alone can reach)."""
    peak = step_limit([Gemm(2048, 2048, 2048, "peak")], torch.float32, device)
    own = step_limit(training_gemms(spec, batch_size), torch.float32, device)
    return {"peak_flops": peak.flops_per_second, "model_gemm_flops": own.flops_per_second}


def parameters(spec: ModelSpec) -> int:
    widths = [spec.input_size, *spec.hidden, spec.num_classes]
    return sum(inputs * outputs + outputs for inputs, outputs in itertools.pairwise(widths))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    source = find_source(args.data_source, beside=REPO)
    if source is None:
        sys.exit("no offline data: pass --data-source or set MLPTRAIN_DATA_SOURCE")
    source = Path(source).resolve()  # the trials run in their own working folder
    config_path = (REPO / args.config) if not Path(args.config).is_absolute() else Path(args.config)
    config = load_config(config_path, args.overrides)
    spec = ModelSpec(hidden=tuple(config.model.hidden))
    env = {**os.environ, "MLPTRAIN_DATA_SOURCE": str(source), "PYTHONUNBUFFERED": "1"}
    device = resolve_device(config.device)
    machine = describe_machine(device)
    throughput = machine_throughput(spec, config.training.batch_size, device)
    flops_per_sample = 6 * parameters(spec)
    rows = []
    with tempfile.TemporaryDirectory(prefix="stack-bench-") as folder:
        work = Path(folder)
        overrides = [*args.overrides, f"data.root={work / 'data'}"]
        # The data import once, before anything is timed.
        _train(_settings(config_path, [*overrides, *QUICK], work / "warmup"), work, env)
        for k in args.ks:
            rounds = []
            for round_ in range(args.repeats):
                row = compare(config_path, k, overrides, work, env, round_)
                flops = row["model_samples_per_second"] * flops_per_sample
                row["achieved_flops"] = flops
                row["share_of_peak"] = flops / throughput["peak_flops"]
                rounds.append(row)
                print(
                    f"K={k:>2}: separate {row['separate_seconds']:6.1f} s "
                    f"({row['separate_trials_per_hour']:6.0f} trials/h), stacked "
                    f"{row['stacked_seconds']:6.1f} s ({row['stacked_trials_per_hour']:6.0f} "
                    f"trials/h): {row['speedup']:.2f}x; {row['model_samples_per_second']:,.0f} "
                    f"model-samples/s = {flops / 1e9:.0f} GFLOP/s, {row['share_of_peak']:.0%} "
                    "of the peak",
                    flush=True,
                )
            rows.append(median_round(rounds))
            if args.repeats > 1:
                ratios = ", ".join(f"{speedup:.2f}x" for speedup in rows[-1]["speedups"])
                print(f"K={k:>2}: median of {args.repeats} rounds {rows[-1]['speedup']:.2f}x "
                      f"({ratios})", flush=True)  # fmt: skip
        presets = []
        if args.presets:
            preset_overrides = [*overrides, "training.epochs=1"]
            if args.quick:
                preset_overrides += QUICK
            row = compare(REPO / PRESET, 4, preset_overrides, work, env)
            presets.append({"config": PRESET, **row})
            print(
                f"{PRESET} K=4, 1 epoch: separate {row['separate_seconds']:.1f} s, stacked "
                f"{row['stacked_seconds']:.1f} s: {row['speedup']:.2f}x; train seconds "
                f"{row['separate_train_seconds_each'] * 4:.1f} separate, "
                f"{row['stacked_train_seconds']:.1f} stacked",
                flush=True,
            )
    print(
        f"machine: {machine['cpu']}, {machine['cpu_count']} cores, {machine['gpu'] or 'no GPU'}; "
        f"float32 peak "
        f"{throughput['peak_flops'] / 1e9:.0f} GFLOP/s, one model's own products "
        f"{throughput['model_gemm_flops'] / 1e9:.0f} GFLOP/s"
    )
    report: dict[str, Any] = {
        "settings": {**vars(args), "config": str(args.config)},
        "machine": machine,
        "throughput": throughput,
        "flops_per_sample": flops_per_sample,
        "stack": rows,
        "presets": presets,
    }
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
