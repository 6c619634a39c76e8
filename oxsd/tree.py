"""The immutable tree: nodes and paths (port of store.ml's Node and Path modules, + symbol.ml).

Nodes never change: an update rebuilds the nodes from the changed one up to
the root and shares every untouched subtree, so a snapshot is just a root
reference and transactions compare nodes by identity (`is`).  The children
of a node are a mapping name -> Node that is **never mutated** once the node
exists (copy on write: a dict, or a `PMap` once it has more than
CHILDREN_DICT_MAX entries, so that a change below /local/domain does not
copy every other domain's entry); callers must treat it as read-only.

Names are `str` holding one character per wire byte (latin-1); validated
names are ASCII.  symbol.ml's interning is kept only as `sys.intern` of
names (memory).

Cost: a lookup is one dict access per component; a change copies one
children mapping per level (a bounded part of it for a PMap).

Public API:

* `Node`: `.name/.perms/.value/.children`, `Node.create(name, perms, value)`,
  `get_owner()`, `get_children()`, `get_value()`, `get_perms()`,
  `get_name()`, `set_value(v)`, `set_perms(p)`, `add_child(c)`,
  `exists(name)`, `find(name)` (KeyError = Not_found), `find_opt(name)`,
  `replace_child(c, nc)`, `del_childname(name)`, `del_all_children()`,
  `check_perm(conn, request, activate)`, `check_owner(conn, activate)`,
  `recurse(fct, acc)`, `recurse_filter_map(f)`, `unpack()`;
* `Path` (a tuple of components): `Path.of_string(s)`,
  `Path.create(path, connection_path, path_max)`,
  `Path.of_path_and_name(path, name)`, `to_string()`, `to_string_list()`,
  `get_parent()`, `get_hierarchy()`, `Path.get_common_prefix(p1, p2)`,
  tree helpers `Path.get_node(rnode, path)`,
  `Path.get_deepest_existing_node(rnode, path)`,
  `Path.set_node(rnode, path, nnode)`, `Path.apply(rnode, path, fct)`,
  `Path.apply_modify(rnode, path, fct)`; `Path.introduce_domain`,
  `Path.release_domain` (str) and `Path.specials` (Paths);
* `PathCache`: `Path.create` once per distinct client path;
* `with_child(children, name, child)`: a children mapping with one binding
  changed (the copy on write above).
"""
from __future__ import annotations

import logging
import re
import sys
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple, TypeVar

from . import perms as Perms
from .define import DoesntExist, InvalidPath, LookupDoesntExist, NotFound, PermissionDenied
from .pmap import PMap
from .utils import path_validate

__all__ = ["Node", "Path", "PathCache", "with_child", "ROOT", "CHILDREN_DICT_MAX"]

log = logging.getLogger("oxsd.store|node")

A = TypeVar("A")

_NO_CHILDREN: Dict[str, "Node"] = {}  # shared, never mutated
_INVALID_OWNER = -1
# A child map this big (/local/domain's, say) becomes a PMap, so that a
# guest's change below it does not copy every other domain's entry.
CHILDREN_DICT_MAX = 64


def with_child(children: Mapping[str, "Node"], name: str, child: "Node") -> Mapping[str, "Node"]:
    """`children` with `name` bound to `child` (never mutates `children`)."""
    if type(children) is PMap:
        return children.set(name, child)
    if len(children) >= CHILDREN_DICT_MAX:
        return PMap.of_dict(children).set(name, child)  # once: it stays a PMap
    new = dict(children)
    new[name] = child
    return new


def _frozen(children: Dict[str, "Node"]) -> Mapping[str, "Node"]:
    if not children:
        return _NO_CHILDREN
    return PMap.of_dict(children) if len(children) > CHILDREN_DICT_MAX else children


class Node:
    """One immutable node: name, permission record, value (bytes) and children."""

    __slots__ = ("name", "perms", "value", "children")

    def __init__(self, name: str, perms: Perms.Node, value: bytes,
                 children: Mapping[str, "Node"] = _NO_CHILDREN) -> None:
        self.name = name
        self.perms = perms
        self.value = value
        self.children = children

    def __repr__(self) -> str:
        return "Node(%r, %s, %r, %d children)" % (
            self.name, self.perms.to_string(" "), self.value, len(self.children))

    @staticmethod
    def create(name: str, perms: Perms.Node, value: bytes) -> "Node":
        return Node(sys.intern(name), perms, value)

    def get_owner(self) -> int:
        return self.perms.owner

    def get_children(self) -> Mapping[str, "Node"]:
        return self.children

    def get_value(self) -> bytes:
        return self.value

    def get_perms(self) -> Perms.Node:
        return self.perms

    def get_name(self) -> str:
        return self.name

    def set_value(self, nvalue: bytes) -> "Node":
        """Same object when the value is unchanged."""
        if self.value == nvalue:
            return self
        return Node(self.name, self.perms, nvalue, self.children)

    def set_perms(self, nperms: Perms.Node) -> "Node":
        return Node(self.name, nperms, self.value, self.children)

    def add_child(self, child: "Node") -> "Node":
        return Node(self.name, self.perms, self.value,
                    with_child(self.children, child.name, child))

    def exists(self, childname: str) -> bool:
        return childname in self.children

    def find(self, childname: str) -> "Node":
        """The child; KeyError (Not_found) when missing."""
        return self.children[childname]

    def find_opt(self, childname: str) -> Optional["Node"]:
        return self.children.get(childname)

    def replace_child(self, child: "Node", nchild: "Node") -> "Node":
        """New node with `nchild` in place of `child` (nothing added if `child` is absent)."""
        children = self.children
        if child.name in children:
            children = with_child(children, child.name, nchild)
        return Node(self.name, self.perms, self.value, children)

    def del_childname(self, childname: str) -> "Node":
        if childname not in self.children:
            raise NotFound(childname)
        children = self.children
        if type(children) is PMap:
            return Node(self.name, self.perms, self.value, children.delete(childname))
        children = dict(children)
        del children[childname]
        return Node(self.name, self.perms, self.value, children)

    def del_all_children(self) -> "Node":
        return Node(self.name, self.perms, self.value, _NO_CHILDREN)

    def check_perm(self, connection: Perms.Connection, request: Perms.Permty,
                   activate: bool = True) -> None:
        """PermissionDenied unless the connection may do `request` on this node."""
        Perms.check(connection, request, self.perms, activate)

    def check_owner(self, connection: Perms.Connection, activate: bool = True) -> None:
        """PermissionDenied unless the connection owns this node."""
        if not Perms.check_owner(connection, self.perms, activate):
            log.info("Permission denied: Domain %d not owner", self.perms.owner)
            raise PermissionDenied()

    def recurse(self, fct: Callable[["Node", A], A], acc: A) -> A:
        """Fold `fct` over this node and every descendant (parent first)."""
        stack = [self]
        while stack:
            node = stack.pop()
            acc = fct(node, acc)
            stack.extend(node.children.values())
        return acc

    def recurse_filter_map(self, f: Callable[["Node"], Optional["Node"]]) -> "Node":
        """Rebuild every node bottom-up with `f`; a node for which `f` gives None is
        dropped with its whole subtree (the top node is kept, with owner -1).
        Every node is rebuilt, changed or not, as in the original."""

        def finish(node: Node, children: Dict[str, Node]) -> Node:
            node = Node(node.name, node.perms, node.value, _frozen(children))
            keep = f(node)
            if keep is not None:
                return keep
            p = node.perms
            return Node(node.name, Perms.Node(_INVALID_OWNER, p.other, p.acl), node.value,
                        node.children)

        def children_desc(children: Mapping[str, "Node"]) -> Any:
            # the original maps over a child Map whose order is descending by
            # name; f logs, so the log shows that order
            if len(children) > 1:
                return iter(sorted(children.items(), reverse=True))
            return iter(children.items())

        # Iterative post-order walk: paths may be ~1000 components deep.
        stack: List[Tuple[Node, Any, Dict[str, Node]]] = [
            (self, children_desc(self.children), {})]
        while True:
            node, it, acc = stack[-1]
            for name, child in it:
                if child.children:
                    stack.append((child, children_desc(child.children), {}))
                    break
                nchild = finish(child, {})
                if nchild.perms.owner != _INVALID_OWNER:
                    acc[name] = nchild
            else:
                stack.pop()
                result = finish(node, acc)
                if not stack:
                    return result
                if result.perms.owner != _INVALID_OWNER:
                    stack[-1][2][node.name] = result

    def unpack(self) -> Tuple[str, Perms.Node, bytes]:
        return self.name, self.perms, self.value


_VALID_PATH = re.compile(r"(?:/[A-Za-z0-9_@-]+)+")
_valid_path = _VALID_PATH.fullmatch


class Path(tuple):
    """A store path as a tuple of components: () is `/`, ("local", "domain") is `/local/domain`."""

    __slots__ = ()

    introduce_domain = "@introduceDomain"
    release_domain = "@releaseDomain"
    specials: List["Path"]

    def __repr__(self) -> str:
        return "Path(%r)" % self.to_string()

    # -- parsing and printing ----------------------------------------------
    @staticmethod
    def of_string(s: str | bytes) -> "Path":
        """Parse an absolute path; `@...` is one unchecked component. InvalidPath otherwise."""
        if type(s) is not str:
            s = s.decode("latin-1")
        if not s:
            raise InvalidPath()  # the original fails with an index error: EINVAL too
        if s[0] == "@":
            return Path((s,))
        if s == "/":
            return ROOT
        if _valid_path(s) is None:
            raise InvalidPath()
        return Path(s[1:].split("/"))

    @staticmethod
    def create(path: str | bytes, connection_path: str, path_max: int) -> "Path":
        """Resolve a client path (relative to `connection_path`), check its length
        against `path_max` (Settings.quota_path_max), and parse it."""
        if type(path) is not str:
            path = path.decode("latin-1")
        return Path.of_string(path_validate(path, connection_path, path_max))

    @staticmethod
    def of_path_and_name(path: Tuple[str, ...], name: str) -> "Path":
        if not path and name == "":
            return ROOT
        return Path(path + (name,))

    def to_string(self) -> str:
        return "/" + "/".join(self)

    def to_string_list(self) -> Tuple[str, ...]:
        return tuple(self)

    def get_parent(self) -> "Path":
        return Path(self[:-1]) if self else ROOT

    def get_hierarchy(self) -> List["Path"]:
        """Every prefix, root first, the path itself last."""
        return [Path(self[:i]) for i in range(len(self) + 1)]

    @staticmethod
    def get_common_prefix(p1: Tuple[str, ...], p2: Tuple[str, ...]) -> "Path":
        n = 0
        for a, b in zip(p1, p2):
            if a != b:
                break
            n += 1
        return Path(p1[:n])

    # -- walking a tree -------------------------------------------------------
    @staticmethod
    def apply_modify(rnode: Node, path: Tuple[str, ...], fct: Callable[[Node, str], Node]) -> Node:
        """Rebuild the tree with `fct(parent, last_name)` replacing the parent of the path.

        LookupDoesntExist for a missing ancestor, InvalidPath for the root."""
        if not path:
            raise InvalidPath()
        chain = []
        node = rnode
        for h in path[:-1]:
            child = node.children.get(h)
            if child is None:
                raise LookupDoesntExist(h)
            chain.append((node, child))
            node = child
        new = fct(node, path[-1])
        for parent, child in reversed(chain):
            new = parent.replace_child(child, new)
        return new

    lookup_modify = apply_modify

    @staticmethod
    def apply(rnode: Node, path: Tuple[str, ...], fct: Callable[[Node, str], A]) -> A:
        """`fct(parent, last_name)`; KeyError for a missing ancestor, InvalidPath for the root."""
        if not path:
            raise InvalidPath()
        node = rnode
        for h in path[:-1]:
            node = node.children[h]
        return fct(node, path[-1])

    lookup = apply

    @staticmethod
    def lookup_get(node: Node, path: Tuple[str, ...]) -> Node:
        """KeyError for a missing ancestor, DoesntExist for a missing final node."""
        if not path:
            raise InvalidPath()
        for h in path[:-1]:
            node = node.children[h]
        child = node.children.get(path[-1])
        if child is None:
            raise DoesntExist()
        return child

    @staticmethod
    def get_node(rnode: Node, path: Tuple[str, ...]) -> Optional[Node]:
        """The node, or None when the final node is missing (a missing ancestor is KeyError)."""
        if not path:
            return rnode
        node = rnode
        for h in path[:-1]:
            node = node.children[h]
        return node.children.get(path[-1])

    @staticmethod
    def get_deepest_existing_node(node: Node, path: Tuple[str, ...]) -> Tuple[Node, bool]:
        """The deepest existing node along the path, and whether the whole path exists."""
        for h in path:
            child = node.children.get(h)
            if child is None:
                return node, False
            node = child
        return node, True

    @staticmethod
    def set_node(rnode: Node, path: Tuple[str, ...], nnode: Node) -> Node:
        """Put `nnode` at `path` (replacing or adding the last component)."""
        if not path:
            return nnode

        def put(node: Node, name: str) -> Node:
            ent = node.children.get(name)
            if ent is not None:
                return node.replace_child(ent, nnode)
            return node.add_child(nnode)

        return Path.apply_modify(rnode, path, put)


ROOT = Path(())


class PathCache:
    """`Path.create` of recently seen client paths: a request's path is parsed once.

    `Path.create` is a pure function of the raw path, the connection's
    path and its `path_max` (the key), and parsing costs a few microseconds (a regex and
    a tuple per path; `/local/domain/<n>/` prefixes more), several times a
    request's other work for a READ.  Only paths that parse are kept (an
    invalid one raises each time, as it should), only short ones (a client
    cannot make the cache hold more than MAX entries of MAX_LEN bytes), and
    the whole table is dropped when full: O(1) per lookup, amortised, and
    bounded memory whatever a client sends.
    """

    __slots__ = ("_paths",)

    MAX = 2048
    MAX_LEN = 256

    def __init__(self) -> None:
        self._paths: Dict[Tuple[bytes, str, int], Path] = {}

    def create(self, raw: bytes, connection_path: str, path_max: int) -> Path:
        """Path.create(raw, connection_path, path_max); InvalidPath as it."""
        key = (raw, connection_path, path_max)
        path = self._paths.get(key)
        if path is None:
            path = Path.create(raw, connection_path, path_max)
            if len(raw) <= self.MAX_LEN:
                if len(self._paths) >= self.MAX:
                    self._paths.clear()
                self._paths[key] = path
        return path
Path.specials = [Path.of_string(Path.introduce_domain), Path.of_string(Path.release_domain)]
