"""What differs between the runtimes oxsd supports: CPython >= 3.9 and Debian's pypy3 (3.9).

`slotted_dataclass` is ``dataclass(slots=True)`` where that exists (3.10+)
and a plain ``dataclass`` on 3.9.  The classes behave the same either way
(nothing in oxsd adds attributes to them); only the memory per instance
differs, and on PyPy not even that: its instances are map-based (one shared
layout per class, no per-instance dict), so ``__slots__`` saves nothing there.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Type, TypeVar

__all__ = ["slotted_dataclass"]

_C = TypeVar("_C")

if sys.version_info >= (3, 10):
    def slotted_dataclass(cls: Type[_C]) -> Type[_C]:
        return dataclass(slots=True)(cls)  # type: ignore[call-overload]
else:  # pragma: no cover - 3.9: PyPy, or an old CPython
    def slotted_dataclass(cls: Type[_C]) -> Type[_C]:
        return dataclass(cls)
