"""Transactions: snapshot, low paths, commit with coalescing (port of transaction.ml).

transaction.ml.  A transaction with id 0 ("No") works on the live store
directly; a real one ("Full") works on a private `Store.copy` taken at start
and keeps a snapshot of the live store to detect concurrent changes.  Commit
takes the fast path when the live root is still the snapshot's root object,
otherwise tries to coalesce: both low paths (longest common prefix of what
was read / written) must be untouched (same node objects, same permission
records on the way down) in the live tree.

transaction.ml's module-level state (`counter`, `failed_commits`,
`failed_commits_no_culprit`, `short_running_txns`, the `Random` generator)
lives in a `TransactionRegistry` the daemon owns; the flags
(`merge-activate`, `test-eagain`, `quota-maxrequests`,
`conflict-max-history-seconds`) are read from its `Settings`.

`commit` does not write the disk: it returns whether it committed; when
that is true and the transaction has write ops, the caller does
`Disk.write(t.store)` (or passes `persist=` which is called at that point).

Public API:

* `none = 0`; `Full(id, oldstore, cstore)`; `OCamlRandom` (the unseeded
  OCaml 4.13 `Random`, `.int(bound)`);
* `TransactionRegistry(settings, rng=None, clock=time.time)`: `.counter`,
  `.failed_commits`, `.failed_commits_no_culprit`, `.short_running_txns`,
  `reset_conflict_stats()`, `oldest_short_running_transaction()`,
  `trim_short_running_transactions(txn)`, `make(id, store, internal=False)`,
  `commit(con, t, access_log, persist=None) -> bool`;
* `Transaction.make(id, store, registry, internal=False)`; fields `ty`
  (None for "No", else `Full`), `start_count`, `store`, `quota`,
  `oldroot`, `paths` (chronological list of (Op, Path)), `operations`
  (chronological list of (request, response)), `quota_reached`,
  `read_lowpath`, `write_lowpath`, `restore_failed` (oxsd only: a
  transaction carried across a live update whose replay on the restored
  store differed, see `carried_transactions.py: restore_transaction`);
  methods `get_id()`, `get_store()`, `get_paths()` (newest first, like the
  OCaml list), `get_root()`, `is_read_only()`, `add_wop(op, path)`, `get_operations()` (oldest first),
  `check_quota_exn(perm)`, `add_operation(req, resp)`,
  `set_read_lowpath(p)`, `set_write_lowpath(p)`, `path_exists(path)`,
  `write(perm, path, value)`, `mkdir(perm, path, with_watch=True)`,
  `setperms(perm, path, perms)`, `rm(perm, path)`, `ls(perm, path)`,
  `read(perm, path)`, `getperms(perm, path)`,
  `commit(con, access_log, persist=None) -> bool`;
* module functions `check_parents_perms_identical(root1, root2, path)`,
  `get_lowest(path, opt)`, `test_coalesce(oldroot, currentroot, optpath)`,
  `can_coalesce(oldroot, currentroot, optpath, do_coalesce)`.

`access_log` needs `write_coalesce(tid, con, path)`,
`read_coalesce(tid, con, path)`, `conflict(tid, con)`, `commit(tid, con)`
where `con` is the connection's log name ("A1", "D5", "r(3):D5").
"""
from __future__ import annotations

import builtins
import logging
import time
from typing import TYPE_CHECKING, Any, Callable, List, NamedTuple, Optional, Protocol, Tuple

from . import perms as Perms
from .define import QuotaLimitReached
from .store import Node, Path, Store
from .xb.op import OP_MKDIR, OP_RM, OP_SET_PERMS, OP_WRITE, Op

if TYPE_CHECKING:
    from .config import Settings
    from .quota import Quota

__all__ = [
    "none", "Full", "OCamlRandom", "TransactionRegistry", "Transaction",
    "check_parents_perms_identical", "get_lowest", "test_coalesce", "can_coalesce",
]

log = logging.getLogger("oxsd.transaction")

none = 0


class AccessLog(Protocol):
    def write_coalesce(self, tid: int, con: str, path: str) -> None: ...
    def read_coalesce(self, tid: int, con: str, path: str) -> None: ...
    def conflict(self, tid: int, con: str) -> None: ...
    def commit(self, tid: int, con: str) -> None: ...


class RandomSource(Protocol):
    def int(self, bound: int) -> int: ...


# -- OCaml's default Random state ----------------------------------------------

# The state OCaml's Random module starts with when never seeded (stdlib
# random.ml, `default`); oxenstored never seeds it, so its test-eagain draws
# are the same sequence in every run.
_OCAML_DEFAULT_STATE = (
    0x3ae2522b, 0x1d8d4634, 0x15b4fad0, 0x18b14ace, 0x12f8a3c4, 0x3b086c47,
    0x16d467d6, 0x101d91c7, 0x321df177, 0x0176c193, 0x1ff72bf1, 0x1e889109,
    0x0b464b18, 0x2b86b97c, 0x0891da48, 0x03137463, 0x085ac5a1, 0x15d61f2f,
    0x3bced359, 0x29c1c132, 0x3a86766e, 0x366d8c86, 0x1f5b6222, 0x3ce1b59f,
    0x2ebf78e1, 0x27cd1b86, 0x258f3dc3, 0x389a8194, 0x02e4c44c, 0x18c43f7d,
    0x0f6e534f, 0x1e7df359, 0x055d0b7e, 0x10e84e7e, 0x126198e4, 0x0e7722cb,
    0x1cbede28, 0x3391b964, 0x3d40e92a, 0x0c59933d, 0x0b8cd0b7, 0x24efff1c,
    0x2803fdaa, 0x08ebc72e, 0x0f522e32, 0x05398edc, 0x2144a04c, 0x0aef3cbd,
    0x01ad4719, 0x35b93cd6, 0x2a559d4f, 0x1e6fd768, 0x26e27f36, 0x186f18c3,
    0x2fbf967a,
)


class OCamlRandom:
    """OCaml 4.x `Random` (lagged Fibonacci, 30-bit outputs) from its default state."""

    __slots__ = ("st", "idx")

    def __init__(self) -> None:
        self.st = list(_OCAML_DEFAULT_STATE)
        self.idx = 0

    def bits(self) -> int:
        st = self.st
        self.idx = idx = (self.idx + 1) % 55
        curval = st[idx]
        newval = st[(idx + 24) % 55] + (curval ^ ((curval >> 25) & 0x1F))
        newval &= 0x3FFFFFFF
        st[idx] = newval
        return newval

    def int(self, bound: int) -> int:
        if bound > 0x3FFFFFFF or bound <= 0:
            raise ValueError("Random.int")
        while True:
            r = self.bits()
            v = r % bound
            if r - v <= 0x3FFFFFFF - bound + 1:
                return v

    def randrange(self, bound: builtins.int) -> builtins.int:
        return self.int(bound)


# -- coalescing checks ----------------------------------------------------------

def check_parents_perms_identical(root1: Node, root2: Node, path: Path) -> bool:
    """Every prefix of `path` (root included) exists in both trees with equal printed perms.

    A missing ancestor raises KeyError (the caller turns it into "no")."""
    for p in path.get_hierarchy():
        n1 = Path.get_node(root1, p)
        n2 = Path.get_node(root2, p)
        if n1 is None or n2 is None or not Perms.equiv(n1.perms, n2.perms):
            return False
    return True


def get_lowest(path1: Path, path2: Optional[Path]) -> Path:
    if path2 is None:
        return path1
    return Path.get_common_prefix(path1, path2)


def test_coalesce(oldroot: Node, currentroot: Node, optpath: Optional[Path]) -> bool:
    if optpath is None:
        return True
    path = optpath
    oldnode = Path.get_node(oldroot, path)
    currentnode = Path.get_node(currentroot, path)
    if oldnode is not None and currentnode is not None:
        if oldnode is currentnode:
            return check_parents_perms_identical(oldroot, currentroot, path)
        return False
    if oldnode is None and currentnode is None:
        # Absent in both: it can be sneaked in if its parent exists now.
        return Path.get_node(currentroot, path.get_parent()) is not None
    return False


def can_coalesce(oldroot: Node, currentroot: Node, path: Optional[Path],
                 do_coalesce: bool = True) -> bool:
    if not do_coalesce:
        return False
    try:
        return test_coalesce(oldroot, currentroot, path)
    except Exception:
        return False


# -- the transaction --------------------------------------------------------------

class Full(NamedTuple):
    """A real transaction: its id, the snapshot taken at start, and the live store."""

    id: int
    oldstore: Store
    cstore: Store


class Transaction:
    """Port of Transaction.t."""

    __slots__ = ("ty", "start_count", "store", "quota", "oldroot", "paths", "operations",
                 "quota_reached", "read_lowpath", "write_lowpath", "registry", "restore_failed")

    def __init__(self, ty: Optional[Full], start_count: int, store: Store, quota: "Quota",
                 oldroot: Node, registry: "TransactionRegistry") -> None:
        self.ty = ty
        self.start_count = start_count
        self.store = store  # the store this transaction changes
        self.quota = quota  # the quota at start (the "orig" side of a merge)
        self.oldroot = oldroot
        self.paths: List[Tuple[Op, Path]] = []  # chronological
        self.operations: List[Tuple[Any, Any]] = []  # chronological (request, response)
        self.quota_reached = False
        self.read_lowpath: Optional[Path] = None
        self.write_lowpath: Optional[Path] = None
        self.registry = registry
        # Carried across a live update and its replay on the restored store
        # gave another response somewhere: committing it fails (EAGAIN).
        self.restore_failed = False

    @staticmethod
    def make(id: int, store: Store, registry: "TransactionRegistry",
             internal: bool = False) -> "Transaction":
        """Id 0: a throw-away transaction on the live store; else a snapshot copy.

        Non-internal real transactions are recorded as short-running (history)."""
        if id == none:
            txn = Transaction(None, registry.counter, store, store.quota.copy(), store.root,
                              registry)
        else:
            txn = Transaction(Full(id, store.copy(), store), registry.counter, store.copy(),
                              store.quota.copy(), store.root, registry)
            if not internal:
                registry.short_running_txns.append((registry.clock(), txn))
        return txn

    def reset_direct(self, store: Store, start_count: int) -> None:
        """Be a fresh id-0 transaction on `store` again, as `make(0, store)` gives
        (Process reuses one for every request outside a transaction)."""
        self.start_count = start_count
        self.store = store
        self.quota = store.quota  # Quota.copy shares: quotas are immutable
        self.oldroot = store.root
        self.paths.clear()
        self.quota_reached = False

    def __repr__(self) -> str:
        return "Transaction(id=%d, paths=%d, operations=%d)" % (
            self.get_id(), len(self.paths), len(self.operations))

    def get_id(self) -> int:
        ty = self.ty
        return none if ty is None else ty.id

    def get_store(self) -> Store:
        return self.store

    def get_paths(self) -> List[Tuple[Op, Path]]:
        """Newest first, like the OCaml list (`self.paths` is oldest first)."""
        return self.paths[::-1]

    def get_root(self) -> Node:
        return self.store.root

    def is_read_only(self) -> bool:
        return not self.paths

    def add_wop(self, ty: Op, path: Path) -> None:
        self.paths.append((ty, path))

    def get_operations(self) -> List[Tuple[Any, Any]]:
        """(request, response) pairs, oldest first."""
        return list(self.operations)

    def check_quota_exn(self, perm: Perms.Connection) -> None:
        """EQUOTA once a guest has made `quota-maxrequests` requests; sticky afterwards."""
        maxrequests = self.registry.settings.quota_maxrequests
        if (maxrequests >= 0 and not perm.is_dom0()
                and (self.quota_reached or len(self.operations) >= maxrequests)):
            self.quota_reached = True
            raise QuotaLimitReached()

    def add_operation(self, request: Any, response: Any) -> None:
        self.operations.append((request, response))

    def set_read_lowpath(self, path: Path) -> None:
        self.read_lowpath = get_lowest(path, self.read_lowpath)

    def set_write_lowpath(self, path: Path) -> None:
        self.write_lowpath = get_lowest(path, self.write_lowpath)

    def path_exists(self, path: Path) -> bool:
        return self.store.path_exists(path)

    # -- operations -----------------------------------------------------------
    # The low paths serve only a Full transaction's commit (coalescing): an
    # id-0 one works on the live store and never commits, so it keeps none.
    def write(self, perm: Perms.Connection, path: Path, value: bytes) -> None:
        if self.ty is None:
            self.store.write(perm, path, value)
        else:
            existed = self.store.path_exists(path)
            self.store.write(perm, path, value)
            self.set_write_lowpath(path if existed else path.get_parent())
        self.paths.append((OP_WRITE, path))

    def write_below_parent(self, perm: Perms.Connection, path: Path, value: bytes) -> bool:
        """`write` when every ancestor of `path` exists; False (nothing done) otherwise
        (Store.write_below_parent: one walk of the tree)."""
        created = self.store.write_below_parent(perm, path, value)
        if created is None:
            return False
        if self.ty is not None:
            self.set_write_lowpath(path.get_parent() if created else path)
        self.paths.append((OP_WRITE, path))
        return True

    def mkdir(self, perm: Perms.Connection, path: Path, with_watch: bool = True) -> None:
        self.store.mkdir(perm, path)
        if self.ty is not None:
            self.set_write_lowpath(path.get_parent())
        if with_watch:
            self.paths.append((OP_MKDIR, path))

    def setperms(self, perm: Perms.Connection, path: Path, perms: Perms.Node) -> None:
        self.store.setperms(perm, path, perms)
        if self.ty is not None:
            self.set_write_lowpath(path)
        self.paths.append((OP_SET_PERMS, path))

    def rm(self, perm: Perms.Connection, path: Path) -> None:
        self.store.rm(perm, path)
        if self.ty is not None:
            self.set_write_lowpath(path.get_parent())
        self.paths.append((OP_RM, path))

    def ls(self, perm: Perms.Connection, path: Path) -> List[str]:
        r = self.store.ls(perm, path)
        if self.ty is not None:
            self.set_read_lowpath(path)
        return r

    def read(self, perm: Perms.Connection, path: Path) -> bytes:
        r = self.store.read(perm, path)
        if self.ty is not None:
            self.set_read_lowpath(path)
        return r

    def getperms(self, perm: Perms.Connection, path: Path) -> Perms.Node:
        r = self.store.getperms(perm, path)
        if self.ty is not None:
            self.set_read_lowpath(path)
        return r

    # -- commit -----------------------------------------------------------------
    def commit(self, con: str, access_log: AccessLog,
               persist: Optional[Callable[[Store], None]] = None) -> bool:
        """Try to commit into the live store; True on success.

        `con` is the access-log connection name.  `persist(store)` (Disk.write)
        is called with the private store after a successful commit with writes."""
        has_write_ops = bool(self.paths)
        has_coalesced = False
        ty = self.ty
        tid = self.get_id()
        if ty is None:
            committed = True
        else:
            reg = self.registry
            settings = reg.settings
            if settings.test_eagain and reg.rng.int(3) == 0:
                committed = False
            else:
                oldroot = ty.oldstore.root
                cstore = ty.cstore
                store = self.store
                if oldroot is cstore.root:
                    # Nobody changed the live store: move our root (and quota) over.
                    if has_write_ops:
                        cstore.root = store.root
                        cstore.quota = store.quota
                    committed = True
                else:
                    do_coalesce = settings.merge_activate
                    croot = cstore.root
                    if (can_coalesce(oldroot, croot, self.read_lowpath, do_coalesce)
                            and can_coalesce(oldroot, croot, self.write_lowpath, do_coalesce)):
                        wp = self.write_lowpath
                        if wp is not None:
                            # The low path exists in our store unless low-path
                            # bookkeeping is wrong; the original ignores a miss.
                            n = store.get_node(wp)
                            if n is not None:
                                cstore.set_node(wp, n, self.quota, store.quota)
                            access_log.write_coalesce(tid, con, wp.to_string())
                        rp = self.read_lowpath
                        if rp is not None:
                            access_log.read_coalesce(tid, con, rp.to_string())
                        has_coalesced = True
                        cstore.incr_transaction_coalesce()
                        committed = True
                    else:
                        cstore.incr_transaction_abort()
                        committed = False
        if committed and has_write_ops and persist is not None:
            persist(self.store)
        if not committed:
            access_log.conflict(tid, con)
        elif not has_coalesced:
            access_log.commit(tid, con)
        return committed


# -- daemon-wide transaction state ------------------------------------------------

class TransactionRegistry:
    """transaction.ml's globals: commit counter, conflict statistics, short-running list, RNG."""

    def __init__(self, settings: "Settings", rng: Optional[RandomSource] = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.settings = settings
        self.rng: RandomSource = rng if rng is not None else OCamlRandom()
        self.clock = clock
        self.counter = 0  # +1 per recorded commit (process.ml record_commit)
        self.failed_commits = 0
        self.failed_commits_no_culprit = 0
        # (start time, transaction), oldest first (the OCaml list is newest first).
        self.short_running_txns: List[Tuple[float, Transaction]] = []

    def make(self, id: int, store: Store, internal: bool = False) -> Transaction:
        return Transaction.make(id, store, self, internal)

    def commit(self, con: str, t: Transaction, access_log: AccessLog,
               persist: Optional[Callable[[Store], None]] = None) -> bool:
        """`Transaction.commit ~con t` (same as `t.commit(con, access_log, persist)`)."""
        return t.commit(con, access_log, persist)

    def reset_conflict_stats(self) -> None:
        self.failed_commits = 0
        self.failed_commits_no_culprit = 0

    def oldest_short_running_transaction(self) -> Optional[Transaction]:
        lst = self.short_running_txns
        return lst[0][1] if lst else None

    def trim_short_running_transactions(self, txn: Optional[Transaction] = None) -> None:
        """Forget transactions started more than conflict-max-history-seconds ago (and `txn`)."""
        cutoff = self.clock() - self.settings.conflict_max_history_seconds
        self.short_running_txns = [
            (start, tx) for start, tx in self.short_running_txns
            if start >= cutoff and tx is not txn]
