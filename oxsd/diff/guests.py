"""Ring guests for ``oxsd-diff`` on oxsd's own sim tooling (``oxsd.sim``).

``SimGuests`` implements ``runner.GuestBackend``: a scenario's
``guest g 5 [lazy]`` creates an ``oxsd.sim.guest.Guest`` on the daemon's sim
dir (the same domid, mfn and port on both daemons' fresh sims), and
``sim destroy 5`` etc. act on the simulated hypervisor.  The test suite uses
the reference kit's xensim for the same purpose (tests/support/guests.py);
the two speak the same sim-dir layout (oxsd/sim/layout.py) and share
``RingGuestEndpoint``, the runner's view of a guest.
"""
from __future__ import annotations

import select
import time
from typing import Callable

from ..sim.guest import Guest, Sim
from .wire import RING_OFFSETS

__all__ = ["SimGuests", "RingGuestEndpoint", "sim_action"]

_MASK = 0xFFFFFFFF
RING_SIZE = 1024
SEND_TIMEOUT = 5.0


class RingGuestEndpoint:
    """A guest seen by the runner: raw bytes over its ring, plus direct access
    to the interface page's fields (``poke``/``peek`` steps).

    `ring` is either implementation's guest ``Ring`` (both have ``_get``,
    ``_set``, ``write_req``, ``read_rsp``); the event channel is given as
    functions so that xensim's and oxsd.sim's handles both fit.  A ring whose
    indexes a scenario made insane reads as empty and refuses to send (the
    guest's own driver would do no better), instead of raising in the runner.
    """

    def __init__(self, ring, notify: Callable[[], None], fileno: Callable[[], int],
                 drain: Callable[[], object], close: Callable[[], None], lazy: bool) -> None:
        self.ring = ring
        self._notify = notify
        self._fileno = fileno
        self._drain = drain
        self._close = close
        self.lazy = lazy

    # ------------------------------------------------------------ Endpoint
    def fileno(self) -> int:
        return self._fileno()

    def _used(self, cons: str, prod: str) -> int:
        return (self.ring_get(prod) - self.ring_get(cons)) & _MASK

    def send_bytes(self, data: bytes) -> None:
        """Copy data into req[] as space allows, notifying unless lazy."""
        view = memoryview(data)
        deadline = time.monotonic() + SEND_TIMEOUT
        while view:
            if self._used("req_cons", "req_prod") > RING_SIZE:
                raise OSError("req ring indexes are insane: cannot write")
            n = self.ring.write_req(view)
            view = view[n:]
            if n and not self.lazy:
                self._notify()
            if view:
                if time.monotonic() > deadline:
                    raise TimeoutError("the daemon does not consume the request ring")
                select.select([self], [], [], 0.005)
                self._drain()

    def recv_nowait(self) -> bytes:
        self._drain()
        if self._used("rsp_cons", "rsp_prod") > RING_SIZE:
            return b""
        data = self.ring.read_rsp()
        if data and not self.lazy:
            self._notify()  # space freed in rsp[], as xenbus does
        return data

    def close(self) -> None:
        self._close()

    # ------------------------------------------------------------ RingEndpoint
    def ring_get(self, name: str) -> int:
        return self.ring._get(RING_OFFSETS[name])

    def ring_set(self, name: str, value: int) -> None:
        self.ring._set(RING_OFFSETS[name], value & _MASK)

    def notify(self) -> None:
        self._notify()


def sim_action(sim, args: list[str]) -> None:
    """``destroy D``, ``shutdown D [code]``, ``dying D``, ``create D``, ``virq N``
    on either implementation's ``Sim``."""
    action, nums = args[0], [int(a, 0) for a in args[1:]]
    if action == "destroy":
        sim.destroy_domain(nums[0])
    elif action == "shutdown":
        sim.shutdown_domain(nums[0], nums[1] if len(nums) > 1 else 0)
    elif action == "dying":
        sim.set_domain_state(nums[0], "dying", raise_virq=True)
    elif action == "create":
        sim.create_domain(nums[0])
    elif action == "virq":
        sim.raise_virq(nums[0])
    else:
        raise ValueError(f"unknown sim action {action!r}")


class SimGuests:
    """GuestBackend on oxsd.sim: guests and hypervisor actions on a sim dir."""

    def create_guest(self, daemon, domid: int, lazy: bool):
        sim = Sim(str(daemon.sim_dir))
        guest = Guest(sim, domid, lazy=lazy)

        def close() -> None:
            guest.close()
            sim.close()
        endpoint = RingGuestEndpoint(guest.ring, guest.client.notify, guest.evtchn.fd,
                                     guest.evtchn.drain, close, lazy)
        return endpoint, {"domid": domid, "mfn": guest.mfn, "port": guest.port}

    def sim_action(self, daemon, args: list[str]) -> None:
        sim = Sim(str(daemon.sim_dir))
        try:
            sim_action(sim, args)
        finally:
            sim.close()
