"""The daemon's event-channel handle plus its VIRQ_DOM_EXC port (port of event.ml)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Optional

if TYPE_CHECKING:
    from .evtchn import EventChannel

VIRQ_DOM_EXC = 3


@dataclass
class Event:
    handle: "EventChannel"
    domexc: int

    @classmethod
    def init(cls, handle: "EventChannel", domexc_port: Optional[int] = None) -> "Event":
        """Bind VIRQ_DOM_EXC on a fresh start; on live update the port comes from the dump."""
        if domexc_port is None:
            domexc_port = handle.bind_virq(VIRQ_DOM_EXC)
        return cls(handle, domexc_port)

    def fd(self) -> int:
        return self.handle.fd()

    def bind_interdomain(self, domid: int, port: int) -> int:
        return self.handle.bind_interdomain(domid, port)

    def unbind(self, port: int) -> None:
        self.handle.unbind(port)

    def notify(self, port: int) -> None:
        self.handle.notify(port)

    def pending(self) -> Optional[int]:
        return self.handle.pending()

    def unmask(self, port: int) -> None:
        self.handle.unmask(port)

    def dump_line(self) -> str:
        return f"evtchn-dev,{self.fd()},{self.domexc}\n"
