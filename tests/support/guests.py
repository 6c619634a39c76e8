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

from oxsd.diff.guests import RingGuestEndpoint, sim_action

__all__ = ["load_xensim", "XensimGuests", "GuestEndpoint", "watching_guest"]


def load_xensim(ref: Path) -> ModuleType:
    """Import xensim.py from the reference kit directory."""
    if "xensim" in sys.modules:
        return sys.modules["xensim"]
    spec = importlib.util.spec_from_file_location("xensim", ref / "xensim.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules["xensim"] = mod
    spec.loader.exec_module(mod)
    return mod


class GuestEndpoint(RingGuestEndpoint):
    """A xensim Guest seen as a runner endpoint (raw bytes over its ring,
    ring fields for ``poke``/``peek``)."""

    def __init__(self, guest) -> None:
        super().__init__(guest.ring, guest.client.notify, guest.evtchn.fileno,
                         guest.evtchn.drain, guest.close, guest.client.lazy)
        self.guest = guest


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
        sim_action(self._sim(daemon), args)


def watching_guest(xensim: ModuleType, daemon, d0, domid: int):
    """A xensim guest introduced by `d0` with its home, a node and a watch on `data` (event seen)."""
    g = xensim.Guest(xensim.Sim(str(daemon.sim_dir)), domid)
    d0.mkdir(f"/local/domain/{domid}")
    d0.set_perms(f"/local/domain/{domid}", [f"n{domid}", "r0"])
    d0.introduce(domid, g.mfn, g.port)
    g.write("data/x", str(domid))
    g.watch("data", f"tok{domid}")
    assert g.wait_watch(5) == ("data", f"tok{domid}")
    return g
