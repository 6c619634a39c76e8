"""XSA-206: a guest writing in a loop could make every transaction of others
fail (EAGAIN) forever.

The fix (4.17's conflict credit, conflict-burst-limit /
conflict-max-history-seconds): when a transaction fails, the domain whose
commit caused it is blamed and loses credit; with no credit left its
requests wait until credit comes back (one per
conflict-max-history-seconds, 2 s here so that the test does not race it),
so the victim's retry gets through.  Safe outcome: the attempts fail
(EAGAIN, the flooder's write went in) only until the flooder has spent its
credit (conflict-burst-limit, 5), then its write is held and the victim's
retry commits, and the held write is answered afterwards.
"""
from conftest import home

XS_WRITE = 11


def attempt(world, victim, flooder, n: int, wait: float):
    """One transaction of the victim with a write of the flooder in the middle."""
    tx = victim.transaction_start()
    victim.read(f"{home(5)}/x", tx)
    victim.write("y", str(n), tx)
    rid = flooder.send(XS_WRITE, b"x\0v%d" % n)
    try:
        flooder.recv_reply(rid, wait)
        held = None
    except TimeoutError:
        held = rid
    try:
        victim.transaction_end(tx, True)
        return "OK", held
    except world.X.XsError as e:
        return e.err, held


def test_a_flooding_guest_cannot_starve_another_guests_transactions(configured):
    world = configured("conflict-max-history-seconds = 2.0")
    flooder, victim = world.guest(5), world.guest(6)
    flooder.write("x", "0")
    world.d0.set_perms(f"{home(5)}/x", ["n5", "r6"])
    results = []
    for n in range(10):
        results.append(attempt(world, victim, flooder, n, 0.5))
        if results[-1][0] == "OK":
            break
    *failed, (outcome, held) = results
    assert failed and all(r == ("EAGAIN", None) for r in failed), results
    assert len(failed) <= 5, results                  # at most the burst limit
    assert outcome == "OK" and held is not None, results  # the flooder waits, the victim commits
    assert world.d0.read(f"{home(6)}/y") == str(len(failed)).encode()
    assert flooder.recv_reply(held, 15.0)[0] == XS_WRITE   # slowed down, not cut off
    assert world.d0.read(f"{home(5)}/x") == b"v%d" % len(failed)
    world.assert_alive()
