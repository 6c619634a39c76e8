"""XSA-324 (C xenstored): a watch with a huge token made watch events over the
4096-byte payload limit, which xenstored then sent on the ring anyway.

The fix drops such events.  oxenstored never puts a packet over 4096 bytes
on a ring (`connection.ml: packet_of`): the event is replaced by an E2BIG
error packet (request id 0).  Safe outcome: the guest gets that exact
packet and no oversized event, events that fit still arrive, the guest and
everyone else are still served.
"""
from conftest import XS_ERROR, home, sync, watch

TOKEN = "t" * 3500


def test_an_event_over_4096_bytes_never_reaches_the_ring(world):
    g = world.guest(5)
    watch(g, "data", TOKEN)                      # 4+1+3500+1 bytes: fits
    long_name = "n" * 700                        # data/<700> + token > 4096
    world.d0.write(f"{home(5)}/data/{long_name}", "x")
    sync(g)
    assert g.events == []
    assert g.replies.pop(0) == (XS_ERROR, 0, b"E2BIG\0")
    world.d0.write(f"{home(5)}/data/short", "x")
    assert g.wait_watch(5) == ("data/short", TOKEN)
    world.assert_guest_served(g, 5)
    world.assert_alive()
