"""What the daemon asks of the hypervisor: the interface both backends implement.

`Hypervisor` bundles everything oxenstored asks of Xen (domains.ml: init,
and the Xenctrl/Xeneventchn/Xenmmap calls behind it): event-channel
handles, mapping a guest's ring page, domain state, and dom0's own ring
(`xenstored-kva` page, `xenstored-port` file).  Two backends implement it:
`oxsd.xenctrl.XenHypervisor` (the real /dev/xen devices and libxenctrl) and
`oxsd.sim.hv.SimHypervisor` (the simulated hypervisor of a sim dir, see
oxsd/sim/layout.py).  `oxsd.backend.open_backend` chooses one at start-up.
This module imports neither, so each backend depends on the interface and
not on the other.
"""
from __future__ import annotations

import os
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Optional

from . import xenmmap
from .evtchn import EventChannel
from .ocaml_int import int_of_string
from .xenmmap import MmapInterface

__all__ = [
    "Error", "DomainInfo", "Hypervisor", "read_port_file", "parse_port_file",
    "GNTTAB_RESERVED_XENSTORE", "DOMID_FIRST_RESERVED", "XEN_DOMINF_dying", "XEN_DOMINF_shutdown",
    "XEN_DOMINF_running", "XEN_DOMINF_shutdownmask", "XEN_DOMINF_shutdownshift",
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


def parse_port_file(content: bytes) -> int:
    """Utils.read_file_single_integer on the (<= 20 byte) content: a trailing newline fails.

    Raises `IntOfStringFailure` (a ValueError) on what OCaml's int_of_string rejects."""
    return int_of_string(content)


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
