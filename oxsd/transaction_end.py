"""A transaction's end: commit, conflict replay and blame (part of process.ml).

`TransactionEnd` is mixed into `process.Process`, whose state it uses
(`settings`, `protocol`, `txreg`, `history`, `access_log`, `doms`,
`disk_write`, the simple-op table `_simple` and `input_handle_error`).
It ports:

* `connection.ml: start_transaction` (`start_transaction`: the id and the
  maxtransaction quota), here because a replay opens a transaction too;
* `connection.ml: end_transaction` with `history.ml: end_transaction`
  (`end_transaction`): close the transaction; on commit the fast path or
  coalescing of `transaction.commit`, then the replay;
* `process.ml: record_commit`, `write_response_log`;
* `process.ml: transaction_replay`, with its `perform_exn` (`_perform`)
  and the blame closure of its `Transaction_again` handler
  (`_apportion_blame`: `judge_and_sentence`, `can_apply_on`, `punish`).

A replay goes through the simple ops only (`function_of_type_simple_op`) and
compares each answer with the recorded one byte for byte; the first that
differs raises `TransactionAgain`, the client gets EAGAIN, and the history
is searched for the connection whose commit made the difference.
"""
from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional, Tuple

from . import define as Define
from . import quota as Quota
from .history import History, HistoryRecord
from .logging_ import exn_to_string
from .packet import Ack, Reply, Request, Response, response_equal
from .xb.op import Op

if TYPE_CHECKING:
    from .config import Settings
    from .connection import Connection
    from .domains import Domains
    from .logging_ import AccessLog
    from .store import Store
    from .transaction import Transaction, TransactionRegistry

log = logging.getLogger("oxsd.process")  # the original's lines come from process.ml


class TransactionAgain(Exception):
    """EAGAIN: the commit conflicted (process.ml: Transaction_again)."""


class TransactionEnd:
    """Commit, conflict replay and blame; a mixin of `process.Process`."""

    # Provided by Process.
    settings: "Settings"
    protocol: Any  # a protocol_level.ProtocolLevel at level 4.22, else None
    txreg: "TransactionRegistry"
    history: History
    access_log: "AccessLog"
    doms: Optional["Domains"]
    disk_write: Optional[Callable[["Store"], None]]
    _simple: Dict[Op, Tuple[int, Callable]]
    input_handle_error: Callable[..., Response]
    _fail_restored: Callable[["Connection", "Transaction"], bool]

    def start_transaction(self, con: "Connection", store: "Store", replay: bool = False) -> int:
        """A new transaction id for `con`; `replay`: the one transaction_replay runs in."""
        s = self.settings
        limit = None if self.protocol is None else self.protocol.domain_limit(con, "transactions")
        if limit is not None:  # a per-domain quota (level 4.22): C xenstored's check
            # A replay stands in for the transaction that just ended (C has no replay):
            # a quota set below the use since then must not fail its commit.
            if limit and not replay and len(con.transactions) >= limit:
                raise Define.NoSpace()
        elif (s.quota_transaction > 0 and not con.is_dom0()
                and len(con.transactions) > s.quota_transaction):
            raise Quota.TransactionOpened()
        tid = con.valid_transaction_id(con.next_tid)
        con.next_tid = tid + 1
        con.transactions[tid] = self.txreg.make(tid, store)
        self.access_log.start_transaction(tid, con.domstr)
        return tid

    def end_transaction(self, con: "Connection", tid: int, commit: bool) -> bool:
        """Close `tid`; on commit try the fast/coalesce path, then replay."""
        trans = con.transactions.pop(tid)
        self.access_log.end_transaction(tid, con.domstr)
        if not commit:
            return True
        if trans.restore_failed:
            return self._fail_restored(con, trans)
        if self.txreg.commit(con.domstr, trans, self.access_log, self.disk_write):
            return True
        return self.transaction_replay(con, trans)

    def record_commit(self, con: "Connection", tid: int, before: "Store", after: "Store") -> None:
        self.txreg.counter += 1
        self.history.push(HistoryRecord(con, tid, before, after, self.txreg.counter))

    def _write_response_log(self, ty: Op, tid: int, conname: str, response: Response) -> None:
        if isinstance(response, Ack):
            self.access_log.xb_answer(tid, conname, ty, b"")
        elif isinstance(response, Reply):
            self.access_log.xb_answer(tid, conname, ty, response.data)
        else:
            self.access_log.xb_answer(tid, conname, Op.ERROR, response.name.encode())

    def _perform(self, con: "Connection", txn: "Transaction", request: Request,
                 response: Response, wlog: Optional[Tuple[int, str]]) -> None:
        if wlog is not None:
            self.access_log.xb_op(wlog[0], wlog[1], request.ty, request.data)
        simple = self._simple.get(request.ty)
        if simple is None:  # CONTROL, TRANSACTION_START... recorded in a transaction
            log.error("called function_of_type_simple_op on operation %s", request.ty.name)
            raise Define.InvalidArgument(request.ty.name)
        kind, fct = simple
        response2 = self.input_handle_error(kind, fct, con, txn, request)
        if wlog is not None:
            self._write_response_log(request.ty, wlog[0], wlog[1], response2)
        if not response_equal(response, response2):
            raise TransactionAgain()

    def transaction_replay(self, c: "Connection", t: "Transaction") -> bool:
        """Replay the recorded requests on the current store; commit if every reply matches."""
        if t.ty is None:
            log.error("attempted to replay a non-full transaction")
            return False
        txid = t.ty.id
        cstore = t.ty.cstore
        tid = self.start_transaction(c, cstore, replay=True)
        replay_t = self.txreg.make(tid, cstore, internal=True)
        conname = f"r({txid}):{c.domstr}"
        operations = t.get_operations()
        try:
            self.access_log.start_transaction(tid, conname)
            for request, response in operations:
                self._perform(c, replay_t, request, response, (tid, conname))
            self.access_log.end_transaction(tid, conname)
            return self.txreg.commit(conname, replay_t, self.access_log, self.disk_write)
        except TransactionAgain:
            self._apportion_blame(c, t, txid, operations)
            return False
        except Exception as exn:
            log.info("transaction_replay %d caught: %s", tid, exn_to_string(exn))
            return False
        finally:
            c.transactions.pop(tid, None)
            self.access_log.end_transaction(tid, c.domstr)

    def _apportion_blame(self, c: "Connection", t: "Transaction", txid: int,
                         operations: List[Tuple[Request, Response]]) -> None:
        self.txreg.failed_commits += 1
        victim = c.domstr
        log.debug("Apportioning blame for EAGAIN in txn %d, domain=%s", txid, victim)

        def can_apply_on(store: "Store") -> bool:
            trial = self.txreg.make(0, store.copy(), internal=True)
            try:
                for request, response in operations:
                    self._perform(c, trial, request, response, None)
                return True
            except TransactionAgain:
                return False

        def judge_and_sentence(rec: HistoryRecord) -> bool:
            if can_apply_on(rec.before) and not can_apply_on(rec.after):
                log.debug("Blaming domain %s for conflict with domain %s txn %d",
                          rec.con.domstr, victim, txid)
                if rec.con.dom is not None and self.doms is not None:
                    self.doms.decr_conflict_credit(rec.con.dom)
                return True
            return False

        guilty = self.history.filter_connections(c, t.start_count, judge_and_sentence)
        if not guilty:
            log.debug("Found no culprit for conflict in r(%d):%s: must be self or not in history.",
                      txid, victim)
            self.txreg.failed_commits_no_culprit += 1
