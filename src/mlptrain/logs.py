"""Logging: plain messages on the terminal, and a file that a run (or a sweep) fills.

Everything a run logs goes to the "mlptrain" logger. Messages logged before the run's
folder exists (the data import, say) are buffered, so that train.log misses nothing.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import TextIO

LOGGER = "mlptrain"


def get_logger() -> logging.Logger:
    return logging.getLogger(LOGGER)


def setup_logging(stream: TextIO | None = None, terminal: bool = True) -> logging.Logger:
    """Plain messages on `stream` (default: stdout); `terminal=False` shows nothing."""
    logger = get_logger()
    for handler in list(logger.handlers):
        if isinstance(handler, _Terminal):
            logger.removeHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    if terminal:
        handler = _Terminal(stream or sys.stdout)
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)
    return logger


class _Terminal(logging.StreamHandler):
    """The terminal handler, told apart from file handlers by its type."""


class _Buffer(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


class LogFile:
    """Within `with LogFile() as log_file:`, what is logged is kept until
    `log_file.open(path)`, then written there with everything after it; on leaving,
    the file is closed and the logger is as it was."""

    def __init__(self) -> None:
        self.logger = get_logger()
        self._buffer = _Buffer()
        self._file: logging.FileHandler | None = None

    def __enter__(self) -> LogFile:
        if self.logger.level == logging.NOTSET:
            self.logger.setLevel(logging.INFO)
        self.logger.addHandler(self._buffer)
        return self

    def open(self, path: Path) -> None:
        """Write the buffered messages, and every later one, to `path` (appended)."""
        self._file = logging.FileHandler(path, encoding="utf-8")
        self._file.setFormatter(logging.Formatter("%(message)s"))
        self.logger.removeHandler(self._buffer)
        for record in self._buffer.records:
            self._file.handle(record)
        self._buffer.records.clear()
        self.logger.addHandler(self._file)

    def __exit__(self, *exc: object) -> None:
        self.logger.removeHandler(self._buffer)
        if self._file is not None:
            self.logger.removeHandler(self._file)
            self._file.close()
