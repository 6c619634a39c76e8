"""The `persistent` option and the legacy text dump on disk (port of disk.ml).

disk.ml.  With `persistent = true` the original writes the
legacy `Store.dump` text (one `<parent>/<name>{<perms>}[ = <value>]` line
per node) to `<run dir>/db#` after every committed transaction that had
writes, then renames it to `<run dir>/db` (`write`).  On a normal start it
tries to read that file back (`read`).

`read` is ported literally, and literally it cannot work: the permission
parser fails on the first line (after the root's value has been set to
""), the error is logged as `caught exn Invalid_argument("String.sub /
Bytes.sub")` and start-up goes on with the normal tree.  Deeper lines
would fail anyway (their paths have no leading slash).  Making it work
would diverge from the original, so it is kept broken on purpose.

The same file name holds the DB dump (`oxsd.db`) after a live update, a
SIGTERM or an access-log rotation; `read` rejects that format too.

Public API: `write(store)`, `read(store)`, `string_unescaped(s)`,
`parse_perm(s)`, `file_readlines(path)`; `ocaml_exn_str(exc)` is oxsd.printexc's.
"""
from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING, List

from . import paths as Paths
from . import perms as Perms
from .define import Failure, InvalidArgument
from .printexc import ocaml_exn_str
from .store import Path

if TYPE_CHECKING:
    from .store import Store

__all__ = ["write", "read", "string_unescaped", "parse_perm", "file_readlines",
           "BadEscape", "ocaml_exn_str"]

log = logging.getLogger("oxsd.disk")

_SUB = "String.sub / Bytes.sub"
_INDEX = "index out of bounds"


class BadEscape(Exception):
    """Disk.Bad_escape: an unknown escape sequence."""

    def ocaml_str(self) -> str:
        return "Disk.Bad_escape"


# -- String.escaped, undone (disk.ml's own unescaper) -------------------------

def _undec(c: str) -> int:
    if "0" <= c <= "9":
        return ord(c) - 48
    raise Failure("undecify")


def _unhex(c: str) -> int:
    c = c.lower()
    if "0" <= c <= "9":
        return ord(c) - 48
    if "a" <= c <= "f":
        return ord(c) - 87
    raise Failure("unhexify")


def _at(s: str, i: int) -> str:
    if 0 <= i < len(s):
        return s[i]
    raise InvalidArgument(_INDEX)


_SIMPLE_ESCAPES = {"n": "\n", "r": "\r", "\\": "\\", "'": "'", '"': '"', "t": "\t", "b": "\b"}


def string_unescaped(s: str) -> bytes:
    """Undo OCaml String.escaped (`\\n`, `\\t`, `\\xHH`, `\\DDD`, ...); raises like the original."""
    out = bytearray()
    i = 0
    n = len(s)
    while i < n:
        c = s[i]
        if c == "\\":
            i += 1
            e = _at(s, i)
            if e in _SIMPLE_ESCAPES:
                c = _SIMPLE_ESCAPES[e]
            elif e == "x":
                c = chr(_unhex(_at(s, i + 1)) * 16 + _unhex(_at(s, i + 2)))
                i += 2
            elif "0" <= e <= "9":
                v = _undec(e) * 100 + _undec(_at(s, i + 1)) * 10 + _undec(_at(s, i + 2))
                if v > 255:
                    raise InvalidArgument("Char.chr")
                c = chr(v)
                i += 2
            else:
                raise BadEscape()
        out.append(ord(c) & 0xFF)
        i += 1
    return bytes(out)


# -- reading the file back ----------------------------------------------------

def file_readlines(path: str) -> List[str]:
    """Lines (latin-1, without "\\n") up to the first empty line or the end."""
    with open(path, "rb") as f:
        data = f.read()
    lines = []
    for raw in data.split(b"\n"):
        if not raw:
            break
        lines.append(raw.decode("latin-1"))
    return lines


def _sub(s: str, start: int, end: int) -> str:
    if start < 0 or end < start or end > len(s):
        raise InvalidArgument(_SUB)
    return s[start:end]


def parse_perm(s: str) -> List[str]:
    """The original's perms splitter [quirk]: it always fails on a non-empty string.

    Its digit test is `int_of_char` succeeding, which it always does, so the
    scan runs to the end and the remainder is taken with an out-of-range
    `String.sub`.
    """
    n = len(s)
    if n == 0:
        return []
    i = n  # every character "is a digit"
    x = _sub(s, 0, i)
    lx = _sub(s, i, i + n)  # String.sub s i len: past the end unless s is empty
    return [x] + parse_perm(lx)


def _parse_line(ops, s: str) -> None:
    """`path{perm}` or `path{perm} = value`: write the node, then set its perms."""
    n = len(s)
    has_eq = "=" in s
    si = s.index("=") if has_eq else n - 1
    if si < 0 or si >= n:
        raise InvalidArgument("String.rindex_from / Bytes.rindex_from")
    pi = s.rfind("{", 0, si + 1)
    if pi < 0:
        raise KeyError("{")
    epi = s.find("}", pi)
    if epi < 0:
        raise KeyError("}")
    # OCaml evaluates the list's elements right to left: the value first.
    if has_eq:
        value = _sub(s, si + 2, n)
        perm = _sub(s, pi + 1, epi)
        path = _sub(s, 0, pi)
    else:
        perm = _sub(s, pi + 1, epi)
        path = _sub(s, 0, pi)
        value = ""
    p = Path.of_string(path)
    ops.write(p, string_unescaped(value))
    ops.setperms(p, Perms.Node.of_strings(parse_perm(perm)))


def read(store: "Store") -> None:
    """Disk.read: load the legacy dump, as dom0; any failure is logged and ends the load."""
    ops = store.get_ops(Perms.Connection.full_rights)
    try:
        for line in file_readlines(Paths.xs_daemon_database()):
            _parse_line(ops, line)
    except Exception as exc:
        log.error("caught exn %s", ocaml_exn_str(exc))


# -- writing --------------------------------------------------------------------

def write(store: "Store") -> None:
    """Disk.write: the legacy dump of `store` to `db#`, renamed over `db`; failures logged.

    Called after a committed transaction with writes, with the
    transaction's own store (only when `persistent` is set).
    """
    db = Paths.xs_daemon_database()
    tfile = db + "#"
    try:
        fd = os.open(tfile, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            store.dump(f)
        os.rename(tfile, db)
    except Exception as exc:
        log.error("caught exn %s", ocaml_exn_str(exc))
