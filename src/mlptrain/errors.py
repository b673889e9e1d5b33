"""The one error type for user mistakes: the CLI prints its message and exits with status 2."""

from __future__ import annotations


class UsageError(Exception):
    """A mistake the user can fix (bad config, missing file, wrong device...).

    The message is written for the user: it names the bad value and the fix.
    Bugs raise ordinary exceptions instead, so they keep their tracebacks.
    """


class StopRun(Exception):
    """A run that ended early on purpose (a signal, a non-finite loss), with its exit status.

    Everything finished so far is on disk; the message says what happened and what to do.
    """

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status
