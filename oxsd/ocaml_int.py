"""OCaml's integer parsers, the one implementation every module uses.

`int_of_string` is OCaml's (runtime/ints.c: parse_intnat on 63-bit ints):
optional sign, `0x`/`0o`/`0b`/`0u` prefixes, `_` separators after the first
digit, no whitespace.  A decimal must fit in [min_int, max_int] =
[-0x4000000000000000, 0x3fffffffffffffff]; a prefixed value may use all 63
bits and wraps (`0x7fffffffffffffff` is -1, and "-0x4000000000000000" is
min_int).  It raises `IntOfStringFailure` (`Failure "int_of_string"`, a
ValueError, which the request handler turns into EINVAL).
`nativeint_of_string` is `Nativeint.of_string` (64-bit) and raises a plain
`Failure("Nativeint.of_string")` (EIO).  `wrap` is two's-complement
truncation, as OCaml's arithmetic does.

It is a leaf module (it imports only oxsd.define) so that utils, stdext and
the hypervisor layer can all use it without importing each other.
"""
from __future__ import annotations

from typing import Callable

from .define import Failure, IntOfStringFailure

__all__ = ["int_of_string", "nativeint_of_string", "wrap", "MAX_INT", "MIN_INT"]

MAX_INT = (1 << 62) - 1
MIN_INT = -(1 << 62)

_UINTNAT_MAX = (1 << 64) - 1
_DIGITS = {c: i for i, c in enumerate("0123456789abcdef")}
_DIGITS.update({c.upper(): i for c, i in _DIGITS.items() if c.isalpha()})


def _parse_intnat(s: str, nbits: int, fail: Callable[[], Exception]) -> int:
    """The C parser behind int_of_string and Nativeint.of_string; result is a 64-bit intnat."""
    n = len(s)
    p = 0
    sign = 1
    if p < n and s[p] == "-":
        sign = -1
        p += 1
    elif p < n and s[p] == "+":
        p += 1
    base, signed = 10, True
    if p + 1 < n and s[p] == "0":
        prefix = s[p + 1]
        if prefix in "xX":
            base, signed = 16, False
        elif prefix in "oO":
            base, signed = 8, False
        elif prefix in "bB":
            base, signed = 2, False
        elif prefix in "uU":
            signed = False
        if prefix in "xXoObBuU":
            p += 2
    threshold = _UINTNAT_MAX // base
    d = _DIGITS.get(s[p], -1) if p < n else -1
    if d < 0 or d >= base:
        raise fail()
    res = d
    p += 1
    while p < n:
        c = s[p]
        if c != "_":
            d = _DIGITS.get(c, -1)
            if d < 0 or d >= base:
                break
            if res > threshold:
                raise fail()
            res = base * res + d
            if res > _UINTNAT_MAX:
                raise fail()
        p += 1
    if p != n:
        raise fail()
    if signed:
        limit = 1 << (nbits - 1)
        if (sign >= 0 and res >= limit) or (sign < 0 and res > limit):
            raise fail()
    elif nbits < 64 and res >= (1 << nbits):
        raise fail()
    v = -res if sign < 0 else res
    return wrap(v, 64)


def wrap(v: int, bits: int) -> int:
    """Two's-complement wrap of v into a signed `bits`-bit integer."""
    m = 1 << bits
    v &= m - 1
    return v - m if v >= m >> 1 else v


def _nativeint_failure() -> Exception:
    return Failure("Nativeint.of_string")


def int_of_string(s: str | bytes) -> int:
    """OCaml `int_of_string` (63-bit ints); `Failure("int_of_string")` on bad input."""
    if isinstance(s, (bytes, bytearray)):
        s = s.decode("latin-1")
    return wrap(_parse_intnat(s, 63, IntOfStringFailure), 63)


def nativeint_of_string(s: str | bytes) -> int:
    """OCaml `Nativeint.of_string` (64-bit); `Failure("Nativeint.of_string")` on bad input."""
    if isinstance(s, (bytes, bytearray)):
        s = s.decode("latin-1")
    return _parse_intnat(s, 64, _nativeint_failure)
