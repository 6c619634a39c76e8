"""Packet traces (``-T FILE``) written as replayable scenarios.

A trace IS a scenario file (tests/scenarios/README.md): every request a
socket connection sent becomes ``NAME: OP tx=N rid=N "payload"`` (or
``NAME: send ...`` when it was never answered), connection opening and
closing become ``conn NAME`` and ``NAME: close``, and what the daemon sent
(replies, errors, watch events) is kept as ``#   NAME <- ...`` comments.
``oxsd-diff TRACE`` then replays it on both daemons: requests go out in the
traced order, one connection at a time, each waiting for its reply, so the
per-connection order is reproduced.  A TRANSACTION_START line carries the id
it got (``newtx=N``): the replay maps later ``tx=N`` to the id the replaying
daemon gives, so a trace of a connection that had used ids before still
replays.

``TraceWriter`` is the sans-IO-ish core shared by the daemon-side
``Tracer`` (hooked into ``Process.trace``) and the recording proxy
(``oxsd.diff.record``).  A request line is held back until its reply has
been seen (or its connection closed) to choose between waiting and plain
``send``; lines are written in the order the events happened.

Not replayable, and kept as comments: ring (``D<domid>``) connections, whose
traffic needs a guest on a simulated hypervisor.  The daemon-side tracer sees
parsed packets only: op codes outside the known table are traced as the
INVALID op (20) they are handled as, and bytes of a packet never completed
are not seen at all (the proxy records those as ``raw``).
"""
from __future__ import annotations

import atexit
import os
from dataclasses import dataclass, field
from typing import IO, Optional

from .xs_wire import XS_WATCH_EVENT, describe, escape, op_code, op_name, Packet as WirePacket

__all__ = ["TraceWriter", "Tracer", "format_request", "open_tracer"]

XS_TRANSACTION_START = op_code("TRANSACTION_START")


def format_request(name: str, op: int, tx_id: int, req_id: int, payload: bytes,
                   wait: bool = True, new_tx: int | None = None) -> str:
    """One scenario request line (``newtx=N``: the id a TRANSACTION_START got,
    so that a replay maps ``tx=N`` to whatever id the replaying daemon gives)."""
    send = "" if wait else "send "
    newtx = "" if new_tx is None else f" newtx={new_tx}"
    return (f'{name}: {send}{op_name(op)} tx={tx_id} rid={req_id}{newtx} '
            f'"{escape(payload)}"')


@dataclass
class _Pending:
    """A request line waiting to learn whether it was answered."""

    name: str
    op: int
    tx_id: int
    req_id: int
    payload: bytes
    answered: Optional[bool] = None  # None: not known yet
    new_tx: Optional[int] = None     # the id a TRANSACTION_START got

    def text(self) -> str:
        return format_request(self.name, self.op, self.tx_id, self.req_id, self.payload,
                              wait=bool(self.answered), new_tx=self.new_tx)


@dataclass
class _ConnState:
    replayable: bool
    pending: list[_Pending] = field(default_factory=list)


class TraceWriter:
    """Turns connection events into scenario lines, in event order."""

    def __init__(self, out: IO[str], header: list[str] | None = None) -> None:
        self.out = out
        self.conns: dict[str, _ConnState] = {}
        self._queue: list[str | _Pending] = []
        for line in header or []:
            self._emit(line)
        self._flush()

    # ------------------------------------------------------------ output
    def _emit(self, item: "str | _Pending") -> None:
        self._queue.append(item)

    def _flush(self) -> None:
        """Write the resolved prefix of the queue."""
        i = 0
        q = self._queue
        while i < len(q):
            item = q[i]
            if isinstance(item, _Pending):
                if item.answered is None:
                    break
                item = item.text()
            self.out.write(item + "\n")
            i += 1
        if i:
            del q[:i]
            self.out.flush()

    # ------------------------------------------------------------ events
    def _conn(self, name: str) -> _ConnState:
        st = self.conns.get(name)
        if st is None:  # first seen mid-stream (e.g. opened before tracing began)
            st = self.open_conn(name)
        return st

    def open_conn(self, name: str, replayable: bool = True, note: str = "") -> _ConnState:
        st = _ConnState(replayable)
        self.conns[name] = st
        suffix = f"  # {note}" if note else ""
        if replayable:
            self._emit(f"conn {name}{suffix}")
        else:
            self._emit(f"# {name} opened (not replayable over a socket){suffix}")
        self._flush()
        return st

    def request(self, name: str, op: int, tx_id: int, req_id: int, payload: bytes) -> None:
        st = self._conn(name)
        if not st.replayable:
            self._emit("# " + format_request(name, op, tx_id, req_id, payload))
        else:
            p = _Pending(name, op, tx_id, req_id, payload)
            st.pending.append(p)
            self._emit(p)
        self._flush()

    def reply(self, name: str, op: int, tx_id: int, req_id: int, payload: bytes) -> None:
        """A packet the daemon sent (reply, error or watch event)."""
        st = self._conn(name)
        if op != XS_WATCH_EVENT and st.pending:
            # replies come in request order on a connection
            p = st.pending.pop(0)
            p.answered = True
            if op == p.op == XS_TRANSACTION_START and payload[:-1].isdigit():
                p.new_tx = int(payload[:-1])
        self._emit(f"#   {name} <- {describe(WirePacket(op, req_id, tx_id, payload), 400)}")
        self._flush()

    def raw(self, name: str, data: bytes, note: str = "") -> None:
        """Bytes that did not make a complete packet."""
        st = self._conn(name)
        suffix = f"  # {note}" if note else ""
        line = f'{name}: raw "{escape(data)}"{suffix}'
        self._emit(line if st.replayable else "# " + line)
        self._flush()

    def close(self, name: str, by: str = "client") -> None:
        st = self.conns.pop(name, None)
        if st is None:
            return
        for p in st.pending:
            p.answered = False
        if st.replayable:
            # closed by the daemon: the replay waits for that, then closes
            self._emit(f"{name}: close" if by == "client" else f"{name}: eof")
        else:
            self._emit(f"# {name} closed")
        self._flush()

    def comment(self, text: str) -> None:
        self._emit(f"# {text}")
        self._flush()

    def finish(self) -> None:
        """Settle what is still pending (unanswered so far: ``send``) and write it."""
        for st in self.conns.values():
            for p in st.pending:
                p.answered = False
        self._flush()
        self.out.flush()


class Tracer:
    """The daemon's ``-T`` tracer: ``Process.trace`` hooks plus connection
    open/close, observed by wrapping the daemon's ``Connections`` methods."""

    def __init__(self, out: IO[str], header: list[str] | None = None) -> None:
        self.writer = TraceWriter(out, header)
        self._names: dict[int, str] = {}  # id(con) -> name

    @staticmethod
    def _replayable(con) -> bool:
        return con.domstr.startswith("A")

    def _name(self, con) -> str:
        name = self._names.get(id(con))
        if name is None:
            name = con.domstr
            self._names[id(con)] = name
            self.writer.open_conn(name, self._replayable(con))
        return name

    def packet_in(self, con, packet) -> None:
        self.writer.request(self._name(con), int(packet.ty), packet.tid, packet.rid,
                            bytes(packet.data))

    def packet_out(self, con, packet) -> None:
        self.writer.reply(self._name(con), int(packet.ty), packet.tid, packet.rid,
                          bytes(packet.data))

    def connection_opened(self, con) -> None:
        self._name(con)

    def connection_closed(self, con) -> None:
        name = self._names.pop(id(con), None)
        if name is not None:
            bad = con.is_bad() if hasattr(con, "is_bad") else False
            by = "client" if self._replayable(con) and not bad else "daemon"
            self.writer.close(name, by)

    def install(self, daemon) -> "Tracer":
        """Hook into a built daemon (``oxsd.xenstored.Daemon``)."""
        daemon.process.trace = self
        cons = daemon.cons
        for con in cons.iter():
            self.connection_opened(con)
        add_anon, del_anon = cons.add_anonymous, cons.del_anonymous
        add_dom, del_dom = cons.add_domain, cons.del_domain

        def add_anonymous(*args, **kwargs):
            con = add_anon(*args, **kwargs)
            self.connection_opened(con)
            return con

        def del_anonymous(con):
            self.connection_closed(con)
            return del_anon(con)

        def add_domain(dom):
            con = add_dom(dom)
            self.connection_opened(con)
            return con

        def del_domain(domid):
            con = cons.domains.get(domid)
            if con is not None:
                self.connection_closed(con)
            return del_dom(domid)

        cons.add_anonymous, cons.del_anonymous = add_anonymous, del_anonymous
        cons.add_domain, cons.del_domain = add_domain, del_domain
        atexit.register(self.writer.finish)
        return self


def open_tracer(path: str, argv: list[str] | None = None) -> Tracer:
    """A Tracer writing to `path` (line buffered: readable while running)."""
    # Every payload goes in it: owner-only, even when the file already existed.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    os.fchmod(fd, 0o600)
    out = os.fdopen(fd, "w", buffering=1, encoding="ascii", errors="backslashreplace")
    header = ["# oxsd packet trace (-T): a scenario, replay with oxsd-diff",
              "# replies and watch events are the '<-' comments"]
    if argv:
        header.append("# daemon: " + " ".join(argv))
    return Tracer(out, header)
