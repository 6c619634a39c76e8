"""What differs between the runtimes oxsd supports: CPython >= 3.9 and Debian's pypy3 (3.9).

* `slotted_dataclass` is ``dataclass(slots=True)`` where that exists (3.10+)
  and a plain ``dataclass`` on 3.9.  The classes behave the same either way
  (nothing in oxsd adds attributes to them); only the memory per instance
  differs, and on PyPy not even that: its instances are map-based (one
  shared layout per class, no per-instance dict), so ``__slots__`` saves
  nothing there.
* `uint32_words(page)` is a uint32 view of a byte memoryview whose element
  reads and writes are single aligned 32-bit loads and stores, which the
  ring indexes shared with a guest need (see oxsd/ring.py).  On CPython that
  is ``memoryview.cast('I')``: element access is a fixed-size copy of the
  item, compiled to one ``mov``.  On PyPy 7.3 the same memoryview stores an
  item by packing it into a string and copying that byte by byte
  (rmmap's ``MMap.setslice`` loop): another process reading the word
  concurrently sees torn values (0x00ffffff -> 0x01000000 read as
  0x00ff0000, seen in a race test).  There the view is a cffi
  ``uint32_t[]`` over the buffer (cffi ships with PyPy): an item access is
  one typed access, which the JIT emits as ``getarrayitem_raw_i`` /
  ``setarrayitem_raw`` with a 4-byte descriptor, a single ``mov``.  Both
  views have ``release()`` and work as context managers, so callers drop
  them as they drop memoryviews.  The view comes from cffi's backend
  (``_cffi_backend``), never from ``cffi.FFI()``, whose type strings are
  parsed by pycparser (see the import below).
"""
from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any, Type, TypeVar

__all__ = ["slotted_dataclass", "uint32_words", "PYPY"]

_C = TypeVar("_C")
PYPY = sys.implementation.name == "pypy"

if sys.version_info >= (3, 10):
    def slotted_dataclass(cls: Type[_C]) -> Type[_C]:
        return dataclass(slots=True)(cls)  # type: ignore[call-overload]
else:  # pragma: no cover - 3.9: PyPy, or an old CPython
    def slotted_dataclass(cls: Type[_C]) -> Type[_C]:
        return dataclass(cls)


if PYPY:  # pragma: no cover - exercised by tests/integration/test_pypy.py
    # cffi's backend, not `cffi.FFI()`: FFI.from_buffer("uint32_t[]", ...)
    # goes through cffi/api.py, whose first call builds pycparser's C
    # parser (tens of ms and 4 MiB resident at start-up, when dom0's ring is
    # opened) and whose every call looks the type string up under a lock:
    # ~180 ns a view once compiled against 2 ns for the backend's call, and
    # some 1900 operations in every JIT trace through a ring access (two
    # views per request), enough to push the request path past the JIT's
    # trace_limit (6000 operations) and have the trace thrown away.
    import _cffi_backend

    _UINT32_ARRAY = _cffi_backend.new_array_type(
        _cffi_backend.new_pointer_type(_cffi_backend.new_primitive_type("uint32_t")), None)
    _from_buffer = _cffi_backend.from_buffer
    _release = _cffi_backend.release

    class _Words:
        """A cffi ``uint32_t[]`` over a buffer, with memoryview's release()/with."""

        __slots__ = ("_p",)

        def __init__(self, page: Any) -> None:
            self._p = _from_buffer(_UINT32_ARRAY, page, False)

        def __getitem__(self, i: int) -> int:
            return self._p[i]

        def __setitem__(self, i: int, value: int) -> None:
            self._p[i] = value

        def __len__(self) -> int:
            return len(self._p)

        def release(self) -> None:
            _release(self._p)

        def __enter__(self) -> "_Words":
            return self

        def __exit__(self, *exc: object) -> None:
            self.release()

    def uint32_words(page: Any) -> Any:
        return _Words(page)
else:
    def uint32_words(page: memoryview) -> memoryview:
        return page.cast("I")
