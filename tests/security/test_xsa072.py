"""XSA-72: a reply larger than the ring protocol's 4096-byte payload limit.

A guest could make oxenstored build a reply over XENSTORE_PAYLOAD_MAX (a
DIRECTORY of many long names) and the oversized packet corrupted the ring
protocol.  The fix answers E2BIG instead.  Safe outcome: DIRECTORY gets
exactly E2BIG (the same request over a socket, where there is no such
limit, gets the full list), the guest keeps being served.
"""
from conftest import home, xs_error

NAME = 60


def test_a_directory_reply_over_4096_bytes_is_e2big_on_the_ring(world):
    g = world.guest(5)
    names = [f"{i:03d}".ljust(NAME, "n") for i in range(80)]  # 80 x 61 bytes > 4096
    for name in names:
        g.write(f"big/{name}", "")
    assert xs_error(world.X, g.directory, "big") == "E2BIG"
    assert world.d0.directory(f"{home(5)}/big") == sorted(names)  # socket: no limit
    world.assert_guest_served(g, 5)
    world.assert_alive()
