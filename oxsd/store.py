"""The XenStore tree: immutable nodes, paths, and the store operations (port of store.ml + symbol.ml).

store.ml.  Nodes never change: an update rebuilds the nodes from the changed
one up to the root and shares every untouched subtree, so a snapshot is just
a root reference and transactions compare nodes by identity (`is`).  The
children of a node are a plain dict name -> Node that is **never mutated**
once the node exists (copy on write); callers must treat it as read-only.

Names are `str` holding one character per wire byte (latin-1); validated
names are ASCII.  symbol.ml's interning is kept only as `sys.intern` of
names (memory); its ordering rules are kept: `ls` lists names ascending by
byte value, traversals (dumps) visit children in descending order.

Cost: a lookup is one dict access per component; a change copies the
children dict of every node on the path (O(siblings) per level).

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
* `Store`: `Store.create(settings)`, `copy()`, `get_root()/set_root()`,
  `get_quota()/set_quota()`, `get_node(path)`,
  `get_deepest_existing_node(path)`, `read(perm, path) -> bytes`,
  `ls(perm, path) -> list[str]`, `getperms(perm, path)`,
  `path_exists(path)`, `write(perm, path, value)`, `mkdir(perm, path)`,
  `rm(perm, path)`, `setperms(perm, path, perms)`,
  `set_node(path, node, orig_quota, mod_quota)`,
  `reset_permissions(domid)`, `dump_fct(f)`, `dump(out)`,
  `dump_buffer() -> bytes`, `get_ops(perm)`, `incr_transaction_coalesce()`,
  `incr_transaction_abort()`, `stats()`, `symbol_stats()`;
  module functions `traversal(root, f)`, `dump_store_buf(root)`.

Exceptions follow store.ml: DoesntExist, LookupDoesntExist, KeyError
(Not_found), InvalidPath, AlreadyExist, PermissionDenied and the quota ones.
"""
from __future__ import annotations

import logging
import re
import sys
from types import SimpleNamespace
from typing import (TYPE_CHECKING, Any, BinaryIO, Callable, Dict, List, Mapping, Optional, Tuple,
                    TypeVar)

from . import perms as Perms
from .define import (AlreadyExist, DoesntExist, InvalidPath, LookupDoesntExist, NotFound,
                     PermissionDenied)
from .pmap import PMap
from .quota import Quota
from .utils import ocaml_escaped, path_validate

if TYPE_CHECKING:
    from .config import Settings

__all__ = ["Node", "Path", "PathCache", "Store", "traversal", "dump_store_buf"]

log = logging.getLogger("oxsd.store|node")

A = TypeVar("A")

_NO_CHILDREN: Dict[str, "Node"] = {}  # shared, never mutated
_INVALID_OWNER = -1
# A child map this big (/local/domain's, say) becomes a PMap, so that a
# guest's change below it does not copy every other domain's entry.
CHILDREN_DICT_MAX = 64


def _with_child(children: Mapping[str, "Node"], name: str, child: "Node") -> Mapping[str, "Node"]:
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
                    _with_child(self.children, child.name, child))

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
            children = _with_child(children, child.name, nchild)
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
            return _ROOT
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
            return _ROOT
        return Path(path + (name,))

    def to_string(self) -> str:
        return "/" + "/".join(self)

    def to_string_list(self) -> Tuple[str, ...]:
        return tuple(self)

    def get_parent(self) -> "Path":
        return Path(self[:-1]) if self else _ROOT

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


_ROOT = Path(())


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

_R = Perms.READ
_W = Perms.WRITE


def _count_owner(node: Node, counts: Dict[int, int]) -> Dict[int, int]:
    owner = node.perms.owner
    counts[owner] = counts.get(owner, 0) + 1
    return counts


class Store:
    """The live tree (or a transaction's private copy) with its quota and statistics."""

    __slots__ = ("stat_transaction_coalesce", "stat_transaction_abort", "root", "quota",
                 "settings")

    def __init__(self, root: Node, quota: Quota, settings: "Settings",
                 stat_transaction_coalesce: int = 0, stat_transaction_abort: int = 0) -> None:
        self.root = root
        self.quota = quota
        self.settings = settings
        self.stat_transaction_coalesce = stat_transaction_coalesce
        self.stat_transaction_abort = stat_transaction_abort

    @staticmethod
    def create(settings: "Settings") -> "Store":
        """An empty store: the root alone, owned by dom0 with perms n0, value ""."""
        return Store(Node.create("", Perms.default0, b""), Quota.create(settings), settings)

    def copy(self) -> "Store":
        """Same root object, copied quota and counters."""
        return Store(self.root, self.quota.copy(), self.settings,
                     self.stat_transaction_coalesce, self.stat_transaction_abort)

    def get_root(self) -> Node:
        return self.root

    def set_root(self, root: Node) -> None:
        self.root = root

    def get_quota(self) -> Quota:
        return self.quota

    def set_quota(self, quota: Quota) -> None:
        self.quota = quota

    # -- tree changes without quota (store.ml path_*) -----------------------
    def path_mkdir(self, perm: Perms.Connection, path: Path) -> Node:
        activate = self.settings.perms_activate

        def do_mkdir(node: Node, name: str) -> Node:
            ent = node.children.get(name)
            if ent is not None:
                ent.check_perm(perm, _W, activate)
                raise AlreadyExist()
            node.check_perm(perm, _W, activate)
            return node.add_child(Node.create(name, node.perms, b""))

        if not path:
            return self.root
        return Path.apply_modify(self.root, path, do_mkdir)

    def path_write(self, perm: Perms.Connection, path: Path, value: bytes) -> Tuple[Node, bool]:
        activate = self.settings.perms_activate
        if not path:
            self.root.check_perm(perm, _W, activate)
            return self.root.set_value(value), False
        # Path.apply_modify with the write inline (the hot path: no closure per write).
        chain = []
        node = self.root
        for h in path[:-1]:
            child = node.children.get(h)
            if child is None:
                raise LookupDoesntExist(h)
            chain.append((node, child))
            node = child
        name = path[-1]
        ent = node.children.get(name)
        if ent is not None:
            ent.check_perm(perm, _W, activate)
            new = node.replace_child(ent, ent.set_value(value))
            created = False
        else:
            node.check_perm(perm, _W, activate)
            new = node.add_child(Node.create(name, node.perms, value))
            created = True
        for parent, child in reversed(chain):
            new = parent.replace_child(child, new)
        return new, created

    def path_rm(self, perm: Perms.Connection, path: Path) -> Node:
        activate = self.settings.perms_activate
        if not path:
            self.root.check_perm(perm, _W, activate)
            return self.root.del_all_children()

        def do_rm(node: Node, name: str) -> Node:
            ent = node.children.get(name)
            if ent is None:
                raise DoesntExist()
            ent.check_perm(perm, _W, activate)
            return node.del_childname(name)

        return Path.apply_modify(self.root, path, do_rm)

    def path_setperms(self, perm: Perms.Connection, path: Path, perms: Perms.Node) -> Node:
        activate = self.settings.perms_activate
        if not path:
            self.root.check_perm(perm, _W, activate)
            return self.root.set_perms(perms)

        def do_setperms(node: Node, name: str) -> Node:
            c = node.children[name]
            c.check_owner(perm, activate)
            c.check_perm(perm, _W, activate)
            return node.replace_child(c, c.set_perms(perms))

        return Path.apply_modify(self.root, path, do_setperms)

    # -- reading ------------------------------------------------------------
    def get_node(self, path: Path) -> Optional[Node]:
        return Path.get_node(self.root, path)

    def get_deepest_existing_node(self, path: Path) -> Tuple[Node, bool]:
        return Path.get_deepest_existing_node(self.root, path)

    def _lookup_readable(self, perm: Perms.Connection, path: Path) -> Node:
        node = self.root
        for h in path:
            node = node.children[h]  # KeyError: ENOENT
        Perms.check(perm, _R, node.perms, self.settings.perms_activate)
        return node

    def read(self, perm: Perms.Connection, path: Path) -> bytes:
        return self._lookup_readable(perm, path).value

    def ls(self, perm: Perms.Connection, path: Path) -> List[str]:
        """Child names, ascending by byte value."""
        return sorted(self._lookup_readable(perm, path).children)

    def getperms(self, perm: Perms.Connection, path: Path) -> Perms.Node:
        return self._lookup_readable(perm, path).perms

    def path_exists(self, path: Path) -> bool:
        node = self.root
        children = node.children
        for h in path:
            node = children.get(h)  # type: ignore[assignment]
            if node is None:
                return False
            children = node.children
        return True

    # -- dumps --------------------------------------------------------------
    def dump_fct(self, f: Callable[[Path, Node], None]) -> None:
        traversal(self.root, f)

    def dump(self, out: BinaryIO) -> None:
        """Write the legacy text dump (SIGUSR1, `persistent`) to a binary stream."""
        out.write(dump_store_buf(self.root))

    def dump_buffer(self) -> bytes:
        return dump_store_buf(self.root)

    def dump_stdout(self) -> None:
        sys.stdout.buffer.write(dump_store_buf(self.root))

    # -- changes with quota -------------------------------------------------
    def set_node(self, path: Path, node: Node, orig_quota: Quota, mod_quota: Quota) -> None:
        """Graft `node` at `path` (coalesced commit) and merge the quota change."""
        self.root = Path.set_node(self.root, path, node)
        self.quota = Quota.merge(orig_quota, mod_quota, self.quota)

    def write_below_parent(self, perm: Perms.Connection, path: Path,
                           value: bytes) -> Optional[bool]:
        """`write` in one walk of the tree when every ancestor of `path` exists.

        None, with nothing checked or changed, when an ancestor is missing
        (the caller creates them first, as process.ml's do_write does, then
        writes); else whether the node was created.  The checks and their
        order are `write`'s: quota (store.ml: write), then the permission
        (path_write), so the errors are the same; `write` walks the path
        three times for the same result (get_deepest_existing_node,
        path_write, and the caller's parent test).
        """
        if not path:
            return None
        chain = []
        node = self.root
        for h in path[:-1]:
            child = node.children.get(h)
            if child is None:
                return None
            chain.append((node, child))
            node = child
        name = path[-1]
        ent = node.children.get(name)
        if ent is not None or perm.is_dom0():
            self.quota.check(-1, len(value))  # size only
        else:
            self.quota.check(node.perms.owner, len(value))
        activate = self.settings.perms_activate
        if ent is not None:
            Perms.check(perm, _W, ent.perms, activate)
            new = Node(node.name, node.perms, node.value,
                       _with_child(node.children, name, ent.set_value(value)))
        else:
            Perms.check(perm, _W, node.perms, activate)
            new = node.add_child(Node.create(name, node.perms, value))
        for parent, child in reversed(chain):
            new = Node(parent.name, parent.perms, parent.value,
                       _with_child(parent.children, child.name, new))
        self.root = new
        if ent is None:
            self.quota = self.quota.add_entry(node.perms.owner)
            return True
        return False

    def write(self, perm: Perms.Connection, path: Path, value: bytes) -> None:
        node, existing = Path.get_deepest_existing_node(self.root, path)
        owner = node.perms.owner
        if existing or perm.is_dom0():
            self.quota.check(-1, len(value))  # size only
        else:
            self.quota.check(owner, len(value))
        root, node_created = self.path_write(perm, path, value)
        self.root = root
        if node_created:
            self.quota = self.quota.add_entry(owner)

    def mkdir(self, perm: Perms.Connection, path: Path) -> None:
        node, existing = Path.get_deepest_existing_node(self.root, path)
        owner = node.perms.owner
        if not (existing or perm.is_dom0()):
            self.quota.check(owner, 0)
        self.root = self.path_mkdir(perm, path)
        if not existing:
            self.quota = self.quota.add_entry(owner)

    def rm(self, perm: Perms.Connection, path: Path) -> None:
        rmed_node = Path.get_node(self.root, path)
        if rmed_node is None:
            raise DoesntExist()
        self.root = self.path_rm(perm, path)
        # One quota update per owner, not per node (same counts as store.ml's del_entry per node).
        self.quota = self.quota.del_entries(rmed_node.recurse(_count_owner, {}))

    def setperms(self, perm: Perms.Connection, path: Path, nperms: Perms.Node) -> None:
        node = Path.get_node(self.root, path)
        if node is None:
            raise DoesntExist()
        old_owner = node.perms.owner
        new_owner = nperms.owner
        if not (old_owner == new_owner or perm.is_dom0()):
            raise PermissionDenied()
        self.root = self.path_setperms(perm, path, nperms)
        self.quota = self.quota.del_entry(old_owner).add_entry(new_owner)

    def reset_permissions(self, domid: int) -> None:
        """Drop the nodes `domid` owns (with their subtrees) and its ACL entries; no events."""
        log.info("Cleaning up xenstore ACLs for domid %d", domid)

        def f(node: Node) -> Optional[Node]:
            perms = node.perms.remove_domid(domid)
            if perms is None:
                return None
            if perms != node.perms:
                log.debug("Changed permissions for node %s", node.name)
            return Node(node.name, perms, node.value, node.children)

        self.root = self.root.recurse_filter_map(f)
        self.quota = self.quota.delete(domid)

    def get_ops(self, perm: Perms.Connection) -> SimpleNamespace:
        """store.ml's `ops` record: the operations bound to one identity."""
        return SimpleNamespace(
            store=self,
            write=lambda path, value: self.write(perm, path, value),
            mkdir=lambda path: self.mkdir(perm, path),
            rm=lambda path: self.rm(perm, path),
            setperms=lambda path, perms: self.setperms(perm, path, perms),
            ls=lambda path: self.ls(perm, path),
            read=lambda path: self.read(perm, path),
            getperms=lambda path: self.getperms(perm, path),
            path_exists=self.path_exists,
        )

    # -- statistics ---------------------------------------------------------
    def incr_transaction_coalesce(self) -> None:
        self.stat_transaction_coalesce += 1

    def incr_transaction_abort(self) -> None:
        self.stat_transaction_abort += 1

    def stats(self) -> Tuple[int, int, int]:
        """(number of nodes, aborted commits, coalesced commits)."""
        nb_nodes = self.root.recurse(lambda _n, acc: acc + 1, 0)
        return nb_nodes, self.stat_transaction_abort, self.stat_transaction_coalesce

    def symbol_stats(self) -> Tuple[int, int]:
        """Stand-in for Symbol.stats (the OCaml weak-table sizes): distinct node names, twice."""
        names: set = set()
        self.root.recurse(lambda n, acc: names.add(n.name), None)
        return len(names), len(names)


def traversal(root_node: Node, f: Callable[[Path, Node], None]) -> None:
    """Call `f(parent_path, node)` on every node, pre-order, children in descending name order."""
    stack: List[Tuple[Path, Node]] = [(_ROOT, root_node)]
    while stack:
        path, node = stack.pop()
        f(path, node)
        if node.children:
            node_path = Path.of_path_and_name(path, node.name)
            # Popping from the end: push ascending so the largest name comes out first.
            stack.extend((node_path, node.children[name]) for name in sorted(node.children))


def dump_store_buf(root_node: Node) -> bytes:
    """`<parent comps joined by '/'>/<name>{<escaped perms>}[ = <escaped value>]` per node."""
    lines: List[str] = []
    add = lines.append

    def dump_node(path: Path, node: Node) -> None:
        head = "%s/%s{%s}" % ("/".join(path), node.name, ocaml_escaped(node.perms.to_string()))
        if node.value:
            add("%s = %s\n" % (head, ocaml_escaped(node.value)))
        else:
            add(head + "\n")

    traversal(root_node, dump_node)
    return "".join(lines).encode("latin-1")
