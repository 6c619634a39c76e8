"""XSA-352: oxenstored let an unprivileged client change a node's owner.

A guest could give a node it owns to another domain (charging that domain's
quota, or escaping its own).  Safe outcome: SET_PERMS with another owner is
EACCES, the node's permissions and every quota unchanged; the same guest may
still change the ACL of its node as long as it keeps the ownership.
"""
from conftest import home, xs_error


def test_only_dom0_can_change_a_nodes_owner(world):
    g = world.guest(5)
    g.write("mine", "x")
    quota = {d: world.quota(d) for d in (5, 6)}
    assert xs_error(world.X, g.set_perms, "mine", ["n6", "r5"]) == "EACCES"
    assert world.d0.get_perms(f"{home(5)}/mine") == ["n5", "r0"]
    assert {d: world.quota(d) for d in (5, 6)} == quota
    g.set_perms("mine", ["n5", "r6"])  # keeping the owner is allowed
    assert world.d0.get_perms(f"{home(5)}/mine") == ["n5", "r6"]
    world.assert_alive()
