"""Side-by-side speed benchmark: the tutorial pipeline, the bare floor, and mlptrain.

One process, one machine; the same model, optimizer, batch size, epochs and seed:
  reference  torchvision dataset + ToTensor/Normalize + DataLoader(shuffle=True), the
             usual zero_grad/forward/loss/backward/step loop (what tutorials do);
  floor      the same model and optimizer on resident float tensors with
             index-permutation batches and nothing else: the cost of the arithmetic
             (floor_fused: the same with the fused Adam kernel mlptrain uses);
  mlptrain   the product's trainer as `mlp-train` runs it: validation, metrics,
             checkpoints, logging and the final test of best.pt included.

    python scripts/benchmark.py                      # MNIST, [128, 64], Adam 1e-3, batch 64
    python scripts/benchmark.py --quick --json-out bench.json
    python scripts/benchmark.py --scaling            # the subset-size and width tables
    python scripts/benchmark.py --stack              # many models at once (benchmark_stack.py)

The data comes from --data-source, $MLPTRAIN_DATA_SOURCE or ../shared/datasets.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from measuring import measure, median_round, startup_seconds, synchronize
from mlptrain.config.schema import validate
from mlptrain.data.registry import find_source
from mlptrain.data.splits import DATASETS, load_splits
from mlptrain.model.mlp import MLP, ModelSpec
from mlptrain.run.runner import train
from mlptrain.training.loop import evaluate
from mlptrain.training.runtime import describe_machine, resolve_device
from mlptrain.util.logs import setup_logging

REPO = Path(__file__).resolve().parents[1]
QUICK_TRAIN, QUICK_TEST = 6000, 1000


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", default="mnist", choices=sorted(DATASETS))
    parser.add_argument("--hidden", type=int, nargs="*", default=[128, 64])
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--device", default="cpu", help="cpu | cuda | auto")
    parser.add_argument("--repeats", type=int, default=1, help="report the median of N runs")
    parser.add_argument(
        "--amp",
        default="none",
        help="mlptrain's training.amp: none, bf16 or auto",
    )
    parser.add_argument("--compile", action="store_true", help="mlptrain's training.compile")
    parser.add_argument(
        "--augment",
        type=float,
        nargs=2,
        metavar=("PX", "DEG"),
        help="mlptrain with augment.translate PX and augment.rotate DEG (its cost), and "
        "the cost per batch of each augmentation alone (affine, elastic, erase, mixup, "
        "cutmix)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data-source", default=None)
    parser.add_argument("--data-root", default=str(REPO / "data"))
    parser.add_argument(
        "--only",
        nargs="*",
        choices=("reference", "floor", "floor_fused", "mlptrain", "mlptrain_tracked"),
    )
    parser.add_argument("--quick", action="store_true", help=f"{QUICK_TRAIN:,} images, 1 epoch")
    parser.add_argument("--scaling", action="store_true", help="time mlptrain over sizes/widths")
    parser.add_argument("--json-out", default=None)
    parser.add_argument(
        "--stack",
        action="store_true",
        help="trials per hour of K models trained together against separate runs "
        "(scripts/benchmark_stack.py, which takes the other arguments)",
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.epochs = 1
    return args


# --- measuring -----------------------------------------------------------------------------


def tutorial_model(hidden: list[int]) -> nn.Module:
    layers: list[nn.Module] = [nn.Flatten()]
    width = 28 * 28
    for size in hidden:
        layers += [nn.Linear(width, size), nn.ReLU()]
        width = size
    return nn.Sequential(*layers, nn.Linear(width, 10))


# --- the three contestants --------------------------------------------------------------


def run_reference(args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    """The common tutorial: per-sample PIL transforms through a DataLoader."""
    from torch.utils.data import DataLoader, Subset
    from torchvision import datasets, transforms

    folder = DATASETS[args.dataset].folder
    normalize = transforms.Normalize((0.1307,), (0.3081,))
    transform = transforms.Compose([transforms.ToTensor(), normalize])
    train_set = getattr(datasets, folder)(args.data_root, train=True, transform=transform)
    test_set = getattr(datasets, folder)(args.data_root, train=False, transform=transform)
    if args.quick:
        train_set = Subset(train_set, range(QUICK_TRAIN))
        test_set = Subset(test_set, range(QUICK_TEST))
    torch.manual_seed(args.seed)
    loader = DataLoader(train_set, batch_size=args.batch_size, shuffle=True)
    model = tutorial_model(args.hidden).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
    epoch_seconds = []
    for _ in range(args.epochs):
        start = time.perf_counter()
        model.train()
        for images, labels in loader:
            images, labels = images.to(device), labels.to(device)
            optimizer.zero_grad()
            loss = F.cross_entropy(model(images), labels)
            loss.backward()
            optimizer.step()
        synchronize(device)
        epoch_seconds.append(time.perf_counter() - start)
    start = time.perf_counter()
    correct = 0
    model.eval()
    with torch.no_grad():
        for images, labels in DataLoader(test_set, batch_size=1000):
            predicted = model(images.to(device)).argmax(dim=1)
            correct += (predicted == labels.to(device)).sum().item()
    eval_seconds = time.perf_counter() - start
    return result(epoch_seconds, len(train_set), correct / len(test_set), eval_seconds)


def run_floor(
    args: argparse.Namespace, device: torch.device, splits, **optimizer_options: Any
) -> dict[str, Any]:
    """The bare minimum on resident, already normalized tensors."""
    images = ((splits.train.images.float() / 255 - 0.1307) / 0.3081).flatten(1)
    labels = splits.train.labels
    torch.manual_seed(args.seed)
    model = tutorial_model(args.hidden).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr, **optimizer_options)
    generator = torch.Generator().manual_seed(args.seed)
    epoch_seconds = []
    for _ in range(args.epochs):
        synchronize(device)
        start = time.perf_counter()
        order = torch.randperm(len(labels), generator=generator).to(device)
        for begin in range(0, len(labels), args.batch_size):
            index = order[begin : begin + args.batch_size]
            optimizer.zero_grad()
            loss = F.cross_entropy(model(images[index]), labels[index])
            loss.backward()
            optimizer.step()
        synchronize(device)
        epoch_seconds.append(time.perf_counter() - start)
    with torch.no_grad():
        test = ((splits.test.images.float() / 255 - 0.1307) / 0.3081).flatten(1)
        accuracy = (model(test).argmax(dim=1) == splits.test.labels).float().mean().item()
    return result(epoch_seconds, len(labels), accuracy, None)


def mlptrain_config(args: argparse.Namespace, runs_dir: str, tracked: bool = False, **data: Any):
    """The benchmark's config; `tracked`: with TensorBoard and MLflow (local store) on."""
    tracking = {"tensorboard": True, "mlflow": {}} if tracked else {}
    subset = {"train": QUICK_TRAIN, "test": QUICK_TEST} if args.quick else None
    return validate(
        {
            "name": "benchmark",
            "seed": args.seed,
            "device": args.device,
            "data": {"dataset": args.dataset, "root": args.data_root, "subset": subset, **data},
            "model": {"hidden": args.hidden},
            "augment": dict(zip(("translate", "rotate"), args.augment or (0, 0), strict=True)),
            "optimizer": {"name": "adam", "lr": args.lr},
            "training": {
                "epochs": args.epochs,
                "batch_size": args.batch_size,
                "amp": args.amp,
                "compile": args.compile,
            },
            "output": {"runs_dir": runs_dir, **tracking},
        }
    )


def run_mlptrain(
    args: argparse.Namespace, device: torch.device, splits, tracked: bool = False, **data: Any
) -> dict:
    """The product's own trainer, as mlp-train runs it (quiet: no progress bar)."""
    with tempfile.TemporaryDirectory() as runs_dir:
        config = mlptrain_config(args, runs_dir, tracked, **data)
        setup_logging(terminal=False)
        outcome = train(config)
    # Evaluation time does not depend on the weights: time it on a fresh model.
    model = MLP(ModelSpec(hidden=tuple(args.hidden))).to(device)
    evaluate(model, splits.test, 1000)  # warm-up
    start = time.perf_counter()
    evaluate(model, splits.test, 1000)
    eval_seconds = time.perf_counter() - start
    per_epoch = [outcome.fit_seconds / args.epochs] * args.epochs
    return result(per_epoch, outcome.train_samples, outcome.test_accuracy, eval_seconds)


def tracking_epoch_cost(args: argparse.Namespace, epochs: int = 20) -> float:
    """Seconds that TensorBoard and MLflow (local store) add at the end of each epoch,
    timed directly (median of `epochs` epoch ends): a per-epoch cost too small to see in
    whole-epoch timings on a shared machine."""
    from mlptrain.tracking.trackers import open_trackers

    record = {
        "epoch": 1,
        "train_loss": 0.3,
        "train_accuracy": 0.9,
        "val_loss": 0.3,
        "val_accuracy": 0.9,
        "lr": 1e-3,
        "samples_per_second": 40000.0,
    }
    with tempfile.TemporaryDirectory() as runs_dir:
        config = mlptrain_config(args, runs_dir, tracked=True)
        run = Path(runs_dir) / "run"
        run.mkdir()
        trackers = open_trackers(config, run, 0)
        times = []
        for epoch in range(1, epochs + 1):
            start = time.perf_counter()
            trackers.epoch_end({**record, "epoch": epoch}, is_best=False)
            times.append(time.perf_counter() - start)
        trackers.abort("interrupted")
    return statistics.median(times)


def result(epoch_seconds: list[float], samples: int, accuracy: float, eval_seconds) -> dict:
    seconds = statistics.median(epoch_seconds)
    return {
        "seconds_per_epoch": seconds,
        "train_samples": samples,
        "samples_per_second": samples / seconds,
        "test_accuracy": accuracy,
        "eval_seconds": eval_seconds,
    }


# Each augmentation alone, as a preset would set it (augment keys).
AUGMENTATIONS = {
    "affine (translate 2, rotate 10, scale 0.1)": {"translate": 2, "rotate": 10, "scale": 0.1},
    "elastic (15 px, sigma 4)": {"elastic": 15},
    "hflip": {"hflip": True},
    "erase (p 0.5)": {"erase": {"probability": 0.5}},
    "mixup (alpha 0.2)": {"mixup": {"alpha": 0.2}},
    "cutmix (alpha 1)": {"cutmix": {"alpha": 1.0}},
    "mixup + cutmix": {"mixup": {"alpha": 0.2}, "cutmix": {"alpha": 1.0}},
}


def augment_costs(
    images: torch.Tensor, labels: torch.Tensor, batch_size: int, device: torch.device
) -> dict[str, float]:
    """Milliseconds per training batch of each augmentation alone, as the loop runs it
    (uint8 batch in, floats and, for mixing, soft targets out): median of 50 batches."""
    from mlptrain.config.training_schema import AugmentConfig
    from mlptrain.training.augment import build_augment
    from mlptrain.training.mixing import Mixer

    batch, targets = images[:batch_size].to(device), labels[:batch_size].to(device)
    costs = {}
    for name, keys in AUGMENTATIONS.items():
        config = AugmentConfig(**keys)
        change = build_augment(config)
        mix = Mixer(config.mixup, config.cutmix, 10) if config.mixes else None

        def step(change=change, mix=mix):
            pixels = change(batch) if change is not None else batch
            if mix is not None:
                mix(pixels, targets)

        times = []
        for _ in range(60):
            start = time.perf_counter()
            step()
            synchronize(device)
            times.append(time.perf_counter() - start)
        costs[name] = statistics.median(times[10:]) * 1e3
    return costs


# --- reporting ------------------------------------------------------------------------------


def print_table(rows: dict[str, dict[str, Any]], memory_label: str) -> None:
    print(
        f"{'':16} {'s/epoch':>8} {'samples/s':>11} {'test acc':>9} {'eval s':>7} {memory_label:>12}"
    )
    for name, row in rows.items():
        eval_seconds = f"{row['eval_seconds']:.3f}" if row["eval_seconds"] is not None else "-"
        print(
            f"{name:16} {row['seconds_per_epoch']:8.2f} {row['samples_per_second']:11,.0f} "
            f"{row['test_accuracy']:9.4f} {eval_seconds:>7} {row['peak_memory_mib']:12,.0f}"
        )


def ratios(runs: dict[str, list[dict[str, Any]]]) -> dict[str, float]:
    """Medians of the ratios within each round (paired, so machine noise mostly cancels)."""

    def paired(numerator: str, denominator: str, key: str) -> float:
        pairs = zip(runs[numerator], runs[denominator], strict=True)
        return statistics.median(top[key] / bottom[key] for top, bottom in pairs)

    found = {}
    if {"reference", "mlptrain"} <= set(runs):
        found["mlptrain_vs_reference_samples_per_second"] = paired(
            "mlptrain", "reference", "samples_per_second"
        )
    if {"floor", "mlptrain"} <= set(runs):
        found["mlptrain_vs_floor_seconds_per_epoch"] = paired(
            "mlptrain", "floor", "seconds_per_epoch"
        )
    if {"floor_fused", "mlptrain"} <= set(runs):
        found["mlptrain_vs_fused_floor_seconds_per_epoch"] = paired(
            "mlptrain", "floor_fused", "seconds_per_epoch"
        )
    if {"mlptrain_tracked", "mlptrain"} <= set(runs):
        found["tracked_vs_untracked_seconds_per_epoch"] = paired(
            "mlptrain_tracked", "mlptrain", "seconds_per_epoch"
        )
    return found


def scaling(args: argparse.Namespace, device: torch.device, source: str | None) -> dict:
    """mlptrain's seconds per epoch over training-set sizes and hidden widths."""
    table: dict[str, list[dict[str, Any]]] = {"subset": [], "width": []}
    base = argparse.Namespace(**{**vars(args), "quick": False})
    for size in (6000, 30000, 60000):
        # subset.train counts images before the 10% validation carve-out.
        data = {"source": source, "subset": {"train": size}}
        splits = load_splits(mlptrain_config(base, "unused", **data).data, args.seed, device)
        row = run_mlptrain(base, device, splits, **data)
        table["subset"].append({"train_images": size, **row})
    for width in (128, 512, 2048):
        wide = argparse.Namespace(**{**vars(base), "hidden": [width]})
        splits = load_splits(mlptrain_config(wide, "unused", source=source).data, args.seed, device)
        row = run_mlptrain(wide, device, splits, source=source)
        table["width"].append({"hidden": [width], **row})
    for key, label in (("subset", "train_images"), ("width", "hidden")):
        for row in table[key]:
            print(f"{label} {row[label]!s:>8}: {row['seconds_per_epoch']:6.2f} s/epoch")
    return table


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if "--stack" in argv:
        import benchmark_stack

        return benchmark_stack.main([item for item in argv if item != "--stack"])
    args = parse_args(argv)
    device = resolve_device(args.device)
    source = find_source(args.data_source, beside=REPO)
    splits = load_splits(mlptrain_config(args, "unused", source=source).data, args.seed, device)
    machine = describe_machine(device)
    print(f"benchmark: {vars(args)}", file=sys.stderr)
    contestants = {
        "reference": lambda: run_reference(args, device),
        "floor": lambda: run_floor(args, device, splits),
        # mlptrain uses the fused Adam kernel: this floor shows its bookkeeping cost alone.
        "floor_fused": lambda: run_floor(args, device, splits, fused=True),
        "mlptrain": lambda: run_mlptrain(args, device, splits, source=source),
        # TensorBoard and MLflow on: what tracking costs per epoch.
        "mlptrain_tracked": lambda: run_mlptrain(args, device, splits, True, source=source),
    }
    if args.only:
        contestants = {name: body for name, body in contestants.items() if name in args.only}
    runs = measure(contestants, args.repeats, device)
    rows = {name: median_round(rounds) for name, rounds in runs.items()}
    memory_label = "peak GPU MiB" if device.type == "cuda" else "peak RSS MiB"
    print(f"machine: {machine['cpu']}, {machine['cpu_count']} cores, {machine['device']}")
    print_table(rows, memory_label)
    found = ratios(runs)
    for name, value in found.items():
        print(f"{name}: {value:.2f}")
    if "mlptrain_tracked" in rows:
        cost = tracking_epoch_cost(args)
        share = cost / rows["mlptrain"]["seconds_per_epoch"] if "mlptrain" in rows else None
        found["tracking_seconds_per_epoch"] = cost
        print(
            f"tracking (TensorBoard + MLflow) per epoch end: {cost * 1e3:.1f} ms"
            + (f" = {share:.1%} of an epoch" if share is not None else "")
        )
    if args.augment:
        found["augment_ms_per_batch"] = costs = augment_costs(
            splits.train.images, splits.train.labels, args.batch_size, device
        )
        print(f"augmentation alone, per batch of {args.batch_size}:")
        for name, cost in costs.items():
            print(f"  {name}: {cost:.2f} ms")
    startup = startup_seconds()
    print(f"startup: --help {startup['help']:.2f} s, config error {startup['config_error']:.2f} s")
    report = {
        "settings": vars(args),
        "machine": machine,
        "results": rows,
        "rounds": runs,
        "ratios": found,
        "startup": startup,
    }
    if args.scaling:
        report["scaling"] = scaling(args, device, source)
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
