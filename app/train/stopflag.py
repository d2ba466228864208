"""Stopping on SIGINT / SIGTERM: a flag the loop checks before every step."""

from __future__ import annotations

import signal
from typing import Any


class StopFlag:
    """SIGINT/SIGTERM set a flag; the loop saves a checkpoint and exits at the next step."""

    def __init__(self) -> None:
        self.raised = False
        self._old: dict[int, Any] = {}

    def install(self) -> None:
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                self._old[sig] = signal.signal(sig, self._handler)
            except ValueError:  # not the main thread
                pass

    def _handler(self, signum: int, frame: Any) -> None:
        if self.raised:  # second signal: give up immediately
            raise KeyboardInterrupt
        self.raised = True

    def restore(self) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)
