"""`mlp-eval`: rebuild a model from its checkpoint alone and evaluate it on a split."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from mlptrain.cli.common import run_command, setup_logging


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mlp-eval",
        description="Evaluate a checkpoint written by mlp-train (no config file needed).",
    )
    parser.add_argument("--checkpoint", required=True, metavar="PATH", help="a best.pt or last.pt")
    parser.add_argument("--split", choices=("test", "val"), default="test")
    parser.add_argument("--data-source", metavar="DIR", help="folder holding the four IDX files")
    parser.add_argument("--data-root", metavar="DIR", help="dataset folder (default: the run's)")
    parser.add_argument("--out", metavar="DIR", help="where to write results (default: beside it)")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    parser.add_argument("--batch-size", type=int, default=1000, metavar="N")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument(
        "--rotate",
        type=float,
        default=0.0,
        metavar="DEG",
        help="also evaluate on images rotated at random by up to DEG degrees",
    )
    parser.add_argument(
        "--shift",
        type=float,
        default=0.0,
        metavar="PX",
        help="also evaluate on images shifted at random by up to PX pixels",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of --rotate/--shift")
    parser.add_argument(
        "--no-verify",
        action="store_true",
        help="accept dataset files whose checksums differ from the published ones",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_command("mlp-eval", lambda: evaluate_checkpoint(args))


def evaluate_checkpoint(args: argparse.Namespace) -> int:
    from mlptrain.checkpoint import load_checkpoint, model_from_checkpoint
    from mlptrain.config import validate
    from mlptrain.datasets import load_splits
    from mlptrain.errors import UsageError
    from mlptrain.metrics import format_report, summarize
    from mlptrain.rundir import write_evaluation
    from mlptrain.runtime import resolve_device
    from mlptrain.trainer import evaluate

    log = setup_logging()
    if args.json:  # stdout carries the JSON object alone
        log.handlers[0].setStream(sys.stderr)
    if args.batch_size < 1:
        raise UsageError(f"--batch-size must be at least 1, got {args.batch_size}")
    if not (0 <= args.rotate <= 180 and 0 <= args.shift <= 14):
        raise UsageError("--rotate takes 0 to 180 degrees and --shift 0 to 14 pixels")
    path = Path(args.checkpoint)
    checkpoint = load_checkpoint(path)
    document = dict(checkpoint["config"])
    data = dict(document.get("data") or {})
    if args.data_source is not None:
        data["source"] = args.data_source
    if args.data_root is not None:
        data["root"] = args.data_root
    if args.no_verify:
        data["verify"] = False
    config = validate({**document, "data": data}, f"config stored in {path}")
    device = resolve_device(args.device)
    splits = load_splits(config.data, config.seed, device)
    split = splits.test if args.split == "test" else splits.val
    if split is None:
        raise UsageError(f"{path} was trained with data.val_fraction 0: there is no val split")
    model = model_from_checkpoint(checkpoint, str(path)).to(device)
    result = evaluate(model, split, args.batch_size)
    summary = summarize(
        result,
        list(checkpoint["class_names"]),
        split=args.split,
        checkpoint=str(path),
        epoch=checkpoint.get("epoch"),
        dataset=config.data.dataset,
    )
    if args.rotate or args.shift:
        summary["perturbed"] = _perturbed(model, split, args)
    out = Path(args.out) if args.out else path.parent
    try:
        out.mkdir(parents=True, exist_ok=True)
        write_evaluation(
            out,
            f"eval_{args.split}_metrics.json",
            f"eval_{args.split}_confusion_matrix.csv",
            summary,
        )
        _write_pictures(out, args.split, split, result, summary, path)
    except OSError as exc:
        raise UsageError(f"cannot write results into {out}: {exc.strerror}") from None
    if args.json:
        print(json.dumps(summary))
    else:
        print(format_report(summary))
        print(
            f"{args.split} accuracy {result.accuracy:.4f}  loss {result.loss:.4f}  "
            f"({result.n:,} images, {path}, epoch {checkpoint.get('epoch')})"
        )
        if "perturbed" in summary:
            perturbed = summary["perturbed"]
            print(
                f"perturbed ({perturbed['description']}): accuracy {perturbed['accuracy']:.4f}  "
                f"loss {perturbed['loss']:.4f}  (clean: {result.accuracy:.4f})"
            )
        print(f"results written to {out}")
    return 0


def _perturbed(model, split, args: argparse.Namespace) -> dict:
    """Accuracy on the split's images rotated and shifted at random (seeded)."""
    import torch

    from mlptrain.augment import RandomAffine
    from mlptrain.config import AugmentConfig
    from mlptrain.datasets import Split
    from mlptrain.trainer import evaluate

    change = RandomAffine(AugmentConfig(rotate=args.rotate, translate=args.shift))
    generator = torch.Generator(device=split.images.device).manual_seed(args.seed)
    perturbed = evaluate(
        model, Split(change(split.images, generator), split.labels), args.batch_size
    )
    parts = [f"rotated up to {args.rotate:g} degrees"] if args.rotate else []
    parts += [f"shifted up to {args.shift:g} pixels"] if args.shift else []
    return {
        "rotate": args.rotate,
        "shift": args.shift,
        "seed": args.seed,
        "description": ", ".join(parts) + f", seed {args.seed}",
        "accuracy": perturbed.accuracy,
        "loss": perturbed.loss,
        "n": perturbed.n,
    }


def _write_pictures(out: Path, name: str, split, result, summary: dict, path: Path) -> None:
    from mlptrain import reports

    names = summary["class_names"]
    title = f"{name} split, {path.name} (epoch {summary.get('epoch')})"
    reports.plot_confusion(
        out / f"eval_{name}_confusion_matrix.png", summary["confusion_matrix"], names, title
    )
    reports.plot_misclassified(
        out / f"eval_{name}_misclassified.png",
        split.images,
        result.labels,
        result.predictions,
        result.confidences,
        names,
    )


if __name__ == "__main__":
    sys.exit(main())
