"""A persistent trie keyed by lists of strings (port of trie.ml); the global watch index.

connections.ml: add_watch, connections.ml: fire_watches.  Every operation that changes the trie returns a new
`Trie` and leaves the old one intact (untouched branches are shared), as in
the OCaml module.  A trie node holds an optional value (None = no value; a
stored value must therefore not be None) and its children.  Iteration visits
children in ascending key order, parent before children.

Cost: set/unset copy one children dict per key component; find/mem/iter_path
are one dict access per component.

Public API (keys are sequences of str):

* `Trie.create()`; `t.set(key, value) -> Trie` (NotFound for an empty key);
  `t.unset(key) -> Trie` (NotFound when a component is missing);
  `t.find(key)` (NotFound when missing or valueless); `t.mem(key) -> bool`;
  `t.sub(key) -> Trie` (the children below `key`, empty when missing);
  `t.iter(f)` with `f(name, value_or_None)`, pre-order;
  `t.iter_path(f, key)`: `f(name, value_or_None)` for each existing node
  along `key`, top down; `t.values_along(key)`: their non-empty values; `t.map(f) -> Trie` (`f(value)` returns the new
  value or None to drop it; empty branches are pruned);
  `t.fold(f, acc)` with `f(name, value_or_None, acc)`; `t.is_empty()`.
"""
from __future__ import annotations

from typing import (Any, Callable, Dict, Generic, Iterator, List, Mapping, Optional, Sequence,
                    Tuple, TypeVar)

from .define import NotFound

__all__ = ["Trie"]

V = TypeVar("V")
A = TypeVar("A")


class _Node:
    __slots__ = ("key", "value", "children")

    def __init__(self, key: str, value: Any, children: Mapping[str, "_Node"]) -> None:
        self.key = key
        self.value = value
        self.children = children  # never mutated once built


_EMPTY: Dict[str, _Node] = {}


# All walks are iterative: watch paths have no length limit, so a key may have
# ~2000 components, beyond Python's recursion limit.

def _walk(tree: Mapping[str, _Node], path: Sequence[str]) -> List[Optional[_Node]]:
    """The node for each component of `path` (None from the first missing one on)."""
    nodes: List[Optional[_Node]] = []
    for h in path:
        node = tree.get(h)
        nodes.append(node)
        tree = node.children if node is not None else _EMPTY
    return nodes


def _set(tree: Mapping[str, _Node], path: Sequence[str], value: Any) -> Dict[str, _Node]:
    nodes = _walk(tree, path)
    last = len(path) - 1
    sub: Mapping[str, _Node] = _EMPTY
    for i in range(last, -1, -1):
        h = path[i]
        node = nodes[i]
        if i == last:
            new = _Node(h, value, node.children if node is not None else _EMPTY)
        else:
            new = _Node(h, node.value if node is not None else None, sub)
        if i == 0:
            parent_tree = tree
        else:
            prev = nodes[i - 1]
            parent_tree = prev.children if prev is not None else _EMPTY
        out = dict(parent_tree)
        out[h] = new
        sub = out
    return sub  # type: ignore[return-value]


def _unset(tree: Mapping[str, _Node], path: Sequence[str]) -> Mapping[str, _Node]:
    if not path:
        return tree
    nodes = _walk(tree, path)
    for h, node in zip(path, nodes):
        if node is None:
            raise NotFound(h)
    last = len(path) - 1
    children: Mapping[str, _Node] = nodes[last].children  # type: ignore[union-attr]
    for i in range(last, -1, -1):
        h = path[i]
        node = nodes[i]
        # At the last component the value goes; above it the node keeps its value.
        value = None if i == last else node.value  # type: ignore[union-attr]
        parent_tree = tree if i == 0 else nodes[i - 1].children  # type: ignore[union-attr]
        out = dict(parent_tree)
        if not children and value is None:
            del out[h]
        else:
            out[h] = _Node(h, value, children)
        children = out
    return children


def _map(tree: Mapping[str, _Node], f: Callable[[Any], Any]) -> Mapping[str, _Node]:
    # Post-order: a node is kept when it has a value or kept children.
    root_out: Dict[str, _Node] = {}
    stack: List[Tuple[Optional[_Node], Iterator[_Node], Dict[str, _Node]]] = [
        (None, iter(list(tree.values())), root_out)]
    while stack:
        node, it, out = stack[-1]
        for child in it:
            stack.append((child, iter(list(child.children.values())), {}))
            break
        else:
            stack.pop()
            if node is None:
                break
            value = None if node.value is None else f(node.value)
            if value is not None or out:
                stack[-1][2][node.key] = _Node(node.key, value, out or _EMPTY)
    return root_out or _EMPTY


def _iter(tree: Mapping[str, _Node], f: Callable[[str, Any], None]) -> None:
    stack = [tree[k] for k in sorted(tree, reverse=True)]
    while stack:
        node = stack.pop()
        f(node.key, node.value)
        if node.children:
            ch = node.children
            stack.extend(ch[k] for k in sorted(ch, reverse=True))


def _fold(tree: Mapping[str, _Node], f: Callable[[str, Any, A], A], acc: A) -> A:
    def step(k: str, v: Any) -> None:
        nonlocal acc
        acc = f(k, v, acc)

    _iter(tree, step)
    return acc


class Trie(Generic[V]):
    """Persistent map from string lists to values."""

    __slots__ = ("nodes",)

    def __init__(self, nodes: Mapping[str, _Node] = _EMPTY) -> None:
        self.nodes = nodes

    @staticmethod
    def create() -> "Trie[Any]":
        return Trie(_EMPTY)

    def is_empty(self) -> bool:
        return not self.nodes

    def _sub_node(self, path: Sequence[str]) -> _Node:
        if not path:
            raise NotFound()
        tree = self.nodes
        node = None
        for h in path:
            node = tree.get(h)
            if node is None:
                raise NotFound(h)
            tree = node.children
        return node  # type: ignore[return-value]

    def sub(self, path: Sequence[str]) -> "Trie[V]":
        try:
            return Trie(self._sub_node(path).children)
        except NotFound:
            return Trie(_EMPTY)

    def find(self, path: Sequence[str]) -> V:
        value = self._sub_node(path).value
        if value is None:
            raise NotFound()
        return value

    def mem(self, path: Sequence[str]) -> bool:
        if not path:
            return False
        tree = self.nodes
        node = None
        for h in path:
            node = tree.get(h)
            if node is None:
                return False
            tree = node.children
        return node.value is not None  # type: ignore[union-attr]

    def iter_path(self, f: Callable[[str, Optional[V]], None], path: Sequence[str]) -> None:
        """Call f on each node along the longest existing prefix of `path`, top down."""
        tree = self.nodes
        for h in path:
            node = tree.get(h)
            if node is None:
                return
            f(node.key, node.value)
            tree = node.children

    def values_along(self, path: Sequence[str]) -> List[V]:
        """The values of the nodes along the longest existing prefix of `path`, top down
        (iter_path's non-empty values, without a call per node)."""
        out: List[V] = []
        tree = self.nodes
        for h in path:
            node = tree.get(h)
            if node is None:
                break
            if node.value:
                out.append(node.value)
            tree = node.children
        return out

    def set(self, path: Sequence[str], value: V) -> "Trie[V]":
        if not path:
            raise NotFound()
        return Trie(_set(self.nodes, path, value))

    def unset(self, path: Sequence[str]) -> "Trie[V]":
        return Trie(_unset(self.nodes, path))

    def iter(self, f: Callable[[str, Optional[V]], None]) -> None:
        _iter(self.nodes, f)

    def map(self, f: Callable[[V], Optional[V]]) -> "Trie[V]":
        return Trie(_map(self.nodes, f))

    def fold(self, f: Callable[[str, Optional[V], A], A], acc: A) -> A:
        return _fold(self.nodes, f, acc)
