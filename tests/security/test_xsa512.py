"""XSA-512 (CVE-2026-79604): unbounded accumulation of watches across ring reconnects.

oxenstored keeps every watch twice: in the connection's own table and in the
global trie that `Connections.fire_watches` walks.  Up to 4.17.7 a xenbus
reconnect (the guest sets the ring's `connection` field to 1) cleared only the
connection's table, so each reconnect left the guest's watches behind in the
trie: they went on firing into the reconnected ring, and a guest that set its
watches and reconnected in a loop grew the daemon's memory without bound.
The fixed build (4.17.7+13) removes them from the trie as well
(`Connections.del_watches`).

The attack runs from an unprivileged guest on both daemons: set WATCHES
watches, reconnect, again, RECONNECTS times.  Safe outcome: one write under
the watched paths reaches the guest exactly once per watch it holds now (a
stale trie entry would add one event per earlier round), `CONTROL watches`
lists only those, the daemon is alive and a socket client is still served.
"""
from __future__ import annotations

import time

import pytest

KINDS = ("ocaml", "oxsd")
DOMID = 5
WATCHES = 20
RECONNECTS = 15
OFF_CONNECTION = 2068  # xenstore_domain_interface.connection (xs_wire.h)


def _reconnect(guest, timeout: float = 5.0) -> None:
    """Ask for a xenbus reconnect and wait until the daemon has reset the ring."""
    guest.ring._set(OFF_CONNECTION, 1)
    guest.client.notify()
    deadline = time.monotonic() + timeout
    while guest.ring.connection != 0:
        if time.monotonic() > deadline:
            pytest.fail("the daemon did not complete the reconnect")
        guest.client._wait(0.05)  # the daemon notifies once the ring is reset
    guest.client._rbuf.clear()  # the reconnect discarded whatever was in flight


def _set_watches(guest) -> None:
    for i in range(WATCHES):
        guest.watch(f"data/w{i}", "tok")
    for _ in range(WATCHES):  # each new watch fires once at once
        assert guest.wait_watch(5) is not None


def _events_until_quiet(guest, quiet: float = 0.5) -> list:
    got = []
    while (ev := guest.wait_watch(quiet)) is not None:
        got.append(ev)
    return got


@pytest.mark.parametrize("kind", KINDS)
def test_xsa512_reconnect_loop_leaves_no_watch_behind(kind, start, xensim):
    daemon = start(kind)
    d0 = xensim.SocketClient(daemon.socket_path)
    guest = xensim.Guest(xensim.Sim(str(daemon.sim_dir)), DOMID)
    d0.mkdir(f"/local/domain/{DOMID}")
    d0.set_perms(f"/local/domain/{DOMID}", [f"n{DOMID}", "r0"])
    d0.introduce(DOMID, guest.mfn, guest.port)

    for _ in range(RECONNECTS):
        _set_watches(guest)
        _reconnect(guest)
    _set_watches(guest)

    for i in range(WATCHES):
        d0.write(f"/local/domain/{DOMID}/data/w{i}", "x")
    events = _events_until_quiet(guest)
    assert sorted(events) == sorted((f"data/w{i}", "tok") for i in range(WATCHES)), \
        f"{kind}: {len(events)} events for {WATCHES} watches"

    listed = d0.control("watches").decode().splitlines()
    assert len([line for line in listed if line.startswith(f"watch D{DOMID}:")]) == WATCHES
    assert daemon.alive
    other = xensim.SocketClient(daemon.socket_path)
    other.write("/vm/after", "1")
    assert other.read("/vm/after") == b"1"
