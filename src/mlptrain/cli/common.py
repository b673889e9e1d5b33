"""What every command shares: the shared flags and their config keys, and turning errors
into one message and an exit status."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from mlptrain.errors import EXIT_INTERRUPTED, EXIT_USAGE, StopRun, UsageError


def add_config_arguments(parser: argparse.ArgumentParser, what: str) -> None:
    """--config, --list-configs, --set, --name: where a run's config comes from."""
    parser.add_argument(
        "--config",
        action="append",
        metavar="FILE|NAME",
        help=f"{what}: a YAML file or a shipped name such as fashion (default: all "
        "defaults); repeatable, later files override earlier ones key by key",
    )
    parser.add_argument(
        "--list-configs",
        action=_PrintAndExit,
        text=_config_listing,
        help="list the shipped config names with their descriptions and exit",
    )
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config key by dotted path; VALUE is YAML (repeatable)",
    )
    parser.add_argument("--name", help="name prefix of the folder (the config's `name`)")
    parser.add_argument(
        "--tensorboard", action="store_true", help="write TensorBoard events (output.tensorboard)"
    )
    parser.add_argument(
        "--mlflow",
        nargs="?",
        const="",
        metavar="URI",
        help="log to MLflow: a tracking server's URI, or without one a local store under "
        "the runs folder (output.mlflow)",
    )
    add_data_arguments(parser)


def add_model_arguments(
    parser: argparse.ArgumentParser, ensemble: str | None = None, onnx: str | None = None
) -> None:
    """What a command that reads a trained model takes, exactly one of: --checkpoint, and
    where the command supports them --ensemble (its note says how) and --model (an ONNX
    file; its help says what the command does with it)."""
    given = parser.add_mutually_exclusive_group(required=True)
    given.add_argument("--checkpoint", metavar="PATH", help="a best.pt or last.pt")
    if ensemble is not None:
        given.add_argument(
            "--ensemble",
            nargs="+",
            metavar="PATH",
            help="several checkpoints of one dataset as one model, the average of their "
            f"probabilities ({ensemble})",
        )
    if onnx is not None:
        given.add_argument("--model", metavar="FILE", help=onnx)


def add_data_arguments(
    parser: argparse.ArgumentParser,
    device_default: str | None = None,
    device: bool = True,
    data_root: bool = False,
) -> None:
    """--data-source, --no-verify, --device (and --data-root for commands that read a
    checkpoint's run): where the data is and what runs it."""
    parser.add_argument(
        "--data-source", metavar="DIR", help="folder holding the four IDX files (offline import)"
    )
    parser.add_argument(
        "--no-verify",
        action="store_true",
        help="accept dataset files whose checksums differ from the published ones",
    )
    if data_root:
        parser.add_argument(
            "--data-root", metavar="DIR", help="dataset folder (default: the run's)"
        )
    if not device:
        return
    fallback = f"default {device_default}" if device_default else "default: the config's"
    parser.add_argument(
        "--device", default=device_default, help=f"auto | cpu | cuda | cuda:N ({fallback})"
    )


def given_flags(
    parser: argparse.ArgumentParser, args: argparse.Namespace, but: Iterable[str] = ()
) -> list[str]:
    """The flags given on the command line (set to other than their defaults), but those
    in `but`: what `--resume` refuses is every flag it does not take, derived here."""
    given = []
    for action in parser._actions:
        if not action.option_strings or action.option_strings[0] in but:
            continue
        value = getattr(args, action.dest, action.default)
        if value not in (None, False, []) and value != action.default:
            given.append(action.option_strings[0])
    return given


def add_deprecated_alias(
    parser: argparse.ArgumentParser, old: str, new: str, dest: str, **kwargs: Any
) -> None:
    """`old` keeps working as `new` (same `dest`; `kwargs` such as type and metavar as for
    `new`, nargs=0 for a switch) for one release, with a warning naming `new` each time
    it is used."""
    parser.add_argument(
        old,
        dest=dest,
        action=_DeprecatedAlias,
        new=new,
        default=argparse.SUPPRESS,
        help=f"deprecated spelling of {new}; removed in the next release",
        **kwargs,
    )


class _DeprecatedAlias(argparse.Action):
    def __init__(self, option_strings: list[str], dest: str, new: str, **kwargs: Any) -> None:
        super().__init__(option_strings, dest, **kwargs)
        self.new = new

    def __call__(self, parser, namespace, values, option_string=None):
        print(
            f"{parser.prog}: warning: {option_string} is deprecated and will be removed in the "
            f"next release; use {self.new}",
            file=sys.stderr,
        )
        setattr(namespace, self.dest, True if self.nargs == 0 else values)


class _PrintAndExit(argparse.Action):
    """A flag that prints a text computed only when it is given (like --version)."""

    def __init__(self, option_strings: list[str], dest: str, text: Callable[[], str], help: str):
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, help=help)
        self.text = text

    def __call__(self, parser, namespace, values, option_string=None):
        sys.stdout.write(self.text())
        parser.exit()


def _config_listing() -> str:
    from mlptrain.config.presets import listing

    return listing()


def add_version_argument(parser: argparse.ArgumentParser) -> None:
    """--version: mlptrain's version, torch's, and the device `auto` would use."""
    parser.add_argument(
        "--version",
        action=_PrintAndExit,
        text=version_text,
        help="print the versions of mlptrain and torch and the device it would use, and exit",
    )


def version_text() -> str:
    import platform

    import torch

    from mlptrain import __version__
    from mlptrain.training.runtime import resolve_device

    return (
        f"mlptrain {__version__} (torch {torch.__version__}, Python "
        f"{platform.python_version()}, device {resolve_device('auto')})\n"
    )


def flag_settings(args: argparse.Namespace, absolute_source: bool = False) -> dict[str, Any]:
    """The shared flags as dotted config keys and values (only the flags given).

    `absolute_source`: the data source as an absolute path, for configs that other
    processes in other folders read (a sweep's trials)."""
    settings: dict[str, Any] = {}
    if getattr(args, "name", None) is not None:
        settings["name"] = args.name
    if getattr(args, "tensorboard", False):
        settings["output.tensorboard"] = True
    if getattr(args, "mlflow", None) is not None:
        settings["output.mlflow.tracking_uri"] = args.mlflow or None
    if args.data_source is not None:
        source = Path(args.data_source)
        settings["data.source"] = str(source.resolve() if absolute_source else source)
    if args.no_verify:
        settings["data.verify"] = False
    if getattr(args, "data_root", None) is not None:
        settings["data.root"] = args.data_root
    if getattr(args, "device", None) is not None:
        settings["device"] = args.device
    return settings


def run_command(prog: str, body: Callable[[], int]) -> int:
    """Run a command body; user errors become one message and exit status 2."""
    try:
        return body()
    except UsageError as exc:
        sys.stdout.flush()
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except StopRun as exc:
        sys.stdout.flush()
        print(f"{prog}: {exc}", file=sys.stderr)
        return exc.status
    except KeyboardInterrupt:
        sys.stdout.flush()
        print(f"{prog}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
