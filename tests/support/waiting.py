"""Bounded waits for tests: poll a condition until it holds or a deadline passes."""
from __future__ import annotations

import time
from typing import Callable, TypeVar

T = TypeVar("T")

__all__ = ["wait_for"]


def wait_for(predicate: Callable[[], T], what: str, timeout: float) -> T:
    """The first truthy value of `predicate()`; AssertionError naming `what` after `timeout` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)  # polling state another process changes (files, sockets)
