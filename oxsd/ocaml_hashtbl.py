"""OCaml's `Hashtbl` iteration order, reproduced (OCaml 4.13 stdlib, unseeded tables).

Some of oxenstored's output lists the contents of a `Hashtbl` in its bucket
order: CONTROL `watches` (one connection's watches, keyed by path; the
domain connections, keyed by domid).  To answer byte for byte, the tables
behind that output keep OCaml's layout: `caml_hash` (MurmurHash3 mixing,
seed 0, masked to 30 bits), power-of-two bucket arrays of at least 16,
new bindings at the head of their bucket, doubling when the size exceeds
twice the bucket count with bucket order preserved, `fold`/`iter` from
bucket 0 upwards.

Lookups go through a plain dict; the bucket layout is only walked to
iterate, so the cost on the request path is one hash per insertion.
"""
from __future__ import annotations

from typing import Dict, Generic, Iterator, List, Tuple, TypeVar, Union

K = TypeVar("K", bound=Union[str, bytes, int])
V = TypeVar("V")

_M32 = 0xFFFFFFFF


def _rotl32(x: int, n: int) -> int:
    return ((x << n) | (x >> (32 - n))) & _M32


def _mix(h: int, d: int) -> int:
    d = (d * 0xCC9E2D51) & _M32
    d = _rotl32(d, 15)
    d = (d * 0x1B873593) & _M32
    h ^= d
    h = _rotl32(h, 13)
    return (h * 5 + 0xE6546B64) & _M32


def _final_mix(h: int) -> int:
    h ^= h >> 16
    h = (h * 0x85EBCA6B) & _M32
    h ^= h >> 13
    h = (h * 0xC2B2AE35) & _M32
    h ^= h >> 16
    return h


def hash_string(s: bytes) -> int:
    """`Hashtbl.hash` of an OCaml string."""
    h = 0
    n = len(s)
    i = 0
    while i + 4 <= n:
        h = _mix(h, int.from_bytes(s[i:i + 4], "little"))
        i += 4
    rest = n & 3
    if rest:
        w = 0
        for k in range(rest - 1, -1, -1):
            w = (w << 8) | s[i + k]
        h = _mix(h, w)
    h ^= n & _M32
    return _final_mix(h) & 0x3FFFFFFF


def hash_int(v: int) -> int:
    """`Hashtbl.hash` of an OCaml int (its tagged 64-bit representation is mixed)."""
    d = ((v << 1) | 1) & 0xFFFFFFFFFFFFFFFF
    signed = d - (1 << 64) if d >> 63 else d
    n = ((signed >> 32) ^ (signed >> 63) ^ signed) & _M32
    return _final_mix(_mix(0, n)) & 0x3FFFFFFF


def ocaml_hash(key: Union[str, bytes, int]) -> int:
    if isinstance(key, int):
        return hash_int(key)
    if isinstance(key, str):
        key = key.encode("latin-1")
    return hash_string(key)


def _power_2_above(x: int, n: int) -> int:
    while x < n:
        x *= 2
    return x


class Hashtbl(Generic[K, V]):
    """A mapping with OCaml Hashtbl semantics for `replace`/`remove`/iteration order."""

    __slots__ = ("_map", "_buckets", "_initial")

    def __init__(self, initial_size: int = 16) -> None:
        self._initial = _power_2_above(16, initial_size)
        self._map: Dict[K, V] = {}
        self._buckets: List[List[K]] = [[] for _ in range(self._initial)]

    def _index(self, key: K) -> int:
        return ocaml_hash(key) & (len(self._buckets) - 1)

    def __len__(self) -> int:
        return len(self._map)

    def __contains__(self, key: object) -> bool:
        return key in self._map

    def __getitem__(self, key: K) -> V:
        return self._map[key]

    def get(self, key: K, default=None):
        return self._map.get(key, default)

    def replace(self, key: K, value: V) -> None:
        """Hashtbl.replace: rebind in place, or add at the head of the bucket."""
        if key not in self._map:
            self._buckets[self._index(key)].insert(0, key)
            self._map[key] = value
            if len(self._map) > 2 * len(self._buckets):
                self._resize()
        else:
            self._map[key] = value

    __setitem__ = replace

    def remove(self, key: K) -> None:
        if key in self._map:
            del self._map[key]
            self._buckets[self._index(key)].remove(key)

    def pop(self, key: K, *default):
        if key in self._map:
            value = self._map[key]
            self.remove(key)
            return value
        if default:
            return default[0]
        raise KeyError(key)

    def __delitem__(self, key: K) -> None:
        if key not in self._map:
            raise KeyError(key)
        self.remove(key)

    def _resize(self) -> None:
        old = self._buckets
        self._buckets = [[] for _ in range(2 * len(old))]
        for bucket in old:  # insertion order within buckets is kept
            for key in bucket:
                self._buckets[self._index(key)].append(key)

    def reset(self) -> None:
        """Hashtbl.reset: empty, back to the initial bucket count."""
        self._map.clear()
        self._buckets = [[] for _ in range(self._initial)]

    def clear(self) -> None:
        """Hashtbl.clear: empty, keeping the bucket count."""
        self._map.clear()
        self._buckets = [[] for _ in range(len(self._buckets))]

    def keys(self) -> Iterator[K]:
        """Keys in Hashtbl.iter / fold order."""
        for bucket in self._buckets:
            yield from bucket

    __iter__ = keys

    def values(self) -> Iterator[V]:
        m = self._map
        for key in self.keys():
            yield m[key]

    def items(self) -> Iterator[Tuple[K, V]]:
        m = self._map
        for key in self.keys():
            yield key, m[key]
