"""XSA-323: oxenstored checked path lengths before making relative paths absolute.

A guest could create paths that nobody (dom0 included) could address any
more, and whose validity changed with the length of its domid.  The fix
applies quota-path-max (1024 by default) to the final path: for a path under
/local/domain/<domid>/ to the part after that prefix, for any other path to
the whole of it, whichever way the client spelt it.  Safe outcome: EINVAL
over the limit for both spellings, the same node reachable by both at the
limit, nothing created by a refused request.
"""
from conftest import home, xs_error

PATH_MAX = 1024  # Debian's quota-path-max


def test_paths_are_checked_on_their_canonical_length(world):
    g = world.guest(5)
    base = home(5) + "/"
    before = world.tree()
    over, at = "a" * (PATH_MAX + 1), "c" * PATH_MAX
    X = world.X
    assert xs_error(X, g.write, over, "x") == "EINVAL"           # relative spelling
    assert xs_error(X, g.write, base + over, "x") == "EINVAL"    # absolute spelling
    assert xs_error(X, g.mkdir, over) == "EINVAL"
    assert xs_error(X, world.d0.write, "/" + "b" * PATH_MAX, "x") == "EINVAL"  # 1025 in all
    assert world.tree() == before
    g.write(at, "ok")                                  # at the limit: accepted, and the
    assert g.read(base + at) == b"ok"                  # same node under both spellings
    assert world.d0.read(base + at) == b"ok"
    world.assert_alive()
