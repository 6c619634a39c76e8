"""The sub-commands of XS_CONTROL, 4.17's op DEBUG (process.ml: do_debug's match).

`Control` is mixed into `process.Process`; `Process.do_debug` (the handler:
who may ask, and any failure answered `OK`) calls `debug_command` with the
payload split at its NULs.  `live-update` is the state machine of
live_update.py, `oxsd-stats` is oxsd's own (stats.py, dom0 only); an
unknown command is answered `OK` as in the original.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, List, Optional

from . import utils as Utils
from .stats import STATS_COMMAND, DaemonStats, snapshot_json
from .xb.op import Op

if TYPE_CHECKING:
    from .config import Settings
    from .connection import Connection
    from .connections import Connections
    from .live_update import LiveUpdate
    from .logging_ import AccessLog
    from .store import Store
    from .transaction import Transaction

_b = Utils.string_of_bool


class Control:
    """DEBUG's sub-commands; a mixin of `process.Process`."""

    # Provided by Process.
    store: "Store"
    cons: "Connections"
    settings: "Settings"
    access_log: "AccessLog"
    live_update: "LiveUpdate"
    stats: DaemonStats

    def debug_command(self, con: "Connection", t: "Transaction",
                      args: List[bytes]) -> Optional[bytes]:
        """The reply to `CONTROL <args[0]> ...`: None is OK; may raise (the handler answers OK)."""
        cmd = args[0]
        if cmd == b"live-update":
            if len(args) < 2:  # List.tl [] fails in the original: answer OK
                return None
            params = [a.decode("latin-1") for a in args[1:-1]]
            result = self.live_update.parse_live_update(params)
            return None if result is None else result.encode("latin-1")
        if cmd == b"print" and len(args) >= 2:
            self.access_log.xb_op(0, "=======>", Op.DEBUG, args[1])
            return None
        if cmd == b"quota" and len(args) >= 2:
            domid = Utils.int_of_string(args[1].decode("latin-1"))
            return t.get_store().quota.to_string(domid).encode("latin-1") + b"\0"
        if cmd == b"watches":
            return self.cons.debug().encode("latin-1") + b"\0"
        if cmd == STATS_COMMAND and con.is_dom0():  # oxsd's own; others get the unknown's OK
            return snapshot_json(self.cons, self.store, self.settings, self.stats)
        if cmd == b"xenbus" and len(args) >= 2:
            return self._xenbus(Utils.int_of_string(args[1].decode("latin-1")))
        if cmd == b"mfn" and len(args) >= 2:
            domid = Utils.int_of_string(args[1].decode("latin-1"))
            c = self.cons.find_domain(domid)
            if c.dom is None:
                return None
            return b"%d\0" % c.dom.get_mfn()
        return None

    def _xenbus(self, domid: int) -> bytes:
        """`CONTROL xenbus DOMID`: the state of a domain's ring connection."""
        c = self.cons.find_domain(domid)
        s = ("xenbus: %s; overflow queue length: %d, can_input: %s, has_more_input: %s, "
             "has_old_output: %s, has_new_output: %s, has_more_work: %s. pending: %s" % (
                 c.xb.debug(), c.source_pending_watchevents(), _b(c.can_input()),
                 _b(c.has_more_input()), _b(c.has_old_output()), _b(c.has_new_output()),
                 _b(c.has_more_work()), self.cons.debug_watchevents(c)))
        return s.encode("latin-1")
