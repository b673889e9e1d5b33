"""`mlp-eval`: rebuild a model from its checkpoint alone and evaluate it on a split."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from mlptrain.cli.common import (
    add_data_arguments,
    add_deprecated_alias,
    add_model_arguments,
    add_version_argument,
    flag_settings,
    run_command,
)
from mlptrain.config.schema import TTA_MODES


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mlp-eval",
        description="Evaluate a checkpoint written by mlp-train (no config file needed).",
    )
    add_model_arguments(
        parser,
        ensemble="test split; results beside their run folders",
        onnx="an ONNX file from mlp-export, run by onnxruntime without torch (test split only)",
    )
    parser.add_argument("--split", choices=("test", "val"), default="test")
    add_data_arguments(parser, device_default="auto", data_root=True)
    parser.add_argument(
        "--out-dir", metavar="DIR", help="the folder to write results into (default: beside it)"
    )
    add_deprecated_alias(parser, "--out", "--out-dir", "out_dir", metavar="DIR")
    parser.add_argument("--batch-size", type=int, default=1000, metavar="N")
    parser.add_argument("--json", action="store_true", help="print one JSON document on stdout")
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
    parser.add_argument(
        "--perturb-seed", type=int, default=0, metavar="N", help="seed of --rotate/--shift"
    )
    add_deprecated_alias(parser, "--seed", "--perturb-seed", "perturb_seed", type=int, metavar="N")
    parser.add_argument(
        "--tta",
        choices=TTA_MODES,
        default="none",
        help="test-time augmentation: average the probabilities over each image and its "
        "mirror (hflip) or its one-pixel shifts (shift)",
    )
    add_version_argument(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_command("mlp-eval", lambda: evaluate(args))


def evaluate(args: argparse.Namespace) -> int:
    if args.model is not None:
        return evaluate_exported(args)
    from mlptrain.errors import UsageError
    from mlptrain.evaluation.evaluator import (
        OutputNames,
        check_perturbation,
        evaluate_checkpoint,
        evaluate_ensemble,
        perturbed,
        write_outputs,
    )
    from mlptrain.util.logs import setup_logging

    setup_logging(sys.stderr if args.json else None)  # with --json, stdout holds the JSON alone
    check_perturbation(args.rotate, args.shift)  # before any data is read
    settings = flag_settings(args)
    if args.ensemble:
        if args.split != "test":
            raise UsageError(
                "an ensemble is evaluated on the test split only: each run's validation "
                "split depends on its own seed"
            )
        paths = [Path(path) for path in args.ensemble]
        evaluation, model = evaluate_ensemble(paths, settings, args.batch_size, args.tta)
        default_out = Path(os.path.commonpath([path.resolve().parent.parent for path in paths]))
        names, title = (
            OutputNames.of_eval("test", "ensemble_"),
            f"test split, ensemble of {len(paths)}",
        )
        shown = f"ensemble of {len(paths)}"
    else:
        path = Path(args.checkpoint)
        evaluation, model = evaluate_checkpoint(
            path, args.split, settings, args.batch_size, args.tta
        )
        default_out, names = path.parent, OutputNames.of_eval(args.split)
        title = f"{args.split} split, {path.name} (epoch {evaluation.summary.get('epoch')})"
        shown = f"{path}, epoch {evaluation.summary.get('epoch')}"
    summary = evaluation.summary
    if args.rotate or args.shift:
        summary["perturbed"] = perturbed(
            model, evaluation.split, args.batch_size, args.rotate, args.shift, args.perturb_seed
        )
    out = Path(args.out_dir) if args.out_dir else default_out
    try:
        out.mkdir(parents=True, exist_ok=True)
        write_outputs(out, names, evaluation, title)
    except OSError as exc:
        raise UsageError(f"cannot write results into {out}: {exc.strerror}") from None
    if args.json:
        print(json.dumps(summary))
    else:
        print_summary(summary, shown, out)
    return 0


def evaluate_exported(args: argparse.Namespace) -> int:
    """An exported ONNX model on its dataset's test split, with numpy and onnxruntime only."""
    from mlptrain.deploy.onnx_model import OnnxModel, evaluate_onnx
    from mlptrain.errors import UsageError
    from mlptrain.util.logs import setup_logging

    setup_logging(sys.stderr if args.json else None)
    unsupported = [
        flag
        for flag, given in (
            ("--split val", args.split != "test"),
            ("--rotate", args.rotate),
            ("--shift", args.shift),
            ("--out-dir", args.out_dir),
            ("--tta", args.tta != "none"),
        )
        if given
    ]
    if unsupported:
        raise UsageError(
            f"{', '.join(unsupported)} need the checkpoint (--checkpoint): an exported model "
            "is evaluated on the test split only, and its results are printed, not written"
        )
    model = OnnxModel(args.model)
    summary = evaluate_onnx(
        model, args.data_root or "data", args.data_source, not args.no_verify, args.batch_size
    )
    if args.json:
        print(json.dumps(summary))
        return 0
    from mlptrain.artifacts.metrics import format_report

    print(format_report(summary))
    print(
        f"test accuracy {summary['accuracy']:.4f}  loss {summary['loss']:.4f}  "
        f"({summary['n']:,} images, {args.model}, onnxruntime)"
    )
    return 0


def print_summary(summary: dict, shown: str, out: Path) -> None:
    from mlptrain.artifacts.metrics import format_report

    print(format_report(summary))
    print(
        f"{summary['split']} accuracy {summary['accuracy']:.4f}  loss {summary['loss']:.4f}  "
        f"({summary['n']:,} images, {shown})"
    )
    for member in summary.get("members", []):
        print(f"  member {member['checkpoint']}: accuracy {member['accuracy']:.4f}")
    if "tta" in summary:
        print(f"test-time augmentation {summary['tta']['mode']}: {summary['tta']['variants']}")
    if "perturbed" in summary:
        perturbed = summary["perturbed"]
        print(
            f"perturbed ({perturbed['description']}): accuracy {perturbed['accuracy']:.4f}  "
            f"loss {perturbed['loss']:.4f}  (clean: {summary['accuracy']:.4f})"
        )
    print(f"results written to {out}")


if __name__ == "__main__":
    sys.exit(main())
