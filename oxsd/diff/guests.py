"""Ring guests for ``oxsd-diff`` on oxsd's own sim tooling (``oxsd.sim``).

``SimGuests`` implements ``runner.GuestBackend``: a scenario's
``guest g 5 [lazy]`` creates an ``oxsd.sim.guest.Guest`` on the daemon's sim
dir (the same domid, mfn and port on both daemons' fresh sims), and
``sim destroy 5`` etc. act on the simulated hypervisor.  The test suite uses
the reference kit's xensim for the same purpose (tests/support/guests.py);
the two speak the same sim-dir layout (spec/sim.md).
"""
from __future__ import annotations

from ..sim.guest import Guest, Sim

__all__ = ["SimGuests", "SimGuestEndpoint"]


class SimGuestEndpoint:
    """An oxsd.sim Guest seen as a runner endpoint (raw bytes over its ring)."""

    def __init__(self, guest: Guest, sim: Sim) -> None:
        self.guest = guest
        self.sim = sim
        self.lazy = guest.client.lazy

    def fileno(self) -> int:
        return self.guest.evtchn.fd()

    def send_bytes(self, data: bytes) -> None:
        self.guest.client._send_bytes(data)

    def recv_nowait(self) -> bytes:
        self.guest.evtchn.drain()
        data = self.guest.ring.read_rsp()
        if data and not self.lazy:
            self.guest.client.notify()  # space freed in rsp[], as xenbus does
        return data

    def close(self) -> None:
        self.guest.close()
        self.sim.close()


class SimGuests:
    """GuestBackend on oxsd.sim: guests and hypervisor actions on a sim dir."""

    def create_guest(self, daemon, domid: int, lazy: bool):
        sim = Sim(str(daemon.sim_dir))
        guest = Guest(sim, domid, lazy=lazy)
        return SimGuestEndpoint(guest, sim), {"domid": domid, "mfn": guest.mfn,
                                              "port": guest.port}

    def sim_action(self, daemon, args: list[str]) -> None:
        """``destroy D``, ``shutdown D [code]``, ``dying D``, ``create D``, ``virq N``."""
        sim = Sim(str(daemon.sim_dir))
        try:
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
        finally:
            sim.close()
