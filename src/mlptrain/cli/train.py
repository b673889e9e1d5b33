"""`mlp-train`: config -> data -> model -> fit -> test of best.pt -> run folder."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from mlptrain.cli.common import (
    add_config_arguments,
    add_version_argument,
    flag_settings,
    given_flags,
    run_command,
)
from mlptrain.config.files import config_to_yaml, load_config
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
        "--run-dir", metavar="DIR", help="create the run in exactly this new folder"
    )
    parser.add_argument(
        "--seeds",
        metavar="S1,S2,...",
        help="train the config once per seed, all together in one process (stacked "
        "weights): one run folder per seed, in a group folder",
    )
    parser.add_argument(
        "--print-config", action="store_true", help="print the resolved config and exit"
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar, one line per epoch")
    add_version_argument(parser)
    return parser


# What --resume takes besides itself (the --set keys and flag settings are checked against
# SAFE_ON_RESUME when the run's config is read back); every other flag is refused.
RESUME_TAKES = ("--resume", "--set", "--data-source", "--no-verify", "--device", "--quiet",
                "--tensorboard", "--mlflow")  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    return run_command("mlp-train", lambda: train(args, parser))


def train(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    settings = flag_settings(args)
    show_bar = not args.quiet and sys.stderr.isatty()
    if args.resume is not None:
        clashing = given_flags(parser, args, but=RESUME_TAKES)
        if clashing:
            raise UsageError(
                f"--resume continues a run with its own config; {', '.join(clashing)} cannot "
                "be used with it"
            )
        return resume(args, settings, show_bar)
    config = load_config(args.config, args.overrides, settings)
    if args.print_config:
        sys.stdout.write(config_to_yaml(config))
        return 0
    if config.ensemble is not None:
        if args.seeds is not None:
            raise UsageError(
                "--seeds and the config's ensemble both name the models to train; use one"
            )
        return train_ensemble(args, config, show_bar)
    if args.seeds is not None:
        return train_seeds(args, config, show_bar)
    # Imported only now, so that --help and config errors never wait for torch.
    from mlptrain.run.runner import train as run_training
    from mlptrain.util.logs import setup_logging

    setup_logging()
    run_training(config, run_dir=args.run_dir, show_bar=show_bar)
    return 0


def parse_seeds(text: str) -> list[int]:
    try:
        seeds = [int(item) for item in text.split(",") if item.strip()]
    except ValueError:
        seeds = []
    if not seeds or any(seed < 0 for seed in seeds):
        raise UsageError(f"--seeds {text!r}: give seeds as non-negative integers, e.g. 1,2,3")
    return seeds


def train_seeds(args: argparse.Namespace, config, show_bar: bool) -> int:
    from mlptrain.run.runner import seed_configs, train_group
    from mlptrain.util.logs import setup_logging

    configs = seed_configs(config, parse_seeds(args.seeds))
    setup_logging()
    result = train_group(configs, group_dir=args.run_dir, show_bar=show_bar)
    return group_status(result)


def train_ensemble(args: argparse.Namespace, config, show_bar: bool) -> int:
    from mlptrain.run.runner import train_ensemble as run_ensemble
    from mlptrain.util.logs import setup_logging

    setup_logging()
    return group_status(run_ensemble(config, group_dir=args.run_dir, show_bar=show_bar))


def group_status(result) -> int:
    """0 when every model finished; otherwise EXIT_NONFINITE, naming the failed ones."""
    from mlptrain.errors import EXIT_NONFINITE, StopRun

    if result.failed:
        names = ", ".join(str(path) for path in result.failed)
        raise StopRun(
            f"{len(result.failed)} of the group's models stopped on a non-finite loss "
            f"({names}; see their train.log); the others finished",
            EXIT_NONFINITE,
        )
    return 0


def resume(args: argparse.Namespace, settings: dict, show_bar: bool) -> int:
    from mlptrain.run.group import GroupFile
    from mlptrain.run.runner import resume as resume_run
    from mlptrain.run.runner import resume_group
    from mlptrain.util.logs import setup_logging

    setup_logging()
    if GroupFile.training(Path(args.resume)):
        result = resume_group(args.resume, args.overrides, settings, show_bar=show_bar)
        return group_status(result)
    resume_run(args.resume, args.overrides, settings, show_bar=show_bar)
    return 0


if __name__ == "__main__":
    sys.exit(main())
