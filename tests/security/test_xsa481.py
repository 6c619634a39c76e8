"""XSA-481 (C xenstored): the path '/local/domain/' crashed xenstored (clobbered
error indicator in canonicalize(), then an assert).

A Python daemon parses paths its own way; the attack must still only buy an
error.  Safe outcome: EINVAL for every operation on '/local/domain/' (and
its relative form 'x/'), the store unchanged, the guest still served.
"""
from conftest import xs_error


def test_local_domain_with_a_trailing_slash_is_einval_everywhere(world):
    g = world.guest(5)
    before = world.tree()
    X = world.X
    for path in ("/local/domain/", "/local/domain/5/", "data/"):
        got = {
            "READ": xs_error(X, g.read, path),
            "WRITE": xs_error(X, g.write, path, "x"),
            "MKDIR": xs_error(X, g.mkdir, path),
            "RM": xs_error(X, g.rm, path),
            "DIRECTORY": xs_error(X, g.directory, path),
            "GET_PERMS": xs_error(X, g.get_perms, path),
            "SET_PERMS": xs_error(X, g.set_perms, path, ["n5"]),
            "WATCH": xs_error(X, g.watch, path, "t"),
        }
        assert got == dict.fromkeys(got, "EINVAL"), path
    assert world.tree() == before
    world.assert_guest_served(g, 5)
    world.assert_alive()
