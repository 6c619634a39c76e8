"""XSA-330: RESET_WATCHES removed a connection's watches from its own table but
not from the global trie, so they kept firing into freed state (and the guest
could re-add them without limit).

Safe outcome: after RESET_WATCHES no event reaches the guest for its old
watches, it can register the same watches again (each fires once), and the
daemon's watch list (CONTROL watches... via the dump) no longer holds them.
"""
from conftest import home, sync, watch


def test_reset_watches_really_drops_the_watches(world):
    g = world.guest(5)
    watch(g, "data", "tok")
    watch(g, "/local/domain/5/other", "tok2")
    g.reset_watches()
    world.d0.write(f"{home(5)}/data/x", "1")
    world.d0.write(f"{home(5)}/other", "1")
    sync(g)
    assert g.events == []
    watch(g, "data", "tok")  # the same watch again: no EEXIST, one event per change
    world.d0.write(f"{home(5)}/data/x", "2")
    assert g.wait_watch(5) == ("data/x", "tok")
    sync(g)
    assert g.events == []
    world.assert_alive()
