"""One client of the daemon: a socket or a domain's ring (port of connection.ml).

A connection owns its transport (`Xb`), its open transactions, its watches
and the "source pipe" of watch events it caused.  Watch events travel
through three bounded stages (connection.ml: source_flush_watchevents): the source connection's pipe
(practically unbounded; while non-empty the source may not send requests),
the watch's own pipe (capacity `quota-maxwatchevents`) and the watcher's
output queue.  Each push flushes as far down as it can, so in the normal
case an event lands in the watcher's output queue at once.
"""
from __future__ import annotations

import logging
from collections import deque
from typing import TYPE_CHECKING, Callable, Deque, Dict, Generic, List, Optional, Tuple, TypeVar

from . import perms as Perms
from . import quota as Quota
from .define import AlreadyExist
from .ocaml_hashtbl import Hashtbl
from .stats import ConnStats
from .xb.op import OP_WATCH_EVENT, Op
from .xb.packet import Packet

if TYPE_CHECKING:
    from .config import Settings
    from .domain import Domain
    from .logging_ import AccessLog
    from .transaction import Transaction
    from .xb.xb import Xb

log = logging.getLogger("oxsd.connection")

XENSTORE_PAYLOAD_MAX = 4096
INITIAL_NEXT_TID = 1
_E2BIG = b"E2BIG\0"
_OK = b"OK\0"

T = TypeVar("T")


class BoundedPipe(Generic[T]):
    """FIFO holding at most `capacity` items, flushed into `destination` while it accepts.

    `destination(item)` returns True when it took the item.  A push flushes
    first (to keep order), enqueues if there is room, then flushes again.
    """

    __slots__ = ("q", "capacity", "destination")

    def __init__(self, capacity: int, destination: Callable[[T], bool]) -> None:
        self.q: Deque[T] = deque()
        self.capacity = capacity
        self.destination = destination

    def flush(self) -> None:
        q = self.q
        dest = self.destination
        while q and dest(q[0]):
            q.popleft()

    def push(self, item: T) -> bool:
        self.flush()
        if len(self.q) < self.capacity:
            self.q.append(item)
            self.flush()
            return True
        return False

    def is_empty(self) -> bool:
        return not self.q

    def __len__(self) -> int:
        return len(self.q)


class Watch:
    """A registered watch; `path` is kept exactly as the client sent it (latin-1 str)."""

    __slots__ = ("con", "token", "path", "base", "is_relative", "pending_watchevents",
                 "depth", "max_components")

    def __init__(self, con: "Connection", path: str, token: bytes, base: str,
                 pipe: Optional[BoundedPipe[Packet]] = None) -> None:
        self.con = con
        self.token = token
        self.path = path
        self.base = base
        self.is_relative = path[0] != "/" and path[0] != "@"
        if pipe is None:
            pipe = BoundedPipe(con.settings.quota_maxwatchevents, con.xb.queue)
        self.pending_watchevents = pipe
        # Protocol level 4.22 WATCH <depth> (oxsd.protocol_level); None: no limit.
        self.depth: Optional[int] = None
        self.max_components: Optional[int] = None

    def with_path(self, path: str) -> "Watch":
        """The same watch (same pipe) reporting another event path."""
        w = Watch(self.con, path, self.token, self.base, self.pending_watchevents)
        w.depth, w.max_components = self.depth, self.max_components
        return w

    def flush_events(self) -> bool:
        self.pending_watchevents.flush()
        return not self.pending_watchevents.is_empty()


class ReplyRefused(RuntimeError):
    """The output queue refused a reply (connection.ml's `assert (result <> None)`)."""

    def __init__(self) -> None:
        super().__init__("reply refused by the output queue")


class UnknownTransaction(KeyError):
    """A request naming a transaction id the connection does not have (Not_found in
    connection.ml get_transaction): the client's mistake, not the daemon's."""


def get_path_of_domid(domid: int) -> str:
    return f"/local/domain/{domid}/"


class Connection:
    """Port of Connection.t."""

    def __init__(self, xb: "Xb", dom: Optional["Domain"], anonid: int,
                 settings: "Settings", access_log: "AccessLog") -> None:
        self.xb = xb
        self.dom = dom
        self.transactions: Dict[int, "Transaction"] = {}
        self.next_tid = INITIAL_NEXT_TID
        # OCaml Hashtbl order: CONTROL `watches` lists them in bucket order.
        self.watches: Hashtbl[str, List[Watch]] = Hashtbl(8)
        self.nb_watches = 0
        self.anonid = anonid
        self._nb_ops_base = 0  # stat_nb_ops is counted in counters.by_op
        self.settings = settings
        self.access_log = access_log
        self.perm = self.make_perm()
        self.domstr = f"A{anonid}" if dom is None else f"D{dom.id}"
        self.base_path = get_path_of_domid(0 if dom is None else dom.id)
        # quota-path-max, or the domain's `path-max` quota (protocol level 4.22).
        self.path_max = settings.quota_path_max
        self.is_mmap = dom is not None
        self.counters = ConnStats()  # oxsd's own counters (oxsd-top); no 4.17 behaviour reads them
        # Practically unbounded: bounded only by what one request can fire.
        self.pending_source_watchevents: BoundedPipe[Tuple[Watch, Packet]] = BoundedPipe(
            1 << 62, lambda item: item[0].pending_watchevents.push(item[1]))
        access_log.new_connection(0, self.domstr)

    # -- identity -----------------------------------------------------
    def make_perm(self) -> "Perms.ConnectionPerms":
        domid = 0 if self.dom is None else self.dom.id
        return Perms.Connection.create(domid, (Perms.READ, Perms.WRITE))

    def get_domstr(self) -> str:
        return self.domstr

    def get_path(self) -> str:
        return self.base_path

    def get_perm(self):
        return self.perm

    def is_dom0(self) -> bool:
        return self.perm.is_dom0()

    def set_target(self, target_domid: int) -> None:
        self.perm = self.perm.set_target(target_domid, (Perms.READ, Perms.WRITE))

    def get_domain(self) -> Optional["Domain"]:
        return self.dom

    def mark_as_bad(self) -> None:
        if self.dom is not None:
            self.dom.mark_as_bad()

    def is_bad(self) -> bool:
        return self.dom is not None and self.dom.bad_client

    # -- transport ----------------------------------------------------
    def get_fd(self):
        return self.xb.get_fd()

    def close(self) -> None:
        self.access_log.end_connection(0, self.domstr)
        self.xb.close()

    def do_reconnect(self) -> None:
        """Ring reconnection: reset the transport, transactions and watch table (Connection.do_reconnect).

        The watches in the global trie are Connections.del_watches's job (XSA-512).
        """
        self.xb.reconnect()
        self.transactions.clear()
        self.next_tid = INITIAL_NEXT_TID
        self.watches.clear()
        self.nb_watches = 0
        self._nb_ops_base = sum(self.counters.by_op)  # stat_nb_ops = 0

    def packet_of(self, tid: int, rid: int, ty: Op, data: bytes) -> Packet:
        if self.is_mmap and len(data) > XENSTORE_PAYLOAD_MAX:
            return Packet(tid, rid, Op.ERROR, _E2BIG)
        return Packet(tid, rid, ty, data)

    def send_reply(self, tid: int, rid: int, ty: Op, data: bytes) -> None:
        # Input is only read when a reply fits, so the queue cannot refuse it
        # (connection.ml asserts it; a real check, which `python -O` keeps).
        if self.is_mmap and len(data) > XENSTORE_PAYLOAD_MAX:  # packet_of, inline (every reply)
            accepted = self.xb.queue(Packet(tid, rid, Op.ERROR, _E2BIG))
        else:
            accepted = self.xb.queue(Packet(tid, rid, ty, data))
        if not accepted:
            raise ReplyRefused()

    def send_error(self, tid: int, rid: int, err: str) -> None:
        self.counters.count_error(err)
        self.send_reply(tid, rid, Op.ERROR, err.encode() + b"\0")

    def send_ack(self, tid: int, rid: int, ty: Op) -> None:
        accepted = self.xb.queue(Packet(tid, rid, ty, _OK))  # send_reply: OK always fits
        assert accepted, "reply refused by the output queue"

    def do_input(self) -> Optional[Packet]:
        return self.xb.input()

    def has_partial_input(self) -> bool:
        return self.xb.has_partial_input()

    def has_more_input(self) -> bool:
        return self.xb.has_more_input()

    def can_input(self) -> bool:
        return self.xb.can_input() and not self.pending_source_watchevents.q

    def has_output(self) -> bool:
        return self.xb.has_output()

    def has_old_output(self) -> bool:
        return self.xb.has_old_output()

    def has_new_output(self) -> bool:
        return self.xb.has_new_output()

    def peek_output(self) -> Packet:
        return self.xb.peek_output()

    def do_output(self, nowait: bool = False) -> bool:
        return self.xb.output(nowait)

    def has_more_work(self) -> bool:
        return ((self.has_more_input() and self.can_input())
                or (not self.has_old_output() and self.has_new_output()))

    @property
    def stat_nb_ops(self) -> int:
        """Requests since the connection was made or last reconnected (Connection.stat_nb_ops).

        Process.do_input counts each request once, in oxsd-top's by-op
        counters, which a reconnection does not reset; this is their sum
        since then (read only by the periodic `con stat` log line and the
        history's conflict scan)."""
        return sum(self.counters.by_op) - self._nb_ops_base

    # -- watches ------------------------------------------------------
    def source_flush_watchevents(self) -> None:
        self.pending_source_watchevents.flush()

    def source_pending_watchevents(self) -> int:
        return len(self.pending_source_watchevents)

    def get_watch_path(self, path: str) -> str:
        if path[0] == "@" or path[0] == "/":
            return path
        return self.base_path + path

    def get_watches(self, apath: str) -> List[Watch]:
        return self.watches.get(apath, [])

    def add_watch(self, path: str, apath: str, token: bytes, check_quota: bool = True) -> Watch:
        s = self.settings
        if (check_quota and s.quota_activate and s.quota_maxwatch > 0 and not self.is_dom0()
                and self.nb_watches > s.quota_maxwatch):
            raise Quota.LimitReached()
        lst = self.watches.get(apath, [])
        if any(w.token == token for w in lst):
            raise AlreadyExist()
        watch = Watch(self, path, token, self.base_path)
        self.watches.replace(apath, [watch] + lst)
        self.nb_watches += 1
        return watch

    def del_watch(self, path: str, token: bytes) -> Tuple[str, Watch]:
        """Remove a watch; KeyError (ENOENT) when there is none."""
        apath = self.get_watch_path(path)
        ws = self.watches[apath]
        for w in ws:
            if w.token == token:
                break
        else:
            raise KeyError(token)
        filtered = [x for x in ws if x is not w]
        if filtered:
            self.watches.replace(apath, filtered)
        else:
            self.watches.remove(apath)
        self.nb_watches -= 1
        return apath, w

    def del_watches(self) -> None:
        self.watches.reset()
        self.nb_watches = 0

    def del_transactions(self) -> None:
        self.transactions.clear()

    def list_watches(self) -> List[Tuple[str, bytes]]:
        """(path, token) pairs in the order of the original's Hashtbl.fold + List.concat."""
        return [(w.path, w.token) for ws in reversed(list(self.watches.values())) for w in ws]

    def fire_single_watch_unchecked(self, watch: Watch) -> None:
        """Queue an event for `watch` with this connection as its source."""
        data = watch.path.encode("latin-1") + b"\0" + watch.token + b"\0"
        pkt = watch.con.packet_of(0, 0, OP_WATCH_EVENT, data)
        watch.con.counters.events_queued += 1
        if not self.pending_source_watchevents.push((watch, pkt)):
            raise RuntimeError("watch event overflow, cannot happen")

    # -- transactions -------------------------------------------------
    def number_of_transactions(self) -> int:
        return len(self.transactions)

    def valid_transaction_id(self, proposed: int) -> int:
        """Next free id, clipped to [1, 0x3ffffffe] as the original does."""
        tid = proposed
        while True:
            if tid <= 0 or tid >= 0x3FFFFFFF:
                tid = 1
            if tid not in self.transactions:
                return tid
            tid += 1

    def get_transaction(self, tid: int) -> "Transaction":
        """The open transaction `tid`; UnknownTransaction (Not_found) when there is none."""
        t = self.transactions.get(tid)
        if t is None:
            raise UnknownTransaction(tid)
        return t

    # -- live update --------------------------------------------------
    def has_extra_connection_data(self) -> bool:
        return (self.has_partial_input() or self.has_output()
                or self.make_perm() != self.perm)

    def has_transaction_data(self) -> bool:
        n = self.number_of_transactions()
        log.debug("%s: number of transactions = %d", self.domstr, n)
        return n > 0

    def prevents_live_update(self) -> bool:
        return not self.is_bad() and (self.has_extra_connection_data()
                                      or self.has_transaction_data())

    def stats(self) -> Tuple[int, int]:
        return len(self.watches), self.stat_nb_ops

    def debug(self) -> str:
        return "".join(f"watch {self.domstr}: {p} {t.decode('latin-1')}\n"
                       for p, t in self.list_watches())
