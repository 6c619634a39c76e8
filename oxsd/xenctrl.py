"""The hypervisor interface (port of the parts of libs/xc the daemon uses) and its Xen backend.

`Hypervisor` bundles everything oxenstored asks of Xen (domains.ml: init):
event-channel handles, mapping a guest's ring page, domain state, and
dom0's own ring (`xenstored-kva` page, `xenstored-port` file).
`open_backend(sim_dir)` is `Xenctrl.interface_open`: it returns the real
backend (`XenHypervisor`) or, given a sim dir, the simulated one
(`oxsd.sim.hv.SimHypervisor`, oxsd/sim/layout.py).  Like the original, open it at
program start and treat a failure as fatal.

Real backend choices:

* event channels: `/dev/xen/evtchn` ioctls (oxsd.evtchn);
* ring pages: foreign map of the frame given to XS_INTRODUCE through
  privcmd `IOCTL_PRIVCMD_MMAPBATCH_V2` (what 4.17 does), and grant map of
  `GNTTAB_RESERVED_XENSTORE` through gntdev (`map_grant`, `map_ring`);
* domain state: `xc_domain_getinfolist(domid, 1)` from libxenctrl loaded
  with ctypes.  Only the first two fields of `xc_domaininfo_t` (domain,
  flags) are read; their offsets have never changed, whereas issuing the
  domctl through privcmd would tie oxsd to one XEN_DOMCTL_INTERFACE_VERSION.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import re
import struct
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Optional

from . import xenmmap
from .evtchn import EventChannel, XenEventChannel
from .xenmmap import GntdevMapper, MmapInterface, PrivcmdMapper

__all__ = [
    "Error", "DomainInfo", "Hypervisor", "XenHypervisor", "open_backend", "interface_open",
    "GNTTAB_RESERVED_XENSTORE", "XEN_DOMINF_dying", "XEN_DOMINF_shutdown", "XEN_DOMINF_running",
]

GNTTAB_RESERVED_XENSTORE = 1
DOMID_FIRST_RESERVED = 0x7FF0

# xen/include/public/domctl.h
XEN_DOMINF_dying = 1 << 0
XEN_DOMINF_shutdown = 1 << 2
XEN_DOMINF_running = 1 << 5
XEN_DOMINF_shutdownmask = 255
XEN_DOMINF_shutdownshift = 16


class Error(OSError):
    """A hypervisor call failed (OCaml: Xenctrl.Error)."""


@dataclass(frozen=True)
class DomainInfo:
    """The fields of Xenctrl.domaininfo the daemon looks at."""
    domid: int
    flags: int

    @property
    def dying(self) -> bool:
        return bool(self.flags & XEN_DOMINF_dying)

    @property
    def shutdown(self) -> bool:
        return bool(self.flags & XEN_DOMINF_shutdown)

    @property
    def shutdown_code(self) -> int:
        return (self.flags >> XEN_DOMINF_shutdownshift) & XEN_DOMINF_shutdownmask

    @property
    def running(self) -> bool:
        return bool(self.flags & XEN_DOMINF_running)


_OCAML_INT = re.compile(r"[+-]?(?:0[xX][0-9a-fA-F][0-9a-fA-F_]*|0[oO][0-7][0-7_]*"
                        r"|0[bB][01][01_]*|0[uU][0-9][0-9_]*|[0-9][0-9_]*)")


def _int_of_string(s: str) -> int:
    """OCaml's int_of_string: no whitespace, 63-bit, prefixed values wrap."""
    if not _OCAML_INT.fullmatch(s):
        raise ValueError("int_of_string")
    neg = s[0] == "-"
    body = s.lstrip("+-").replace("_", "")
    prefix = body[:2].lower()
    if prefix in ("0x", "0o", "0b", "0u"):
        v = int(body[2:], {"0x": 16, "0o": 8, "0b": 2, "0u": 10}[prefix])
        if v >= 1 << 63:
            raise ValueError("int_of_string")
        if v >= 1 << 62:
            v -= 1 << 63
    else:
        v = int(body)
        if v > (1 << 62) - (0 if neg else 1):
            raise ValueError("int_of_string")
    return -v if neg else v


def parse_port_file(content: bytes) -> int:
    """Utils.read_file_single_integer on the (<= 20 byte) content: a trailing newline fails."""
    try:
        return _int_of_string(content.decode("ascii"))
    except UnicodeDecodeError as e:
        raise ValueError("int_of_string") from e


class Hypervisor(ABC):
    """What the daemon needs from the hypervisor; see the module docstring."""

    page_size: int = xenmmap.getpagesize()

    # -- event channels
    @abstractmethod
    def evtchn_open(self, cloexec: bool = False) -> EventChannel:
        """A fresh handle; kept open across exec by default, for live update."""

    @abstractmethod
    def evtchn_fdopen(self, fd: int) -> EventChannel:
        """Recover a handle from an fd inherited through a live-update exec."""

    def open_evtchn(self, fd: Optional[int] = None) -> EventChannel:
        """Event.init's handle: `evtchn_open()` on a fresh start, `evtchn_fdopen(fd)` on restore."""
        return self.evtchn_open() if fd is None else self.evtchn_fdopen(fd)

    # -- guest pages
    @abstractmethod
    def map_foreign_range(self, domid: int, size: int, mfn: int) -> MmapInterface:
        """Xenctrl.map_foreign_range (read-write, shared); raises Error."""

    def map_foreign(self, domid: int, mfn: int) -> MmapInterface:
        """The ring page of an introduced domain, as oxenstored 4.17 maps it."""
        return self.map_foreign_range(domid, self.page_size, mfn)

    @abstractmethod
    def map_grant(self, domid: int, ref: int = GNTTAB_RESERVED_XENSTORE) -> MmapInterface:
        """Grant-map page `ref` of `domid`; raises Error."""

    def map_ring(self, domid: int, mfn: int) -> MmapInterface:
        """The grant reserved for xenstore, falling back to the foreign frame (C xenstored's order)."""
        try:
            return self.map_grant(domid)
        except Error:
            return self.map_foreign(domid, mfn)

    # -- domain state
    @abstractmethod
    def domain_getinfo(self, domid: int) -> DomainInfo:
        """Xenctrl.domain_getinfo; raises Error if the domain does not exist."""

    # -- dom0's own ring
    @abstractmethod
    def map_file(self, path: str) -> MmapInterface:
        """Map the `xenstored-kva` page; OSError if it cannot be opened or mapped."""

    @abstractmethod
    def read_port_file(self, path: str) -> int:
        """The `xenstored-port` number; OSError, or ValueError on bad content."""

    def close(self) -> None:
        """Release the backend's own handles (not the maps/handles it gave out)."""

    def __enter__(self) -> "Hypervisor":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_port_file(path: str) -> int:
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        return parse_port_file(os.read(fd, 20))
    finally:
        os.close(fd)


class Libxenctrl:
    """The two libxenctrl calls oxsd makes, through ctypes."""

    NAMES = ("libxenctrl.so.4.17", "libxenctrl.so")
    _INFO_HEAD = struct.Struct("=HHI")  # domid_t domain; uint16_t pad1; uint32_t flags
    _INFO_BUF = 1024  # > sizeof(xc_domaininfo_t) on every architecture

    def __init__(self, lib: Optional[ctypes.CDLL] = None) -> None:
        self.lib = lib if lib is not None else self._load()
        self.lib.xc_interface_open.restype = ctypes.c_void_p
        self.lib.xc_interface_open.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_uint]
        self.lib.xc_interface_close.argtypes = [ctypes.c_void_p]
        self.lib.xc_domain_getinfolist.restype = ctypes.c_int
        self.lib.xc_domain_getinfolist.argtypes = [ctypes.c_void_p, ctypes.c_uint32,
                                                   ctypes.c_uint, ctypes.c_void_p]
        self.xch = self.lib.xc_interface_open(None, None, 0)
        if not self.xch:
            err = ctypes.get_errno() or errno.ENOENT
            raise Error(err, "xc_interface_open failed")

    @classmethod
    def _load(cls) -> ctypes.CDLL:
        names = list(cls.NAMES)
        found = ctypes.util.find_library("xenctrl")
        if found:
            names.append(found)
        for name in names:
            try:
                return ctypes.CDLL(name, use_errno=True)
            except OSError:
                continue
        raise Error(errno.ENOENT, "libxenctrl not found")

    def domain_getinfo(self, domid: int) -> DomainInfo:
        buf = ctypes.create_string_buffer(self._INFO_BUF)
        n = self.lib.xc_domain_getinfolist(self.xch, domid, 1, buf)
        if n != 1:
            raise Error(ctypes.get_errno() or errno.ESRCH, f"domain_getinfo {domid} failed")
        got, _pad, flags = self._INFO_HEAD.unpack_from(buf.raw)
        if got != domid:  # the hypercall returns the next existing domain
            raise Error(errno.ESRCH, f"domain {domid} does not exist")
        return DomainInfo(domid, flags)

    def close(self) -> None:
        if self.xch:
            xch, self.xch = self.xch, None
            self.lib.xc_interface_close(xch)


class XenHypervisor(Hypervisor):
    """The real hypervisor through the Linux /dev/xen devices and libxenctrl."""

    def __init__(self, xc: Libxenctrl, privcmd: PrivcmdMapper,
                 gntdev: Optional[GntdevMapper] = None,
                 evtchn_device: str = "/dev/xen/evtchn") -> None:
        self.xc = xc
        self.privcmd = privcmd
        self._gntdev = gntdev
        self.evtchn_device = evtchn_device

    @classmethod
    def open(cls) -> "XenHypervisor":
        try:
            privcmd = PrivcmdMapper.open()
        except OSError as e:
            raise Error(e.errno, f"cannot open privcmd: {e.strerror}") from e
        try:
            xc = Libxenctrl()
        except BaseException:
            privcmd.close()
            raise
        return cls(xc, privcmd)

    def evtchn_open(self, cloexec: bool = False) -> EventChannel:
        return XenEventChannel.open(cloexec, self.evtchn_device)

    def evtchn_fdopen(self, fd: int) -> EventChannel:
        return XenEventChannel.fdopen(fd)

    def map_foreign_range(self, domid: int, size: int, mfn: int) -> MmapInterface:
        try:
            return self.privcmd.map_foreign_range(domid, size, mfn)
        except OSError as e:
            raise Error(e.errno, f"map_foreign_range dom {domid} mfn {mfn:#x} failed") from e

    def map_grant(self, domid: int, ref: int = GNTTAB_RESERVED_XENSTORE) -> MmapInterface:
        try:
            if self._gntdev is None:
                self._gntdev = GntdevMapper.open()
            return self._gntdev.map_grant_ref(domid, ref)
        except OSError as e:
            raise Error(e.errno, f"map_grant dom {domid} ref {ref} failed") from e

    def domain_getinfo(self, domid: int) -> DomainInfo:
        return self.xc.domain_getinfo(domid)

    def map_file(self, path: str) -> MmapInterface:
        return xenmmap.map_file(path)

    def read_port_file(self, path: str) -> int:
        return read_port_file(path)

    def close(self) -> None:
        self.xc.close()
        self.privcmd.close()
        if self._gntdev is not None:
            self._gntdev.close()


def open_backend(sim_dir: Optional[str] = None, domid: Optional[int] = None) -> Hypervisor:
    """The real hypervisor, or the simulated one rooted at `sim_dir` (`--sim`/XENSIM_DIR).

    `domid` (sim only) is our own domain id; default env XENSIM_DOMID or 0.
    Raises Error (or OSError) when the hypervisor is not available.
    """
    if sim_dir is None:
        return XenHypervisor.open()
    from .sim.hv import SimHypervisor  # the sim imports this module
    return SimHypervisor(sim_dir, domid)


interface_open = open_backend
