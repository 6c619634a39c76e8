"""Recent commits, kept to blame the domain whose commit made a transaction fail (port of history.ml).

Only commits by domains that are not free to conflict (everyone but dom0)
are kept, and only as far back as the oldest short-running transaction
still tracked, so the list stays short.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Dict, List, Optional

if TYPE_CHECKING:
    from .connection import Connection
    from .store import Store
    from .transaction import Transaction, TransactionRegistry


@dataclass(slots=True)
class HistoryRecord:
    con: "Connection"  # connection that made the change
    tid: int  # transaction id of the change (0 outside transactions)
    before: "Store"
    after: "Store"
    finish_count: int  # the commit count when the change finished


class History:
    def __init__(self, txreg: "TransactionRegistry") -> None:
        self.txreg = txreg
        self.records: List[HistoryRecord] = []

    def trim(self, txn: Optional["Transaction"] = None) -> None:
        """Drop records no tracked transaction can conflict with."""
        self.txreg.trim_short_running_transactions(txn)
        oldest = self.txreg.oldest_short_running_transaction()
        if oldest is None:
            self.records = []
        else:
            start = oldest.start_count
            self.records = [r for r in self.records if r.finish_count > start]

    def push(self, record: HistoryRecord) -> None:
        dom = record.con.dom
        if dom is not None and not dom.is_free_to_conflict():
            self.records.insert(0, record)

    def filter_connections(self, ignore: "Connection", since: int,
                           f: Callable[[HistoryRecord], bool]) -> Dict[int, "Connection"]:
        """Connections of records after `since` (other than `ignore`) for which `f` holds."""
        found: Dict[int, "Connection"] = {}
        for rec in self.records:
            if (rec.finish_count > since and rec.con is not ignore
                    and id(rec.con) not in found and f(rec)):
                found[id(rec.con)] = rec.con
        return found
