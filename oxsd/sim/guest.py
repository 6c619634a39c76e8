"""The hypervisor/toolstack/guest side of a sim dir: oxsd's own tooling (oxsd/sim/layout.py).

* `Sim`: a simulated hypervisor rooted at a directory: creates the layout,
  domains and their state changes (raising VIRQ_DOM_EXC), frames, port
  listing, clean-up after dead processes.
* `Ring`: a guest's view of `struct xenstore_domain_interface`.  Each ring
  index is read and written as one aligned 32-bit access through a
  `memoryview.cast('I')`; byte-wise stores would let the daemon observe a
  torn index and mark the guest bad.
* `RingClient`: the XenStore protocol over a ring page plus an event
  channel.  A notified client notifies after writing a request and after
  consuming replies (as Linux's xenbus does); a lazy one never notifies and
  finds replies by polling `rsp_prod` every 2 ms.
* `Guest`: a domU ready to be introduced (`domid`, `mfn`, `port`).
* `dom0_ring_client`: a client on dom0's own ring (`xsd_kva`/`xsd_port`).
"""
from __future__ import annotations

import mmap
import os
import socket
import time
from typing import Any, Optional

from .client import Data, SocketClient, XsClient, XsError
from .hv import EVENT_SEND_TIMEOUT, SimEventChannel, send_event, set_send_timeout, socket_alive
from .layout import (GNTTAB_RESERVED_XENSTORE, PAGE_SIZE, VIRQ_DOM_EXC, SimDir, format_port,
                     read_text, write_atomic)

__all__ = ["Sim", "Ring", "RingClient", "Guest", "dom0_ring_client",
           "SocketClient", "XsClient", "XsError", "RingError"]

XENSTORE_RING_SIZE = 1024
FIRST_GUEST_MFN = 0x1000

# struct xenstore_domain_interface (xen/include/public/io/xs_wire.h), byte offsets
OFF_REQ = 0
OFF_RSP = 1024
OFF_REQ_CONS = 2048
OFF_REQ_PROD = 2052
OFF_RSP_CONS = 2056
OFF_RSP_PROD = 2060
OFF_SERVER_FEATURES = 2064
OFF_CONNECTION = 2068
OFF_ERROR = 2072

_MASK = 0xFFFFFFFF


class Sim(SimDir):
    """A simulated hypervisor on the directory `root` (what XENSIM_DIR names)."""

    def __init__(self, root: str, create: bool = True) -> None:
        super().__init__(root)
        if any(c.isspace() for c in self.root):
            raise ValueError("sim dir must not contain whitespace")
        if len(os.fsencode(self.handle_path(4194304, 1000))) >= 108:
            raise ValueError("sim dir path too long for AF_UNIX socket names")
        self._sender: Optional[socket.socket] = None
        if create:
            self.init()

    def init(self) -> None:
        """Create the layout, domain 0 and dom0's ring (xsd_kva + an unbound xsd_port)."""
        for d in ("domains", "mem", "grant", "evtchn/ports/0", "evtchn/virq"):
            os.makedirs(self.path(d), exist_ok=True)
        if not os.path.exists(self.domain_file(0)):
            self.create_domain(0)
        if not os.path.exists(self.xsd_port_file):
            with open(self.xsd_kva, "wb") as f:
                f.write(bytes(PAGE_SIZE))
            port = self.alloc_port(0, format_port(self.dom0_ring_owner(), "unbound"))
            # no newline: oxenstored runs int_of_string on the raw content
            write_atomic(self.xsd_port_file, str(port))

    @property
    def xsd_port(self) -> int:
        return int(read_text(self.xsd_port_file).strip())

    # -- domains
    def create_domain(self, domid: int, state: str = "running") -> None:
        for d in ("mem", "grant"):
            os.makedirs(self.path(d, domid), exist_ok=True)
        os.makedirs(self.ports_dir(domid), exist_ok=True)
        write_atomic(self.domain_file(domid), state + "\n")

    def domain_state(self, domid: int) -> Optional[str]:
        try:
            return read_text(self.domain_file(domid)).strip()
        except FileNotFoundError:
            return None

    def set_domain_state(self, domid: int, state: str, raise_virq: bool = False) -> None:
        write_atomic(self.domain_file(domid), state + "\n")
        if raise_virq:
            self.raise_virq(VIRQ_DOM_EXC)

    def shutdown_domain(self, domid: int, code: int = 0, raise_virq: bool = True) -> None:
        self.set_domain_state(domid, f"shutdown:{code}", raise_virq)

    def destroy_domain(self, domid: int, raise_virq: bool = True,
                       dying_first: bool = False) -> None:
        """The domain no longer exists (optionally via `dying`); then VIRQ_DOM_EXC."""
        if dying_first:
            self.set_domain_state(domid, "dying", raise_virq)
        try:
            os.unlink(self.domain_file(domid))
        except FileNotFoundError:
            pass
        if raise_virq:
            self.raise_virq(VIRQ_DOM_EXC)

    # -- memory
    def alloc_page(self, domid: int, mfn: Optional[int] = None,
                   grant_ref: Optional[int] = None) -> int:
        """A zeroed frame mem/<domid>/<mfn> (lowest free mfn >= 0x1000 unless given),
        optionally hard-linked as grant/<domid>/<grant_ref>."""
        d = self.path("mem", domid)
        os.makedirs(d, exist_ok=True)
        if mfn is None:
            mfn = FIRST_GUEST_MFN
            while True:
                try:
                    fd = os.open(os.path.join(d, str(mfn)),
                                 os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
                    break
                except FileExistsError:
                    mfn += 1
        else:
            fd = os.open(os.path.join(d, str(mfn)),
                         os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
        try:
            os.write(fd, bytes(PAGE_SIZE))
        finally:
            os.close(fd)
        if grant_ref is not None:
            g = self.grant_file(domid, grant_ref)
            os.makedirs(os.path.dirname(g), exist_ok=True)
            try:
                os.unlink(g)
            except FileNotFoundError:
                pass
            os.link(self.mem_file(domid, mfn), g)
        return mfn

    # -- event channels
    def list_ports(self) -> list[tuple[int, int, str]]:
        """(domid, port, content) of every port file."""
        out = []
        for d, p in self.iter_ports():
            try:
                out.append((d, p, read_text(self.port_file(d, p)).strip()))
            except FileNotFoundError:
                continue
        return out

    def close_dead_handles(self) -> int:
        """The hypervisor's clean-up for processes that died with handles open.

        Every port owned by a handle socket (evtchn/h-*) that nobody has bound
        any more is closed: its peer becomes unbound, its VIRQ binding goes,
        the stale socket file is removed.  Returns the number of ports closed.
        """
        closed = 0
        dead: dict[str, bool] = {}
        for dom, port in list(self.iter_ports()):
            try:
                info = self.read_port(dom, port)
            except OSError:
                continue
            owner = info.owner
            if not owner or not os.path.basename(owner).startswith("h-"):
                continue
            if owner not in dead:
                dead[owner] = not socket_alive(owner)
            if not dead[owner]:
                continue
            if info.kind == "interdomain":
                try:
                    r = self.read_port(info.peer_dom, info.peer_port)
                    if r.kind == "interdomain" and (r.peer_dom, r.peer_port) == (dom, port):
                        self.write_port(info.peer_dom, info.peer_port,
                                        format_port(r.owner, "unbound"))
                except OSError:
                    pass
            elif info.kind == "virq":
                if self.read_virq(info.virq) == (dom, port):
                    try:
                        os.unlink(self.virq_file(info.virq))
                    except FileNotFoundError:
                        pass
            self.free_port(dom, port)
            closed += 1
        for owner, is_dead in dead.items():
            if is_dead:
                try:
                    os.unlink(owner)
                except FileNotFoundError:
                    pass
        return closed

    def _send_sock(self) -> socket.socket:
        if self._sender is None:
            self._sender = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            set_send_timeout(self._sender, EVENT_SEND_TIMEOUT)
        return self._sender

    def send_event(self, domid: int, port: int) -> bool:
        """Make <domid>:<port> pending; False if nobody listens or the queue stayed full."""
        try:
            info = self.read_port(domid, port)
        except OSError:
            return False
        if not info.owner:
            return False
        try:
            return send_event(self._send_sock(), info.owner, port, block_on_full=True)
        except OSError:
            return False

    def raise_virq(self, virq: int) -> bool:
        bound = self.read_virq(virq)
        return bound is not None and self.send_event(*bound)

    def close(self) -> None:
        if self._sender is not None:
            self._sender.close()
            self._sender = None


class RingError(Exception):
    """The ring indexes are inconsistent (more than a ring's worth in flight)."""


class Ring:
    """A guest's mapping of its xenstore_domain_interface page."""

    def __init__(self, path: str) -> None:
        self.path = path
        fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
        try:
            self._mm = mmap.mmap(fd, PAGE_SIZE, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        finally:
            os.close(fd)
        self._mem = memoryview(self._mm)
        self._idx = self._mem.cast("I")

    def _get(self, off: int) -> int:
        return self._idx[off >> 2]

    def _set(self, off: int, value: int) -> None:
        self._idx[off >> 2] = value & _MASK

    req_cons = property(lambda s: s._get(OFF_REQ_CONS))
    req_prod = property(lambda s: s._get(OFF_REQ_PROD))
    rsp_cons = property(lambda s: s._get(OFF_RSP_CONS))
    rsp_prod = property(lambda s: s._get(OFF_RSP_PROD))
    server_features = property(lambda s: s._get(OFF_SERVER_FEATURES))
    connection = property(lambda s: s._get(OFF_CONNECTION))
    error = property(lambda s: s._get(OFF_ERROR))

    def init(self) -> None:
        """A fresh interface: all zero (indexes 0, CONNECTED, no error)."""
        self._mem[:] = bytes(PAGE_SIZE)

    def write_req(self, data: Data) -> int:
        """Copy what fits of `data` into req[], then publish req_prod; return the count."""
        cons, prod = self._get(OFF_REQ_CONS), self._get(OFF_REQ_PROD)
        used = (prod - cons) & _MASK
        if used > XENSTORE_RING_SIZE:
            raise RingError(f"bad req ring indexes cons={cons} prod={prod}")
        n = min(XENSTORE_RING_SIZE - used, len(data))
        if n == 0:
            return 0
        src = memoryview(data.encode() if isinstance(data, str) else data)
        off = prod % XENSTORE_RING_SIZE
        first = min(n, XENSTORE_RING_SIZE - off)
        self._mem[OFF_REQ + off:OFF_REQ + off + first] = src[:first]
        if n > first:
            self._mem[OFF_REQ:OFF_REQ + n - first] = src[first:n]
        self._set(OFF_REQ_PROD, prod + n)  # data first, index last (x86 keeps store order)
        return n

    def read_rsp(self) -> bytes:
        """Consume everything available in rsp[]."""
        cons, prod = self._get(OFF_RSP_CONS), self._get(OFF_RSP_PROD)
        n = (prod - cons) & _MASK
        if n == 0:
            return b""
        if n > XENSTORE_RING_SIZE:
            raise RingError(f"bad rsp ring indexes cons={cons} prod={prod}")
        off = cons % XENSTORE_RING_SIZE
        first = min(n, XENSTORE_RING_SIZE - off)
        data = bytes(self._mem[OFF_RSP + off:OFF_RSP + off + first])
        if n > first:
            data += bytes(self._mem[OFF_RSP:OFF_RSP + n - first])
        self._set(OFF_RSP_CONS, cons + n)
        return data

    def close(self) -> None:
        self._idx.release()
        self._mem.release()
        self._mm.close()


class RingClient(XsClient):
    """XenStore over a ring page and an event channel (a guest's xenbus)."""

    poll_interval = 0.002  # lazy clients poll rsp_prod this often

    def __init__(self, ring: Ring, evtchn: SimEventChannel, port: int, lazy: bool = False,
                 unbind_on_close: bool = True) -> None:
        super().__init__()
        self.ring = ring
        self.evtchn = evtchn
        self.port = port
        self.lazy = lazy
        self.unbind_on_close = unbind_on_close
        self.notifies = 0     # events sent to the daemon
        self.events_seen = 0  # events received from the daemon

    def notify(self) -> None:
        self.notifies += 1
        self.evtchn.notify(self.port)

    def _send_bytes(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            n = self.ring.write_req(view)
            view = view[n:]
            if n and not self.lazy:
                self.notify()
            if view:
                self._wait(1.0)  # ring full: wait for the daemon to consume

    def _wait(self, timeout: float) -> None:
        if self.lazy:
            time.sleep(min(timeout, self.poll_interval))
        elif self.evtchn.wait(timeout) is not None:
            self.events_seen += 1
        self.events_seen += len(self.evtchn.drain())

    def _recv_bytes(self, timeout: float) -> bytes:
        deadline = time.monotonic() + timeout
        while True:
            data = self.ring.read_rsp()
            if data:
                if not self.lazy:
                    self.notify()  # there is room in rsp[] again
                return data
            left = deadline - time.monotonic()
            if left <= 0:
                return b""
            # a notified client still re-checks the ring now and then, in case
            # an event was coalesced away
            self._wait(min(left, 0.5))

    def close(self) -> None:
        self.evtchn.close(unbind=self.unbind_on_close)
        self.ring.close()


class Guest:
    """A simulated domU with a xenstore ring, ready for `introduce(g.domid, g.mfn, g.port)`.

    Attribute access falls through to its `RingClient` (`g.read(...)`, `g.events`).
    """

    def __init__(self, sim: Sim, domid: int, mfn: Optional[int] = None,
                 lazy: bool = False) -> None:
        self.sim = sim
        self.domid = domid
        if sim.domain_state(domid) is None:
            sim.create_domain(domid)
        self.mfn = sim.alloc_page(domid, mfn, grant_ref=GNTTAB_RESERVED_XENSTORE)
        self.ring = Ring(sim.mem_file(domid, self.mfn))
        self.ring.init()
        self.evtchn = SimEventChannel.open(sim, domid, cloexec=True, block_on_full=True)
        self.port = self.evtchn.bind_unbound_port(0)
        self.client = RingClient(self.ring, self.evtchn, self.port, lazy=lazy)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.client, name)

    def close(self) -> None:
        self.client.close()

    def __enter__(self) -> "Guest":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def dom0_ring_client(sim: Sim, lazy: bool = False) -> RingClient:
    """A client on dom0's own ring: binds the fixed owner socket of `xsd_port`.

    Closing it leaves `xsd_port` allocated (it belongs to the sim).
    """
    ring = Ring(sim.xsd_kva)
    try:
        handle = SimEventChannel.open(sim, 0, cloexec=True, path=sim.dom0_ring_owner(),
                                      block_on_full=True)
    except OSError:
        ring.close()
        raise
    port = sim.xsd_port
    handle.adopt(port)
    return RingClient(ring, handle, port, lazy=lazy, unbind_on_close=False)
