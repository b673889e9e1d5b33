"""The error types of user-facing failures, and every exit status the commands use."""

from __future__ import annotations

EXIT_SOME_FAILED = 1  # mlp-predict: some images could not be read
EXIT_CHECK_FAILED = 1  # mlp-export: the exported model differs from the checkpoint
EXIT_USAGE = 2  # a UsageError: bad config, missing file, wrong device...
EXIT_NONFINITE = 3  # training stopped on a NaN or infinite loss
EXIT_INTERRUPTED = 130  # Ctrl-C (a signal's own status is 128 + its number)


def signal_status(signum: int) -> int:
    """The shell's exit status of a process ended by signal `signum`."""
    return 128 + signum


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
