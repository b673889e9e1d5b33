"""Logging: plain messages on the terminal, and a file that a run (or a sweep) fills.

Everything a run logs goes to the "mlptrain" logger. Messages logged before the run's
folder exists (the data import, say) are buffered, so that train.log misses nothing.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TextIO

LOGGER = "mlptrain"
# The member of a group of models trained together that what is logged now is about
# (None: the whole group, or a single run).
_member: contextvars.ContextVar[str | None] = contextvars.ContextVar("member", default=None)


@contextlib.contextmanager
def member_scope(name: str | None) -> Iterator[None]:
    """Within it, messages go to that member's own log file only, and on the terminal
    carry its name (None: a single run's, or the whole group's)."""
    token = _member.set(name)
    try:
        yield
    finally:
        _member.reset(token)


class _MemberFilter(logging.Filter):
    """A member's file takes the group's messages and its own."""

    def __init__(self, member: str) -> None:
        super().__init__()
        self.member = member

    def filter(self, record: logging.LogRecord) -> bool:
        scope = getattr(record, "member", None)
        return scope is None or scope == self.member


class _ScopeStamp(logging.Filter):
    """Stamps each record with the member scope it was logged in."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.member = _member.get()
        return True


class _Prefixed(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        member = getattr(record, "member", None)
        return f"[{member}] {text}" if member else text


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
    _stamp_scopes(logger)
    if terminal:
        handler = _Terminal(stream or sys.stdout)
        handler.setFormatter(_Prefixed("%(message)s"))
        logger.addHandler(handler)
    return logger


def _stamp_scopes(logger: logging.Logger) -> None:
    if not any(isinstance(item, _ScopeStamp) for item in logger.filters):
        logger.addFilter(_ScopeStamp())


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
    the files are closed and the logger is as it was. A group of models opens one file
    per member (`member=`), which gets the group's messages and that member's."""

    def __init__(self) -> None:
        self.logger = get_logger()
        self._buffer = _Buffer()
        self._files: list[logging.FileHandler] = []

    def __enter__(self) -> LogFile:
        if self.logger.level == logging.NOTSET:
            self.logger.setLevel(logging.INFO)
        _stamp_scopes(self.logger)
        self.logger.addHandler(self._buffer)
        return self

    def open(self, path: Path, member: str | None = None) -> None:
        """Write the messages so far, and every later one, to `path` (appended)."""
        file = logging.FileHandler(path, encoding="utf-8")
        file.setFormatter(logging.Formatter("%(message)s"))
        if member is not None:
            file.addFilter(_MemberFilter(member))
        for record in self._buffer.records:
            file.handle(record)
        self.logger.addHandler(file)
        self._files.append(file)
        if member is None:  # a single run's file: nothing more to keep for later files
            self.logger.removeHandler(self._buffer)
            self._buffer.records.clear()

    def __exit__(self, *exc: object) -> None:
        self.logger.removeHandler(self._buffer)
        for file in self._files:
            self.logger.removeHandler(file)
            file.close()
