"""Fakes of the hypervisor's view shared by unit tests."""
from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Info"]


@dataclass
class Info:
    """What domain_getinfo reports of a domain; tests flip the flags to kill it."""

    shutdown: bool = False
    dying: bool = False
    shutdown_code: int = 0
