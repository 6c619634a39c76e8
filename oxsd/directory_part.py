"""XS_DIRECTORY_PART (22), protocol level 4.22 (C xenstored: core.c send_directory_part).

Request `<path>|<offset>|`, reply `<gencnt>|<child-leaf-name>|*` (xenstore.txt):
`<offset>` is a byte offset into the list of children, each name followed by
a NUL, in the order DIRECTORY gives them (ascending by byte value, as
oxenstored's `Store.ls`).  The part is as many bytes from there as fit in
XENSTORE_PAYLOAD_MAX after the generation count, cut only at name ends, and
the last part of the list gets one more NUL (an empty string).  An offset at
or past the end gives `<gencnt>\\0\\0`.  The loop below is C xenstored's, so the
parts are the same bytes as its for the same child list.

oxsd's store keeps no per-node generation count (C xenstored bumps a global
counter at each node write).  `Generations` gives the same guarantee that
xenstore.txt asks of `<gencnt>`: the same number for two parts means the
child list has not changed between them.  Per path it remembers a digest of
the list and the number it got; a different list gets the next number of a
counter that only grows (and is dumped, so it keeps growing across a live
update).  The table is bounded (least recently used paths are forgotten: they
get a new number, which only makes a client start its listing again).
"""
from __future__ import annotations

import hashlib
from collections import OrderedDict
from typing import TYPE_CHECKING, List, Tuple

from .define import xenstore_payload_max
from .store import Path

if TYPE_CHECKING:
    from .connection import Connection
    from .transaction import Transaction

MAX_REMEMBERED_PATHS = 4096


def c_atoi(raw: bytes) -> int:
    """C atoi: leading blanks, an optional sign, digits; anything else ends it (0 if none)."""
    s = raw.lstrip(b" \t\n\v\f\r")
    sign = 1
    if s[:1] in (b"-", b"+"):
        sign = -1 if s[:1] == b"-" else 1
        s = s[1:]
    n = 0
    for b in s:
        if not 48 <= b <= 57:
            break
        n = n * 10 + b - 48
    return sign * n


def count_strings(data: bytes) -> int:
    """xenstore_count_strings: the number of NULs in the payload."""
    return data.count(b"\0")


class Generations:
    """The generation count of each listed path (see the module docstring)."""

    def __init__(self, counter: int = 0) -> None:
        self.counter = counter
        self._seen: "OrderedDict[Tuple[str, ...], Tuple[bytes, int]]" = OrderedDict()

    def of(self, path: Path, children: bytes) -> int:
        key = tuple(path.to_string_list())
        digest = hashlib.blake2b(children, digest_size=16).digest()
        seen = self._seen.get(key)
        if seen is not None and seen[0] == digest:
            self._seen.move_to_end(key)
            return seen[1]
        self.counter += 1
        self._seen[key] = (digest, self.counter)
        self._seen.move_to_end(key)
        if len(self._seen) > MAX_REMEMBERED_PATHS:
            self._seen.popitem(last=False)
        return self.counter


def part(gen: int, children: bytes, off: int) -> bytes:
    """The reply payload for `children` (NUL-terminated names) from byte `off` (C's loop)."""
    genb = b"%d\0" % gen
    childlen = len(children)
    if off >= childlen:
        return genb + b"\0"
    maxlen = xenstore_payload_max - len(genb) - 1
    length = 0
    child = off
    while True:
        end = children.index(b"\0", child)
        if not length + (end - child) < maxlen:
            break
        length += end - child + 1
        child = end + 1
        if off + length == childlen:
            break
    data = genb + children[off:off + length]
    if off + length == childlen:
        data += b"\0"
    return data


class DirectoryPart:
    """The XS_DIRECTORY_PART handler (a DATA op of Process's table)."""

    def __init__(self, generations: Generations) -> None:
        self.generations = generations

    def do_directory_part(self, con: "Connection", t: "Transaction", data: bytes) -> bytes:
        if count_strings(data) != 2:
            raise ValueError("DIRECTORY_PART takes <path>|<offset>|")  # EINVAL
        raw_path, raw_off = data.split(b"\0")[:2]
        path = Path.create(raw_path.decode("latin-1"), con.get_path(), con.path_max)
        entries: List[str] = t.ls(con.perm, path)
        children = b"".join(e.encode("latin-1") + b"\0" for e in entries)
        off = c_atoi(raw_off) & 0xFFFFFFFF  # C: unsigned int off = atoi(...)
        return part(self.generations.of(path, children), children, off)
