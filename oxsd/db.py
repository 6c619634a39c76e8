"""The live-update DB dump `$xenstored-dump-format` (port of xenstored.ml's module DB).

xenstored.ml: DB.  The dump is text, one comma-separated record per
line, byte-compatible with oxenstored 4.17 in both directions:

    $xenstored-dump-format
    global,<listening socket fd or -1>
    evtchn-dev,<event-channel fd>,<DOM_EXC local port>
    dom,<domid>,<mfn>,<remote port>,<local port>    } each domain connection,
    watch,<domid>,<hex path>,<hex token>            } then its watches
    socket,<fd>                                     } each socket connection,
    watch,<-fd>,<hex path>,<hex token>              } then its watches
    store,<hex path>,<hex perms>,<hex value>        each node, pre-order
    transaction,<domid or -fd>,<tid>,<next tid>,<hex operations>   [oxsd]

Connections come in the original's `Hashtbl.iter` order (domains, then
sockets), watches in each connection's Hashtbl order, nodes pre-order with
children by descending name.  Hex is two lowercase digits per byte.

`transaction` lines are oxsd's own and only written by a live update forced
with `-F` that carries open transactions (`to_lines(..., with_transactions=
True)`); every other dump is the original's, byte for byte.  One line per
open transaction, after the store, connections in the order above and each
connection's transactions in the order they were started.  The connection
is named as in its `watch` lines; `<next tid>` is the connection's next
transaction id (the same on each of its lines); `<hex operations>` is the
transaction's recorded operations, oldest first, each as the request packet
then the response packet, both in wire form (16-byte header, payload), all
concatenated (empty for a transaction without operations).  The response
packet has the request's tid, rid and type with `OK\0` (an Ack) or the
reply's payload, or type ERROR with `<name>\0`.  Example (guest 5, tid 1,
next 2, one WRITE `data/a` = `1` with rid 3, answered OK), on one line:

    transaction,5,1,2,0b000000030000000100000008000000646174612f6100310b0000000300
    000001000000030000004f4b00

The original's loader does not know the record: it warns `restoring:
ignoring unknown line: transaction,...` and goes on, so it loads such a
dump without the transactions (the clients then get EIO for their ids).

What the numbers mean, and what therefore survives what:

* fd numbers (`global`, `evtchn-dev`, `socket`, and the negated fd of a
  socket's watches) name descriptors of the writing process.  They are
  only meaningful to a process that inherited them through `exec`, i.e.
  after a live update.  Read by a fresh process (`--restart` without
  `--live`, or after SIGTERM) they name whatever that process has open
  under those numbers, usually nothing: the lines are then ignored with a
  warning, as in the original.
* the `dom` local ports were bound by the old event-channel handle; they
  stay bound only while that handle's fd lives on (exec), not after the
  process died.
* the store (paths, perms, values) and the watches of restored
  connections cross any restart, within `quota-maxsize` (a longer value
  fails, with its subtree [quirk]).
* not dumped at all: transactions (but for `transaction` lines above),
  partial packets, queued replies and watch events, set_target
  identities, io and conflict credits, bad flags, history, quota counts
  (rebuilt by the load), live-update state.

Loading never trusts a line: a line that fails is logged (`restoring:
ignoring unknown line: ...`) and skipped.  Only a wrong header line is
fatal (`BadFormat`), as in the original.

Public API: `DUMP_FORMAT_HEADER`, `BadFormat`, `to_channel`, `to_bytes`,
`to_file`, `from_channel_f`, `from_channel`, `from_file`, `Restored`,
`CarriedTransaction`, `dump_transactions`, `response_packet`,
`packets_of_bytes`.
"""
from __future__ import annotations

import errno
import logging
import os
import socket
import stat
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import (TYPE_CHECKING, BinaryIO, Callable, Dict, Iterable, List, Optional,
                    Sequence, Set, Tuple)

from . import perms as Perms
from .connections import hashtbl_order
from .define import AlreadyExist
from .event import Event
from .printexc import ocaml_exn_str
from .packet import Ack, Error, Reply
from .store import Node, Path
from .utils import hexify, int_of_string, nativeint_of_string, unhexify
from .xb.op import Op, of_cval
from .xb.packet import HEADER, HEADER_SIZE, Packet

if TYPE_CHECKING:
    from .connection import Connection
    from .connections import Connections
    from .domains import Domains
    from .store import Store
    from .hypervisor import Hypervisor

__all__ = ["DUMP_FORMAT_HEADER", "BadFormat", "to_channel", "to_bytes", "to_file",
           "from_channel_f", "from_channel", "from_file", "Restored", "dump_connection",
           "CarriedTransaction", "dump_transactions", "response_packet", "packets_of_bytes"]

log = logging.getLogger("oxsd.xenstored")

DUMP_FORMAT_HEADER = "$xenstored-dump-format"
TRANSACTION_RECORD = "transaction"


class BadFormat(Exception):
    """DB.Bad_format: the file does not start with the header line (fatal)."""

    def ocaml_str(self) -> str:
        return f'Xenstored.DB.Bad_format("{self.args[0] if self.args else ""}")'


class _UnixError(OSError):
    """An OSError that prints as OCaml's Unix.Unix_error(<errno>, "<call>", "")."""

    def __init__(self, err: OSError, call: str) -> None:
        super().__init__(err.errno, err.strerror)
        self.ocaml_call = call


# -- writing ----------------------------------------------------------------------

def _hash_order(table: Dict[int, "Connection"]) -> List["Connection"]:
    """The values of a connection table in OCaml Hashtbl.iter order."""
    return hashtbl_order(table)


def dump_connection(con: "Connection") -> List[str]:
    """Connection.dump: the `dom`/`socket` line, then one `watch` line per watch."""
    dom = con.dom
    if dom is not None:
        lines = [dom.dump_line()]
        ident = dom.id
    else:
        fd = con.get_fd()
        lines = [f"socket,{fd}\n"]
        ident = -fd
    lines.extend(f"watch,{ident},{hexify(path)},{hexify(token)}\n"
                 for path, token in con.list_watches())
    return lines


def _con_ident(con: "Connection") -> int:
    """How `watch` and `transaction` lines name a connection: domid, or minus the socket's fd."""
    return con.dom.id if con.dom is not None else -con.get_fd()


def response_packet(request: Packet, response) -> Packet:
    """The recorded response of `request` as the packet it was answered with (before any E2BIG)."""
    if isinstance(response, Ack):
        return Packet(request.tid, request.rid, request.ty, b"OK\0")
    if isinstance(response, Reply):
        return Packet(request.tid, request.rid, request.ty, response.data)
    if isinstance(response, Error):
        return Packet(request.tid, request.rid, Op.ERROR, response.name.encode("latin-1") + b"\0")
    raise TypeError(f"not a response: {response!r}")


def dump_transactions(con: "Connection") -> List[str]:
    """One `transaction` line per open transaction of `con`, in the order they were started."""
    ident = _con_ident(con)
    lines = []
    for tid, t in con.transactions.items():
        ops = b"".join(request.to_bytes() + response_packet(request, response).to_bytes()
                       for request, response in t.operations)
        lines.append(f"{TRANSACTION_RECORD},{ident},{tid},{con.next_tid},{ops.hex()}\n")
    return lines


def _keep_on_exec(fd: int) -> None:
    try:
        os.set_inheritable(fd, True)
    except OSError:
        pass


def to_lines(store: "Store", cons: "Connections", listen_sock: Optional[socket.socket],
             eventchn: Optional["Event"], with_transactions: bool = False,
             extra_lines: Sequence[str] = ()) -> List[str]:
    """The dump, line by line (each ends with a newline); `transaction` lines only if asked.

    `extra_lines` (protocol level 4.22's records, ProtocolLevel.dump_lines) come last."""
    lines = [DUMP_FORMAT_HEADER + "\n"]
    if listen_sock is None:
        lines.append("global,-1\n")
    else:
        fd = listen_sock.fileno()
        _keep_on_exec(fd)  # Python, like systemd and utils.ml, made it close-on-exec
        lines.append(f"global,{fd}\n")
    if eventchn is not None:
        _keep_on_exec(eventchn.fd())
        lines.append(eventchn.dump_line())
    for con in _hash_order(cons.domains):
        lines.extend(dump_connection(con))
    for con in _hash_order(cons.anonymous):
        # The original's accepted sockets never had close-on-exec; Python's have.
        _keep_on_exec(con.get_fd())
        lines.extend(dump_connection(con))
    add = lines.append

    def dump_node(path: Path, node: Node) -> None:
        fullpath = Path.of_path_and_name(path, node.name).to_string()
        add(f"store,{hexify(fullpath)},{hexify(node.perms.to_string())},{node.value.hex()}\n")

    store.dump_fct(dump_node)
    if with_transactions:
        # After the store: a restore replays them on the complete tree.
        for con in _hash_order(cons.domains) + _hash_order(cons.anonymous):
            lines.extend(dump_transactions(con))
    lines.extend(extra_lines)
    return lines


def to_bytes(store: "Store", cons: "Connections", listen_sock: Optional[socket.socket],
             eventchn: Optional["Event"], with_transactions: bool = False,
             extra_lines: Sequence[str] = ()) -> bytes:
    return "".join(to_lines(store, cons, listen_sock, eventchn,
                            with_transactions, extra_lines)).encode("ascii")


def to_channel(store: "Store", cons: "Connections", listen_sock: Optional[socket.socket],
               eventchn: Optional["Event"], out: BinaryIO, with_transactions: bool = False) -> None:
    """DB.to_channel on a binary stream (flushed)."""
    out.write(to_bytes(store, cons, listen_sock, eventchn, with_transactions))
    out.flush()


def to_file(store: "Store", cons: "Connections", listen_sock: Optional[socket.socket],
            eventchn: Optional["Event"], path: str, with_transactions: bool = False,
            extra_lines: Sequence[str] = ()) -> None:
    """DB.to_file, crash-safe: the previous dump stays until the new one is whole on disk.

    The original truncates `path` and writes in place, so a dump that fails
    (full disk) or is cut (SIGKILL, power loss) leaves no readable dump.
    oxsd writes `<path>.tmp` (mode 0600), fsyncs it, renames it over `path`
    and fsyncs the directory (docs/deviations.md).  On failure the temporary
    file is removed and the OSError raised, as the original's Sys_error.
    """
    write_atomically(path, to_bytes(store, cons, listen_sock, eventchn, with_transactions,
                                    extra_lines))


class _ChannelError(OSError):
    """A failed write of the dump, printed as the original's channel error: Sys_error("<reason>")."""

    def ocaml_str(self) -> str:
        return f'Sys_error("{self.strerror}")'


def write_atomically(path: str, data: bytes, mode: int = 0o600) -> None:
    """Replace `path` by `data`: temporary file, fsync, rename, fsync of the directory.

    Errors read as the original's: Sys_error("<path>: <reason>") when the file
    cannot be created, Sys_error("<reason>") when it cannot be written."""
    tmp = path + ".tmp"
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, mode)
    except OSError as e:
        raise OSError(e.errno, e.strerror, path) from e
    try:
        try:
            view = memoryview(data)
            while view:
                n = os.write(fd, view)
                view = view[n:]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.rename(tmp, path)
    except BaseException as e:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        if isinstance(e, OSError):
            raise _ChannelError(e.errno, e.strerror) from e
        raise
    _fsync_directory(os.path.dirname(path) or ".")


def _fsync_directory(directory: str) -> None:
    """Make a rename in `directory` durable; a filesystem that cannot is left as it is."""
    try:
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


# -- reading ----------------------------------------------------------------------

def _input_lines(data: bytes) -> List[str]:
    """What successive OCaml input_line calls return (no final empty line after "\\n")."""
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    return [line.decode("latin-1") for line in lines]


def packets_of_bytes(data: bytes) -> List[Packet]:
    """Complete wire packets laid end to end (sans-IO); ValueError if one is cut."""
    packets = []
    pos, end = 0, len(data)
    while pos < end:
        if end - pos < HEADER_SIZE:
            raise ValueError("truncated packet header")
        ty, rid, tid, length = HEADER.unpack_from(data, pos)
        pos += HEADER_SIZE
        if length > end - pos:
            raise ValueError("truncated packet payload")
        packets.append(Packet(tid, rid, of_cval(ty), data[pos:pos + length]))
        pos += length
    return packets


def _operations_of_hex(field: str) -> List[Tuple[Packet, Packet]]:
    """(request, response packet) pairs of a `transaction` line's last field."""
    packets = packets_of_bytes(bytes.fromhex(field))
    if len(packets) % 2:
        raise ValueError("request without its response")
    return list(zip(packets[0::2], packets[1::2]))


TransactionF = Callable[[int, int, int, List[Tuple[Packet, Packet]]], None]


def from_channel_f(data: bytes, global_f: Callable[[str], None],
                   evtchn_f: Callable[[int, int], None], socket_f: Callable[[int], None],
                   domain_f: Callable[[int, int, int, Optional[int]], None],
                   watch_f: Callable[[int, bytes, bytes], None],
                   store_f: Callable[[Path, Perms.Node, bytes], None],
                   transaction_f: Optional[TransactionF] = None,
                   extra_f: Optional[Callable[[List[str]], bool]] = None) -> None:
    """Split the dump into records and hand each to its function; bad lines are skipped.

    `transaction_f(ident, tid, next_tid, operations)` gets oxsd's `transaction`
    lines; without it they are unknown lines, as for the original."""
    lines = _input_lines(data)
    if not lines:
        raise EOFError()  # input_line on an empty file: End_of_file, fatal
    if lines[0] != DUMP_FORMAT_HEADER:
        raise BadFormat("header")
    for line in lines[1:]:
        fields = line.split(",")
        kind = fields[0]
        n = len(fields)
        try:
            if kind == "global" and n >= 2:
                # more fields may follow (a read-only socket of older versions): ignored
                global_f(fields[1])
            elif kind == "evtchn-dev" and n == 3:
                evtchn_f(int_of_string(fields[1]), int_of_string(fields[2]))
            elif kind == "socket" and n == 2:
                socket_f(int_of_string(fields[1]))
            elif kind == "dom" and n >= 4:
                # no local port: dump of an older version, the remote port gets bound
                local_port = int_of_string(fields[4]) if n >= 5 else None
                domain_f(int_of_string(fields[1]), nativeint_of_string(fields[2]),
                         int_of_string(fields[3]), local_port)
            elif kind == "watch" and n == 4:
                watch_f(int_of_string(fields[1]), unhexify(fields[2]), unhexify(fields[3]))
            elif kind == "store" and n == 4:
                u = unhexify(fields[1])
                log.debug("Path: %s", u.decode("latin-1"))
                path = Path.of_string(u)
                perms = Perms.Node.of_string(unhexify(fields[2]) + b"\0")
                store_f(path, perms, unhexify(fields[3]))
            elif kind == TRANSACTION_RECORD and n == 5 and transaction_f is not None:
                transaction_f(int_of_string(fields[1]), int_of_string(fields[2]),
                              int_of_string(fields[3]), _operations_of_hex(fields[4]))
            elif extra_f is not None and extra_f(fields):
                pass  # a protocol level 4.22 record (ProtocolLevel.restore_line)
            else:
                log.warning("restoring: ignoring unknown line: %s", line)
        except Exception as exn:
            log.warning("restoring: ignoring unknown line: %s (exception: %s)",
                        line, ocaml_exn_str(exn))
    log.info("Completed loading xenstore dump")


@dataclass
class CarriedTransaction:
    """A `transaction` line, its connection found.

    Recreated by `carried_transactions.py: restore_transactions`.
    """

    con: "Connection"
    tid: int
    next_tid: int
    operations: List[Tuple[Packet, Packet]]  # (request, response packet), oldest first


@dataclass
class Restored:
    """What a load gives back: the listening socket and the domain registry (either may be None)."""

    listen_sock: Optional[socket.socket]
    doms: Optional["Domains"]
    # fds adopted from the dump (the listening socket, the event channel, sockets)
    adopted_fds: Set[int] = field(default_factory=set)
    # open transactions of a forced live update, in the dump's order (not yet recreated)
    transactions: List[CarriedTransaction] = field(default_factory=list)


def _adopt_socket(fd: int, owned: Dict[int, socket.socket], call: str) -> socket.socket:
    """A socket object for an inherited fd (the same object if we already own it)."""
    sock = owned.get(fd)
    if sock is not None:
        return sock
    if fd < 0:
        raise _UnixError(OSError(errno.EBADF, os.strerror(errno.EBADF)), call)
    try:
        return socket.socket(fileno=fd)
    except OSError as e:
        raise _UnixError(e, call) from None


@dataclass
class _Loader:
    """The per-record actions of DB.from_channel, sharing what one load has adopted so far."""

    cons: "Connections"
    ops: SimpleNamespace  # Store.get_ops(full rights)
    domains_init: Callable[["Event"], "Domains"]
    hv: Optional["Hypervisor"]
    owned: Dict[int, socket.socket]
    restored: Restored = field(default_factory=lambda: Restored(None, None))
    in_use: Set[int] = field(default_factory=set)  # fds adopted by this load

    def new_event(self, fd: Optional[int] = None, domexc_port: Optional[int] = None) -> "Event":
        if self.hv is None:
            raise RuntimeError("no hypervisor interface")
        event = Event.init(self.hv.open_evtchn(fd), domexc_port)
        self.in_use.add(event.fd())
        return event

    def require_doms(self) -> Optional["Domains"]:
        if self.restored.doms is None:
            log.warning("No event channel file descriptor available in dump!")
            if self.hv is None:
                return None
            self.restored.doms = self.domains_init(self.new_event())
        return self.restored.doms

    def global_f(self, rw: str) -> None:
        fd = int_of_string(rw)
        sock = _adopt_socket(fd, self.owned, "listen")
        try:
            sock.listen(1)
        except OSError as e:
            if sock is not self.owned.get(fd):
                sock.detach()  # not ours after all: leave the fd as it was
            raise _UnixError(e, "listen") from None
        self.owned[fd] = sock
        self.in_use.add(fd)
        self.restored.listen_sock = sock

    def evtchn_f(self, fd: int, domexc_port: int) -> None:
        if fd in self.in_use or fd in self.owned:  # ours already: not an inherited handle
            raise _UnixError(OSError(errno.EBADF, os.strerror(errno.EBADF)), "fdopen")
        self.restored.doms = self.domains_init(self.new_event(fd, domexc_port))

    def socket_f(self, fd: int) -> None:
        try:
            is_valid = (stat.S_ISSOCK(os.fstat(fd).st_mode)
                        and fd not in self.in_use and fd not in self.owned)
        except OSError:
            is_valid = False
        if not is_valid:
            log.warning("Ignoring invalid socket FD %d", fd)
            return
        sock = socket.socket(fileno=fd)
        sock.setblocking(True)  # what accept gives the loop
        self.in_use.add(fd)
        self.cons.add_anonymous(sock)

    def domain_f(self, domid: int, mfn: int, remote_port: int, local_port: Optional[int]) -> None:
        doms = self.require_doms()
        if doms is None:
            raise RuntimeError("no hypervisor interface")
        if domid > 0:
            dom = doms.create(domid, mfn, remote_port=remote_port, local_port=local_port)
        else:
            dom = doms.create0(local_port=local_port)
        self.cons.add_domain(dom)

    def get_con(self, ident: int) -> "Connection":
        if ident < 0:
            return self.cons.find(-ident)
        return self.cons.find_domain(ident)

    def watch_f(self, ident: int, path: bytes, token: bytes) -> None:
        self.cons.add_watch(self.get_con(ident), path.decode("latin-1"), token)

    def store_f(self, path: Path, perms: Perms.Node, value: bytes) -> None:
        self.ops.write(path, value)
        self.ops.setperms(path, perms)

    def transaction_f(self, ident: int, tid: int, next_tid: int,
                      operations: List[Tuple[Packet, Packet]]) -> None:
        con = self.get_con(ident)
        if not 0 < tid < 0x3FFFFFFF:  # what valid_transaction_id can give
            raise ValueError(f"transaction id {tid}")
        if any(c.con is con and c.tid == tid for c in self.restored.transactions):
            raise AlreadyExist()
        self.restored.transactions.append(CarriedTransaction(con, tid, next_tid, operations))


def from_channel(store: "Store", cons: "Connections",
                 domains_init: Callable[["Event"], "Domains"],
                 hv: Optional["Hypervisor"], data: bytes,
                 owned: Optional[Dict[int, socket.socket]] = None,
                 restore_extra: Optional[Callable[[List[str], Callable], bool]] = None) -> Restored:
    """DB.from_channel: rebuild connections, watches and the tree from a dump.

    `domains_init(event)` makes the domain registry; `hv` opens event-channel
    handles (None: no hypervisor, domain lines fail).  `owned` maps fds this
    process already holds as socket objects (the fresh listening socket of a
    `--restart` without `--live`) so that a dumped number equal to one of
    them reuses that object rather than a second owner of the same fd.
    """
    load = _Loader(cons, store.get_ops(Perms.Connection.full_rights), domains_init, hv,
                   dict(owned or {}))
    extra_f = (None if restore_extra is None
               else (lambda fields: restore_extra(fields, load.get_con)))
    from_channel_f(data, load.global_f, load.evtchn_f, load.socket_f, load.domain_f,
                   load.watch_f, load.store_f, load.transaction_f, extra_f)
    load.require_doms()
    load.restored.adopted_fds = load.in_use
    return load.restored


def from_file(store: "Store", cons: "Connections",
              domains_init: Callable[["Event"], "Domains"], hv: Optional["Hypervisor"],
              path: str, owned: Optional[Dict[int, socket.socket]] = None,
              restore_extra: Optional[Callable[[List[str], Callable], bool]] = None) -> Restored:
    """DB.from_file."""
    log.info("Loading xenstore dump from %s", path)
    with open(path, "rb") as f:
        data = f.read()
    return from_channel(store, cons, domains_init, hv, data, owned, restore_extra)


def dumped_fds(data: bytes) -> Iterable[Tuple[str, int]]:
    """(record kind, fd) of every fd-carrying line of a dump (diagnostics and tests)."""
    for line in _input_lines(data)[1:]:
        fields = line.split(",")
        if fields[0] in ("global", "socket", "evtchn-dev") and len(fields) >= 2:
            try:
                yield fields[0], int_of_string(fields[1])
            except ValueError:
                continue
