"""The ring-scan safety net for lazy guests, on oxsd and on oxenstored side by side (issue 5).

A lazy guest writes requests into its ring and never signals its event
channel.  The daemon finds the work in the ring scan, which runs inside
`periodic_ops` (at most every 15 s, and only when `ring-scan-interval`
seconds have passed since the last scan), logs `found lazy domain <id>,
credit <n>` and gives the domain n = 32 + 2 x ndomains rounds of service
(xenstored.ml: periodic_ops, xenstored.ml ring_scan_checker).  A negative interval
disables the scan; a guest that notifies is never taken for a lazy one.

Each test starts both daemons and drives them at the same time (one thread
per daemon), so the 15 s periods overlap.  Waits are bounded; where a test
proves that something does NOT happen it waits for the daemon's own log to
show that a periodic run has gone by.  The latencies are printed (pytest -s)
and measured in bench/bench_lazy_latency.py.
"""
from __future__ import annotations

import re
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Dict

import pytest

from oxsd.diff.daemons import DaemonSettings
from support.pinger import Pinger

KINDS = ("ocaml", "oxsd")
LAZY = 6
SCAN_WAIT = 40.0  # the first periodic run after start plus one more, and slack
XS_READ, XS_WRITE = 2, 11


def _log(daemon) -> str:
    return daemon.log_path.read_text(errors="replace") if daemon.log_path.exists() else ""


def _wait_log(daemon, pattern: str, timeout: float, count: int = 1) -> bool:
    """Wait until `pattern` (a regex) occurs `count` times in the daemon's log."""
    deadline = time.monotonic() + timeout
    while len(re.findall(pattern, _log(daemon))) < count:
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)  # polling a file that the daemon appends to
    return True


def _introduce(xensim, daemon, domid: int, lazy: bool):
    sim = xensim.Sim(str(daemon.sim_dir))
    guest = xensim.Guest(sim, domid, lazy=lazy)
    d0 = xensim.SocketClient(daemon.socket_path)
    d0.mkdir(f"/local/domain/{domid}")
    d0.set_perms(f"/local/domain/{domid}", [f"n{domid}", "r0"])
    d0.introduce(domid, guest.mfn, guest.port)
    return d0, guest


def _on_both(daemons: Dict[str, object], fn: Callable) -> Dict[str, object]:
    """fn(kind, daemon) on every daemon at once; results by kind (exceptions re-raised)."""
    with ThreadPoolExecutor(len(daemons)) as pool:
        futures = {kind: pool.submit(fn, kind, d) for kind, d in daemons.items()}
        return {kind: f.result() for kind, f in futures.items()}


def _timed(client, op: int, payload: bytes, timeout: float) -> float:
    t0 = time.monotonic()
    rid = client.send(op, payload)
    client.recv_reply(rid, timeout)  # TimeoutError fails the test
    return time.monotonic() - t0




def test_lazy_guest_is_answered_after_the_ring_scan(start, xensim):
    daemons = {k: start(k, DaemonSettings(ring_scan_interval=1)) for k in KINDS}

    def run(kind, daemon):
        d0, lazy = _introduce(xensim, daemon, LAZY, lazy=True)
        try:
            first = _timed(lazy, XS_WRITE, b"data/first\0" b"1", SCAN_WAIT)
            found = re.findall(rf"found lazy domain {LAZY}, credit (\d+)", _log(daemon))
            # oxenstored serves the follow-ups only when something wakes its
            # loop (it sleeps 15 s otherwise); oxsd polls while credit is held
            pinger = Pinger(xensim.SocketClient(daemon.socket_path)) if kind == "ocaml" else None
            try:
                follow = [_timed(lazy, XS_READ, b"data/first\0", SCAN_WAIT) for _ in range(3)]
            finally:
                if pinger:
                    pinger.close()
            assert pinger is None or pinger.error is None, pinger.error
            value = d0.read(f"/local/domain/{LAZY}/data/first")
            return first, found, follow, value, lazy.client.notifies
        finally:
            lazy.close()
            d0.close()

    results = _on_both(daemons, run)
    for kind, (first, found, follow, value, notifies) in results.items():
        print(f"{kind}: first request {first:.2f} s, follow-ups "
              + ", ".join(f"{x * 1000:.0f} ms" for x in follow))
        assert notifies == 0, kind  # answered without a single event from the guest
        assert found[:1] == ["36"], (kind, _log(daemons[kind])[-2000:])  # 32 + 2 x 2 domains
        assert first < SCAN_WAIT and value == b"1"
    # oxsd answers a follow-up sent right away from the credit, without another scan
    assert results["oxsd"][2][0] < 5.0


def test_lazy_guest_is_never_answered_with_the_ring_scan_disabled(start, xensim):
    daemons = {k: start(k, DaemonSettings(ring_scan_interval=-1, log_level="debug"))
               for k in KINDS}

    def run(kind, daemon):
        d0, lazy = _introduce(xensim, daemon, LAZY, lazy=True)
        try:
            rid = lazy.send(XS_WRITE, b"data/x\0" b"1")
            runs = len(re.findall("periodic_ops starting", _log(daemon)))
            # a periodic run after the request: with the scan on, it would find it
            assert _wait_log(daemon, "periodic_ops starting", 20.0, runs + 1), kind
            with pytest.raises(TimeoutError):
                lazy.recv_reply(rid, 0.5)
            with pytest.raises(xensim.XsError):
                d0.read(f"/local/domain/{LAZY}/data/x")
            return _log(daemon)
        finally:
            lazy.close()
            d0.close()

    for kind, log in _on_both(daemons, run).items():
        assert "found lazy domain" not in log, kind
        assert "Looking up domid" not in log, kind  # no scan at all


def test_notifying_guest_is_never_taken_for_a_lazy_one(start, xensim):
    daemons = {k: start(k, DaemonSettings(ring_scan_interval=1, log_level="debug"))
               for k in KINDS}

    def run(kind, daemon):
        d0, guest = _introduce(xensim, daemon, 5, lazy=False)
        try:
            for i in range(5):
                guest.write("data/x", str(i))
            # The guest rests while dom0's reads keep the loop awake until a
            # ring scan has looked at domain 5 (a periodic run woken by the
            # guest's own event would find it holding credit and skip it).
            reads = 0
            while not _wait_log(daemon, "Looking up domid 5", 0.1):
                d0.read("/local/domain/5/data/x")
                reads += 1
                assert reads < 300, f"{kind}: no ring scan within ~40 s"
            for i in range(5, 10):
                guest.write("data/x", str(i))
            assert guest.read("data/x") == b"9"
            return _log(daemon), guest.client.notifies
        finally:
            guest.close()
            d0.close()

    for kind, (log, notifies) in _on_both(daemons, run).items():
        assert notifies > 0
        assert "found lazy domain" not in log, kind
