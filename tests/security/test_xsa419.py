"""XSA-419: nodes a dead domain owned outside its home stayed, owned by dom0.

The XSA-322 fix gave them to dom0, which has no quota: two guests could grow
the store without bound by creating nodes somewhere writable and dying.  The
fix deletes the nodes the dead domain owned (with their subtrees).  Safe
outcome: after domain 5 dies nothing it owned remains, anywhere, and nodes
of others are untouched.
"""
from conftest import home, xs_error


def test_nodes_a_dead_domain_owned_are_deleted_not_given_to_dom0(world):
    d0 = world.d0
    g = world.guest(5)
    d0.mkdir("/vm/5")
    d0.set_perms("/vm/5", ["n5"])                  # a toolstack node handed to the guest
    for i in range(5):
        g.write(f"/vm/5/n{i}/deep", "x" * 100)     # owned by 5 (inherited), outside its home
    g.write("data/x", "1")
    d0.write("/vm/keep", "dom0's")
    assert [d0.get_perms(f"/vm/5/n{i}/deep")[0] for i in range(5)] == ["n5"] * 5
    world.destroy(5)
    assert d0.directory("/vm") == ["keep"]
    assert xs_error(world.X, d0.read, f"{home(5)}/data/x") == "ENOENT"
    assert d0.read("/vm/keep") == b"dom0's"
    assert not any("perms=b'n5" in line for line in world.tree())
    world.assert_alive()
