"""Counters the daemon keeps about its clients, and the document that reports them.

No xenstored, C or OCaml, has these: they are oxsd's own, read through the
dom0-only `XS_CONTROL oxsd-stats` sub-command (`oxsd-top`, docs/observability.md).

Cost is the design constraint: they are always on, so the request path pays
a handful of integer additions per request and nothing that grows with the
store or with other domains:

* per connection (`ConnStats`, slotted): requests by op in a fixed list
  indexed by the op number (their sum is the original's stat_nb_ops,
  `Connection.stat_nb_ops`, so they cost no addition of their own),
  errors by name (touched on the error path only), watch events queued
  and sent; bytes in and out are the transport's
  (`FdBackend`/`MmapBackend.bytes_in/out`: one addition per read or write
  call, so a socket batch of requests costs one);
* each connection's every SAMPLE-th (32nd) request of each op is timed
  (its by-op count picks it: no counter of its own): its time, multiplied
  by SAMPLE, is added to its connection's serve time (an estimate), it may enter the
  slowest requests of the last two windows (a 10-entry heap: one comparison
  with the heap's minimum), and its path is counted among the hottest paths
  (a table capped at HOT_PATHS_CAP entries, pruned to the top quarter when
  full).  Timing every request cost 2-4 % of a request's instructions.

Everything else in the report (nodes, watches, transactions and outstanding
replies against their quotas, io_credit, ring fill, conflict credit, the
bad flag) is read from the daemon's own state when a snapshot is asked for,
so it costs nothing until then; a snapshot is O(connections).
"""
from __future__ import annotations

import heapq
import json
import os
import resource
import time
from typing import Any, Dict, List, Optional, Tuple

from .xb.op import Op

# The snapshot reads Connection, Connections, Settings and Store objects; they
# are not imported (even for type checking) because connection.py imports this
# module for ConnStats.
Connection = Connections = Settings = Store = Any

__all__ = ["ConnStats", "DaemonStats", "snapshot", "snapshot_json", "STATS_COMMAND",
           "FORMAT_VERSION", "SLOWEST_KEPT", "SAMPLE", "SAMPLE_MASK"]

STATS_COMMAND = b"oxsd-stats"
FORMAT_VERSION = 1
N_OPS = 32  # op numbers on the wire stop at 31 (xs_wire.h); larger ones count as INVALID
SLOWEST_KEPT = 10
SLOW_WINDOW_S = 60.0
SAMPLE = 32  # one request in this many is timed and counted by path
SAMPLE_MASK = SAMPLE - 1  # SAMPLE is a power of two: n & SAMPLE_MASK picks one n in SAMPLE
HOT_PATHS_CAP = 4096
HOT_PATHS_REPORTED = 20
_OP_NAMES = {op.value: op.name for op in Op}


class ConnStats:
    """What one connection asked for and was sent."""

    __slots__ = ("by_op", "errors", "events_queued", "events_sent",
                 "serve_ns", "lazy_found", "created")

    def __init__(self) -> None:
        self.by_op: List[int] = [0] * N_OPS
        self.errors: Dict[str, int] = {}
        self.events_queued = 0
        self.events_sent = 0
        self.serve_ns = 0
        self.lazy_found = 0
        self.created = time.time()

    def count_error(self, name: str) -> None:
        self.errors[name] = self.errors.get(name, 0) + 1

    @property
    def requests(self) -> int:
        return sum(self.by_op)

    def ops(self) -> Dict[str, int]:
        return {_OP_NAMES.get(i, str(i)): n for i, n in enumerate(self.by_op) if n}


class DaemonStats:
    """The daemon-wide part: start time, slowest requests, hottest paths."""

    def __init__(self) -> None:
        self.started = time.time()
        self._slow: List[Tuple[int, int, str, str, str]] = []  # min-heap of (ns, seq, ...)
        self._slow_prev: List[Tuple[int, int, str, str, str]] = []
        self._slow_window_end = time.monotonic() + SLOW_WINDOW_S
        self._slow_seq = 0
        self.slow_floor = 0  # a request faster than this cannot enter the heap
        self.hot: Dict[bytes, int] = {}

    def record_slow(self, ns: int, op: int, data: bytes, conn: str) -> None:
        """Called only for a request slower than `slow_floor`."""
        now = time.monotonic()
        if now >= self._slow_window_end:
            self._slow_prev, self._slow = self._slow, []
            self._slow_window_end = now + SLOW_WINDOW_S
        self._slow_seq += 1
        entry = (ns, self._slow_seq, _OP_NAMES.get(op, str(op)), _first_arg(data), conn)
        if len(self._slow) < SLOWEST_KEPT:
            heapq.heappush(self._slow, entry)
        else:
            heapq.heappushpop(self._slow, entry)
        self.slow_floor = self._slow[0][0] if len(self._slow) >= SLOWEST_KEPT else 0

    def sample_path(self, data: bytes) -> None:
        """Count the request's path (called for one request in SAMPLE)."""
        end = data.find(b"\0")
        path = data if end < 0 else data[:end]
        hot = self.hot
        hot[path] = hot.get(path, 0) + 1
        if len(hot) > HOT_PATHS_CAP:  # keep the top quarter: memory stays bounded
            keep = sorted(hot.items(), key=lambda kv: kv[1], reverse=True)[:HOT_PATHS_CAP // 4]
            self.hot = dict(keep)

    def slowest(self) -> List[Dict[str, Any]]:
        entries = sorted(self._slow + self._slow_prev, reverse=True)[:SLOWEST_KEPT]
        return [{"us": round(ns / 1000, 1), "op": op, "path": path, "conn": conn}
                for ns, _seq, op, path, conn in entries]

    def hot_paths(self) -> List[Dict[str, Any]]:
        top = sorted(self.hot.items(), key=lambda kv: kv[1], reverse=True)[:HOT_PATHS_REPORTED]
        return [{"path": p.decode("latin-1"), "sampled": n, "estimated": n * SAMPLE}
                for p, n in top]


def _first_arg(data: bytes) -> str:
    end = data.find(b"\0")
    return (data if end < 0 else data[:end])[:256].decode("latin-1")


def _ring_fill(con: Connection) -> Optional[Dict[str, int]]:
    """Request and response bytes waiting in a domain's ring (what the guest wrote
    that the daemon has not read; what the daemon wrote that the guest has not)."""
    ring = getattr(con.xb.backend, "ring", None)
    if ring is None or ring.closed:
        return None
    req_cons, req_prod, rsp_cons, rsp_prod = (ring.field(i) for i in range(4))
    return {"req_pending": (req_prod - req_cons) & 0xFFFFFFFF,
            "rsp_pending": (rsp_prod - rsp_cons) & 0xFFFFFFFF}


def _connection_row(con: Connection, store: Store) -> Dict[str, Any]:
    st = con.counters
    dom = con.dom
    row: Dict[str, Any] = {
        "id": con.domstr,
        "kind": "socket" if dom is None else "domain",
        "domid": 0 if dom is None else dom.id,
        "requests": st.requests,
        "by_op": st.ops(),
        "errors": dict(st.errors),
        "watch_events_queued": st.events_queued,
        "watch_events_sent": st.events_sent,
        "bytes_in": con.xb.backend.bytes_in,  # counted by the transport, per read / write
        "bytes_out": con.xb.backend.bytes_out,
        "serve_us": st.serve_ns // 1000,
        "watches": con.nb_watches,
        "transactions": len(con.transactions),
        "outstanding": len(con.xb.pkt_out.q),
        "since": st.created,
    }
    if dom is not None:
        row.update({
            "nodes": store.quota.get(dom.id),
            "io_credit": dom.io_credit,
            "lazy_found": st.lazy_found,
            "conflict_credit": dom.conflict_credit,
            "bad": dom.bad_client,
            "ring": _ring_fill(con),
        })
    return row


def _rss_bytes() -> int:
    try:
        with open("/proc/self/statm", "rb") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def snapshot(cons: Connections, store: Store, settings: Settings,
             daemon: DaemonStats) -> Dict[str, Any]:
    """The whole report as a JSON-ready dict."""
    rows = [_connection_row(c, store) for c in cons.iter()]
    usage = resource.getrusage(resource.RUSAGE_SELF)
    totals = {key: sum(r[key] for r in rows) for key in
              ("requests", "watch_events_queued", "watch_events_sent", "bytes_in", "bytes_out",
               "watches", "transactions")}
    totals["errors"] = sum(sum(r["errors"].values()) for r in rows)
    totals["domains"] = sum(1 for r in rows if r["kind"] == "domain")
    totals["sockets"] = len(rows) - totals["domains"]
    return {
        "format": FORMAT_VERSION,
        "time": time.time(),
        "daemon": {"pid": os.getpid(), "started": daemon.started,
                   "cpu_s": round(usage.ru_utime + usage.ru_stime, 3), "rss_bytes": _rss_bytes()},
        "quotas": {"activate": settings.quota_activate, "maxent": settings.quota_maxentity,
                   "maxwatch": settings.quota_maxwatch,
                   "transaction": settings.quota_transaction,
                   "maxrequests": settings.quota_maxrequests,
                   "maxoutstanding": settings.quota_maxoutstanding},
        "totals": totals,
        "connections": rows,
        "slowest": daemon.slowest(),
        "hot_paths": daemon.hot_paths(),
    }


def snapshot_json(cons: Connections, store: Store, settings: Settings,
                  daemon: DaemonStats) -> bytes:
    return json.dumps(snapshot(cons, store, settings, daemon), separators=(",", ":"),
                      sort_keys=True).encode("ascii")
