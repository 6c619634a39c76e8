"""XSA-421 (C xenstored): a node created and then deleted in the same
transaction made its commit fail half-way, without the quota accounting:
a guest could create any number of nodes.

Safe outcome: such a transaction commits, the store holds exactly what it
says (the node absent, the other writes present), and the guest's node
count (CONTROL quota) moves by exactly the nodes that remain; repeating it
cannot push the guest past its quota.
"""
from conftest import home


def test_create_then_delete_in_a_transaction_keeps_the_accounting(configured):
    world = configured("quota-maxentity = 8")
    g = world.guest(5)
    start = world.node_count(5)
    for i in range(20):                          # far more than the quota, if leaked
        tx = g.transaction_start()
        g.write(f"tmp/a{i}", "x", tx=tx)
        g.write(f"tmp/a{i}/b", "y", tx=tx)
        g.rm(f"tmp/a{i}", tx=tx)
        g.transaction_end(tx, True)
    assert world.d0.directory(f"{home(5)}/tmp") == []
    assert world.node_count(5) == start + 1          # only tmp/ itself stayed
    made = world.fill_quota(g, "fill")           # the quota still bites where it should
    assert world.node_count(5) == 8 and made == 8 - start - 1
    world.assert_alive()
