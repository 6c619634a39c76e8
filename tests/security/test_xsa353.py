"""XSA-353: oxenstored did not check permissions on the root node.

An unprivileged guest could chmod `/` and write there, `rm -r /` (nearly the
whole store) and list or get-perms `/`.  Safe outcome: EACCES for every one
of them, the store unchanged, the guest and everyone else still served.
"""
from conftest import xs_error

XS_SET_PERMS, XS_RM, XS_DIRECTORY, XS_GET_PERMS, XS_WRITE, XS_MKDIR = 14, 13, 1, 3, 11, 12


def test_a_guest_cannot_touch_the_root_node(world):
    g = world.guest(5)
    before = world.tree()
    X = world.X
    attacks = {
        "SET_PERMS /": lambda: g.set_perms("/", ["n5", "b5"]),
        "RM /": lambda: g.rm("/"),
        "DIRECTORY /": lambda: g.directory("/"),
        "GET_PERMS /": lambda: g.get_perms("/"),
        "WRITE /": lambda: g.write("/", "pwned"),
    }
    outcomes = {name: xs_error(X, fn) for name, fn in attacks.items()}
    assert outcomes == {name: "EACCES" for name in attacks}
    assert world.tree() == before
    world.assert_guest_served(g, 5)
    world.assert_alive()
