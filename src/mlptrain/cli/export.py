"""`mlp-export`: a checkpoint as an ONNX model or a torch.export program, checked first."""

from __future__ import annotations

import argparse
import sys

from mlptrain.cli.common import (
    add_data_arguments,
    add_model_arguments,
    add_version_argument,
    flag_settings,
    run_command,
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mlp-export",
        description="Export a checkpoint for deployment. The file takes uint8 pixels "
        "[N, 28, 28] and returns logits; it is written only after it matched the checkpoint "
        "on the test images.",
        epilog="examples:\n"
        "  mlp-export --checkpoint runs/RUN/best.pt --format onnx\n"
        "  mlp-export --checkpoint runs/RUN/best.pt --format pt2 --out model.pt2\n"
        "  mlp-export --ensemble runs/GROUP/seed-*/best.pt --format onnx --out ensemble.onnx",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_model_arguments(parser, ensemble="needs --out")
    parser.add_argument(
        "--format",
        required=True,
        choices=("onnx", "pt2"),
        help="onnx (for onnxruntime and other ONNX runtimes) or pt2 (torch.export)",
    )
    parser.add_argument(
        "--out",
        metavar="FILE",
        help="the file to write (default: the checkpoint's name, .onnx/.pt2)",
    )
    parser.add_argument("--opset", type=int, metavar="N", help="ONNX opset (default: torch's)")
    parser.add_argument(
        "--probabilities", action="store_true", help="output softmax probabilities, not logits"
    )
    parser.add_argument(
        "--check-images",
        type=int,
        metavar="N",
        help="check on the first N test images (default: the whole test split of the run)",
    )
    parser.add_argument(
        "--tolerance",
        type=float,
        default=1e-4,
        metavar="X",
        help="the largest absolute output difference accepted (default 1e-4)",
    )
    add_data_arguments(parser, device=False, data_root=True)
    add_version_argument(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_command("mlp-export", lambda: export(args))


def export(args: argparse.Namespace) -> int:
    from mlptrain.deploy.export import export_checkpoint, export_ensemble
    from mlptrain.util.logs import setup_logging

    setup_logging()
    settings = flag_settings(args)
    exporter = export_ensemble if args.ensemble else export_checkpoint
    result = exporter(
        args.ensemble or args.checkpoint,
        args.format,
        args.out,
        opset=args.opset,
        probabilities=args.probabilities,
        check_images=args.check_images,
        tolerance=args.tolerance,
        settings=settings,
    )
    size = result.path.stat().st_size / 1e6
    print(f"checked: {result.parity.describe()}")
    print(f"wrote {result.path} ({result.format}, {result.metadata['output']}, {size:.1f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
