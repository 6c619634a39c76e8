"""Mixed load, short: 20 guests and 4 socket clients for 5 s (bench/bench_load.py).

Correctness only, on oxsd and on oxenstored: zero unexpected errors (a
transaction's EAGAIN is expected), every write to a watched path gave exactly
one event at each watcher (guests also watch a node dom0 writes every 50 ms),
the last values readable, the daemon alive.  No timing assertion: the
latency figures are the bench's.
"""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

import bench_load  # noqa: E402


@pytest.mark.parametrize("kind", ["oxsd", "ocaml"])
def test_short_mixed_load_is_served_exactly(start, kind):
    daemon = start(kind, bench_load.DaemonSettings(access_log=False))
    res = bench_load.run_load(daemon, n_guests=20, n_sockets=4, seconds=5.0, seed=12)
    print(f"\n{kind}: {res.requests} requests, p50 {res.p50_ms:.1f} ms, "
          f"p99 {res.p99_ms:.1f} ms, {res.events} events, {res.bcasts} broadcasts")
    assert res.errors == []
    assert res.event_mismatches == []
    assert res.requests > 0 and res.watched_writes > 0 and res.bcasts > 0
    assert daemon.alive()
