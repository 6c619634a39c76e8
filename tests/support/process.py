"""A Process with the daemon's real parts and no main loop, for unit tests."""
from __future__ import annotations

from oxsd.config import Settings
from oxsd.connections import Connections
from oxsd.history import History
from oxsd.process import LiveUpdate, Process
from oxsd.store import Store
from oxsd.transaction import TransactionRegistry

__all__ = ["make_process"]


def make_process(access_log, settings: Settings | None = None) -> Process:
    """Store, connections, history and transactions as the daemon builds them; no domains."""
    settings = settings or Settings()
    txreg = TransactionRegistry(settings)
    return Process(store=Store.create(settings), cons=Connections(settings, access_log),
                   doms=None, settings=settings, access_log=access_log, txreg=txreg,
                   history=History(txreg), live_update=LiveUpdate("/bin/true", []))
