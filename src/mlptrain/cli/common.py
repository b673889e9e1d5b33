"""What every command shares: logging to the terminal (and a run's log), exit codes."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable
from pathlib import Path

from mlptrain.errors import StopRun, UsageError

EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


class _Buffer(logging.Handler):
    """Keeps records until the run's log file exists, so train.log misses nothing."""

    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def setup_logging() -> logging.Logger:
    """Plain messages on stdout, buffered for a log file that `log_to_file` opens later."""
    logger = logging.getLogger("mlptrain")
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
        handler.close()
    logger.setLevel(logging.INFO)
    logger.propagate = False
    terminal = logging.StreamHandler(sys.stdout)
    terminal.setFormatter(logging.Formatter("%(message)s"))
    logger.addHandler(terminal)
    logger.addHandler(_Buffer())
    return logger


def log_to_file(logger: logging.Logger, path: Path) -> None:
    """Send everything logged so far, and from now on, to `path` as well."""
    file_handler = logging.FileHandler(path, encoding="utf-8")
    file_handler.setFormatter(logging.Formatter("%(message)s"))
    for handler in list(logger.handlers):
        if isinstance(handler, _Buffer):
            logger.removeHandler(handler)
            for record in handler.records:
                file_handler.handle(record)
    logger.addHandler(file_handler)


def add_config_arguments(parser: argparse.ArgumentParser, what: str) -> None:
    """--config, --set, --name, --data-source: where a run's config comes from."""
    parser.add_argument("--config", metavar="FILE", help=f"{what} (default: all defaults)")
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
        "--data-source", metavar="DIR", help="folder holding the four IDX files (offline import)"
    )


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
