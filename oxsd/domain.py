"""One introduced domain: its ring page, event-channel ports and credits (port of domain.ml)."""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Dict, Optional

if TYPE_CHECKING:
    from .event import Event

log = logging.getLogger("oxsd.domain")


@dataclass
class PortPair:
    local: int
    remote: int

    def __str__(self) -> str:
        return f"(l {self.local}, r {self.remote})"


INVALID_PORTS = PortPair(0, 0)


@dataclass(eq=False)
class Domain:
    id: int
    mfn: int
    interface: Any  # the mapped page (mmap-like, writable buffer)
    eventchn: "Event"
    ports: PortPair
    conflict_credit: float
    bad_client: bool = False
    io_credit: int = 0  # ring-processing rounds left; >1 for lazy clients found by the scan
    caused_conflicts: int = 0
    # The registry's map of domains holding io credit (Domains.credited), kept
    # up to date here so that the main loop never scans every domain.
    credited: Optional[Dict[int, "Domain"]] = field(default=None, repr=False)

    @classmethod
    def make(cls, domid: int, mfn: int, interface: Any, eventchn: "Event", *,
             remote_port: int, conflict_burst_limit: float,
             local_port: Optional[int] = None) -> "Domain":
        """Bind the interdomain port on a clean start; on live update it is already bound."""
        local = eventchn.bind_interdomain(domid, remote_port) if local_port is None else local_port
        ports = PortPair(local, remote_port)
        log.debug("domain %d bind %s", domid, ports)
        return cls(domid, mfn, interface, eventchn, ports, conflict_burst_limit)

    def is_dom0(self) -> bool:
        return self.id == 0

    def get_id(self) -> int:
        return self.id

    def get_interface(self) -> Any:
        return self.interface

    def get_mfn(self) -> int:
        return self.mfn

    def get_remote_port(self) -> int:
        return self.ports.remote

    def get_local_port(self) -> int:
        return self.ports.local

    def is_bad_domain(self) -> bool:
        return self.bad_client

    def mark_as_bad(self) -> None:
        self.bad_client = True

    def set_io_credit(self, n: int = 1) -> None:
        self.io_credit = max(0, n)
        self._track_credit()

    def incr_io_credit(self) -> None:
        self.io_credit += 1
        credited = self.credited
        if credited is not None:
            credited[self.id] = self

    def decr_io_credit(self) -> None:
        self.io_credit = max(0, self.io_credit - 1)
        if self.io_credit == 0:
            self._track_credit()

    def _track_credit(self) -> None:
        credited = self.credited
        if credited is None:
            return
        if self.io_credit > 0:
            credited[self.id] = self
        else:
            credited.pop(self.id, None)

    def is_paused_for_conflict(self) -> bool:
        return self.conflict_credit <= 0.0

    def is_free_to_conflict(self) -> bool:
        return self.id == 0

    def dump_line(self) -> str:
        return f"dom,{self.id},{self.mfn},{self.ports.remote},{self.ports.local}\n"

    def rebind_evtchn(self, remote_port: int) -> None:
        self.eventchn.unbind(self.ports.local)
        local = self.eventchn.bind_interdomain(self.id, remote_port)
        new_ports = PortPair(local, remote_port)
        log.debug("domain %d rebind %s => %s", self.id, self.ports, new_ports)
        self.ports = new_ports

    def notify(self) -> None:
        self.eventchn.notify(self.ports.local)

    def close(self) -> None:
        log.debug("domain %d unbind %s", self.id, self.ports)
        self.eventchn.unbind(self.ports.local)
        self.ports = INVALID_PORTS
        close = getattr(self.interface, "close", None)
        if close is not None:
            close()

    def log_and_reset_conflict_stats(self, logfn) -> None:
        if self.caused_conflicts > 0:
            logfn(self.id, self.caused_conflicts)
            self.caused_conflicts = 0
