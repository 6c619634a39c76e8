"""XSA-418 (C xenstored): recursion over the tree exhausted xenstored's stack.

A guest builds a deep path; every recursive walk (deleting it, checking the
store, dumping it) then recursed once per level.  A Python daemon has a
recursion limit (1000 frames by default): any recursive walk of a deep tree
would raise RecursionError instead of answering.  Safe outcome, on both
daemons: a guest's tree as deep as the path limit allows (512 levels) is
created, read, listed, walked by the diff tool, removed in one RM (quota
given back) and dumped; and oxsd's own walks (dump, restore, quota
recursion, permission reset, watch trie) handle a tree deeper than the
recursion limit, as a dump or dom0 may produce.
"""
import signal
import sys

from conftest import home, watch
from oxsd import db as DB
from oxsd import perms as P
from oxsd.config import Settings
from oxsd.connections import Connections, key_of_path
from oxsd.logging_ import AccessLog
from oxsd.store import Path, Store, dump_store_buf

DEPTH = 512                                    # "a/" * 512: 1023 bytes, the path limit


def test_a_guest_tree_as_deep_as_the_path_limit(world):
    g = world.guest(5)
    deep = "/".join(["a"] * DEPTH)
    g.write(deep, "bottom")
    assert g.read(deep) == b"bottom"
    assert world.d0.directory(f"{home(5)}/" + "/".join(["a"] * (DEPTH - 1))) == ["a"]
    tree = world.tree()                        # the diff tool's walk
    assert sum(1 for line in tree if line.startswith(f"{home(5)}/a")) == DEPTH
    watch(g, "a", "deep")                      # a recursive watch over all of it
    g.rm("a")
    assert g.wait_watch(5) == ("a", "deep")
    assert world.quota(5) == "dom5 quota: 1/1000"
    g.write(deep, "again")                     # once more, then dumped at exit
    assert g.wait_watch(5) == (deep, "deep")   # (an unread event would delay the exit)
    world.assert_alive()
    world.daemon.proc.send_signal(signal.SIGTERM)
    assert world.daemon.proc.wait(15) == 0
    dump = world.daemon.db_path.read_text()
    assert dump.count("store,2f6c6f63616c2f646f6d61696e2f352f61") == DEPTH


def test_oxsd_walks_a_tree_deeper_than_the_recursion_limit():
    depth = sys.getrecursionlimit() + 500
    settings = Settings()
    st = Store.create(settings)
    dom0 = P.Connection.full_rights
    comps: tuple = ()
    for i in range(depth):
        comps += (f"d{i % 10}",)
        st.write(dom0, Path(comps), b"v")
    dump = dump_store_buf(st.root)
    assert dump.count(b"\n") == depth + 1
    cons = Connections(settings, AccessLog.disabled())
    data = DB.to_bytes(st, cons, None, None)
    fresh = Store.create(settings)
    DB.from_channel(fresh, Connections(settings, AccessLog.disabled()), lambda ev: None,
                    None, data)
    assert dump_store_buf(fresh.root) == dump
    assert fresh.quota.get(0) == depth
    key = key_of_path(Path(comps))             # a watch as deep as the tree
    con = cons.add_anonymous(_socket())
    cons.add_watch(con, Path(comps).to_string(), b"t")
    assert cons.watches.mem(key)
    fired = []
    cons.watches.sub(key[:2]).iter(lambda k, ws: fired.extend(ws or []))
    assert len(fired) == 1
    cons.del_anonymous(con)
    fresh.reset_permissions(7)                 # recurse_filter_map over every level
    fresh.rm(dom0, Path(comps[:1]))
    assert fresh.quota.get(0) == 0 and dump_store_buf(fresh.root).count(b"\n") == 1


def _socket():
    import socket
    a, b = socket.socketpair()
    _socket.keep = b
    return a
