"""XSA-484 (C xenstored): RESET_WATCHES sent inside a transaction tripped an
assert (the transaction pointer was left dangling) and crashed xenstored.

Safe outcome (oxenstored's): RESET_WATCHES answers OK and drops the
connection's transactions too, so the transaction id is unknown afterwards
(its end gets the unknown-transaction error), nothing the transaction wrote
reaches the store, and the daemon keeps serving everyone.
"""
from conftest import home, watch, xs_error

XS_RESET_WATCHES = 21


def test_reset_watches_inside_a_transaction(world):
    g = world.guest(5)
    watch(g, "data", "tok")
    tx = g.transaction_start()
    g.write("data/in-tx", "1", tx=tx)
    assert g.request(XS_RESET_WATCHES, b"", tx=tx) == b"OK\0"
    assert xs_error(world.X, g.transaction_end, tx, True) == "EIO"
    assert xs_error(world.X, world.d0.read, f"{home(5)}/data/in-tx") == "ENOENT"
    world.assert_guest_served(g, 5)
    tx2 = g.transaction_start()  # transactions still work
    g.write("data/after", "2", tx=tx2)
    g.transaction_end(tx2, True)
    assert world.d0.read(f"{home(5)}/data/after") == b"2"
    world.assert_alive()
