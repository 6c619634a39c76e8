"""The daemon side of the simulated hypervisor (oxsd/sim/layout.py): oxsd's twin of the fake C libraries.

`SimEventChannel` follows fakelibs/xenevtchn_fake.c and `SimHypervisor`
follows fakelibs/xenctrl_fake.c, so that oxsd on a sim dir behaves like the
OCaml reference on the same sim dir.

A handle is an AF_UNIX datagram socket bound at `evtchn/h-<pid>-<n>`; an
event is one datagram holding the receiving port (LE uint32).  The daemon's
handle never blocks on a full receiver queue (MSG_DONTWAIT, the event is
dropped on EAGAIN: towards a guest handle with one port this is a
coalesce).  The guest tooling builds the same class with
`block_on_full=True` (wait up to 1 s for room), because a daemon multiplexes
every domain on one socket and a dropped event there would be lost.
"""
from __future__ import annotations

import errno
import itertools
import os
import socket
import struct
from dataclasses import dataclass
from typing import Optional

from ..evtchn import EventChannel, EvtchnError
from ..hypervisor import (GNTTAB_RESERVED_XENSTORE, XEN_DOMINF_dying, XEN_DOMINF_running,
                          XEN_DOMINF_shutdown, XEN_DOMINF_shutdownmask, XEN_DOMINF_shutdownshift,
                          DomainInfo, Error, Hypervisor, read_port_file)
from ..xenmmap import MmapInterface, map_fd, map_file
from .client import wait_readable
from .layout import MAX_DOMID, SimDir, format_port, read_text, strtoul, write_atomic

__all__ = ["SimEventChannel", "SimHypervisor", "EVENT_SEND_TIMEOUT", "sun_path_ok"]

EVENT_SEND_TIMEOUT = 1.0  # seconds a blocking (guest-side) notifier waits for queue room
_SOCK_BUF = 1 << 20
_EVENT = struct.Struct("<I")
# Plain ints: OR-ing the IntFlag members on every event costs more than the check.
_SEND_NOWAIT = int(socket.MSG_DONTWAIT | socket.MSG_NOSIGNAL)
_SEND_WAIT = int(socket.MSG_NOSIGNAL)
_RECV_NOWAIT = int(socket.MSG_DONTWAIT)
_SUN_PATH_MAX = 108  # sizeof(sockaddr_un.sun_path), NUL included

# One counter per process, so two handles of this process never pick the
# same name (binding unlinks a stale socket of the same name first).
_handle_counter = itertools.count()


def sun_path_ok(path: str) -> bool:
    return len(os.fsencode(path)) < _SUN_PATH_MAX


def socket_alive(path: str) -> bool:
    """True if some process still has a datagram socket bound at `path`."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        s.connect(path)
        return True
    except OSError:
        return False
    finally:
        s.close()


def set_send_timeout(sock: socket.socket, seconds: float) -> None:
    sec = int(seconds)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO,
                    struct.pack("ll", sec, int((seconds - sec) * 1e6)))


def send_event(sock: socket.socket, owner: str, port: int, block_on_full: bool) -> bool:
    """One event datagram to the handle socket at `owner`.

    True if delivered, or dropped because the receiver's queue is full
    (after waiting up to the socket's SO_SNDTIMEO when `block_on_full`);
    OSError (ENOENT, ECONNREFUSED...) when nobody listens there.
    """
    msg = _EVENT.pack(port)
    try:
        sock.sendto(msg, _SEND_NOWAIT, owner)
        return True
    except BlockingIOError:
        if not block_on_full:
            return False
    except OSError as e:
        if e.errno == errno.ENOBUFS:
            return False
        raise
    try:
        sock.sendto(msg, _SEND_WAIT, owner)
        return True
    except BlockingIOError:  # SO_SNDTIMEO expired: queue still full
        return False


@dataclass
class _Route:
    """Where notify on one local port delivers; valid while our port file keeps its inode."""
    ino: int
    owner: Optional[str]  # None: nothing to deliver to (unbound / virq / peer gone)
    peer_port: int = 0
    own: str = ""  # our port file (kept: notify is on the hot path of every ring)


class SimEventChannel(EventChannel):
    """An event-channel handle on a sim dir (xenevtchn_fake.c)."""

    def __init__(self, sim: SimDir, domid: int, sock: socket.socket, path: str,
                 block_on_full: bool = False) -> None:
        self.sim = sim
        self.domid = domid
        self.sock = sock
        self.path = path
        self.block_on_full = block_on_full
        self._ports: dict[int, Optional[_Route]] = {}
        if block_on_full:
            set_send_timeout(sock, EVENT_SEND_TIMEOUT)

    # -- creation
    @classmethod
    def open(cls, sim: SimDir, domid: int = 0, *, cloexec: bool = False,
             path: Optional[str] = None, block_on_full: bool = False) -> "SimEventChannel":
        """xenevtchn_open: a fresh handle socket (fixed `path` for dom0's ring owner)."""
        try:
            os.makedirs(sim.ports_dir(domid), exist_ok=True)
            os.makedirs(sim.path("evtchn", "virq"), exist_ok=True)
            if path is None:
                path = cls._fresh_path(sim)
            if not sun_path_ok(path):
                raise OSError(errno.ENAMETOOLONG, "socket path too long", path)
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            try:
                try:
                    os.unlink(path)  # stale socket of a dead process
                except FileNotFoundError:
                    pass
                sock.bind(path)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, _SOCK_BUF)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, _SOCK_BUF)
                sock.set_inheritable(not cloexec)
            except BaseException:
                sock.close()
                raise
        except OSError as e:
            raise EvtchnError.of("open", e.errno or errno.EINVAL) from e
        return cls(sim, domid, sock, path, block_on_full)

    @staticmethod
    def _fresh_path(sim: SimDir) -> str:
        pid = os.getpid()
        for n in _handle_counter:
            path = sim.handle_path(pid, n)
            if not os.path.exists(path) or not socket_alive(path):
                return path
        raise AssertionError("unreachable")

    @classmethod
    def fdopen(cls, sim: SimDir, domid: int, fd: int, *,
               block_on_full: bool = False) -> "SimEventChannel":
        """xenevtchn_fdopen: the socket's bound name is the handle; re-adopt the ports it owns."""
        try:
            sock = socket.socket(fileno=fd)
        except OSError as e:
            raise EvtchnError.of("fdopen", e.errno) from e
        name = sock.getsockname() if sock.family == socket.AF_UNIX else ""
        if isinstance(name, bytes):
            name = os.fsdecode(name)
        if not name or name.startswith("\0"):
            sock.detach()
            raise EvtchnError.of("fdopen", errno.EINVAL)
        h = cls(sim, domid, sock, name, block_on_full)
        for port in sim.ports(domid):
            try:
                info = sim.read_port(domid, port)
            except OSError:
                continue
            if info.owner == name:
                h._ports[port] = None
        return h

    # -- EventChannel
    def fd(self) -> int:
        return self.sock.fileno()

    def ports(self) -> list[int]:
        return sorted(self._ports)

    def adopt(self, port: int) -> None:
        self._ports.setdefault(port, None)

    def _alloc_local(self, op: str, peer: str) -> int:
        try:
            port = self.sim.alloc_port(self.domid, format_port(self.path, peer))
        except OSError as e:
            raise EvtchnError.of(op, e.errno or errno.EIO) from e
        self._ports[port] = None
        return port

    def bind_unbound_port(self, remote_domid: int) -> int:
        return self._alloc_local("bind_unbound_port", "unbound")  # remote not enforced

    def bind_interdomain(self, domid: int, remote_port: int) -> int:
        try:
            remote = self.sim.read_port(domid, remote_port)
        except OSError as e:
            raise EvtchnError.of("bind_interdomain", errno.EINVAL) from e
        if remote.kind != "unbound":
            raise EvtchnError.of("bind_interdomain", errno.EINVAL)
        local = self._alloc_local("bind_interdomain", f"{domid}:{remote_port}")
        try:
            self.sim.write_port(domid, remote_port,
                                format_port(remote.owner, f"{self.domid}:{local}"))
        except OSError as e:
            self._do_unbind(local)
            raise EvtchnError.of("bind_interdomain", e.errno or errno.EIO) from e
        return local

    def bind_virq(self, virq: int) -> int:
        local = self._alloc_local("bind_virq", f"virq:{virq}")
        try:
            write_atomic(self.sim.virq_file(virq), f"{self.domid}:{local}\n")
        except OSError as e:
            self._do_unbind(local)
            raise EvtchnError.of("bind_virq", e.errno or errno.EIO) from e
        return local

    def unbind(self, port: int) -> None:
        if port not in self._ports:
            raise EvtchnError.of("unbind", errno.EINVAL)
        self._do_unbind(port)

    def _do_unbind(self, port: int) -> None:
        try:
            info = self.sim.read_port(self.domid, port)
        except OSError:
            info = None
        if info is not None:
            if info.kind == "interdomain":
                self._unbind_peer(info.peer_dom, info.peer_port, port)
            elif info.kind == "virq":
                self._unbind_virq(info.virq, port)
            self.sim.free_port(self.domid, port)
        self._ports.pop(port, None)

    def _unbind_peer(self, peer_dom: int, peer_port: int, port: int) -> None:
        """Mark the peer unbound again, if it still points back at us."""
        try:
            r = self.sim.read_port(peer_dom, peer_port)
        except OSError:
            return
        if r.kind == "interdomain" and (r.peer_dom, r.peer_port) == (self.domid, port):
            try:
                self.sim.write_port(peer_dom, peer_port, format_port(r.owner, "unbound"))
            except OSError:
                pass

    def _unbind_virq(self, virq: int, port: int) -> None:
        path = self.sim.virq_file(virq)
        try:
            if read_text(path).split("\n", 1)[0] == f"{self.domid}:{port}":
                os.unlink(path)
        except OSError:
            pass

    def _resolve(self, port: int, ino: int, own: str) -> _Route:
        try:
            info = self.sim.read_port(self.domid, port)
        except OSError as e:
            raise EvtchnError.of("notify", errno.EINVAL) from e
        if info.kind != "interdomain":
            return _Route(ino, None, own=own)
        try:
            peer = self.sim.read_port(info.peer_dom, info.peer_port)
        except OSError:
            return _Route(ino, None, own=own)  # peer closed
        if not peer.owner or not sun_path_ok(peer.owner):
            return _Route(ino, None, own=own)
        return _Route(ino, peer.owner, info.peer_port, own)

    def notify(self, port: int) -> None:
        """Event to the peer's owner; undeliverable events are dropped, as Xen's notify succeeds."""
        try:
            route = self._ports[port]
        except KeyError:
            raise EvtchnError.of("notify", errno.EINVAL) from None
        own = route.own if route is not None else self.sim.port_file(self.domid, port)
        for attempt in (0, 1):
            try:
                ino = os.stat(own).st_ino
            except OSError:
                return  # own port closed under us: dropped
            # Port files are only replaced by rename, so an unchanged inode
            # means the cached route still holds.
            if route is None or route.owner is None or route.ino != ino or attempt:
                route = self._ports[port] = self._resolve(port, ino, own)
                if route.owner is None:
                    return
            try:
                send_event(self.sock, route.owner, route.peer_port, self.block_on_full)
                return
            except OSError:
                continue  # stale route? re-resolve once

    def pending(self) -> Optional[int]:
        while True:
            try:
                data = self.sock.recv(16, _RECV_NOWAIT)
            except BlockingIOError:
                return None
            except OSError as e:
                raise EvtchnError.of("pending", e.errno) from e
            if len(data) == _EVENT.size:
                return _EVENT.unpack(data)[0]
            # a malformed datagram is ignored

    def unmask(self, port: int) -> None:
        pass  # datagrams need no re-arming

    def close(self, unbind: bool = True) -> None:
        """xenevtchn_close; `unbind=False` leaves the port files (a fixed-owner handle)."""
        if self.sock.fileno() < 0:
            return
        if unbind:
            for port in list(self._ports):
                self._do_unbind(port)
        self._ports.clear()
        self.sock.close()
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass

    # -- guest-side conveniences (not used by the daemon)
    def wait(self, timeout: Optional[float]) -> Optional[int]:
        """Wait up to `timeout` seconds for one event; its port or None."""
        return self.pending() if wait_readable(self.sock, timeout) else None

    def drain(self) -> list[int]:
        """Consume every queued event without blocking."""
        out = []
        while (port := self.pending()) is not None:
            out.append(port)
        return out


def _domain_flags(state: str) -> int:
    """xenctrl_fake.c fill_info: running | shutdown[:code] | dying; anything else is running."""
    s = state.strip()
    if s.startswith("shutdown"):
        code = strtoul(s[9:]) if s[8:9] == ":" else 0
        return XEN_DOMINF_shutdown | ((code & XEN_DOMINF_shutdownmask) << XEN_DOMINF_shutdownshift)
    if s == "dying":
        return XEN_DOMINF_dying
    return XEN_DOMINF_running


# dom0's ring files named by Debian's oxenstored.conf; on a sim dir they are the sim's own.
_XEN_KVA_NAMES = ("", "/proc/xen/xsd_kva")
_XEN_PORT_NAMES = ("", "/proc/xen/xsd_port")


class SimHypervisor(Hypervisor):
    """The daemon's view of a sim dir (xenctrl_fake.c + xenevtchn_fake.c)."""

    def __init__(self, sim_dir: str, domid: Optional[int] = None) -> None:
        self.sim = SimDir(sim_dir)
        if not os.path.isdir(self.sim.path("domains")):
            raise Error(errno.ENOENT, f"{self.sim.path('domains')}: not a sim dir")
        self.domid = strtoul(os.environ.get("XENSIM_DOMID", "")) if domid is None else domid

    def evtchn_open(self, cloexec: bool = False) -> SimEventChannel:
        return SimEventChannel.open(self.sim, self.domid, cloexec=cloexec)

    def evtchn_fdopen(self, fd: int) -> SimEventChannel:
        return SimEventChannel.fdopen(self.sim, self.domid, fd)

    def _map_frame(self, domid: int, path: str, size: int, what: str) -> MmapInterface:
        if not (0 <= domid <= MAX_DOMID) or not os.path.exists(self.sim.domain_file(domid)):
            raise Error(errno.ESRCH, f"{what}: no domain {domid}")
        if size <= 0:
            raise Error(errno.EINVAL, f"{what}: bad size {size}")
        try:
            fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
        except OSError as e:
            # an unknown frame of an existing domain: Xen's "invalid mfn"
            raise Error(errno.EFAULT if e.errno == errno.ENOENT else e.errno,
                        f"{what}: {path}") from e
        try:
            if os.fstat(fd).st_size < size:
                raise Error(errno.EFAULT, f"{what}: {path} shorter than {size}")
            return map_fd(fd, size)
        except Error:
            raise
        except OSError as e:
            raise Error(e.errno or errno.EINVAL, f"{what}: mmap {path}") from e
        finally:
            os.close(fd)

    def map_ring(self, domid: int, mfn: int) -> MmapInterface:
        """The introduced mfn, as oxenstored 4.17 maps it (the reference's fake libxenctrl).

        No grant fallback here: a missing frame must fail the introduce (EINVAL),
        as it does for the reference, or differential runs would diverge.
        """
        return self.map_foreign(domid, mfn)

    def map_foreign_range(self, domid: int, size: int, mfn: int) -> MmapInterface:
        return self._map_frame(domid, self.sim.mem_file(domid, mfn), size, "map_foreign_range")

    def map_grant(self, domid: int, ref: int = GNTTAB_RESERVED_XENSTORE) -> MmapInterface:
        return self._map_frame(domid, self.sim.grant_file(domid, ref), self.page_size,
                               "map_grant")

    def domain_getinfo(self, domid: int) -> DomainInfo:
        # Same outcome as xc_domain_getinfolist(domid, 1) plus the stub's id check,
        # without listing the directory.
        if not 0 <= domid <= MAX_DOMID:
            raise Error(errno.ESRCH, f"domain_getinfo: no domain {domid}")
        try:
            state = read_text(self.sim.domain_file(domid))
        except OSError as e:
            raise Error(errno.ESRCH, f"domain_getinfo: no domain {domid}") from e
        return DomainInfo(domid, _domain_flags(state))

    def domain_getinfolist(self, first: int, max_domains: int) -> list[DomainInfo]:
        """xc_domain_getinfolist: existing domains with id >= first, ascending, at most max."""
        out: list[DomainInfo] = []
        for domid in self.sim.numeric_entries(self.sim.path("domains")):
            if len(out) >= max_domains:
                break
            if first <= domid <= MAX_DOMID:
                try:
                    out.append(self.domain_getinfo(domid))
                except Error:
                    continue
        return out

    def map_file(self, path: str) -> MmapInterface:
        return map_file(self.sim.xsd_kva if path in _XEN_KVA_NAMES else path)

    def read_port_file(self, path: str) -> int:
        return read_port_file(self.sim.xsd_port_file if path in _XEN_PORT_NAMES else path)
