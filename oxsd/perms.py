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
  `can_fire_watch(conn, perms, settings)`, `equiv(p1, p2)`.

Rejections are logged at info on `oxsd.perms` ("Permission denied: ...").
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
]

log = logging.getLogger("oxsd.perms")


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


default0 = Node(0, NONE, ())

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


def check_owner(connection: Connection, node: Node, activate: bool = True) -> bool:
    """Whether the connection owns the node (always true for dom0 or with perms off)."""
    if activate and not connection.is_dom0():
        return connection.is_owner(node.owner)
    return True


def _grants(domainid: int, request: Permty, node: Node) -> bool:
    perm = node.other
    for d, p in node.acl:
        if d == domainid:
            perm = p
            break
    if perm is RDWR or perm is request:
        return True
    if perm is NONE:
        log.info("Permission denied: Domain %d has no permission", domainid)
    elif perm is READ:
        log.info("Permission denied: Domain %d has read only access", domainid)
    else:
        log.info("Permission denied: Domain %d has write only access", domainid)
    return False


def lacks(connection: Connection, request: Permty, node: Node, activate: bool = True) -> bool:
    """True when the connection may not do `request` (READ or WRITE) on a node with record `node`."""
    if not activate or connection.is_dom0():
        return False
    main = connection.main[0]
    owner = node.owner
    target = connection.target
    if main == owner or (target is not None and target[0] == owner):
        return False
    if _grants(main, request, node):
        return False
    if target is not None and _grants(target[0], request, node):
        return False
    return True


def check(connection: Connection, request: Permty, node: Node, activate: bool = True) -> None:
    """Raise PermissionDenied when `lacks`."""
    if lacks(connection, request, node, activate):
        raise PermissionDenied()


def has(connection: Connection, request: Permty, node: Node, activate: bool = True) -> bool:
    return not lacks(connection, request, node, activate)


def can_fire_watch(connection: Connection, perms: Iterable[Node], settings: "Settings") -> bool:
    """Any of `perms` grants READ (or perms-watch-activate is off)."""
    if not settings.perms_watch_activate:
        return True
    activate = settings.perms_activate
    return any(not lacks(connection, READ, p, activate) for p in perms)


def equiv(perm1: Node, perm2: Node) -> bool:
    """Same printed form (the coalescing check compares records this way)."""
    return perm1.to_string() == perm2.to_string()
