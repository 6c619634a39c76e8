"""Insane ring indexes and many guests at once, on oxsd and on the reference (issue 5).

connections.md §4.3, §4.7: a request ring whose producer index runs more
than 1024 bytes ahead of the consumer marks the client bad ("bad
connection"); the daemon logs it, stops serving that domain and goes on
serving everybody else.
"""
from __future__ import annotations

import struct
import threading
import time

import pytest

from oxsd.diff.daemons import DaemonSettings

KINDS = ["oxsd", "ocaml"]
REQ_CONS, REQ_PROD = 2048, 2052
ROUNDS = 2


def _introduce(xensim, daemon, d0, domid: int, lazy: bool = False):
    guest = xensim.Guest(xensim.Sim(str(daemon.sim_dir)), domid, lazy=lazy)
    d0.mkdir(f"/local/domain/{domid}")
    d0.set_perms(f"/local/domain/{domid}", [f"n{domid}", "r0"])
    d0.introduce(domid, guest.mfn, guest.port)
    return guest


def _log(daemon) -> str:
    return daemon.log_path.read_text(errors="replace") if daemon.log_path.exists() else ""


@pytest.mark.parametrize("kind", KINDS)
def test_insane_request_index_marks_the_client_bad_and_others_are_served(start, xensim, kind):
    daemon = start(kind)
    d0 = xensim.SocketClient(daemon.socket_path)
    bad = _introduce(xensim, daemon, d0, 5)
    good = _introduce(xensim, daemon, d0, 6)
    bad.write("data/x", "1")
    # Publish a producer index 2000 bytes ahead of the consumer, then notify.
    with open(daemon.sim_dir / "mem" / "5" / str(bad.mfn), "r+b") as page:
        page.seek(REQ_CONS)
        cons = struct.unpack("<I", page.read(4))[0]
        page.seek(REQ_PROD)
        page.write(struct.pack("<I", (cons + 2000) & 0xFFFFFFFF))
    bad.client.notify()
    deadline = time.monotonic() + 10
    while "got a bad client" not in _log(daemon):
        assert time.monotonic() < deadline, _log(daemon)[-2000:]
        time.sleep(0.05)
    assert "caught exception bad connection" in _log(daemon)
    # Everyone else is still served, the daemon lives, the store is intact.
    good.write("data/y", "2")
    assert good.read("data/y") == b"2"
    assert d0.read("/local/domain/5/data/x") == b"1"
    assert d0.is_introduced(5)
    assert daemon.alive()


@pytest.mark.parametrize("kind", KINDS)
def test_fifty_guests_at_once_lose_no_event(start, xensim, kind):
    """50 guests (5 lazy) write and watch concurrently; every reply and event arrives.

    A lazy guest whose credit has run out waits for the next ring scan (up
    to 15 s on both daemons), so the rounds are few to keep the test short.
    """
    daemon = start(kind, DaemonSettings(ring_scan_interval=1))
    d0 = xensim.SocketClient(daemon.socket_path)
    guests = [_introduce(xensim, daemon, d0, 10 + i, lazy=(i % 10 == 9)) for i in range(50)]
    # All at once: a lazy guest's request waits for the ring scan.
    rids = [g.send(xensim.XS_WATCH, b"data\0tok\0") for g in guests]
    for g, rid in zip(guests, rids):
        assert g.recv_reply(rid, 45)[2] == b"OK\0"
        assert g.wait_watch(timeout=45) == ("data", "tok")  # the initial event
    latencies: list = []
    errors: list = []
    lock = threading.Lock()

    def run(g):
        try:
            for n in range(ROUNDS):
                t0 = time.monotonic()
                g.request(xensim.XS_WRITE, b"data/n\0%d" % n, 0, 45)
                ev = g.wait_watch(timeout=45)
                assert ev == ("data/n", "tok"), ev
                with lock:
                    latencies.append(time.monotonic() - t0)
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=run, args=(g,)) for g in guests]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=200)
    assert not any(t.is_alive() for t in threads), "a guest stalled"
    assert not errors, errors[:3]
    assert len(latencies) == 50 * ROUNDS
    for i, g in enumerate(guests):
        assert d0.read(f"/local/domain/{10 + i}/data/n") == b"%d" % (ROUNDS - 1)
    print(f"{kind}: {len(latencies)} write+event round trips, worst {max(latencies):.3f} s")
