"""The store: the live tree with its quota, and the operations on it (port of store.ml).

The tree itself (immutable `Node`s, `Path`s, the copy on write) is tree.py:
store.ml's Node and Path modules.  A Store holds a root node and a `Quota`
(immutable too), so a transaction's snapshot is `Store.copy()`: the same
root, the same quota object.  `ls` lists names ascending by byte value
(symbol.ml's order), traversals (dumps) visit children in descending order.

Public API:

* `Store`: `Store.create(settings)`, `copy()`, `get_root()/set_root()`,
  `get_quota()/set_quota()`, `get_node(path)`,
  `get_deepest_existing_node(path)`, `read(perm, path) -> bytes`,
  `ls(perm, path) -> list[str]`, `getperms(perm, path)`,
  `path_exists(path)`, `write(perm, path, value)`,
  `write_below_parent(perm, path, value)` (a write in one walk when the
  parent exists), `mkdir(perm, path)`, `rm(perm, path)`,
  `setperms(perm, path, perms)`, `set_node(path, node, orig_quota, mod_quota)`,
  `reset_permissions(domid)`, `dump_fct(f)`, `dump(out)`,
  `dump_buffer() -> bytes`, `get_ops(perm)`, `incr_transaction_coalesce()`,
  `incr_transaction_abort()`, `stats()`, `symbol_stats()`;
  module functions `traversal(root, f)`, `dump_store_buf(root)`;
* `Node`, `Path`, `PathCache` (tree.py), for the modules that import them from here.

Exceptions follow store.ml: DoesntExist, LookupDoesntExist, KeyError
(Not_found), InvalidPath, AlreadyExist, PermissionDenied and the quota ones.
"""
from __future__ import annotations

import logging
import sys
from types import SimpleNamespace
from typing import TYPE_CHECKING, BinaryIO, Callable, Dict, List, Optional, Tuple

from . import perms as Perms
from .define import AlreadyExist, DoesntExist, PermissionDenied
from .quota import Quota
from .tree import ROOT, Node, Path, PathCache, with_child
from .utils import ocaml_escaped

if TYPE_CHECKING:
    from .config import Settings

__all__ = ["Node", "Path", "PathCache", "Store", "traversal", "dump_store_buf"]

log = logging.getLogger("oxsd.store|node")


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
        """Same root object, copied quota and counters (a Quota is immutable: shared)."""
        return Store(self.root, self.quota, self.settings,
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
        created = False

        def do_write(node: Node, name: str) -> Node:
            nonlocal created
            ent = node.children.get(name)
            if ent is not None:
                ent.check_perm(perm, _W, activate)
                return node.replace_child(ent, ent.set_value(value))
            node.check_perm(perm, _W, activate)
            created = True
            return node.add_child(Node.create(name, node.perms, value))

        # write_below_parent is the hot path; this one serves the rest (implicit parents)
        return Path.apply_modify(self.root, path, do_write), created

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
        if node.perms.lacks(perm, _R, self.settings.perms_activate):  # Perms.check inline
            raise PermissionDenied()
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
            if ent.perms.lacks(perm, _W, activate):  # Perms.check, one call less
                raise PermissionDenied()
            new = Node(node.name, node.perms, node.value,
                       with_child(node.children, name, ent.set_value(value)))
        else:
            if node.perms.lacks(perm, _W, activate):
                raise PermissionDenied()
            new = node.add_child(Node.create(name, node.perms, value))
        for parent, child in reversed(chain):
            new = Node(parent.name, parent.perms, parent.value,
                       with_child(parent.children, child.name, new))
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
    stack: List[Tuple[Path, Node]] = [(ROOT, root_node)]
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
