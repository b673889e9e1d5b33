"""`mlp-predict`: classify image files (any size; PNG, JPEG, ...) or the pixel rows of a
CSV file with a checkpoint or an ONNX export."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from mlptrain.cli.common import (
    add_deprecated_alias,
    add_model_arguments,
    add_version_argument,
    run_command,
)
from mlptrain.errors import EXIT_SOME_FAILED, UsageError

LABEL_COLUMN = "label"  # ignored in a --csv file, so a labelled test file works too


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mlp-predict",
        description="Predict the class of images with a checkpoint written by mlp-train, or "
        "with an ONNX model from mlp-export (onnxruntime; no torch needed).",
    )
    add_model_arguments(parser, onnx="an ONNX file written by mlp-export")
    parser.add_argument("images", nargs="*", metavar="IMAGE", help="image files or folders")
    parser.add_argument(
        "--csv",
        metavar="FILE",
        help="predict every row of a CSV of pixel columns (Kaggle's test.csv), one row per "
        "image; a label column is ignored",
    )
    parser.add_argument(
        "--out", metavar="FILE", help="with --csv: write the predictions here (default: stdout)"
    )
    parser.add_argument(
        "--kaggle",
        action="store_true",
        help="with --csv: write Kaggle's submission format, ImageId,Label",
    )
    parser.add_argument("--top-k", type=int, default=3, metavar="K", help="classes per image")
    parser.add_argument(
        "--jsonl",
        action="store_true",
        help="JSON lines: one JSON object per image, printed as each is predicted",
    )
    # Until this release --json printed JSON lines; --json will mean one JSON document, as
    # in mlp-eval and mlp-compare.
    add_deprecated_alias(parser, "--json", "--jsonl", "jsonl", nargs=0)
    invert = parser.add_mutually_exclusive_group()
    invert.add_argument(
        "--invert",
        dest="invert",
        action="store_const",
        const=True,
        help="the images are dark on light: invert them",
    )
    invert.add_argument(
        "--no-invert",
        dest="invert",
        action="store_const",
        const=False,
        help="use the images as they are (light on dark, like the built-in datasets); the "
        "default for models of your own data. Without either flag, images for a built-in "
        "dataset's model are inverted when their border is light",
    )
    add_version_argument(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_command("mlp-predict", lambda: predict(args))


def predict(args: argparse.Namespace) -> int:
    from mlptrain.deploy.prediction import Predictor, image_paths, load_image, read_failure

    if args.top_k < 1:
        raise UsageError(f"--top-k must be at least 1, got {args.top_k}")
    if bool(args.images) == bool(args.csv):
        raise UsageError("name image files or folders, or one --csv FILE (not both)")
    if (args.out or args.kaggle) and not args.csv:
        raise UsageError("--out and --kaggle go with --csv")
    if args.model is not None:
        from mlptrain.deploy.onnx_model import OnnxModel

        predictor = OnnxModel(args.model)
    else:
        predictor = Predictor(args.checkpoint)
    if args.csv:
        return _predict_csv(predictor, args)
    invert = args.invert if args.invert is not None or predictor.builtin_data else False
    failed = 0
    for path in image_paths(args.images):
        try:
            pixels = load_image(path, invert, predictor.image_size)
        except Exception as exc:  # missing, unreadable, not an image: name it and go on
            print(f"mlp-predict: cannot read {path}: {read_failure(exc)}", file=sys.stderr)
            failed += 1
            continue
        print(_format(str(path), predictor.top(pixels, args.top_k), args.jsonl), flush=True)
    return EXIT_SOME_FAILED if failed else 0


def _predict_csv(predictor: Any, args: argparse.Namespace) -> int:
    from pathlib import Path

    from mlptrain.deploy.prediction import predict_csv
    from mlptrain.util.files import atomic_write_text

    source = Path(args.csv)
    if not source.is_file():
        problem = "is a folder" if source.is_dir() else "does not exist"
        raise UsageError(f"--csv {source} {problem}")
    text = predict_csv(predictor, source, LABEL_COLUMN, args.kaggle)
    if args.out is None:
        sys.stdout.write(text)
        return 0
    target = Path(args.out)
    if not target.parent.is_dir():
        raise UsageError(f"cannot write {target}: the folder {target.parent} does not exist")
    atomic_write_text(target, text)
    print(f"{text.count(chr(10)) - 1} predictions written to {target}", file=sys.stderr)
    return 0


def _format(path: str, top: list[dict[str, Any]], as_json: bool) -> str:
    if as_json:
        return json.dumps({"path": path, "top": top})
    return f"{path}: " + ", ".join(
        f"{entry['class']} ({entry['probability']:.3f})" for entry in top
    )


if __name__ == "__main__":
    sys.exit(main())
