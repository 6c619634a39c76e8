"""XSA-272: oxenstored did not apply quota-maxentity to nodes created by WRITE
(OCaml's evaluation order returned `node_created` before it was set), so a
guest could create unlimited nodes.

Safe outcome: a guest's node count stops at quota-maxentity, whichever way
it creates nodes (WRITE, MKDIR, WRITE of a deep path creating parents, a
committed transaction): the next creation is EQUOTA, nothing over the
limit is stored, and other guests keep their own quota.
"""
import pytest

from conftest import home

MAX = 6


def fill(world, g, how: str) -> None:
    i = 0
    while True:
        try:
            if how == "write":
                g.write(f"n{i}", "x")
            elif how == "mkdir":
                g.mkdir(f"n{i}")
            elif how == "deep":
                g.write(f"d{i}/a/b", "x")
            else:
                tx = g.transaction_start()
                g.write(f"t{i}", "x", tx=tx)
                g.transaction_end(tx, True)
        except world.X.XsError as e:
            assert e.err == "EQUOTA", how
            return
        i += 1
        assert i <= MAX, f"{how}: more nodes than the quota"


@pytest.mark.parametrize("how", ["write", "mkdir", "deep", "transaction"])
def test_maxentity_stops_every_way_of_creating_nodes(configured, how):
    world = configured(f"quota-maxentity = {MAX}")
    g, other = world.guest(5), world.guest(6)
    fill(world, g, how)
    assert world.node_count(5) <= MAX
    kids = world.d0.directory(home(5))
    assert len(kids) <= MAX - 1
    other.write("mine", "ok")                    # another guest's quota is its own
    assert world.node_count(6) == 2
    world.assert_alive()
