"""Memory under attack stays bounded, and other clients are served (oxsd).

Each attack of bench/bench_attack_memory.py runs in rounds on a fresh oxsd:
a round floods until the daemon stops taking input, samples VmRSS at that
peak, then reads everything owed (the count is checked).  Boundedness is
asserted against oxsd's own baseline (the RSS before the attack), never
against time: the peak of every round stays within a fixed allowance over the
baseline (what the XSA-326 queues can hold: 1024 replies of ~2 KiB, or 2048
events per watcher, plus allocator slack), and the last round's peak is not
above the first's by more than a small margin (no growth from round to
round).  A victim socket client and a victim guest are served throughout.
The same figures for oxenstored are printed by the bench.
"""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

import bench_attack_memory as bam  # noqa: E402

MIB = 1024
# (attack, requests per round, allowed peak over baseline in MiB)
CASES = [
    ("guest-no-read", 4000, 12),
    ("socket-no-read", 60000, 16),  # before the fix: +88 MiB
    # 200 watchers: one packet per writable socket per iteration made this +22 MiB
    ("watch-storm", 1000, 10),
    ("tx-max", 1000, 64),  # 10 transactions x ~1000 nodes of 2000 bytes: ~20 MiB of values
]
WATCHERS = 200
ROUNDS = 2
ROUND_GROWTH = 6 * MIB  # KiB the last round's peak may exceed the first's


@pytest.mark.parametrize("attack,scale,allowance", CASES, ids=[c[0] for c in CASES])
def test_memory_stays_bounded_under_attack(start, monkeypatch, attack, scale, allowance):
    # a longer stall lets an unbounded daemon show it: it keeps taking input
    monkeypatch.setattr(bam, "STALL", 3.0)
    daemon = start("oxsd", bam.DaemonSettings(access_log=False))
    res = bam.run_attack("oxsd", attack, scale, ROUNDS, watchers=WATCHERS, daemon=daemon)
    notes = [r.note for r in res.rounds]
    print(f"\n{attack}: base {res.base_kib} KiB, peak/after "
          f"{[(r.peak_kib, r.after_kib) for r in res.rounds]}, "
          f"victim worst {res.victim_worst_ms:.0f} ms, {notes}")
    assert res.alive
    assert res.victim_error == "" and res.victim_rounds > 0
    assert res.guest_served
    assert all(r.complete for r in res.rounds), notes
    # the flood's sample, or after the drain (a storm's events are made while draining)
    highs = [max(r.peak_kib, r.after_kib) for r in res.rounds]
    for high in highs:
        assert high - res.base_kib <= allowance * MIB, (highs, res.base_kib, notes)
    assert highs[-1] - highs[0] <= ROUND_GROWTH, (highs, notes)
