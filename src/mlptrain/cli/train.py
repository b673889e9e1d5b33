"""`mlp-train`: config -> data -> model -> fit -> test of best.pt -> run folder."""

from __future__ import annotations

import argparse
import sys

from mlptrain.cli.common import (
    add_config_arguments,
    add_version_argument,
    flag_settings,
    run_command,
)
from mlptrain.config import config_to_yaml, load_config
from mlptrain.errors import UsageError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mlp-train",
        description="Train an MLP on MNIST or Fashion-MNIST from a YAML config.",
        epilog="example: mlp-train --config configs/mnist.yaml --set optimizer.lr=0.01 "
        "--set model.hidden=[256,128] --name lr-test",
    )
    add_config_arguments(parser, "the YAML config")
    parser.add_argument(
        "--resume",
        metavar="RUN",
        help="continue the run in folder RUN from its last.pt (only safe --set keys allowed)",
    )
    parser.add_argument(
        "--run-dir", metavar="DIR", help="create the run in exactly this new folder (sweeps use it)"
    )
    parser.add_argument(
        "--print-config", action="store_true", help="print the resolved config and exit"
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar, one line per epoch")
    add_version_argument(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_command("mlp-train", lambda: train(args))


def train(args: argparse.Namespace) -> int:
    settings = flag_settings(args)
    show_bar = not args.quiet and sys.stderr.isatty()
    if args.resume is not None:
        return resume(args, settings, show_bar)
    config = load_config(args.config, args.overrides, settings)
    if args.print_config:
        sys.stdout.write(config_to_yaml(config))
        return 0
    # Imported only now, so that --help and config errors never wait for torch.
    from mlptrain.logs import setup_logging
    from mlptrain.run.runner import train as run_training

    setup_logging()
    run_training(config, run_dir=args.run_dir, show_bar=show_bar)
    return 0


def resume(args: argparse.Namespace, settings: dict, show_bar: bool) -> int:
    flags = {
        "--config": args.config,
        "--name": args.name,
        "--print-config": args.print_config,
        "--run-dir": args.run_dir,
    }
    clashing = [flag for flag, given in flags.items() if given]
    if clashing:
        raise UsageError(
            f"--resume continues a run with its own config; {', '.join(clashing)} cannot be "
            "used with it"
        )
    from mlptrain.logs import setup_logging
    from mlptrain.run.runner import resume as resume_run

    setup_logging()
    resume_run(args.resume, args.overrides, settings, show_bar=show_bar)
    return 0


if __name__ == "__main__":
    sys.exit(main())
