"""oxsd.connections: the global watch trie and its per-connection index."""
from __future__ import annotations

import random
import socket
import sys

import pytest

from oxsd.config import Settings
from oxsd.connections import Connections
from oxsd.logging_ import AccessLog


class Cons:
    """A Connections with socket connections on socketpairs, closed at the end."""

    def __init__(self) -> None:
        self.settings = Settings(quota_maxwatch=0)
        self.cons = Connections(self.settings, AccessLog.disabled())
        self.peers: list[socket.socket] = []

    def new(self):
        a, b = socket.socketpair()
        self.peers.append(b)
        return self.cons.add_anonymous(a)

    def close(self) -> None:
        for con in self.cons.iter_anonymous():
            self.cons.del_anonymous(con)
        for p in self.peers:
            p.close()


@pytest.fixture
def world():
    w = Cons()
    yield w
    w.close()


def trie_items(cons: Connections):
    """(key name, [(con id, path, token)]) in the trie's iteration order."""
    out = []
    cons.watches.iter(lambda k, ws: out.append(
        (k, None if ws is None else [(id(w.con), w.path, w.token) for w in ws])))
    return out


def python_calls(fn) -> int:
    """How many Python-level function calls `fn()` makes (deterministic work measure)."""
    n = 0

    def prof(frame, event, arg):
        nonlocal n
        if event == "call":
            n += 1

    sys.setprofile(prof)
    try:
        fn()
    finally:
        sys.setprofile(None)
    return n


def reset_cost(world: Cons, other_watches: int) -> int:
    others = world.new()
    for i in range(other_watches):
        world.cons.add_watch(others, f"/local/domain/{i}/data", b"t")
    me = world.new()
    world.cons.add_watch(me, "/local/domain/7/x", b"a")
    world.cons.add_watch(me, "@releaseDomain", b"b")
    cost = python_calls(lambda: world.cons.del_watches(me))
    assert not any(id(me) == c for _, ws in trie_items(world.cons) if ws for c, _, _ in ws)
    return cost


def test_dropping_a_connections_watches_costs_only_its_own_watches():
    """RESET_WATCHES / close / release: the work must not grow with other connections' watches."""
    small, big = Cons(), Cons()
    try:
        assert reset_cost(small, 10) == reset_cost(big, 2000)
    finally:
        small.close()
        big.close()


def reference_del_watches(cons: Connections, con) -> None:
    """connections.ml: del_watches maps over the whole trie."""
    con.del_watches()
    cons.watches = cons.watches.map(lambda ws: [w for w in ws if w.con is not con] or None)
    getattr(cons, "watch_keys", {}).pop(con, None)  # keep the index in step


def normalised(cons: Connections, conns) -> list:
    """The trie's items with each connection named by its position in `conns`."""
    index = {id(c): n for n, c in enumerate(conns)}
    return [(k, ws if ws is None else [(index[c], p, t) for c, p, t in ws])
            for k, ws in trie_items(cons)]


@pytest.mark.parametrize("seed", range(20))
def test_indexed_removal_leaves_the_trie_the_whole_trie_map_leaves(seed):
    """Same trie (so same fire order and CONTROL output) as the original's Trie.map."""
    rnd = random.Random(seed)
    worlds = [Cons(), Cons()]
    try:
        conns = [[w.new() for _ in range(4)] for w in worlds]
        paths = ["/a", "/a/b", "/a/b/c", "/a/d", "x", "x/y", "@releaseDomain", "/local/domain/0/x"]
        for _ in range(300):
            op, i = rnd.random(), rnd.randrange(4)
            path, token = rnd.choice(paths), rnd.choice([b"t1", b"t2"])
            for n, (w, cs) in enumerate(zip(worlds, conns)):
                if op < 0.6:
                    try:
                        w.cons.add_watch(cs[i], path, token)
                    except Exception:  # AlreadyExist
                        pass
                elif op < 0.85:
                    try:
                        w.cons.del_watch(cs[i], path, token)
                    except KeyError:
                        pass
                elif n == 0:
                    w.cons.del_watches(cs[i])
                else:
                    reference_del_watches(w.cons, cs[i])
            assert normalised(worlds[0].cons, conns[0]) == normalised(worlds[1].cons, conns[1])
        assert any(ws for _, ws in trie_items(worlds[0].cons))
    finally:
        for w in worlds:
            w.close()


def test_a_refused_reply_raises_even_under_python_O(tmp_path):
    """connection.ml asserts the reply was queued; `assert` would vanish under -O."""
    import subprocess
    code = (
        "import socket\n"
        "from oxsd.config import Settings\n"
        "from oxsd.connections import Connections\n"
        "from oxsd.logging_ import AccessLog\n"
        "from oxsd.xb.op import Op\n"
        "cons = Connections(Settings(), AccessLog.disabled())\n"
        "a, b = socket.socketpair()\n"
        "con = cons.add_anonymous(a)\n"
        "class Full:\n"
        "    def queue(self, pkt): return False\n"
        "con.xb = Full()\n"
        "try:\n"
        "    con.send_reply(0, 1, Op.READ, b'x')\n"
        "except RuntimeError as e:\n"
        "    print('refused:', e)\n"
        "else:\n"
        "    print('silently dropped')\n")
    import os
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    out = subprocess.run([sys.executable, "-O", "-c", code], capture_output=True, text=True,
                         cwd=root, timeout=60)
    assert out.stdout.strip() == "refused: reply refused by the output queue", out.stderr
