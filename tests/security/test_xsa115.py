"""XSA-115: watch events leaked what a guest may not read.

Any guest could watch any path (or the special @introduceDomain /
@releaseDomain) and learn from the events about nodes and domains it has no
access to.  The fix fires an event only when the watcher may read the node
(or its parent, for a removal), and special-path events only to dom0 (or
whom dom0 allowed with SET_PERMS on the special path); IS_DOMAIN_INTRODUCED
became dom0-only.  Safe outcome: no event for another domain's private node
or for another domain's introduction, EACCES for IS_DOMAIN_INTRODUCED, while
a readable node's event still arrives (so the check can fail).
"""
from conftest import home, sync, watch, xs_error


def test_no_event_for_a_node_the_watcher_cannot_read(world):
    spy = world.guest(5)
    world.guest(6)
    d0 = world.d0
    d0.write(f"{home(6)}/secret", "s0")
    d0.set_perms(f"{home(6)}/secret", ["n6"])          # private to domain 6
    d0.write("/public/x", "p0")
    d0.set_perms("/public/x", ["n0", "r5"])            # readable by domain 5
    watch(spy, f"{home(6)}/secret", "leak")            # allowed, and fires once at once
    watch(spy, "/public/x", "ok")
    d0.write(f"{home(6)}/secret", "s1")
    d0.rm(f"{home(6)}/secret")
    d0.write("/public/x", "p1")
    assert spy.wait_watch(5) == ("/public/x", "ok")   # the control fires
    sync(spy)
    assert spy.events == []                            # the private node's never did
    world.assert_alive()


def test_special_watches_and_is_introduced_are_dom0s(world):
    spy = world.guest(5)
    watch(spy, "@introduceDomain", "intro")
    watch(spy, "@releaseDomain", "rel")
    world.guest(7)                                     # introduced: no event for 5
    world.destroy(7)                                   # released: none either
    sync(spy)
    assert spy.events == []
    assert xs_error(world.X, spy.is_introduced, 7) == "EACCES"
    assert world.d0.is_introduced(5) is True
    world.assert_guest_served(spy, 5)
    world.assert_alive()
