"""The state dump for `--restart` and live update (port of xenstored.ml's module DB).

Format (persistence.md §1), one record per line, fields separated by
commas, strings hex-encoded:

    $xenstored-dump-format
    global,<listening socket fd or -1>
    evtchn-dev,<event-channel fd>,<VIRQ_DOM_EXC local port>
    dom,<domid>,<mfn>,<remote port>,<local port>      (per domain connection)
    socket,<fd>                                       (per socket connection)
    watch,<domid, or -fd for a socket>,<hex path>,<hex token>
    store,<hex path>,<hex perms>,<hex value>          (every node, pre-order)

File descriptors only mean something to a process that inherited them
(live update execs itself); after a plain restart the socket lines name
dead descriptors and are skipped, as in the original.
"""
from __future__ import annotations

import logging
import os
import socket
import stat
from typing import TYPE_CHECKING, Callable, Optional, TextIO, Tuple

from . import perms as Perms
from .store import Path
from .utils import hexify, int_of_string, nativeint_of_string, unhexify

if TYPE_CHECKING:
    from .connections import Connections
    from .domains import Domains
    from .event import Event
    from .store import Node, Store

log = logging.getLogger("oxsd.xenstored")

DUMP_FORMAT_HEADER = "$xenstored-dump-format"


class BadFormat(Exception):
    pass


def _inheritable(fd: int) -> int:
    """Live update execs the new daemon: the descriptors in the dump must survive it."""
    try:
        os.set_inheritable(fd, True)
    except OSError:
        pass
    return fd


def to_channel(store: "Store", cons: "Connections", rw: Optional[socket.socket],
               event: Optional["Event"], out: TextIO) -> None:
    out.write(DUMP_FORMAT_HEADER + "\n")
    out.write(f"global,{_inheritable(rw.fileno()) if rw is not None else -1}\n")
    if event is not None:
        _inheritable(event.fd())
        out.write(event.dump_line())
    for con in cons.iter():
        if con.dom is not None:
            out.write(con.dom.dump_line())
            ident = con.dom.id
        else:
            fd = _inheritable(con.get_fd())
            out.write(f"socket,{fd}\n")
            ident = -fd
        for path, token in con.list_watches():
            out.write(f"watch,{ident},{hexify(path)},{hexify(token)}\n")

    def store_line(path: Path, node: "Node") -> None:
        name, perms, value = node.unpack()
        full = Path.of_path_and_name(path, name).to_string()
        out.write(f"store,{hexify(full)},{hexify(Perms.Node.to_string(perms))},{hexify(value)}\n")

    store.dump_fct(store_line)
    out.flush()


def to_file(store: "Store", cons: "Connections", rw: Optional[socket.socket],
            event: Optional["Event"], path: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="latin-1") as out:
        to_channel(store, cons, rw, event, out)


class Restorer:
    """Rebuilds the daemon's state from a dump (DB.from_channel)."""

    def __init__(self, store: "Store", cons: "Connections",
                 domains_init: Callable[[Optional[int], Optional[int]], "Domains"]) -> None:
        self.store = store
        self.cons = cons
        self.domains_init = domains_init  # (evtchn fd, domexc port) -> Domains
        self.doms: Optional["Domains"] = None
        self.rw: Optional[socket.socket] = None
        self.ops = store.get_ops(Perms.Connection.full_rights)

    def require_doms(self) -> "Domains":
        if self.doms is None:
            log.warning("No event channel file descriptor available in dump!")
            self.doms = self.domains_init(None, None)
        return self.doms

    def line(self, line: str) -> None:
        fields = line.split(",")
        kind = fields[0]
        if kind == "global" and len(fields) >= 2:
            fd = int_of_string(fields[1])
            if fd >= 0:
                sock = socket.socket(fileno=fd)
                sock.listen(1)
                sock.setblocking(False)
                self.rw = sock
        elif kind == "evtchn-dev" and len(fields) == 3:
            self.doms = self.domains_init(int_of_string(fields[1]), int_of_string(fields[2]))
        elif kind == "socket" and len(fields) == 2:
            self.socket(int_of_string(fields[1]))
        elif kind == "dom" and len(fields) >= 4:
            local = int_of_string(fields[4]) if len(fields) >= 5 else None
            self.domain(int_of_string(fields[1]), nativeint_of_string(fields[2]),
                        int_of_string(fields[3]), local)
        elif kind == "watch" and len(fields) == 4:
            ident = int_of_string(fields[1])
            con = self.cons.find(-ident) if ident < 0 else self.cons.find_domain(ident)
            self.cons.add_watch(con, unhexify(fields[2]).decode("latin-1"), unhexify(fields[3]))
        elif kind == "store" and len(fields) == 4:
            path = Path.of_string(unhexify(fields[1]).decode("latin-1"))
            perms = Perms.Node.of_string(unhexify(fields[2]) + b"\0")
            self.ops.write(path, unhexify(fields[3]))
            self.ops.setperms(path, perms)
        else:
            log.warning("restoring: ignoring unknown line: %s", line)

    def socket(self, fd: int) -> None:
        try:
            is_sock = stat.S_ISSOCK(os.fstat(fd).st_mode)
        except OSError:
            is_sock = False
        if not is_sock:
            log.warning("Ignoring invalid socket FD %d", fd)
            return
        sock = socket.socket(fileno=fd)
        sock.setblocking(True)
        self.cons.add_anonymous(sock)

    def domain(self, domid: int, mfn: int, remote_port: int, local_port: Optional[int]) -> None:
        doms = self.require_doms()
        if domid > 0:
            dom = doms.create(domid, mfn, remote_port=remote_port, local_port=local_port)
        else:
            dom = doms.create0(local_port=local_port)
        self.cons.add_domain(dom)


def from_file(path: str, restorer: Restorer) -> Tuple[Optional[socket.socket], "Domains"]:
    log.info("Loading xenstore dump from %s", path)
    with open(path, encoding="latin-1", newline="\n") as f:
        header = f.readline().rstrip("\n")
        if header != DUMP_FORMAT_HEADER:
            raise BadFormat("header")
        for raw in f:
            line = raw.rstrip("\n")
            try:
                restorer.line(line)
            except Exception as exn:
                log.warning("restoring: ignoring unknown line: %s (exception: %r)", line, exn)
    log.info("Completed loading xenstore dump")
    return restorer.rw, restorer.require_doms()
