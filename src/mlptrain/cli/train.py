"""`mlp-train`: config -> data -> model -> fit -> test of best.pt -> run folder."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from mlptrain.cli.common import add_config_arguments, run_command, setup_logging
from mlptrain.config import config_to_yaml, load_config


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mlp-train",
        description="Train an MLP on MNIST or Fashion-MNIST from a YAML config.",
        epilog="example: mlp-train --config configs/mnist.yaml --set optimizer.lr=0.01 "
        "--set model.hidden=[256,128] --name lr-test",
    )
    add_config_arguments(parser, "the YAML config")
    parser.add_argument(
        "--no-verify",
        action="store_true",
        help="accept dataset files whose checksums differ from the published ones",
    )
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
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    def body() -> int:
        settings: dict[str, Any] = {}
        if args.name is not None:
            settings["name"] = args.name
        if args.data_source is not None:
            settings["data.source"] = args.data_source
        if args.no_verify:
            settings["data.verify"] = False
        show_bar = not args.quiet and sys.stderr.isatty()
        if args.resume is not None:
            return resume_run(args, settings, show_bar)
        config = load_config(args.config, args.overrides, settings)
        if args.print_config:
            sys.stdout.write(config_to_yaml(config))
            return 0
        # Imported only now, so that --help and config errors never wait for torch.
        from mlptrain.cli.training_run import train

        run_dir = Path(args.run_dir) if args.run_dir else None
        train(config, setup_logging(), show_bar=show_bar, run_dir=run_dir)
        return 0

    return run_command("mlp-train", body)


def resume_run(args: argparse.Namespace, settings: dict[str, Any], show_bar: bool) -> int:
    from mlptrain.errors import UsageError

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
    from mlptrain.cli.training_run import resume

    resume(Path(args.resume), args.overrides, settings, setup_logging(), show_bar=show_bar)
    return 0


if __name__ == "__main__":
    sys.exit(main())
