"""Choosing the hypervisor backend at start-up (Xenctrl.interface_open).

Both backends implement `oxsd.hypervisor.Hypervisor`; the daemon only ever
talks to that interface, and this is the one place that knows both.
"""
from __future__ import annotations

from typing import Optional

from .hypervisor import Hypervisor
from .sim.hv import SimHypervisor
from .xenctrl import XenHypervisor

__all__ = ["open_backend"]


def open_backend(sim_dir: Optional[str] = None, domid: Optional[int] = None) -> Hypervisor:
    """The real hypervisor, or the simulated one rooted at `sim_dir` (`--sim`/XENSIM_DIR).

    `domid` (sim only) is our own domain id; default env XENSIM_DOMID or 0.
    Raises Error (or OSError) when the hypervisor is not available.
    """
    if sim_dir is None:
        return XenHypervisor.open()
    return SimHypervisor(sim_dir, domid)
