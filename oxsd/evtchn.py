"""Event channels (port of libs/eventchn): the handle interface and the /dev/xen/evtchn backend.

`EventChannel` is what the daemon (event.py, domain.py) sees.  Two
implementations:

* `XenEventChannel`: the Linux evtchn device driven directly with
  ioctl(2)/read(2)/write(2) (what libxenevtchn's Linux backend does; no C
  library needed);
* `oxsd.sim.hv.SimEventChannel`: the simulated hypervisor (oxsd/sim/layout.py).

Ports are plain ints.  Every failing operation raises `EvtchnError` (an
OSError carrying errno), the counterpart of the `Failure "evtchn ... failed"`
exceptions of the OCaml binding.

`pending()` never blocks: the daemon only calls it when poll(2) says the fd
is readable, and returns `None` if nothing was pending after all (a spurious
wake-up must not stall the single-threaded loop).
"""
from __future__ import annotations

import errno
import fcntl
import os
import struct
from abc import ABC, abstractmethod
from typing import Optional

__all__ = [
    "VIRQ_DOM_EXC", "EvtchnError", "EventChannel", "XenEventChannel",
    "IOCTL_EVTCHN_BIND_VIRQ", "IOCTL_EVTCHN_BIND_INTERDOMAIN",
    "IOCTL_EVTCHN_BIND_UNBOUND_PORT", "IOCTL_EVTCHN_UNBIND", "IOCTL_EVTCHN_NOTIFY",
    "IOCTL_EVTCHN_RESET", "IOCTL_EVTCHN_RESTRICT_DOMID",
]

VIRQ_DOM_EXC = 3  # "a domain changed state": the only VIRQ oxenstored binds

# Linux _IOC encoding (asm-generic/ioctl.h): dir<<30 | size<<16 | type<<8 | nr.
_IOC_NONE = 0


def _ioc(direction: int, kind: str, nr: int, size: int) -> int:
    return (direction << 30) | (size << 16) | (ord(kind) << 8) | nr


# include/uapi/xen/evtchn.h.  The argument structs are all `unsigned int`s
# (domid_t for RESTRICT_DOMID), native byte order.
_U32 = struct.Struct("=I")
_U32X2 = struct.Struct("=II")
_DOMID = struct.Struct("=H")
IOCTL_EVTCHN_BIND_VIRQ = _ioc(_IOC_NONE, "E", 0, _U32.size)
IOCTL_EVTCHN_BIND_INTERDOMAIN = _ioc(_IOC_NONE, "E", 1, _U32X2.size)
IOCTL_EVTCHN_BIND_UNBOUND_PORT = _ioc(_IOC_NONE, "E", 2, _U32.size)
IOCTL_EVTCHN_UNBIND = _ioc(_IOC_NONE, "E", 3, _U32.size)
IOCTL_EVTCHN_NOTIFY = _ioc(_IOC_NONE, "E", 4, _U32.size)
IOCTL_EVTCHN_RESET = _ioc(_IOC_NONE, "E", 5, 0)
IOCTL_EVTCHN_RESTRICT_DOMID = _ioc(_IOC_NONE, "E", 6, _DOMID.size)

EVTCHN_DEVICE = "/dev/xen/evtchn"


class EvtchnError(OSError):
    """An event-channel operation failed (OCaml: Failure "evtchn <op> failed")."""

    @classmethod
    def of(cls, op: str, err: int) -> "EvtchnError":
        return cls(err, f"evtchn {op} failed")

    def ocaml_str(self) -> str:
        """Printexc.to_string of the stubs' failwith: `Failure("evtchn <op> failed")`."""
        return f'Failure("{self.strerror}")'


class EventChannel(ABC):
    """One event-channel handle: a pollable fd plus the ports bound through it."""

    @abstractmethod
    def fd(self) -> int:
        """The fd to poll for reading; readable while an event is pending."""

    @abstractmethod
    def bind_interdomain(self, domid: int, remote_port: int) -> int:
        """Connect a new local port to `domid`'s unbound `remote_port`; return it."""

    @abstractmethod
    def bind_unbound_port(self, remote_domid: int) -> int:
        """Allocate a local port that `remote_domid` may bind to (guest side)."""

    @abstractmethod
    def bind_virq(self, virq: int) -> int:
        """Bind a new local port to a virtual IRQ; return it."""

    def bind_dom_exc_virq(self) -> int:
        return self.bind_virq(VIRQ_DOM_EXC)

    @abstractmethod
    def unbind(self, port: int) -> None:
        ...

    @abstractmethod
    def notify(self, port: int) -> None:
        """Send an event to the other end of local `port`."""

    @abstractmethod
    def pending(self) -> Optional[int]:
        """The next local port with an event, or None if none is pending (never blocks)."""

    @abstractmethod
    def unmask(self, port: int) -> None:
        """Re-enable delivery on `port` after `pending` returned it."""

    def adopt(self, port: int) -> None:
        """Take over a port bound before this handle existed (live update); no-op by default."""

    @abstractmethod
    def close(self) -> None:
        """Unbind every port of this handle and release the fd."""

    def __enter__(self) -> "EventChannel":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class XenEventChannel(EventChannel):
    """/dev/xen/evtchn, driven like libxenevtchn's Linux backend (tools/libs/evtchn/linux.c).

    The kernel masks a port when it queues it for read(2); writing the port
    number back unmasks it.  The fd is put in O_NONBLOCK mode so that
    `pending` cannot block.
    """

    def __init__(self, fd: int) -> None:
        self._fd = fd
        flags = fcntl.fcntl(fd, fcntl.F_GETFL)
        if not flags & os.O_NONBLOCK:
            fcntl.fcntl(fd, fcntl.F_SETFL, flags | os.O_NONBLOCK)

    @classmethod
    def open(cls, cloexec: bool = False, device: str = EVTCHN_DEVICE) -> "XenEventChannel":
        """xenevtchn_open: oxenstored passes NO_CLOEXEC so the fd survives a live-update exec."""
        try:
            fd = os.open(device, os.O_RDWR | os.O_CLOEXEC)
        except OSError as e:
            raise EvtchnError.of("open", e.errno) from e
        if not cloexec:
            os.set_inheritable(fd, True)
        return cls(fd)

    @classmethod
    def fdopen(cls, fd: int) -> "XenEventChannel":
        """xenevtchn_fdopen: the kernel keeps the ports bound to the open file."""
        try:
            os.fstat(fd)
        except OSError as e:
            raise EvtchnError.of("fdopen", e.errno) from e
        return cls(fd)

    def fd(self) -> int:
        return self._fd

    def _ioctl(self, op: str, request: int, arg: bytes) -> int:
        # A mutable buffer makes fcntl.ioctl return the ioctl's return value,
        # which is the allocated port for the BIND_* requests.
        try:
            return fcntl.ioctl(self._fd, request, bytearray(arg), True)
        except OSError as e:
            raise EvtchnError.of(op, e.errno) from e

    def bind_interdomain(self, domid: int, remote_port: int) -> int:
        return self._ioctl("bind_interdomain", IOCTL_EVTCHN_BIND_INTERDOMAIN,
                           _U32X2.pack(domid, remote_port))

    def bind_unbound_port(self, remote_domid: int) -> int:
        return self._ioctl("bind_unbound_port", IOCTL_EVTCHN_BIND_UNBOUND_PORT,
                           _U32.pack(remote_domid))

    def bind_virq(self, virq: int) -> int:
        return self._ioctl("bind_virq", IOCTL_EVTCHN_BIND_VIRQ, _U32.pack(virq))

    def unbind(self, port: int) -> None:
        self._ioctl("unbind", IOCTL_EVTCHN_UNBIND, _U32.pack(port))

    def notify(self, port: int) -> None:
        self._ioctl("notify", IOCTL_EVTCHN_NOTIFY, _U32.pack(port))

    def restrict(self, domid: int) -> None:
        self._ioctl("restrict", IOCTL_EVTCHN_RESTRICT_DOMID, _DOMID.pack(domid))

    def reset(self) -> None:
        try:
            fcntl.ioctl(self._fd, IOCTL_EVTCHN_RESET, 0)
        except OSError as e:
            raise EvtchnError.of("reset", e.errno) from e

    def pending(self) -> Optional[int]:
        try:
            data = os.read(self._fd, _U32.size)
        except BlockingIOError:
            return None
        except OSError as e:
            raise EvtchnError.of("pending", e.errno) from e
        if len(data) != _U32.size:
            raise EvtchnError.of("pending", errno.EIO)
        return _U32.unpack(data)[0]

    def unmask(self, port: int) -> None:
        try:
            n = os.write(self._fd, _U32.pack(port))
        except OSError as e:
            raise EvtchnError.of("unmask", e.errno) from e
        if n != _U32.size:
            raise EvtchnError.of("unmask", errno.EIO)

    def close(self) -> None:
        # Closing the device unbinds every port of this handle in the kernel.
        if self._fd >= 0:
            fd, self._fd = self._fd, -1
            os.close(fd)
