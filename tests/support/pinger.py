"""A dom0 socket client that keeps the daemon's loop busy, as a busy host would.

oxenstored serves a lazy guest's follow-up requests only when something wakes
its loop; tests that measure the original with lazy guests run one of these
so that its figures are not dominated by 15 s periodic wake-ups.
"""
from __future__ import annotations

import threading
from typing import Optional, Protocol

__all__ = ["Pinger"]


class _Reader(Protocol):
    def read(self, path: str): ...
    def close(self) -> None: ...


class Pinger:
    """Reads `path` through `client` every `interval` seconds until closed."""

    def __init__(self, client: _Reader, path: str = "/local", interval: float = 0.05) -> None:
        self.client = client
        self.path = path
        self.interval = interval
        self.stop = threading.Event()
        self.error: Optional[Exception] = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            while not self.stop.wait(self.interval):
                self.client.read(self.path)
        except Exception as exc:  # checked by the tests: a dead pinger changes the timing
            self.error = exc

    def close(self) -> None:
        self.stop.set()
        self.thread.join(5)
        self.client.close()
