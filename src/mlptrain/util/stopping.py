"""The two-stage stop on SIGINT/SIGTERM, for a run, a sweep and a reproduction alike.

The first signal asks for a clean stop: `requested` is set and `on_first` is told, and
the work ends at its next safe point (a run after the current batch; a sweep once its
trials have saved their work). A second signal stops at once: SIGINT raises
KeyboardInterrupt, SIGTERM exits with its status. Files are written atomically, so
nothing is left half-written either way.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from typing import Any

from mlptrain.errors import signal_status

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class TwoStageStop:
    def __init__(self, on_first: Callable[[int], None] | None = None) -> None:
        self.on_first = on_first
        self.requested = threading.Event()  # set by the first signal (or by `request`)
        self.received: int | None = None  # that signal's number
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> TwoStageStop:
        # Signal handlers can only be installed from the main thread (a notebook's
        # worker thread runs without them; `request` still works there).
        if threading.current_thread() is threading.main_thread():
            self._previous = {sig: signal.signal(sig, self._handle) for sig in SIGNALS}
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous = {}

    def request(self, signum: int = signal.SIGINT) -> None:
        """Ask for the clean stop, as the first signal does."""
        if self.received is None:
            self.received = signum
        self.requested.set()
        if self.on_first is not None:
            self.on_first(signum)

    def _handle(self, signum: int, frame: object) -> None:
        if not self.requested.is_set():
            self.request(signum)
            return
        if signum == signal.SIGTERM:
            raise SystemExit(signal_status(signum))
        raise KeyboardInterrupt
