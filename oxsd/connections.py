"""The registry of every connection and the global watch index (port of connections.ml)."""
from __future__ import annotations

import functools
import logging
from typing import TYPE_CHECKING, Callable, Dict, List, Optional, Tuple

from . import perms as Perms
from .connection import Connection, Watch
from .logging_ import exn_to_string
from .store import Path
from .ocaml_hashtbl import Hashtbl
from .trie import Trie
from .xb.xb import Xb

if TYPE_CHECKING:
    from .config import Settings
    from .domain import Domain
    from .logging_ import AccessLog
    from .store import Node

log = logging.getLogger("oxsd.connections")


CONS_TABLE_SIZE = 37  # Hashtbl.create 37 in connections.ml


def hashtbl_order(table: Dict[int, Connection]) -> List[Connection]:
    """The values of a connection table in OCaml Hashtbl.iter order (replaying the insertions)."""
    h: Hashtbl[int, Connection] = Hashtbl(CONS_TABLE_SIZE)
    for key, con in table.items():
        h.replace(key, con)
    return list(h.values())


def key_of_str(apath: str) -> Tuple[str, ...]:
    """Trie key of an absolute watch path; `@...` strings are a namespace of their own."""
    if apath[0] == "@":
        return (apath,)
    return ("",) + tuple(Path.of_string(apath).to_string_list())


def key_of_path(path: Path) -> Tuple[str, ...]:
    return ("",) + path  # a Path is a tuple of its components


class Connections:
    """Port of Connections.t: sockets by fd, domains by id and by local port, the watch trie."""

    def __init__(self, settings: "Settings", access_log: "AccessLog") -> None:
        self.settings = settings
        self.access_log = access_log
        self.anonymous: Dict[int, Connection] = {}
        self.domains: Dict[int, Connection] = {}
        self.ports: Dict[int, Connection] = {}
        # Domain connections that may have more work: Xb.on_activity adds one
        # when its ring read moves data or a packet is queued for it, and
        # has_more_work drops it once it has neither (so an iteration looks at
        # the few busy rings, not at every introduced domain).
        self.active: Dict[int, Connection] = {}
        self.watches: Trie = Trie.create()
        # Per connection, the trie keys holding its watches (with how many), so
        # that dropping a connection's watches touches only its own keys
        # instead of mapping over every watch of every connection.
        self.watch_keys: Dict[Connection, Dict[Tuple[str, ...], int]] = {}
        self.anon_id_next = 1
        # Protocol level 4.22 (oxsd.protocol_level): called with each new domain connection.
        self.on_new_domain: Optional[Callable[[Connection], None]] = None

    # -- adding and removing -----------------------------------------
    def _new_xb_fd(self, sock):
        s = self.settings
        return Xb.open_fd(sock, maxoutstanding=s.quota_maxoutstanding,
                          maxwatchevents=s.quota_maxwatchevents)

    def add_anonymous(self, sock, anonid: Optional[int] = None) -> Connection:
        xb = self._new_xb_fd(sock)
        if anonid is None:
            anonid = self.anon_id_next
            self.anon_id_next += 1
        con = Connection(xb, None, anonid, self.settings, self.access_log)
        self.anonymous[xb.get_fd()] = con
        return con

    def add_domain(self, dom: "Domain") -> Connection:
        s = self.settings
        xb = Xb.open_mmap(dom.get_interface(), dom.notify,
                          maxoutstanding=s.quota_maxoutstanding,
                          maxwatchevents=s.quota_maxwatchevents)
        con = Connection(xb, dom, 0, self.settings, self.access_log)
        self.domains[dom.id] = con
        self.ports[dom.get_local_port()] = con
        active, domid = self.active, dom.id
        # A partial of the dict's own method: no Python frame per call (two per request).
        xb.on_activity = functools.partial(active.__setitem__, domid, con)
        if self.on_new_domain is not None:
            self.on_new_domain(con)
        return con

    def find(self, fd: int) -> Connection:
        return self.anonymous[fd]

    def find_domain(self, domid: int) -> Connection:
        return self.domains[domid]

    def find_domain_by_port(self, port: int) -> Connection:
        return self.ports[port]

    def del_watches(self, con: Connection) -> None:
        """Drop every watch of `con` from the trie (connections.ml maps over the
        whole trie; filtering only `con`'s own keys leaves the same trie, as
        both prune the branches they empty, and costs only its own watches)."""
        con.del_watches()
        for key in self.watch_keys.pop(con, ()):
            watches = self.watches.find(key)
            ws = [w for w in watches if w.con is not con]
            self.watches = self.watches.set(key, ws) if ws else self.watches.unset(key)

    def del_anonymous(self, con: Connection) -> None:
        try:
            self.anonymous.pop(con.get_fd(), None)
            self.del_watches(con)
            con.close()
        except Exception as exn:  # the original logs and carries on
            log.debug("del anonymous %s", exn_to_string(exn))

    def del_domain(self, domid: int) -> None:
        try:
            con = self.domains.pop(domid)
            if self.active.get(domid) is con:
                del self.active[domid]
            con.xb.on_activity = None
            if con.dom is not None:
                self.ports.pop(con.dom.get_local_port(), None)
            self.del_watches(con)
            con.close()
        except Exception as exn:
            log.debug("del domain %u: %s", domid, exn_to_string(exn))

    # -- iteration ---------------------------------------------------
    def iter_domains(self) -> List[Connection]:
        return list(self.domains.values())

    def iter_anonymous(self) -> List[Connection]:
        return list(self.anonymous.values())

    def iter(self) -> List[Connection]:
        """All domain connections, then all socket connections."""
        return list(self.domains.values()) + list(self.anonymous.values())

    def has_more_work(self) -> List[Connection]:
        """Domain connections with more work (connection.ml has_more_work), among the active ones."""
        active = self.active
        if not active:
            return []
        out = []
        for domid, con in list(active.items()):
            if con.has_more_work():
                out.append(con)
            elif not (con.has_more_input() or con.has_output()):
                del active[domid]  # idle until its next ring read or queued packet
        return out

    # -- watches -----------------------------------------------------
    def add_watch(self, con: Connection, path: str, token: bytes,
                  check_quota: bool = True) -> Watch:
        apath = con.get_watch_path(path)
        key = key_of_str(apath)  # fails early on an invalid path
        watch = con.add_watch(path, apath, token, check_quota)
        existing = self.watches.find(key) if self.watches.mem(key) else []
        self.watches = self.watches.set(key, [watch] + existing)
        keys = self.watch_keys.setdefault(con, {})
        keys[key] = keys.get(key, 0) + 1
        return watch

    def del_watch(self, con: Connection, path: str, token: bytes) -> Watch:
        apath, watch = con.del_watch(path, token)
        key = key_of_str(apath)
        watches = [w for w in self.watches.find(key) if w is not watch]
        if watches:
            self.watches = self.watches.set(key, watches)
        else:
            self.watches = self.watches.unset(key)
        self._forget_key(con, key)
        return watch

    def _forget_key(self, con: Connection, key: Tuple[str, ...]) -> None:
        keys = self.watch_keys.get(con)
        if keys is None or key not in keys:
            return
        if keys[key] > 1:
            keys[key] -= 1
        else:
            del keys[key]
            if not keys:
                del self.watch_keys[con]

    def fire_watches(self, source: Connection, roots: Tuple[Optional["Node"], "Node"],
                     path: Path, recurse: bool) -> None:
        """Fire every watch on `path` and its ancestors, and below it when `recurse`."""
        key = key_of_path(path)
        along = self.watches.values_along(key)
        if along:
            spath = path.to_string()
            for watches in along:
                for w in watches:
                    fire_watch_with_path(source, roots, w, spath, path)
        if recurse:
            def fire_rec(_name, watches):
                if watches:
                    for w in watches:
                        fire_single_watch(source, roots, w)

            self.watches.sub(key).iter(fire_rec)

    def send_watchevents(self, con: Connection) -> None:
        con.source_flush_watchevents()

    def fire_spec_watches(self, root: "Node", specpath: str) -> None:
        source = self.find_domain(0)
        for con in self.iter():
            for w in con.get_watches(specpath):
                fire_single_watch(source, (None, root), w)

    def set_target(self, domid: int, target_domid: int) -> None:
        self.find_domain(domid).set_target(target_domid)

    def number_of_transactions(self) -> int:
        return sum(c.number_of_transactions() for c in self.iter())

    def stats(self) -> Tuple[int, int, int, int, int, int]:
        anon = [c.stats() for c in self.anonymous.values()]
        doms = [c.stats() for c in self.domains.values()]
        return (len(anon), sum(o for _, o in anon), sum(w for w, _ in anon),
                len(doms), sum(o for _, o in doms), sum(w for w, _ in doms))

    def debug(self) -> str:
        """CONTROL watches: domains, then sockets, each table in the reverse of its
        Hashtbl.fold order (the original conses onto a list as it folds).  Domains
        are keyed by domid, so their order is the original's; sockets are keyed by
        fd, and oxsd's fds are not the original's (docs/deviations.md)."""
        def listed(table: Dict[int, Connection]) -> List[Connection]:
            return list(reversed(hashtbl_order(table))) if len(table) > 1 else list(table.values())
        return "".join(c.debug() for c in listed(self.domains) + listed(self.anonymous))

    def debug_watchevents(self, con: Connection) -> str:
        # The set behind these counts is never filled in the original.
        return "Watches with pending events: 0, pending events total: 0"

    def prevents_quit(self) -> List[Connection]:
        """Blocking connections, in the order of the original's `filter`: a Hashtbl
        fold over the sockets, then one over the domains, each consing its matches.
        The checks run in fold order too: each may log a transaction count."""
        def fold(table: Dict[int, Connection]) -> List[Connection]:
            cons = hashtbl_order(table) if len(table) > 1 else list(table.values())
            return [c for c in cons if c.prevents_live_update()]
        anonymous = fold(self.anonymous)
        return fold(self.domains)[::-1] + anonymous[::-1]


# -- firing (connection.ml's fire_* functions; they need the store) ------

def lookup_watch_perm(path: Path, root: Optional["Node"]) -> list:
    """Perms of the path's parent and of the node itself, when they exist in `root`."""
    if root is None:
        return []
    return root_lookup_perms(root, path)


def root_lookup_perms(root: "Node", path: Path) -> list:
    comps = path.to_string_list()
    if not comps:
        return []
    node = root
    for name in comps[:-1]:
        node = node.find_opt(name)
        if node is None:
            return []
    result = [node.perms]
    child = node.find_opt(comps[-1])
    if child is not None:
        result.append(child.perms)
    return result


def fire_single_watch(source: Connection, roots, watch: Watch,
                      abspath: Optional[Path] = None) -> None:
    """`abspath`: the event path, absolute and parsed, when the caller has it."""
    oldroot, root = roots
    con = watch.con
    if abspath is None:
        try:
            abspath = Path.of_string(con.get_watch_path(watch.path))
        except Exception:
            return
    perms = lookup_watch_perm(abspath, oldroot) + lookup_watch_perm(abspath, root)
    if Perms.can_fire_watch(con.perm, perms, con.settings):
        source.fire_single_watch_unchecked(watch)
    else:
        pstr = ", ".join(Perms.Node.to_string(p, sep=" ") for p in perms)
        con.access_log.watch_not_fired(con.domstr, pstr, abspath.to_string())


def fire_watch_with_path(source: Connection, roots, watch: Watch, path: str,
                         parsed: Optional[Path] = None) -> None:
    """`parsed`: `path` as a Path, when the caller has it (it is the event's absolute path)."""
    limit = watch.max_components
    if limit is not None and (path.count("/") if path != "/" else 0) > limit:
        return  # deeper than the watch's <depth> (protocol level 4.22)
    if watch.is_relative and path[0] == "/":
        path = path[len(watch.base):]
    fire_single_watch(source, roots, watch.with_path(path), parsed)
