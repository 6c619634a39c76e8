"""Ring guests for the differential runner, built on the reference kit's
xensim (tests may import it; oxsd itself never does).

``XensimGuests`` implements ``oxsd.diff.runner.GuestBackend``: scenario lines
``guest g 5`` create a xensim ``Guest`` on the daemon's sim dir (so the same
domid, mfn and port on both daemons' fresh sims), and ``sim destroy 5`` etc.
act on the simulated hypervisor.
"""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

__all__ = ["load_xensim", "XensimGuests", "GuestEndpoint"]


def load_xensim(ref: Path) -> ModuleType:
    """Import xensim.py from the reference kit directory."""
    if "xensim" in sys.modules:
        return sys.modules["xensim"]
    spec = importlib.util.spec_from_file_location("xensim", ref / "xensim.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules["xensim"] = mod
    spec.loader.exec_module(mod)
    return mod


class GuestEndpoint:
    """A xensim Guest seen as a runner endpoint (raw bytes over its ring)."""

    def __init__(self, guest) -> None:
        self.guest = guest
        self.lazy = guest.client.lazy

    def fileno(self) -> int:
        return self.guest.evtchn.fileno()

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


class XensimGuests:
    """GuestBackend on xensim: guests and hypervisor actions on a sim dir."""

    def __init__(self, xensim: ModuleType) -> None:
        self.X = xensim

    def _sim(self, daemon):
        return self.X.Sim(str(daemon.sim_dir))

    def create_guest(self, daemon, domid: int, lazy: bool):
        guest = self.X.Guest(self._sim(daemon), domid, lazy=lazy)
        return GuestEndpoint(guest), {"domid": domid, "mfn": guest.mfn, "port": guest.port}

    def sim_action(self, daemon, args: list[str]) -> None:
        """``destroy D``, ``shutdown D [code]``, ``dying D``, ``create D``, ``virq N``."""
        sim = self._sim(daemon)
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
