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

import os
import re
import selectors
import time
from pathlib import Path
from dataclasses import dataclass, field
from typing import Callable, Protocol

from .daemons import Daemon
from .scenario import Scenario, Step, Var
from .wire import Packet, PacketReader, SocketConn, encode_request, escape, op_code

__all__ = ["Entry", "Recording", "Endpoint", "RingEndpoint", "GuestBackend", "run_scenario",
           "walk_tree", "final_queries", "mask_access_log", "mask_xenstored_log", "mask_dump",
           "sim_ports", "Runner"]

MASKED = "<masked>"
# nodes whose value legitimately differs between the daemons
MASKED_NODES = {"/tool/xenstored"}
_DATE = re.compile(r"^\[\d{8}T\d\d:\d\d:\d\d\.\d{3}Z\]")
_MAX_DRAIN = 10.0  # a quiet step never lasts longer than this
_READ = op_code("READ")
_TRANSACTION_START = op_code("TRANSACTION_START")
_IS_INTRODUCED = op_code("IS_DOMAIN_INTRODUCED")
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
        if s.action == "conn":
            for name in s.args:
                self._add_conn(name, self.daemon.connect())
        elif s.action == "guest":
            if self.guests is None:
                raise RuntimeError("this scenario needs ring guests: no guest backend")
            name, domid = s.args[0], int(s.args[1], 0)
            endpoint, variables = self.guests.create_guest(self.daemon, domid, "lazy" in s.args[2:])
            self.vars.update({f"{name}.{k}": str(v) for k, v in variables.items()})
            self._add_conn(name, endpoint)
        elif s.action == "sim":
            if self.guests is None:
                raise RuntimeError("this scenario drives the sim: no guest backend")
            self.guests.sim_action(self.daemon, s.args)
        elif s.action == "quiet":
            self.drain(s.seconds if s.seconds is not None else self.scn.quiet)
            for c in ([conn] if conn else self.conns.values()):
                if not c.closed:
                    self._mark(c, f"quiet@{s.line}")
        elif s.action in ("request", "send"):
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
                def answered() -> bool:
                    return conn.eof or any(
                        e.kind == "packet" and not e.data.is_event and e.data.req_id == rid
                        and e.line == s.line for e in conn.transcript)
                if self.wait_for(answered, self.scn.timeout):
                    self.timeouts = 0
                else:
                    self._mark(conn, f"line {s.line}: no reply to rid={rid} "
                                     f"within {self.scn.timeout}s")
                    self.timeouts += 1
                    if self.timeouts >= MAX_TIMEOUTS:
                        raise RuntimeError(f"{MAX_TIMEOUTS} requests in a row unanswered: "
                                           "the daemon seems stuck; run abandoned")
        elif s.action == "raw":
            self._send(conn, self._payload(s.payload))
        elif s.action in ("wait", "events"):
            count = self._replies if s.action == "wait" else self._events
            target = count(conn) + s.count
            if not self.wait_for(lambda: conn.eof or count(conn) >= target, self.scn.timeout):
                self._mark(conn, f"line {s.line}: {s.action} {s.count} timed out")
        elif s.action == "eof":
            if not self.wait_for(lambda: conn.eof, self.scn.timeout):
                self._mark(conn, f"line {s.line}: still open after {self.scn.timeout}s")
        elif s.action == "close":
            self._close(conn)
        elif s.action == "dump":
            self.rec.dumps.append((f"line {s.line}", read_dump(self.daemon.db_path)))
        elif s.action in ("poke", "peek", "notify", "await"):
            self._ring_step(conn, s)
        else:
            raise AssertionError(s.action)

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
        rec.log_files = [f"{p.name}: {_count_lines(p)} lines"
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


def _count_lines(path: Path) -> int:
    try:
        with open(path, "rb") as f:
            return sum(1 for _ in f)
    except FileNotFoundError:
        return 0


def _read_port_file(path: str) -> str:
    # port files are replaced by rename; an empty read is a writer's window
    for _ in range(50):
        try:
            with open(path) as f:
                text = f.read().strip()
        except FileNotFoundError:
            return ""
        if text:
            return text
        time.sleep(0.002)
    return ""


def sim_ports(sim_dir: str | Path) -> list[str]:
    """The event channels on a sim dir, owners by role (oxsd/sim/layout.py):
    ``0/3: daemon peer=0:1``.  The daemon's handle sockets are the ``h-*``
    owners of domain 0's ports (their names hold the pid, which differs from
    run to run); ports in a guest's directory are the guest's."""
    root = os.path.join(str(sim_dir), "evtchn")
    out: list[str] = []
    ports = os.path.join(root, "ports")
    doms = sorted((d for d in _listdir(ports) if d.isdigit()), key=int)
    for dom in doms:
        for port in sorted((p for p in _listdir(os.path.join(ports, dom)) if p.isdigit()),
                           key=int):
            fields = dict(w.split("=", 1) for w in _read_port_file(
                os.path.join(ports, dom, port)).split() if "=" in w)
            owner = os.path.basename(fields.get("owner", ""))
            if dom != "0":
                role = "guest"
            elif owner == "xsd-0":
                role = "xsd-0 (dom0 ring)"
            elif owner.startswith(f"h-{os.getpid()}-"):
                role = "harness"
            elif owner.startswith("h-"):
                role = "daemon"
            else:
                role = owner or "?"
            out.append(f"{dom}/{port}: {role} peer={fields.get('peer', '?')}")
    virq = os.path.join(root, "virq")
    for n in sorted((v for v in _listdir(virq) if v.isdigit()), key=int):
        out.append(f"virq {n} -> {_read_port_file(os.path.join(virq, n))}")
    return out


def _listdir(path: str) -> list[str]:
    try:
        return os.listdir(path)
    except FileNotFoundError:
        return []


_DUMP_FD = re.compile(r"^(global|socket|evtchn-dev),(-?\d+)")
_DUMP_SOCKET_WATCH = re.compile(r"^watch,-\d+,")
_DUMP_TOOL = "store," + b"/tool/xenstored".hex() + ","
_LEGACY_TOOL = "tool/xenstored{"


def mask_dump(text: str) -> list[str]:
    """A DB dump (xenstored.ml: DB.to_channel, or store.ml: dump's legacy format of ``persistent``)
    made comparable: file descriptor numbers are masked (``global,FD``; ``-1``
    is kept), socket connections, which come in the hash order of their fds,
    are sorted as blocks (a ``socket`` line with its ``watch`` lines), and
    ``/tool/xenstored``'s value (the daemon's path) is masked."""
    head: list[str] = []
    sockets: list[list[str]] = []
    tail: list[str] = []
    for line in text.splitlines():
        if line.startswith(_DUMP_TOOL):  # the daemon's own path (MASKED_NODES)
            line = line.rsplit(",", 1)[0] + "," + MASKED
        elif line.startswith(_LEGACY_TOOL):  # persistent = true's legacy format
            line = line.split(" = ", 1)[0] + " = " + MASKED
        m = _DUMP_FD.match(line)
        if m and m.group(2) != "-1":
            line = f"{m.group(1)},FD{line[m.end():]}"
        if line.startswith("socket,"):
            sockets.append([line])
        elif sockets and _DUMP_SOCKET_WATCH.match(line):
            sockets[-1].append("watch,-FD," + line.split(",", 2)[2])
        elif line.startswith("store,") or sockets:
            tail.append(line)
        else:
            head.append(line)
    return head + [line for block in sorted(sockets) for line in block] + tail


def read_dump(path: Path) -> list[str]:
    try:
        return mask_dump(path.read_text(errors="surrogateescape"))
    except FileNotFoundError:
        return ["(no DB dump file)"]


def mask_access_log(text: str) -> list[str]:
    """Access-log lines with the date replaced (the rest kept verbatim)."""
    return [_DATE.sub("[DATE]", line) for line in text.splitlines()]


# ``[date|level|key] message``: the date is the part every line has that differs
_XLOG_DATE = re.compile(r"^\[\d{8}T\d\d:\d\d:\d\d\.\d{3}Z\|")
# (pattern, replacement) on the message: values that legitimately differ
# between two daemons running the same session
_XLOG_MASKS = [
    # wall-clock time since the previous report (since the epoch for the first)
    (re.compile(r"^(Transaction conflict statistics for last )\S+( seconds:)$"), r"\1<time>\2"),
    # how long the periodic operations took
    (re.compile(r"^(periodic_ops took )\S+( seconds\.)$"), r"\1<time>\2"),
    # the socket connections at the report: the only one compared is at
    # start-up, where the launcher's readiness probe may or may not have been
    # accepted yet
    (re.compile(r"^(  con stat: anonymous\()\d+, \d+ o, \d+ w\)"), r"\1<n>, <n> o, <n> w)"),
]
# messages ending in a backtrace (Printexc.get_backtrace / traceback.format_exc):
# the text after the exception and the lines that continue it are source
# locations of the daemon's own implementation, OCaml's or Python's
_XLOG_BACKTRACE = re.compile(
    r"^(process packet: .*\. |caught exception .*: )"
    r"(?:Raised |Re-raised |Called from |Traceback \(most recent call last\):|$)")
# statistics of the OCaml runtime itself, which oxsd does not have and does
# not print: the Symbol weak table (its entry count depends on when the GC
# last ran) and the GC counters
XLOG_RUNTIME_STATS = ("|xenstored] sytbl stat: ", "|xenstored]   mem stat: ")


def mask_xenstored_log(text: str, scratch: str = "") -> list[str]:
    """xenstored-log lines as ``[DATE|level|key] message``, runtime values
    masked and the OCaml runtime's statistics lines dropped.  Lines with no
    prefix (the start-up banner, continuation lines of a multi-line message)
    are kept as they are, except those of a backtrace.  Paths: the reference
    sees ``SCRATCH/run`` mounted over ``/run`` and logs ``/var/run/...``; oxsd
    logs the real path; both are written ``/var/run/...``, and the rest of the
    scratch dir ``SCRATCH``."""
    out = []
    in_backtrace = False
    for line in text.splitlines():
        if scratch:
            line = line.replace(scratch + "/run/", "/var/run/").replace(scratch, "SCRATCH")
        m = _XLOG_DATE.match(line)
        if m is None:
            if not in_backtrace:
                out.append(line)
            continue
        in_backtrace = False
        line = "[DATE|" + line[m.end():]
        if any(s in line for s in XLOG_RUNTIME_STATS):
            continue
        head, sep, msg = line.partition("] ")
        for pattern, repl in _XLOG_MASKS:
            msg = pattern.sub(repl, msg)
        bt = _XLOG_BACKTRACE.match(msg)
        if bt:
            msg = bt.group(1) + "<backtrace>"
            in_backtrace = True
        out.append(head + sep + msg)
    return out


def walk_tree(daemon: Daemon, timeout: float = 5.0) -> list[str]:
    """Every node as ``path perms=... value``, depth first, children sorted."""
    return final_queries(daemon, True, (), timeout)[0]


def final_queries(daemon: Daemon, tree: bool, domids, timeout: float = 5.0
                  ) -> tuple[list[str], list[str]]:
    """On one fresh connection: the tree walk (if `tree`), then
    IS_DOMAIN_INTRODUCED for each of `domids`."""
    ops = {name: op_code(name) for name in ("DIRECTORY", "READ", "GET_PERMS")}
    out: list[str] = []
    intro: list[str] = []
    with daemon.connect() as conn:
        rid = 0

        def ask(op: str, path: str) -> Packet:
            nonlocal rid
            rid += 1
            return conn.request(ops[op], path.encode("latin-1") + b"\0", req_id=rid,
                                timeout=timeout)

        def visit(path: str) -> None:
            value = ask("READ", path)
            perms = ask("GET_PERMS", path)
            children = ask("DIRECTORY", path)
            shown = MASKED if path in MASKED_NODES else repr(value.payload)
            out.append(f"{path} perms={perms.payload!r} value={shown}"
                       + ("" if value.op == ops["READ"] else f" (read: op {value.op})"))
            if children.op != ops["DIRECTORY"]:
                out.append(f"{path} directory failed: {children.payload!r}")
                return
            for name in sorted(n for n in children.payload.split(b"\0") if n):
                child = name.decode("latin-1")
                # '@' names are single root components: '@a/b' is not '/@a/b'
                if path == "/":
                    visit(child if child.startswith("@") else "/" + child)
                else:
                    visit(f"{path}/{child}")

        if tree:
            visit("/")
        for domid in domids:
            rid += 1
            reply = conn.request(_IS_INTRODUCED, b"%d\0" % domid, req_id=rid, timeout=timeout)
            intro.append(f"domain {domid} introduced: {escape(reply.payload)}"
                         + ("" if reply.op == _IS_INTRODUCED else f" (op {reply.op})"))
    return out, intro
