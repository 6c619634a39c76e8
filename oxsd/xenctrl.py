"""The real hypervisor backend (port of the parts of libs/xc, eventchn and mmap the daemon uses).

`XenHypervisor` implements `oxsd.hypervisor.Hypervisor` on a Xen host;
`oxsd.backend.open_backend` picks it at start-up unless `--sim` is given.

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
import struct
from typing import Optional

from . import xenmmap
from .evtchn import EventChannel, XenEventChannel
from .hypervisor import (DOMID_FIRST_RESERVED, GNTTAB_RESERVED_XENSTORE, XEN_DOMINF_dying,
                         XEN_DOMINF_running, XEN_DOMINF_shutdown, DomainInfo, Error, Hypervisor,
                         parse_port_file, read_port_file)
from .xenmmap import GntdevMapper, MmapInterface, PrivcmdMapper

__all__ = [
    "Libxenctrl", "XenHypervisor",
    # the interface, re-exported for the code written against `Xenctrl`
    "Error", "DomainInfo", "Hypervisor", "parse_port_file", "read_port_file",
    "GNTTAB_RESERVED_XENSTORE", "DOMID_FIRST_RESERVED",
    "XEN_DOMINF_dying", "XEN_DOMINF_shutdown", "XEN_DOMINF_running",
]


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
