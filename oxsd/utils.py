"""Small helpers shared by the daemon (port of utils.ml, plus OCaml library behaviours).

The OCaml daemon relies on a few standard-library behaviours that are
observable on the wire or in logs; they are ported here so every module
parses and prints the same way (OCaml int_of_string, logging.ml: access_logging):

* `int_of_string`, `nativeint_of_string` — OCaml's parsers, re-exported
  from oxsd/ocaml_int.py (the one implementation; see there);
* `c_int_of_string` — process.ml's lenient parser (never fails);
* `format_u` — `Printf "%u"` of an OCaml int (−1 → 9223372036854775807);
* `ocaml_escaped` — `String.escaped` of bytes, as str.

utils.ml proper: `hexify`, `unhexify`, `trim_path`, `join_by_null`,
`get_hierarchy`, `list_remove`, `filter_out`, `filter_in`,
`path_validate(path, connection_path, path_max)`, `create_unix_socket`,
`read_file_single_integer`.

Paths handled here are `str` holding one character per wire byte
(latin-1), so `len()` is the byte length the original measures.
"""
from __future__ import annotations

import functools
import os
import re
import socket
from typing import Iterable, List, Sequence, Tuple, TypeVar

from . import stdext as Stdext
from .define import IntOfStringFailure, InvalidPath
from .ocaml_int import int_of_string, nativeint_of_string, wrap

__all__ = [
    "int_of_string", "nativeint_of_string", "c_int_of_string", "string_of_bool", "format_u",
    "format_float",
    "ocaml_escaped", "hexify", "unhexify", "trim_path", "join_by_null",
    "get_hierarchy", "list_remove", "filter_out", "filter_in", "path_validate",
    "create_unix_socket", "read_file_single_integer",
]

T = TypeVar("T")

_C_INT = re.compile(r"[^0-9]*([0-9]*)")


def c_int_of_string(s: str | bytes) -> int:
    """Lenient parser: skip non-digits, read the digit run that follows (no digits -> 0; wraps at 63 bits)."""
    if isinstance(s, (bytes, bytearray)):
        s = s.decode("latin-1")
    digits = _C_INT.match(s).group(1)  # type: ignore[union-attr]
    return wrap(int(digits), 63) if digits else 0


def string_of_bool(v: bool) -> str:
    """OCaml's string_of_bool."""
    return "true" if v else "false"


def format_u(v: int) -> str:
    """`Printf "%u"` of an OCaml int: negative values print as v + 2^63."""
    return str(v % (1 << 63))


def format_float(x: float) -> str:
    """`Printf "%F"`: %.12g, with a '.' added when that shows neither '.' nor an exponent."""
    s = "%.12g" % x
    return s if any(c in s for c in ".eEni") else s + "."


# -- OCaml String.escaped ---------------------------------------------------

def _escape_table() -> Tuple[str, ...]:
    table = []
    for b in range(256):
        if b == 0x22:
            table.append('\\"')
        elif b == 0x5C:
            table.append("\\\\")
        elif b == 0x0A:
            table.append("\\n")
        elif b == 0x09:
            table.append("\\t")
        elif b == 0x0D:
            table.append("\\r")
        elif b == 0x08:
            table.append("\\b")
        elif 0x20 <= b <= 0x7E:
            table.append(chr(b))
        else:
            table.append("\\%03d" % b)
    return tuple(table)


_ESCAPE = _escape_table()
_NEEDS_ESCAPE = re.compile(rb'[^\x20-\x21\x23-\x5b\x5d-\x7e]')


def ocaml_escaped(data: bytes | str) -> str:
    """OCaml `String.escaped`: `\\"`, `\\\\`, `\\n`, `\\t`, `\\r`, `\\b`, other non-printables as `\\ddd`."""
    if isinstance(data, str):
        data = data.encode("latin-1")
    if not _NEEDS_ESCAPE.search(data):
        return data.decode("ascii")
    esc = _ESCAPE
    return "".join([esc[b] for b in data])


# -- utils.ml ---------------------------------------------------------------

def filter_out(filter_: Sequence[T], lst: Iterable[T]) -> List[T]:
    return [x for x in lst if x not in filter_]


def filter_in(filter_: Sequence[T], lst: Iterable[T]) -> List[T]:
    return [x for x in lst if x in filter_]


def list_remove(element: T, lst: Iterable[T]) -> List[T]:
    """Drop every occurrence of `element`, compared by identity (OCaml `!=`)."""
    return [e for e in lst if e is not element]


def get_hierarchy(path: Sequence[T]) -> List[Tuple[T, ...]]:
    """Every prefix of `path`, shortest first, the empty one included: [a,b] -> [(), (a,), (a,b)]."""
    t = tuple(path)
    return [t[:i] for i in range(len(t) + 1)]


_FAST_HEX = {"%02x" % b: b for b in range(256)}
_FAST_HEX.update({h.upper(): b for h, b in list(_FAST_HEX.items())})
_FAST_HEX.update({h[0] + h[1].upper(): b for h, b in list(_FAST_HEX.items())})
_FAST_HEX.update({h[0].upper() + h[1]: b for h, b in list(_FAST_HEX.items())})


def hexify(s: bytes | str) -> str:
    """Two lowercase hex digits per byte."""
    if isinstance(s, str):
        s = s.encode("latin-1")
    return s.hex()


def unhexify(hs: str | bytes) -> bytes:
    """Inverse of hexify, with the original's leniency: an odd last digit is ignored and
    each pair is parsed by `int_of_string("0x..")` (so `_` is accepted after a digit)."""
    if isinstance(hs, (bytes, bytearray)):
        hs = hs.decode("latin-1")
    n = len(hs) // 2
    out = bytearray(n)
    for i in range(n):
        pair = hs[2 * i:2 * i + 2]
        b = _FAST_HEX.get(pair)
        if b is None:
            b = int_of_string("0x" + pair)  # "f_" is 15; anything else invalid fails
        out[i] = b
    return bytes(out)


def trim_path(path: str) -> str:
    """Everything before the last `/` ("" when there is none)."""
    i = path.rfind("/")
    return path[:i] if i >= 0 else ""


def join_by_null(ls: Iterable[bytes]) -> bytes:
    return b"\0".join(ls)


# Scanf "/local/domain/%d/%n": %d takes an optional sign, a digit, then digits or '_'.
_DOMAIN_PREFIX = re.compile(r"/local/domain/([+-]?[0-9][0-9_]*)/")


def path_validate(path: str, connection_path: str, path_max: int) -> str:
    """Make `path` absolute (relative ones go under `connection_path`) and check its length.

    Only the part after `/local/domain/<n>/` counts when the path has that
    prefix (so a path stays valid when a domid changes length on migration).
    `path_max` is Settings.quota_path_max.  Raises InvalidPath.
    """
    if not path:
        raise InvalidPath()
    c = path[0]
    if c == "/" or c == "@":
        abs_path = path
        length = len(path)
        if path.startswith("/local/domain/"):
            length -= _domain_prefix_len(path)
    else:
        # A connection path is `/local/domain/<n>/` itself: its prefix is the
        # one the whole path has, computed once per connection path.
        abs_path = connection_path + path
        n = _connection_prefix_len(connection_path)
        if n != len(connection_path):  # not exactly a `/local/domain/<n>/`: match it all
            n = _domain_prefix_len(abs_path)
        length = len(abs_path) - n
    if length > path_max:
        raise InvalidPath()
    return abs_path


def _domain_prefix_len(abs_path: str) -> int:
    """Length of a leading `/local/domain/<n>/` (Scanf "/local/domain/%d/%n"), else 0."""
    m = _DOMAIN_PREFIX.match(abs_path)
    if m is None:
        return 0
    digits = m.group(1)
    if len(digits) > 18 or not digits.isdigit():  # 18 plain digits cannot overflow
        try:
            # Scanf converts the token with int_of_string; an overflow makes the
            # whole match fail, and then the full length counts.
            int_of_string(digits)
        except IntOfStringFailure:
            return 0
    return m.end()


_connection_prefix_len = functools.lru_cache(maxsize=1024)(_domain_prefix_len)


def create_unix_socket(name: str) -> socket.socket:
    """Remove any old file, create its directory (0700), bind and listen(1).

    As Unixext: every unlink error is ignored and mkdir ignores only
    "already exists", so a file in the way makes bind fail, as in the original.
    """
    Stdext.unlink_safe(name)
    Stdext.mkdir_rec(Stdext.ocaml_dirname(name), 0o700)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(name)
        sock.listen(1)
    except BaseException:
        sock.close()
        raise
    return sock


def read_file_single_integer(filename: str) -> int:
    """int_of_string of the first 20 bytes of a file (a trailing newline makes it fail)."""
    fd = os.open(filename, os.O_RDONLY)
    try:
        data = os.read(fd, 20)
    finally:
        os.close(fd)
    return int_of_string(data)
