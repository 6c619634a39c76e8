"""A persistent (immutable, structure-sharing) hash map: a hash trie with dict leaves.

OCaml's Map updates in O(log n) and shares the rest; a Python dict can only
be copied whole.  Where the daemon keeps an immutable map that one guest's
request updates but that grows with the number of OTHER domains (the quota's
per-domain counts, the children of `/local/domain`), an update must not copy
it whole.  `PMap.set`/`PMap.delete` copy one leaf dict of at most
`LEAF_MAX` entries and one 32-slot list per level above it; the depth is
log32 of the size, so the work does not grow with the map.

A node is a dict (a leaf, at most LEAF_MAX entries unless the hash bits are
used up) or a list of 32 nodes-or-None indexed by 5 bits of the key's hash.
Iteration order is unspecified (callers that need an order sort).

Public API: `PMap.EMPTY`, `PMap.of_dict(d)`, Mapping reads (`m[k]`, `m.get`,
`k in m`, `len`, `iter`, `items()`, `values()`), `m.set(k, v) -> PMap`,
`m.delete(k) -> PMap` (KeyError when absent), `m.changed_against(orig)`:
the (key, value) pairs of `m` whose value differs from (or is missing in)
`orig`, visiting only the subtrees that are not shared with `orig`.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Dict, Iterator, List, Optional, Tuple, Union

__all__ = ["PMap", "LEAF_MAX"]

LEAF_MAX = 32
_BITS = 5
_WIDTH = 1 << _BITS
_MASK = _WIDTH - 1
_HASH_BITS = 64
_MAX_SHIFT = _HASH_BITS - _BITS  # below this a leaf may split
_HASH_MASK = (1 << _HASH_BITS) - 1

Node = Union[Dict[Any, Any], List[Any]]
_MISSING = object()


def _hash(key: Any) -> int:
    return hash(key) & _HASH_MASK


def _split(leaf: Dict[Any, Any], shift: int) -> List[Any]:
    slots: List[Any] = [None] * _WIDTH
    for k, v in leaf.items():
        i = (_hash(k) >> shift) & _MASK
        d = slots[i]
        if d is None:
            d = slots[i] = {}
        d[k] = v
    for i, d in enumerate(slots):
        if d is not None and len(d) > LEAF_MAX and shift + _BITS <= _MAX_SHIFT:
            slots[i] = _split(d, shift + _BITS)
    return slots


def _iter_nodes(node: Optional[Node]) -> Iterator[Dict[Any, Any]]:
    stack = [node]
    while stack:
        n = stack.pop()
        if n is None:
            continue
        if type(n) is dict:
            yield n
        else:
            stack.extend(n)


class PMap(Mapping):
    """Immutable map; updates return a new PMap sharing what they did not touch."""

    __slots__ = ("_root", "_len")
    EMPTY: "PMap"

    def __init__(self, root: Optional[Node] = None, length: int = 0) -> None:
        self._root = root
        self._len = length

    @staticmethod
    def of_dict(d: Mapping[Any, Any]) -> "PMap":
        if not d:
            return PMap.EMPTY
        leaf = dict(d)
        root: Node = _split(leaf, 0) if len(leaf) > LEAF_MAX else leaf
        return PMap(root, len(leaf))

    # -- reads --------------------------------------------------------
    # get and __getitem__ each walk to the key's leaf themselves: they are on
    # every request's path (a node's children), where a shared helper cost a
    # Python call per lookup
    def get(self, key: Any, default: Any = None) -> Any:
        node = self._root
        if type(node) is list:
            h = hash(key) & _HASH_MASK
            while type(node) is list:
                node = node[h & _MASK]
                h >>= _BITS
        if node is None:
            return default
        return node.get(key, default)  # type: ignore[union-attr]

    def __getitem__(self, key: Any) -> Any:
        node = self._root
        if type(node) is list:
            h = hash(key) & _HASH_MASK
            while type(node) is list:
                node = node[h & _MASK]
                h >>= _BITS
        if node is None:
            raise KeyError(key)
        return node[key]

    def __contains__(self, key: object) -> bool:
        return self.get(key, _MISSING) is not _MISSING

    def __len__(self) -> int:
        return self._len

    def __iter__(self) -> Iterator[Any]:
        for leaf in _iter_nodes(self._root):
            yield from leaf

    def items(self) -> List[Tuple[Any, Any]]:  # type: ignore[override]
        return [kv for leaf in _iter_nodes(self._root) for kv in leaf.items()]

    def values(self) -> List[Any]:  # type: ignore[override]
        return [v for leaf in _iter_nodes(self._root) for v in leaf.values()]

    def __repr__(self) -> str:
        return "PMap(%r)" % dict(self.items())

    # -- updates ------------------------------------------------------
    def _path(self, key: Any) -> Tuple[List[List[Any]], List[int], Optional[Dict[Any, Any]], int]:
        """The lists above the key's leaf, the slot taken in each, the leaf, its shift."""
        lists: List[List[Any]] = []
        slots: List[int] = []
        node = self._root
        h, shift = _hash(key), 0
        while type(node) is list:
            i = (h >> shift) & _MASK
            lists.append(node)  # type: ignore[arg-type]
            slots.append(i)
            node = node[i]
            shift += _BITS
        return lists, slots, node, shift  # type: ignore[return-value]

    @staticmethod
    def _rebuild(lists: List[List[Any]], slots: List[int], new: Optional[Node]) -> Optional[Node]:
        for lst, i in zip(reversed(lists), reversed(slots)):
            copy = list(lst)
            copy[i] = new
            new = copy
        return new

    def set(self, key: Any, value: Any) -> "PMap":
        # A map of up to about LEAF_MAX * 32 entries is one list of leaves
        # (/local/domain's children on most hosts): its update inline.
        root = self._root
        if type(root) is list:
            i = hash(key) & _MASK
            leaf = root[i]
            if type(leaf) is dict:
                old = leaf.get(key, _MISSING)
                if old is value:
                    return self
                new_leaf = dict(leaf)
                new_leaf[key] = value
                copy = list(root)
                copy[i] = _split(new_leaf, _BITS) if len(new_leaf) > LEAF_MAX else new_leaf
                return PMap(copy, self._len + (old is _MISSING))
        return self._set(key, value)

    def _set(self, key: Any, value: Any) -> "PMap":
        lists, slots, leaf, shift = self._path(key)
        if leaf is not None and leaf.get(key, _MISSING) is value:
            return self
        new_leaf = {} if leaf is None else dict(leaf)
        grew = key not in new_leaf
        new_leaf[key] = value
        node: Node = new_leaf
        if len(new_leaf) > LEAF_MAX and shift <= _MAX_SHIFT:
            node = _split(new_leaf, shift)
        return PMap(self._rebuild(lists, slots, node), self._len + grew)

    def delete(self, key: Any) -> "PMap":
        lists, slots, leaf, _ = self._path(key)
        if leaf is None or key not in leaf:
            raise KeyError(key)
        if self._len == 1:
            return PMap.EMPTY
        new_leaf = dict(leaf)
        del new_leaf[key]
        return PMap(self._rebuild(lists, slots, new_leaf or None), self._len - 1)

    def changed_against(self, orig: "PMap") -> List[Tuple[Any, Any]]:
        """Pairs of `self` absent from `orig` or bound to another value there."""
        out: List[Tuple[Any, Any]] = []
        stack: List[Tuple[Any, Any]] = [(self._root, orig._root)]
        while stack:
            mine, theirs = stack.pop()
            if mine is theirs or mine is None:
                continue
            if type(mine) is list and type(theirs) is list:
                stack.extend(zip(mine, theirs))
                continue
            for leaf in _iter_nodes(mine):
                for k, v in leaf.items():
                    if orig.get(k, _MISSING) != v:
                        out.append((k, v))
        return out


PMap.EMPTY = PMap()
