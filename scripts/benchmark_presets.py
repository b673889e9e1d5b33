"""The presets against the machine's arithmetic limit: how fast their training step could
run, how fast it does, where the rest goes, and how that compares with an earlier version.

For each preset, in one process on one machine:
  limit     the step's own matrix products (mlptrain.training.arithmetic: forward, input and
            weight gradients of every layer, at the preset's batch size) timed in the
            dtype the run trains in, as `training.amp` resolves it here; their FLOPs over
            that time is the machine's throughput, and that time the bound per step;
  measured  `mlp-train --config PRESET` for a few epochs in a fresh process: training
            seconds per step (the median epoch after the first) and seconds per epoch;
  before    the same command run on an earlier checkout (--before-src), interleaved
            with the measured runs, so a slow spell of the shared machine hits both;
  profile   the profiler's top operators over a few dozen steps of the real loop.
"share of the limit" = bound / measured step.

    python scripts/benchmark_presets.py                                  # fashion and mnist
    git worktree add /tmp/before <commit>                                # an earlier version
    python scripts/benchmark_presets.py --before-src /tmp/before/src --json-out presets.json

The data comes from --data-source, $MLPTRAIN_DATA_SOURCE or ../shared/datasets.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch
from torch.profiler import ProfilerActivity, profile

from mlptrain.config.files import load_config
from mlptrain.config.schema import Config
from mlptrain.data.registry import find_source
from mlptrain.data.splits import Split
from mlptrain.run.session import build_session, step_gemms
from mlptrain.training.arithmetic import step_limit
from mlptrain.training.loop import train_one_epoch
from mlptrain.training.runtime import describe_machine, resolve_amp, resolve_device
from mlptrain.util.logs import setup_logging

REPO = Path(__file__).resolve().parents[1]
TRAIN = "from mlptrain.cli.train import main; raise SystemExit(main())"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--presets", nargs="+", default=["fashion", "mnist"], metavar="NAME")
    parser.add_argument("--epochs", type=int, default=3, help="epochs per timed run (>= 2)")
    parser.add_argument("--repeats", type=int, default=1, help="interleaved rounds")
    parser.add_argument("--device", default="cpu", help="cpu | cuda | auto")
    parser.add_argument("--before-src", help="the src/ folder of an earlier checkout")
    parser.add_argument("--profile-steps", type=int, default=40)
    parser.add_argument("--top", type=int, default=8, help="operators shown per profile")
    parser.add_argument("--data-source", default=None)
    parser.add_argument("--data-root", default=str(REPO / "data"))
    parser.add_argument("--json-out", default=None)
    args = parser.parse_args(argv)
    if args.epochs < 2:
        parser.error("--epochs must be at least 2 (the first epoch is not timed)")
    return args


def preset_config(name: str, args: argparse.Namespace, source: str) -> Config:
    settings = {"device": args.device, "data.source": source, "data.root": args.data_root}
    return load_config(name, settings=settings)


def limits(config: Config, device: torch.device) -> dict[str, Any]:
    """The bound per step in the run's dtype, and both dtypes' throughput on its shapes."""
    gemms = step_gemms(config)
    amp = resolve_amp(config.training.amp, device, gemms)
    row: dict[str, Any] = {"dtype": "bf16" if amp.dtype else "float32", "amp": amp.reason}
    for name, dtype in (("float32", torch.float32), ("bf16", torch.bfloat16)):
        limit = step_limit(gemms, dtype, device)
        row[f"{name}_gflops"] = limit.flops_per_second / 1e9
        if name == row["dtype"]:
            row["bound_ms"], row["step_gflop"] = limit.seconds * 1e3, limit.flops / 1e9
    return row


def timed_run(name: str, args: argparse.Namespace, source: str, src: str | None) -> dict:
    """`mlp-train --config NAME` for --epochs epochs in a fresh process (with `src` first
    on the path: an earlier checkout); its epochs' times as metrics.csv recorded them."""
    with tempfile.TemporaryDirectory() as runs_dir:
        env = dict(os.environ)
        if src:
            env["PYTHONPATH"] = os.pathsep.join(filter(None, [src, env.get("PYTHONPATH")]))
        command = [sys.executable, "-c", TRAIN, "--config", name, "--quiet"]
        for key, value in (
            ("training.epochs", args.epochs),
            ("device", args.device),
            ("data.source", source),
            ("data.root", args.data_root),
            ("output.runs_dir", runs_dir),
        ):
            command += ["--set", f"{key}={value}"]
        subprocess.run(command, env=env, check=True, capture_output=True, cwd=REPO)
        (metrics,) = Path(runs_dir).glob("*/metrics.csv")
        rows = list(csv.DictReader(metrics.open()))[1:]  # the first epoch warms up
    return {
        "train_seconds": statistics.median(float(row["train_seconds"]) for row in rows),
        "epoch_seconds": statistics.median(float(row["epoch_seconds"]) for row in rows),
    }


def top_operators(config: Config, steps: int, top: int) -> tuple[list[dict[str, Any]], int, dict]:
    """The profiler's most expensive operators (self time) over `steps` training steps,
    the preset's steps per epoch, and its casts per step: aten::copy_ calls on tensors
    with elements (casts and copies; bf16 weights recast by autocast were most of them),
    and all of them, 0-dim ones included (the optimizer's step counters, cross-entropy's
    constants)."""
    session = build_session(config)
    train = session.splits.train
    steps = min(steps, len(train) // config.training.batch_size)
    count = steps * config.training.batch_size
    subset = Split(train.images[:count], train.labels[:count])
    train_one_epoch(session.state, subset, session.settings)  # warm-up
    activities = [ProfilerActivity.CPU]
    cuda = session.device.type == "cuda"
    if cuda:
        activities.append(ProfilerActivity.CUDA)
    with profile(activities=activities, record_shapes=True) as profiler:
        train_one_epoch(session.state, subset, session.settings)
    copies = [event for event in profiler.events() if event.name == "aten::copy_"]
    casts = {
        "tensor_copies_per_step": sum(bool(e.input_shapes and e.input_shapes[0]) for e in copies)
        / steps,
        "all_copies_per_step": len(copies) / steps,
    }
    events = [event for event in profiler.key_averages() if event.key != "ProfilerStep*"]
    attribute = "self_device_time_total" if cuda else "self_cpu_time_total"
    total = sum(getattr(event, attribute) for event in events) or 1.0
    events.sort(key=lambda event: getattr(event, attribute), reverse=True)
    ops = [
        {
            "op": event.key,
            "share": getattr(event, attribute) / total,
            "ms_per_step": getattr(event, attribute) / 1e3 / steps,
            "calls_per_step": event.count / steps,
        }
        for event in events[:top]
    ]
    return ops, math.ceil(len(train) / config.training.batch_size), casts


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    setup_logging(terminal=False)
    source = str(find_source(args.data_source, REPO))
    device = resolve_device(args.device)
    results: dict[str, Any] = {"machine": describe_machine(device), "presets": {}}
    configs = {name: preset_config(name, args, source) for name in args.presets}
    for name, config in configs.items():
        results["presets"][name] = limits(config, device)
        print(f"{name}: limit measured ({results['presets'][name]['amp']})", file=sys.stderr)
    runs: dict[str, dict[str, list[dict]]] = {name: {"after": [], "before": []} for name in configs}
    for _ in range(args.repeats):
        for name in configs:
            for version, src in (("before", args.before_src), ("after", None)):
                if version == "before" and not src:
                    continue
                runs[name][version].append(timed_run(name, args, source, src))
                epoch = runs[name][version][-1]["epoch_seconds"]
                print(f"  {name} {version}: {epoch:.2f} s/epoch", file=sys.stderr, flush=True)
    for name, config in configs.items():
        row = results["presets"][name]
        row["profile"], row["steps_per_epoch"], casts = top_operators(
            config, args.profile_steps, args.top
        )
        row.update(casts)
        for version, rounds in runs[name].items():
            if rounds:
                train = statistics.median(run["train_seconds"] for run in rounds)
                row[f"{version}_step_ms"] = train / row["steps_per_epoch"] * 1e3
                row[f"{version}_epoch_s"] = statistics.median(r["epoch_seconds"] for r in rounds)
        row["share_of_limit"] = row["bound_ms"] / row["after_step_ms"]
        if "before_epoch_s" in row:
            row["speedup"] = row["before_epoch_s"] / row["after_epoch_s"]
    print_report(results)
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(results, indent=2) + "\n")
    return 0


def print_report(results: dict[str, Any]) -> None:
    machine = results["machine"]
    print(
        f"\nMachine: {machine['gpu'] or machine['cpu']}, torch {machine['torch']}, "
        f"{machine['torch_threads']} threads\n"
    )
    print(
        "| preset | dtype | bound ms/step | measured ms/step | share of the limit "
        "| epoch s | before: ms/step | before: epoch s | speed-up |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for name, row in results["presets"].items():
        before_step = f"{row['before_step_ms']:.2f}" if "before_step_ms" in row else "–"
        before_epoch = f"{row['before_epoch_s']:.2f}" if "before_epoch_s" in row else "–"
        speedup = f"{row['speedup']:.2f}x" if "speedup" in row else "–"
        print(
            f"| {name} | {row['dtype']} | {row['bound_ms']:.2f} | {row['after_step_ms']:.2f} "
            f"| {row['share_of_limit']:.0%} | {row['after_epoch_s']:.2f} | {before_step} "
            f"| {before_epoch} | {speedup} |"
        )
    print()
    for name, row in results["presets"].items():
        print(
            f"{name}: {row['amp']}; matrix products on its shapes: float32 "
            f"{row['float32_gflops']:.0f} GFLOP/s, bf16 {row['bf16_gflops']:.0f} GFLOP/s; "
            f"{row['step_gflop']:.2f} GFLOP per step"
        )
        print(
            f"  casts per step (aten::copy_): {row['tensor_copies_per_step']:.1f} of tensors, "
            f"{row['all_copies_per_step']:.1f} with 0-dim ones"
        )
        print("  top operators (self time per step):")
        for op in row["profile"]:
            print(
                f"    {op['op']:<40} {op['share']:6.1%}  {op['ms_per_step']:6.2f} ms  "
                f"{op['calls_per_step']:5.1f} calls"
            )
    print()


if __name__ == "__main__":
    sys.exit(main())
