"""Run a scenario against one daemon and record what every connection saw.

Determinism rules (what makes two recordings comparable):

* everything a connection receives is recorded in stream order; when it was
  read (which step was running) is kept for the report only, never compared;
* a request step waits for the reply carrying its req_id; a ``quiet`` step
  reads until no connection has received anything for the quiet period and
  then puts a checkpoint into the transcripts, so "nothing arrived before
  this point" is part of the comparison;
* at the end the runner drains, records the domain clean-up state (the
  event-channel ports on the simulated hypervisor), closes its connections,
  waits until the access log shows every socket connection closed, walks the
  whole tree on a fresh connection and asks IS_DOMAIN_INTRODUCED for every
  domid the scenario used, and stops the daemon.
"""
from __future__ import annotations

import re
import selectors
import time
from dataclasses import dataclass, field
from typing import Callable, Protocol

from .daemons import Daemon
from .final_state import count_lines, final_queries, sim_ports
from .masks import MASKED, MASKED_NODES, mask_access_log, mask_xenstored_log, read_dump
from .scenario import Scenario, Step, Var
from .wire import Packet, PacketReader, SocketConn, encode_request, op_code

__all__ = ["Entry", "Recording", "Endpoint", "RingEndpoint", "GuestBackend", "run_scenario",
           "scenario_domids", "Runner"]

_MAX_DRAIN = 10.0  # a quiet step never lasts longer than this
_READ = op_code("READ")
_TRANSACTION_START = op_code("TRANSACTION_START")
STOP_TIMEOUT = 2.0  # after SIGTERM, then SIGKILL
MAX_TIMEOUTS = 3  # consecutive unanswered requests before the run is abandoned


class Endpoint(Protocol):
    """A client connection of any transport (socket, guest ring)."""

    def fileno(self) -> int: ...
    def send_bytes(self, data: bytes) -> None: ...
    def recv_nowait(self) -> bytes | None: ...  # b'' nothing, None EOF
    def close(self) -> None: ...


class RingEndpoint(Endpoint, Protocol):
    """A ring guest: its interface page's fields can be read and written."""

    def ring_get(self, name: str) -> int: ...
    def ring_set(self, name: str, value: int) -> None: ...
    def notify(self) -> None: ...


class GuestBackend(Protocol):
    """Creates ring guests and drives the simulated hypervisor: oxsd-diff
    uses oxsd.sim's (guests.SimGuests), the test suite xensim's."""

    def create_guest(self, daemon: Daemon, domid: int,
                     lazy: bool) -> tuple[RingEndpoint, dict[str, str]]: ...
    def sim_action(self, daemon: Daemon, args: list[str]) -> None: ...


@dataclass(frozen=True)
class Entry:
    """One item of a connection's transcript."""

    kind: str            # packet | mark | eof | partial
    data: object         # Packet, mark text, or leftover bytes
    line: int = 0        # step line during which it was received (report only)

    def key(self) -> tuple:
        return (self.kind, self.data)


@dataclass
class Recording:
    """The observable result of one scenario run on one daemon."""

    kind: str
    transcripts: dict[str, list[Entry]] = field(default_factory=dict)
    access_log: list[str] = field(default_factory=list)   # dates masked
    tree: list[str] = field(default_factory=list)
    alive_at_end: bool = True
    exit_status: int | None = None
    output_tail: str = ""
    errors: list[str] = field(default_factory=list)        # harness-side problems
    scratch: str = ""
    domains: list[str] = field(default_factory=list)       # domain clean-up state
    dumps: list[tuple[str, list[str]]] = field(default_factory=list)  # (when, DB dump)
    log_files: list[str] = field(default_factory=list)     # access-log files, line counts
    xenstored_log: list[str] = field(default_factory=list)  # masked (mask_xenstored_log)
    log_level: str = "info"                                # xenstored-log-level it ran at


@dataclass
class _Conn:
    name: str
    endpoint: Endpoint
    reader: PacketReader = field(default_factory=PacketReader)
    transcript: list[Entry] = field(default_factory=list)
    next_rid: int = 1
    closed: bool = False
    eof: bool = False
    # recorded transaction id -> the id this daemon gave (``newtx=``), and
    # rid -> recorded id for TRANSACTION_STARTs not answered yet
    txmap: dict[int, int] = field(default_factory=dict)
    pending_tx: dict[int, int] = field(default_factory=dict)


# a step's action -> the Runner method that runs it, as (self, conn, step)
_STEP_METHODS = {
    "conn": "_step_conn", "guest": "_step_guest", "sim": "_step_sim", "quiet": "_step_quiet",
    "request": "_step_request", "send": "_step_request", "raw": "_step_raw",
    "wait": "_step_count", "events": "_step_count", "eof": "_step_eof", "close": "_step_close",
    "dump": "_step_dump", "poke": "_ring_step", "peek": "_ring_step", "notify": "_ring_step",
    "await": "_ring_step",
}


class Runner:
    """Executes the steps of one scenario against one daemon."""

    def __init__(self, daemon: Daemon, scenario: Scenario,
                 guests: GuestBackend | None = None) -> None:
        self.daemon = daemon
        self.scn = scenario
        self.guests = guests
        self.conns: dict[str, _Conn] = {}
        self.vars: dict[str, str] = {}
        self.rec = Recording(kind=daemon.kind, scratch=str(daemon.scratch))
        self.sel = selectors.DefaultSelector()
        self.line = 0
        self.timeouts = 0  # consecutive requests left unanswered
        # (conn, rid, line) of READs of a MASKED_NODES path: their value differs
        # between the daemons by design (traces replay the launcher's probe)
        self.masked: set[tuple[str, int, int]] = set()
        self.domids = scenario_domids(scenario)

    # ---------------------------------------------------------- receiving
    def _read(self, conn: _Conn) -> bool:
        data = conn.endpoint.recv_nowait()
        if data is None:
            if not conn.eof:
                conn.eof = True
                self._unwatch(conn)
                self._finish_stream(conn)
            return False
        if not data:
            return False
        for p in conn.reader.feed(data):
            if p.op == _READ and (conn.name, p.req_id, self.line) in self.masked:
                p = Packet(p.op, p.req_id, p.tx_id, MASKED.encode())
            if not p.is_event and p.req_id in conn.pending_tx:
                recorded = conn.pending_tx.pop(p.req_id)
                if p.op == _TRANSACTION_START and p.payload[:-1].isdigit():
                    conn.txmap[recorded] = int(p.payload[:-1])
            conn.transcript.append(Entry("packet", p, self.line))
        return True

    def _finish_stream(self, conn: _Conn) -> None:
        if conn.reader.leftover:
            conn.transcript.append(Entry("partial", conn.reader.leftover, self.line))
            conn.reader = PacketReader()
        if conn.eof:
            conn.transcript.append(Entry("eof", "closed by the daemon", self.line))

    def _unwatch(self, conn: _Conn) -> None:
        try:
            self.sel.unregister(conn.endpoint)
        except (KeyError, ValueError):
            pass

    def pump(self, timeout: float) -> bool:
        """Wait up to timeout for input on any connection; read it all."""
        got = False
        if self.sel.get_map():
            for key, _ in self.sel.select(max(timeout, 0)):
                got |= self._read(self.conns[key.data])
        else:
            time.sleep(max(timeout, 0))
        # rings have no readable fd when the daemon forgets to notify: poll them
        for conn in self.conns.values():
            if not conn.closed and not conn.eof and not isinstance(conn.endpoint, SocketConn):
                got |= self._read(conn)
        return got

    def wait_for(self, pred: Callable[[], bool], timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while not pred():
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            self.pump(min(left, 0.05))
        return True

    def drain(self, period: float) -> None:
        """Read until nothing has arrived anywhere for `period` seconds."""
        deadline = time.monotonic() + _MAX_DRAIN
        last = time.monotonic()
        while time.monotonic() - last < period and time.monotonic() < deadline:
            if self.pump(min(period, 0.02)):
                last = time.monotonic()

    # ------------------------------------------------------------ steps
    def _payload(self, parts: list) -> bytes:
        out = bytearray()
        for part in parts:
            if isinstance(part, Var):
                if part.name not in self.vars:
                    raise KeyError(f"unknown variable ${{{part.name}}}")
                out += self.vars[part.name].encode()
            else:
                out += part
        return bytes(out)

    def _mark(self, conn: _Conn, text: str) -> None:
        conn.transcript.append(Entry("mark", text, self.line))

    def _replies(self, conn: _Conn) -> int:
        return sum(1 for e in conn.transcript if e.kind == "packet" and not e.data.is_event)

    def _events(self, conn: _Conn) -> int:
        return sum(1 for e in conn.transcript if e.kind == "packet" and e.data.is_event)

    def _add_conn(self, name: str, endpoint: Endpoint) -> None:
        conn = _Conn(name, endpoint)
        self.conns[name] = conn
        try:
            self.sel.register(endpoint, selectors.EVENT_READ, name)
        except (ValueError, OSError):
            pass  # no pollable fd: pump() polls it

    def _send(self, conn: _Conn, data: bytes) -> bool:
        if conn.closed or conn.eof:
            self._mark(conn, f"line {self.line}: not sent, connection closed")
            return False
        try:
            conn.endpoint.send_bytes(data)
            return True
        except (OSError, TimeoutError) as e:
            self._mark(conn, f"line {self.line}: send failed ({type(e).__name__})")
            return False

    def step(self, s: Step) -> None:
        self.line = s.line
        conn = self.conns.get(s.conn) if s.conn else None
        method = _STEP_METHODS.get(s.action)
        if method is None:
            raise AssertionError(s.action)
        getattr(self, method)(conn, s)

    def _step_conn(self, conn: _Conn | None, s: Step) -> None:
        for name in s.args:
            self._add_conn(name, self.daemon.connect())

    def _step_guest(self, conn: _Conn | None, s: Step) -> None:
        if self.guests is None:
            raise RuntimeError("this scenario needs ring guests: no guest backend")
        name, domid = s.args[0], int(s.args[1], 0)
        endpoint, variables = self.guests.create_guest(self.daemon, domid, "lazy" in s.args[2:])
        self.vars.update({f"{name}.{k}": str(v) for k, v in variables.items()})
        self._add_conn(name, endpoint)

    def _step_sim(self, conn: _Conn | None, s: Step) -> None:
        if self.guests is None:
            raise RuntimeError("this scenario drives the sim: no guest backend")
        self.guests.sim_action(self.daemon, s.args)

    def _step_quiet(self, conn: _Conn | None, s: Step) -> None:
        self.drain(s.seconds if s.seconds is not None else self.scn.quiet)
        for c in ([conn] if conn else self.conns.values()):
            if not c.closed:
                self._mark(c, f"quiet@{s.line}")

    def _step_request(self, conn: _Conn, s: Step) -> None:
        """``request`` (send, then wait for the reply with its req_id) and ``send``."""
        rid = s.req_id if s.req_id is not None else conn.next_rid
        conn.next_rid = (rid + 1) & 0xFFFFFFFF
        payload = self._payload(s.payload)
        if s.op == _READ and payload.rstrip(b"\0").decode("latin-1") in MASKED_NODES:
            self.masked.add((conn.name, rid, s.line))
        if s.new_tx is not None:
            conn.pending_tx[rid] = s.new_tx
        tx_id = conn.txmap.get(s.tx_id, s.tx_id) if s.tx_id else 0
        data = encode_request(s.op, payload, tx_id, rid, s.length)
        if self._send(conn, data) and s.action == "request":
            self._await_reply(conn, s, rid)

    def _await_reply(self, conn: _Conn, s: Step, rid: int) -> None:
        def answered() -> bool:
            return conn.eof or any(
                e.kind == "packet" and not e.data.is_event and e.data.req_id == rid
                and e.line == s.line for e in conn.transcript)
        if self.wait_for(answered, self.scn.timeout):
            self.timeouts = 0
            return
        self._mark(conn, f"line {s.line}: no reply to rid={rid} within {self.scn.timeout}s")
        self.timeouts += 1
        if self.timeouts >= MAX_TIMEOUTS:
            raise RuntimeError(f"{MAX_TIMEOUTS} requests in a row unanswered: "
                               "the daemon seems stuck; run abandoned")

    def _step_raw(self, conn: _Conn, s: Step) -> None:
        self._send(conn, self._payload(s.payload))

    def _step_count(self, conn: _Conn, s: Step) -> None:
        """``wait N`` replies or ``events N`` watch events more."""
        count = self._replies if s.action == "wait" else self._events
        target = count(conn) + s.count
        if not self.wait_for(lambda: conn.eof or count(conn) >= target, self.scn.timeout):
            self._mark(conn, f"line {s.line}: {s.action} {s.count} timed out")

    def _step_eof(self, conn: _Conn, s: Step) -> None:
        if not self.wait_for(lambda: conn.eof, self.scn.timeout):
            self._mark(conn, f"line {s.line}: still open after {self.scn.timeout}s")

    def _step_close(self, conn: _Conn, s: Step) -> None:
        self._close(conn)

    def _step_dump(self, conn: _Conn | None, s: Step) -> None:
        self.rec.dumps.append((f"line {s.line}", read_dump(self.daemon.db_path)))

    def _ring_step(self, conn: _Conn, s: Step) -> None:
        ep = conn.endpoint
        if not hasattr(ep, "ring_set"):
            raise RuntimeError(f"{conn.name} is not a ring guest")
        if s.action == "poke":
            for name, value in zip(s.args, s.values):
                ep.ring_set(name, value)
        elif s.action == "notify":
            ep.notify()
        elif s.action == "peek":
            self._mark(conn, "ring " + " ".join(f"{n}={ep.ring_get(n):#x}" for n in s.args))
        else:  # await
            def reached() -> bool:
                return all(ep.ring_get(n) == v for n, v in zip(s.args, s.values))
            if not self.wait_for(reached, self.scn.timeout):
                self._mark(conn, f"line {s.line}: await timed out: ring " + " ".join(
                    f"{n}={ep.ring_get(n):#x}" for n in s.args))

    def _close(self, conn: _Conn) -> None:
        if conn.closed:
            return
        self._read(conn)
        self._unwatch(conn)
        conn.closed = True
        conn.endpoint.close()
        if not conn.eof:
            self._finish_stream(conn)

    # ------------------------------------------------------------ whole run
    def run(self) -> Recording:
        rec = self.rec
        try:
            for s in self.scn.steps:
                self.step(s)
                if not self.daemon.alive():
                    rec.errors.append(f"daemon exited during line {s.line}: {s.text}")
                    break
            self.line = 0
            self.drain(self.scn.quiet)
        except Exception as e:  # report harness problems instead of raising mid-run
            rec.errors.append(f"line {self.line}: {type(e).__name__}: {e}")
        # before our guests close their ends: which ports the daemon still binds
        rec.domains = [f"evtchn {line}" for line in sim_ports(self.daemon.sim_dir)]
        for conn in self.conns.values():
            self._close(conn)
        rec.transcripts = {name: c.transcript for name, c in self.conns.items()}
        self._wait_socket_closes()
        if self.daemon.alive() and (self.scn.tree or self.domids):
            try:
                tree, intro = final_queries(self.daemon, self.scn.tree, self.domids)
                rec.tree = tree
                rec.domains += intro
            except (OSError, TimeoutError, ConnectionError) as e:
                rec.errors.append(f"tree walk failed: {e}")
            self._wait_socket_closes()
        rec.alive_at_end = self.daemon.alive()
        # SIGTERM exit waits for every connection to be idle (a SET_TARGET
        # identity blocks it for ever): whether it exits is compared too
        rec.exit_status = self.daemon.stop(timeout=STOP_TIMEOUT)
        rec.access_log = mask_access_log(self.daemon.access_log())
        read_log = getattr(self.daemon, "xenstored_log", None)  # test doubles have none
        if read_log is not None:
            rec.xenstored_log = mask_xenstored_log(read_log(), str(self.daemon.scratch))
        rec.log_level = self.daemon.settings.effective_log_level
        rec.log_files = [f"{p.name}: {count_lines(p)} lines"
                         for p in self.daemon.rotated_access_logs() if p.exists()]
        if self.scn.dump:
            rec.dumps.append(("exit", read_dump(self.daemon.db_path)))
        rec.output_tail = self.daemon.output_tail()
        self.sel.close()
        return rec

    def _wait_socket_closes(self, timeout: float = 3.0) -> None:
        """Wait until the access log shows an endconn for every socket newconn,
        so that stopping the daemon cannot race with its reading of our EOFs."""
        if not self.daemon.settings.access_log:
            self.drain(self.scn.quiet)
            return
        deadline = time.monotonic() + timeout
        while self.daemon.alive() and time.monotonic() < deadline:
            log = self.daemon.access_log()
            # by name: with access-log rotation the oldest lines may be gone
            opened = set(re.findall(r"\] +(A\d+) +newconn", log))
            closed = set(re.findall(r"\] +(A\d+) +endconn", log))
            if closed and opened <= closed:
                return
            time.sleep(0.01)


def run_scenario(daemon: Daemon, scenario: Scenario,
                 guests: GuestBackend | None = None) -> Recording:
    """Run all steps against a started daemon, then stop it."""
    return Runner(daemon, scenario, guests).run()


def scenario_domids(scn: Scenario) -> list[int]:
    """Domids a scenario's guest and sim lines name (sorted, no duplicates)."""
    out: set[int] = set()
    for s in scn.steps:
        if s.action == "guest":
            out.add(int(s.args[1], 0))
        elif s.action == "sim" and s.args[0] != "virq" and len(s.args) > 1:
            try:
                out.add(int(s.args[1], 0))
            except ValueError:
                pass
    return sorted(out)


