"""Node permission records, connection identities and the access checks (port of perms.ml).

perms.ml.  A node's record is `Node(owner, other, acl)`: `other` is the
right of every domain not listed in `acl`, a tuple of `(domid, right)`.  A
connection's identity is `Connection(main, target)`, each an
`(domid, rights)` pair; the rights lists are never consulted by the checks.

The OCaml globals `Perms.activate` / `Perms.watch_activate` are
`Settings.perms_activate` / `Settings.perms_watch_activate`; the checks take
the flag as an argument.

Public API:

* rights: `Permty` (`READ`, `WRITE`, `RDWR`, `NONE`, module aliases too),
  `char_of_permty(p) -> str`, `permty_of_char(c) -> Permty`
  (InvalidArgument);
* `Node` (immutable, comparable): `Node.create(owner, other, acl)`,
  `.owner/.other/.acl`, `get_owner()`, `get_other()`, `get_acl()`,
  `remove_domid(domid) -> Node | None`, `Node.of_strings(list)`,
  `Node.of_string(s)` (s ends with NUL; bytes or str),
  `to_string(sep="\\0") -> str`, `default0`;
  `perm_of_string(s)`, `string_of_perm((domid, right))`;
* `Connection` (immutable, comparable; alias `ConnectionPerms`):
  `Connection.create(domid, perms=(NONE,))`, `.set_target(domid, perms)`,
  `.get_owners()`, `.is_owner(id)`, `.is_dom0()`, `.to_string()`,
  `Connection.full_rights`;
* checks: `check_owner(conn, node, activate=True)`,
  `lacks(conn, request, node, activate=True)`,
  `check(conn, request, node, activate=True)` (PermissionDenied),
  `has(conn, request, node, activate=True)`,
  `can_fire_watch(conn, perms, settings)`, `equiv(p1, p2)`;
  each asks the record (`node.lacks`, `node.owned_by`), so that a record
  of another class can answer otherwise;
* protocol level 4.22: `DOMID_ANY`, `AnyDomainNode` (a record whose
  DOMID_ANY entries mean every domain), `honour_domid_any(node)`.

Rejections are logged at info on `oxsd.perms` ("Permission denied: ...").

DOMID_ANY costs the default level nothing: oxenstored 4.17's check is
`Node.lacks`, unchanged; only records made by protocol level 4.22 (SET_PERMS
from a writer with XENSTORE_SERVER_FEATURE_DOMID_ANY, and the nodes created
below them, which inherit the record) are `AnyDomainNode`s, whose `lacks`
and `owned_by` also match DOMID_ANY.  A DOMID_ANY entry in a plain `Node`
(written at 4.17, or by a writer without the feature) names no domain that
can connect: it is ignored, as C xenstored ignores it (XS_PERM_IGNORE).
"""
from __future__ import annotations

import enum
import logging
from typing import TYPE_CHECKING, Iterable, List, NamedTuple, Optional, Sequence, Tuple

from .define import InvalidArgument, PermissionDenied
from .utils import format_u, int_of_string

if TYPE_CHECKING:
    from .config import Settings

__all__ = [
    "Permty", "READ", "WRITE", "RDWR", "NONE", "char_of_permty", "permty_of_char",
    "Node", "perm_of_string", "string_of_perm", "default0",
    "Connection", "ConnectionPerms",
    "check_owner", "lacks", "check", "has", "can_fire_watch", "equiv",
    "DOMID_ANY", "AnyDomainNode", "honour_domid_any",
]

log = logging.getLogger("oxsd.perms")

# xen.h DOMID_ANY: in a permission entry, every domain (C xenstored, protocol level 4.22).
DOMID_ANY = 0x7FF5


class Permty(enum.Enum):
    READ = "r"
    WRITE = "w"
    RDWR = "b"
    NONE = "n"


READ = Permty.READ
WRITE = Permty.WRITE
RDWR = Permty.RDWR
NONE = Permty.NONE

_OF_CHAR = {p.value: p for p in Permty}


def char_of_permty(perm: Permty) -> str:
    return perm.value


def permty_of_char(c: str) -> Permty:
    try:
        return _OF_CHAR[c]
    except KeyError:
        raise InvalidArgument("unknown permission type") from None


AclEntry = Tuple[int, Permty]


def perm_of_string(s: str) -> AclEntry:
    """`"b5"` -> (5, RDWR); the domid is parsed by OCaml int_of_string."""
    if not s:
        raise InvalidArgument("index out of bounds")
    ty = permty_of_char(s[0])
    return int_of_string(s[1:]), ty


def string_of_perm(perm: AclEntry) -> str:
    return perm[1].value + format_u(perm[0])


class Node(NamedTuple):
    """A node's permission record (immutable)."""

    owner: int
    other: Permty
    acl: Tuple[AclEntry, ...]

    @staticmethod
    def create(owner: int, other: Permty, acl: Iterable[AclEntry] = ()) -> "Node":
        return Node(owner, other, tuple(acl))

    def get_owner(self) -> int:
        return self.owner

    def get_other(self) -> Permty:
        return self.other

    def get_acl(self) -> Tuple[AclEntry, ...]:
        return self.acl

    def remove_domid(self, domid: int) -> Optional["Node"]:
        """None if `domid` owns the record, else the record without ACL entries for `domid`."""
        if self.owner == domid:
            return None
        return Node(self.owner, self.other, tuple(e for e in self.acl if e[0] != domid))

    @staticmethod
    def of_strings(ls: Sequence[str]) -> "Node":
        """["b5", "r0"] -> owner 5, other RDWR, acl [(0, READ)]."""
        vect = [perm_of_string(s) for s in ls]
        if not vect:
            raise InvalidArgument("permvec empty")
        owner, other = vect[0]
        return Node(owner, other, tuple(vect[1:]))

    @staticmethod
    def of_string(s: str | bytes) -> "Node":
        """Parse NUL-separated entries; the last piece (normally empty, after the final NUL) is dropped."""
        if isinstance(s, (bytes, bytearray)):
            s = s.decode("latin-1")
        return Node.of_strings(s.split("\0")[:-1])

    def to_string(self, sep: str = "\0") -> str:
        first = self.other.value + format_u(self.owner)
        if not self.acl:
            return first
        return sep.join([first] + [string_of_perm(e) for e in self.acl])

    def lacks(self, connection: "Connection", request: Permty, activate: bool = True) -> bool:
        """True when the connection may not do `request` (READ or WRITE) here (perms.ml: check)."""
        if not activate or connection.is_dom0():
            return False
        main = connection.main[0]
        owner = self.owner
        target = connection.target
        if main == owner or (target is not None and target[0] == owner):
            return False
        if _grants(main, request, self):
            return False
        if target is not None and _grants(target[0], request, self):
            return False
        return True

    def owned_by(self, connection: "Connection", activate: bool = True) -> bool:
        """Whether the connection owns this node (always true for dom0 or with perms off)."""
        if activate and not connection.is_dom0():
            return connection.is_owner(self.owner)
        return True


default0 = Node(0, NONE, ())


class AnyDomainNode(Node):
    """A record whose DOMID_ANY entries match every domain (protocol level 4.22).

    C xenstored (core.c perm_allows_conn): an entry for DOMID_ANY applies
    to any connection, the owner DOMID_ANY gives every domain the owner's
    rights.  The rest is `Node`'s check: the first entry matching the
    domain (DOMID_ANY matching all) gives its right, the main domain
    first, then the target.  The printed form is `Node`'s.
    """

    __slots__ = ()

    def lacks(self, connection: "Connection", request: Permty, activate: bool = True) -> bool:
        if not activate or connection.is_dom0():
            return False
        owner = self.owner
        if owner == DOMID_ANY or connection.is_owner(owner):
            return False
        if _grants_any(connection.main[0], request, self):
            return False
        target = connection.target
        if target is not None and _grants_any(target[0], request, self):
            return False
        return True

    def owned_by(self, connection: "Connection", activate: bool = True) -> bool:
        return self.owner == DOMID_ANY or Node.owned_by(self, connection, activate)

    def remove_domid(self, domid: int) -> Optional["Node"]:
        """As `Node`'s, keeping the class: DOMID_ANY entries outlive every domain
        (domain.c domain_adjust_node_perms skips them)."""
        if self.owner == domid:
            return None
        return AnyDomainNode(self.owner, self.other,
                             tuple(e for e in self.acl if e[0] != domid))


def names_domid_any(node: Node) -> bool:
    """Whether the owner or an ACL entry is DOMID_ANY."""
    return node.owner == DOMID_ANY or any(d == DOMID_ANY for d, _ in node.acl)


def honour_domid_any(node: Node) -> Node:
    """`node` as an AnyDomainNode if it has a DOMID_ANY entry (else `node` itself)."""
    if type(node) is Node and names_domid_any(node):
        return AnyDomainNode(*node)
    return node


Elt = Tuple[int, Tuple[Permty, ...]]


class Connection(NamedTuple):
    """The permission identity of a connection: main domain and optional set_target target."""

    main: Elt
    target: Optional[Elt] = None

    @staticmethod
    def create(domid: int, perms: Iterable[Permty] = (NONE,)) -> "Connection":
        return Connection((domid, tuple(perms)), None)

    def set_target(self, domid: int, perms: Iterable[Permty] = (NONE,)) -> "Connection":
        return Connection(self.main, (domid, tuple(perms)))

    def get_owners(self) -> List[int]:
        if self.target is None:
            return [self.main[0]]
        return [self.main[0], self.target[0]]

    def is_owner(self, id: int) -> bool:
        target = self.target
        return self.main[0] == id or (target is not None and target[0] == id)

    def is_dom0(self) -> bool:
        # A domain whose target is 0 counts as dom0 [quirk].
        target = self.target
        return self.main[0] == 0 or (target is not None and target[0] == 0)

    def to_string(self) -> str:
        s = _elt_to_string(self.main)
        if self.target is not None:
            s += _elt_to_string(self.target)
        return s


def _elt_to_string(elt: Elt) -> str:
    # OCaml "%i%S": the id, then the rights as a quoted OCaml string literal.
    return '%d"%s"' % (elt[0], "".join(p.value for p in elt[1]))


Connection.full_rights = Connection((0, (READ, WRITE)), None)  # type: ignore[attr-defined]
ConnectionPerms = Connection


def _grants(domainid: int, request: Permty, node: Node) -> bool:
    perm = node.other
    for d, p in node.acl:
        if d == domainid:
            perm = p
            break
    return _allows(domainid, request, perm)


def _allows(domainid: int, request: Permty, perm: Permty) -> bool:
    """Whether `perm` (the entry that applies to `domainid`) allows `request`; logs a denial."""
    if perm is RDWR or perm is request:
        return True
    if perm is NONE:
        log.info("Permission denied: Domain %d has no permission", domainid)
    elif perm is READ:
        log.info("Permission denied: Domain %d has read only access", domainid)
    else:
        log.info("Permission denied: Domain %d has write only access", domainid)
    return False


def _grants_any(domainid: int, request: Permty, node: Node) -> bool:
    """`_grants` where an entry for DOMID_ANY matches `domainid` too."""
    perm = node.other
    for d, p in node.acl:
        if d == domainid or d == DOMID_ANY:
            perm = p
            break
    return _allows(domainid, request, perm)


def check_owner(connection: Connection, node: Node, activate: bool = True) -> bool:
    """Whether the connection owns the node (always true for dom0 or with perms off)."""
    return node.owned_by(connection, activate)


def lacks(connection: Connection, request: Permty, node: Node, activate: bool = True) -> bool:
    """True when the connection may not do `request` (READ or WRITE) on a node with record `node`."""
    return node.lacks(connection, request, activate)


def check(connection: Connection, request: Permty, node: Node, activate: bool = True) -> None:
    """Raise PermissionDenied when `lacks`."""
    if node.lacks(connection, request, activate):
        raise PermissionDenied()


def has(connection: Connection, request: Permty, node: Node, activate: bool = True) -> bool:
    return not node.lacks(connection, request, activate)


def can_fire_watch(connection: Connection, perms: Iterable[Node], settings: "Settings") -> bool:
    """Any of `perms` grants READ (or perms-watch-activate is off)."""
    if not settings.perms_watch_activate:
        return True
    activate = settings.perms_activate
    return any(not p.lacks(connection, READ, activate) for p in perms)


def equiv(perm1: Node, perm2: Node) -> bool:
    """Same printed form (the coalescing check compares records this way)."""
    return perm1.to_string() == perm2.to_string()
