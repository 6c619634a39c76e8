"""XSA-322: a new domain reusing a dead domain's id inherited its access.

Domain ids wrap (15 bits); nodes whose ACL named the dead domain (or that it
owned) lingered until the toolstack cleaned up, and a new domain with the
same id could read or write them.  The fix removes the dead domain from
every ACL when it dies (nodes it owned: XSA-419).  Safe outcome: after
domain 5 dies, the ACL entries naming 5 are gone, and a new domain 5 gets
EACCES on what the old one could read and write.
"""
from conftest import xs_error


def test_a_reused_domid_does_not_inherit_acl_entries(world):
    d0 = world.d0
    old = world.guest(5)
    d0.write("/vm/shared/config", "secret")
    d0.set_perms("/vm/shared/config", ["n0", "r5"])
    d0.write("/vm/shared/rw", "x")
    d0.set_perms("/vm/shared/rw", ["n0", "b5", "r6"])
    assert old.read("/vm/shared/config") == b"secret"
    old.write("/vm/shared/rw", "y")
    world.destroy(5)
    assert d0.get_perms("/vm/shared/config") == ["n0"]
    assert d0.get_perms("/vm/shared/rw") == ["n0", "r6"]
    new = world.guest(5)                         # the same domid, a new domain
    assert xs_error(world.X, new.read, "/vm/shared/config") == "EACCES"
    assert xs_error(world.X, new.write, "/vm/shared/rw", "z") == "EACCES"
    assert d0.read("/vm/shared/rw") == b"y"
    world.assert_alive()
