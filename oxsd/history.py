"""Recent commits, kept to blame the domain whose commit made a transaction fail (port of history.ml).

Only commits by domains that are not free to conflict (everyone but dom0)
are kept, and only as far back as the oldest short-running transaction
still tracked, so the list stays short.

`filter_connections` collects the culprits in an OCaml `Hashtbl` keyed by
the connection record itself, and OCaml's structural comparison cannot
compare two distinct ring connections (it reaches the mapped ring page, an
abstract value, and raises `Invalid_argument`).  So once a culprit is
found, a later record of another domain connection whose record hashes to
the same bucket makes the whole blame raise, and the TRANSACTION_END that
triggered it is answered EINVAL instead of EAGAIN [quirk].  Connections in
the same state hash alike (guests running the same workload do), so this
happens in practice; `connection_hash` reproduces `Hashtbl.hash` of the
record to tell when.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Callable, Dict, List, Optional

from .compat import slotted_dataclass
from .define import InvalidArgument
from .ocaml_hashtbl import _final_mix, _mix

if TYPE_CHECKING:
    from .connection import Connection
    from .store import Store
    from .transaction import Transaction, TransactionRegistry


@slotted_dataclass
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
        """Connections of records after `since` (other than `ignore`) for which `f` holds.

        Raises InvalidArgument where the original's Hashtbl lookup compares
        two distinct connections (see the module comment)."""
        found: Dict[int, "Connection"] = {}
        # The original's accumulator: Hashtbl.create 1023 (1024 buckets),
        # newest binding first in its bucket.  It is empty, so never
        # compared against, until the first culprit is found.
        buckets: Dict[int, List["Connection"]] = {}
        for rec in self.records:
            con = rec.con
            if rec.finish_count <= since or con is ignore:
                continue
            if found and _hashtbl_mem(buckets.get(connection_hash(con) & _ACC_MASK), con):
                continue
            if f(rec):
                buckets.setdefault(connection_hash(con) & _ACC_MASK, []).insert(0, con)
                found[id(con)] = con
        return found


_ACC_MASK = 1023


def _hashtbl_mem(bucket: Optional[List["Connection"]], con: "Connection") -> bool:
    """`Hashtbl.mem` on one bucket with OCaml's `compare` on connection records."""
    for key in bucket or ():
        if key is con:
            return True  # compare's physical-equality shortcut
        raise InvalidArgument("compare: abstract value")
    return False


def _mix_int(h: int, n: int) -> int:
    """caml_hash_mix_intnat of an OCaml int (its tagged representation)."""
    d = (n << 1) | 1
    return _mix(h, ((d >> 32) ^ (d >> 63) ^ d) & 0xFFFFFFFF)


def _mix_string(h: int, s: bytes) -> int:
    """caml_hash_mix_string (without the final mix)."""
    n = len(s)
    i = 0
    while i + 4 <= n:
        h = _mix(h, int.from_bytes(s[i:i + 4], "little"))
        i += 4
    if n & 3:
        h = _mix(h, int.from_bytes(s[i:], "little"))
    return h ^ (n & 0xFFFFFFFF)


def _header(size: int, tag: int = 0) -> int:
    """A block header as caml_hash mixes it: size and tag, no colour."""
    return (size << 10) | tag


def _bucket_count(tbl) -> int:
    """Bucket array length of an OCaml Hashtbl (oxsd.ocaml_hashtbl) or a dict (16..)."""
    buckets = getattr(tbl, "_buckets", None)
    if buckets is not None:
        return len(buckets)
    n = 16  # Hashtbl.create's minimum; doubles when size > 2 * buckets
    while len(tbl) > 2 * n:
        n *= 2
    return n


def connection_hash(con: "Connection") -> int:
    """`Hashtbl.hash` of a domain connection's Connection.t record (OCaml 4.13 caml_hash).

    caml_hash walks the value breadth first, mixing block headers (size,
    tag) and up to 10 "meaningful" values (ints, strings); for a domain
    connection in 4.17 these are: next_tid, nb_watches, anonid,
    stat_nb_ops, the unsent rest of a partly written packet, the
    transaction table's size, seed and initial size, the watch table's
    size and seed.  No address is hashed, so the value is reproducible.
    """
    xb = con.xb
    h = 0
    h = _mix(h, _header(10))     # Connection.t
    h = _mix(h, _header(5))      # .xb: Xb.t
    h = _mix(h, _header(1))      # .dom: Some _
    h = _mix(h, _header(4))      # .transactions: Hashtbl.t {size; data; seed; initial_size}
    h = _mix_int(h, con.next_tid)
    h = _mix(h, _header(4))      # .watches: Hashtbl.t
    h = _mix_int(h, con.nb_watches)
    h = _mix_int(h, con.anonid)
    h = _mix_int(h, con.stat_nb_ops)
    h = _mix(h, _header(2))      # .perm: {main; target}
    h = _mix(h, _header(3))      # .pending_source_watchevents: {q; destination; capacity}
    h = _mix(h, _header(1, 1 if xb.is_mmap() else 0))  # backend: Xenmmap _ | Fd _
    h = _mix(h, _header(5))      # pkt_out: BoundedQueue.t
    # partial_in: HaveHdr _ while a packet body is being read, else NoHdr (_, _)
    h = _mix(h, _header(1, 0) if xb.partial_in.in_body() else _header(2, 1))
    h = _mix_string(h, bytes(xb._out[xb._out_off:]))  # partial_out
    h = _mix(h, _header(2))      # capacity
    h = _mix(h, _header(9))      # the Domain.t record
    h = _mix_int(h, len(con.transactions))
    h = _mix(h, _header(_bucket_count(con.transactions)))
    h = _mix_int(h, 0)           # seed (tables are not randomised)
    h = _mix_int(h, 16)          # initial_size: Hashtbl.create 5 rounds up to 16
    h = _mix_int(h, len(con.watches))
    h = _mix(h, _header(_bucket_count(con.watches)))
    h = _mix_int(h, 0)           # seed: the tenth meaningful value, the walk stops
    return _final_mix(h) & 0x3FFFFFFF
