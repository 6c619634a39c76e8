"""Open transactions carried across a live update (oxsd only; beside live_update.py).

A live update forced with `-F` whose deadline passed while only open
transactions block it dumps them (db.py's `transaction` lines,
`LiveUpdate.carries_transactions`) and the new process recreates them here,
after the restored store's last change.  The original has no twin: its `-F`
waits until they end.  `CarriedTransactions` is mixed into `process.Process`
and replays each recorded request through the conflict replay's step
(`transaction_end.TransactionEnd._perform`, process.ml: transaction_replay's
`perform_exn`); a carried transaction whose replay differed fails its
commit as a failed replay would (`_fail_restored`, the bookkeeping of
process.ml: transaction_replay's `Transaction_again` handler).
"""
from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Callable, Dict, Iterable, List, Tuple

from . import define as Define
from .logging_ import exn_to_string
from .packet import ACK, DATA, Ack, Error, Reply, Request, Response
from .transaction_end import TransactionAgain
from .xb.op import Op

if TYPE_CHECKING:
    from .connection import Connection
    from .db import CarriedTransaction
    from .logging_ import AccessLog
    from .store import Store
    from .transaction import Transaction, TransactionRegistry

log = logging.getLogger("oxsd.process")  # the original's live-update lines come from process.ml

_OK = b"OK\0"


class CarriedTransactions:
    """Restore the transactions of a live-update dump; a mixin of `process.Process`."""

    # Provided by Process (and TransactionEnd).
    store: "Store"
    txreg: "TransactionRegistry"
    access_log: "AccessLog"
    _table: Dict[Op, Tuple[int, Callable]]
    _perform: Callable[..., None]

    def response_of_packet(self, request: Request, pkt: Request) -> Response:
        """The Response a dumped response packet stands for (inverse of db.response_packet)."""
        if pkt.ty is Op.ERROR:
            return Error(pkt.get_data().decode("latin-1"))
        kind = self._table.get(request.ty, (ACK, None))[0]
        if kind != DATA and pkt.data == _OK:
            return Ack(None)
        return Reply(pkt.data)

    def restore_transactions(self, carried: Iterable["CarriedTransaction"]) -> None:
        """Recreate every transaction of a live-update dump (db.CarriedTransaction list)."""
        for c in carried:
            try:
                self.restore_transaction(c.con, c.tid, c.next_tid, c.operations)
            except Exception as exn:  # a dump is never trusted: skip what cannot be rebuilt
                log.warning("Live reload: cannot restore transaction %d of %s: %s",
                            c.tid, c.con.domstr, exn_to_string(exn))

    def restore_transaction(self, con: "Connection", tid: int, next_tid: int,
                            operations: List[Tuple[Request, Request]]) -> "Transaction":
        """Open transaction `tid` on `con` again, on the live store, by replaying its requests.

        Each recorded request goes through the conflict replay's step
        (`_perform`: simple ops only, the same handlers, responses compared
        byte for byte).  If any response differs, or an op cannot be replayed,
        the transaction still opens (the rest of its requests are replayed,
        so it reads its own writes as far as they apply) but is marked
        `restore_failed`: its commit gives EAGAIN, as a failed replay would.
        Nothing is access-logged (these are no client requests; the access
        log is not open yet anyway) and no watch fires (id != 0).  Its quota
        snapshot, start time and commit-counter start are those of now; its
        `operations` are the recorded ones (a later conflict replay uses them).
        """
        if tid in con.transactions:
            raise Define.AlreadyExist()
        recorded = [(request, self.response_of_packet(request, pkt)) for request, pkt in operations]
        t = self.txreg.make(tid, self.store)
        failed = False
        for request, response in recorded:
            try:
                self._perform(con, t, request, response, None)
            except TransactionAgain:
                failed = True
            except Exception as exn:
                log.info("restoring transaction %d of %s: %s", tid, con.domstr, exn_to_string(exn))
                failed = True
        t.operations = recorded
        t.restore_failed = failed
        con.transactions[tid] = t
        con.next_tid = next_tid
        if failed:
            log.warning("Live reload: transaction %d of %s differs on the restored store: "
                        "its commit will fail", tid, con.domstr)
        return t

    def _fail_restored(self, con: "Connection", t: "Transaction") -> bool:
        """The commit of a carried transaction whose restore replay differed: a failed replay."""
        tid = t.get_id()
        self.access_log.conflict(tid, con.domstr)
        self.txreg.failed_commits += 1
        # Its conflict happened before the update: the history cannot hold the culprit.
        log.debug("Found no culprit for conflict in r(%d):%s: must be self or not in history.",
                  tid, con.domstr)
        self.txreg.failed_commits_no_culprit += 1
        return False
