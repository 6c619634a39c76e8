"""XSA-38: oxenstored trusted the ring indexes a guest writes.

A guest could set its ring's producer index so far ahead of the consumer
index that the daemon read (or wrote) outside the ring, or looped.  The fix
checks that no more than a ring's worth (1024 bytes) is ever in flight and
otherwise treats the ring as broken.  Safe outcome: the guest is marked bad
("got a bad client" in the log) and no longer served, while the daemon,
dom0, other guests and the store are unaffected.
"""
import pytest



@pytest.mark.parametrize("field,delta", [("req_prod", 1025), ("req_prod", 0x80000000),
                                         ("req_cons_behind", 2000)])
def test_insane_ring_indexes_mark_only_that_guest_bad(world, field, delta):
    bad, good = world.guest(5), world.guest(6)
    good.write("before", "1")
    before = world.tree()
    ring = bad.ring
    if field == "req_prod":
        ring._set(2052, ring.req_cons + delta)          # req_prod far past req_cons
    else:
        ring._set(2048, ring.req_prod - delta)          # req_cons pushed behind: 2000 "pending"
        ring._set(2052, ring.req_prod)
    bad.notify()
    assert world.wait_log("got a bad client"), world.log()[-2000:]
    assert world.tree() == before
    world.assert_guest_served(good, 6)
    world.assert_alive()
