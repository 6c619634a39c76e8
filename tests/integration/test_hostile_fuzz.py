"""The hostile-input fuzzer (oxsd/diff/hostile.py) in a bounded run on both
transports: random, truncated and lying packets from dom0 socket clients, and
garbage and broken indexes from throw-away guests, with the invariants checked
after every round.  The long mode (a million packets per transport) is
``python3 -m oxsd.diff.hostile --packets 1000000``.
"""
from __future__ import annotations

import pytest

from oxsd.diff.daemons import DaemonSettings, make_scratch, start_daemon
from oxsd.diff.hostile import HostileRun, run

PACKETS = 4000


@pytest.mark.parametrize("transport", ["socket", "ring"])
@pytest.mark.parametrize("seed", [1, 2])
def test_hostile_packets_break_no_invariant(transport, seed, clients):
    report = run(transport, PACKETS, seed)
    print(report.line())
    assert not report.crashed and report.violations == [], report.line()
    assert report.packets == PACKETS and report.rounds >= PACKETS // 200


def test_the_checks_catch_a_changed_node_and_a_stray_watch(clients):
    """The invariants are real checks: each fails on the state it guards."""
    scratch = make_scratch("oxh-")
    daemon = start_daemon("oxsd", scratch, settings=DaemonSettings(access_log=False))
    try:
        host = HostileRun(daemon, 1)
        assert host.check(None, []) == []
        host.d0.write("/victim/a", "changed")
        assert any("victim nodes changed" in p for p in host.check(None, []))
        host.d0.write("/victim/a", "1")
        host.d0.watch("/elsewhere", "stray")
        host.d0.wait_watch(2)
        assert any("watches of connections that are gone" in p for p in host.check(None, []))
        host.d0.unwatch("/elsewhere", "stray")
        host.d0.write("/local/domain/11/x", "1")
        host.d0.set_perms("/local/domain/11/x", ["n11"])
        assert any("destroyed domain 11" in p for p in host.check(None, [11]))
    finally:
        daemon.stop()
