"""Protocol level 4.22 (docs/protocol-4.22.md), over the socket and a guest's ring.

Each op as docs/misc/xenstore.txt describes it, with C xenstored (xen
master, tools/xenstored/) deciding what the text leaves open; DIRECTORY_PART
is compared byte for byte with Debian's C xenstored 4.17 of the reference kit.
At the default level (4.17) the new ops are ENOSYS and WATCH takes no depth,
as oxenstored 4.17 (the corpus, tests/scenarios, checks the rest).  At 4.22
the corpus is the original's but where a scenario uses what 4.22 adds
(a few scenarios here; the whole corpus: docs/protocol-4.22.md).

Needs root and the reference kit (skipped with the reason otherwise, failing
under CI=true).
"""
from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import List, Tuple

import pytest

from oxsd.diff.cli import diff_scenario, main as diff_main
from oxsd.diff.daemons import DaemonSettings, make_scratch
from oxsd.diff.guests import SimGuests
from oxsd.diff.scenario import load

XS_WATCH = 4
XS_DIRECTORY_PART, XS_GET_FEATURE, XS_SET_FEATURE, XS_GET_QUOTA, XS_SET_QUOTA = range(22, 27)
WAIT = 10.0
LEVEL_422 = DaemonSettings(extra_args=["--protocol-level", "4.22"])
ANY = 0x7FF5  # xen.h DOMID_ANY, as a permission entry's domid: 32757


def _z(*args: str) -> bytes:
    return b"".join(a.encode() + b"\0" for a in args)


def _err(xensim, fn) -> str:
    with pytest.raises(xensim.XsError) as e:
        fn()
    return e.value.err


def part(c, path: str, off) -> Tuple[bytes, bytes]:
    """(gencnt, the rest of the payload) of one DIRECTORY_PART."""
    data = c.request(XS_DIRECTORY_PART, _z(path, str(off)))
    gen, rest = data.split(b"\0", 1)
    assert gen.isdigit(), data
    return gen, rest


def list_all(c, path: str, between=lambda n: None) -> Tuple[List[str], int, int]:
    """List `path` as libxenstore's xs_directory_part does: restart when gencnt changes.

    Returns (names, parts requested, restarts); `between(n)` runs after the n-th part."""
    parts = restarts = 0
    while True:
        off, gen, names = 0, None, b""
        while True:
            g, rest = part(c, path, off)
            parts += 1
            between(parts)
            assert len(rest) + len(g) + 1 <= 4096
            if gen is None:
                gen = g
            elif g != gen:
                break
            if rest.endswith(b"\0\0") or rest == b"\0":  # the last part: one more NUL
                names += rest[:-1]
                return [n.decode() for n in names.split(b"\0")[:-1]], parts, restarts
            names += rest
            off += len(rest)
        restarts += 1


def _wait_until(pred, what: str) -> None:
    deadline = time.monotonic() + WAIT
    while not pred():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def _guest(xensim, daemon, d0, domid: int, introduce: bool = True):
    g = xensim.Guest(xensim.Sim(str(daemon.sim_dir)), domid)
    home = f"/local/domain/{domid}"
    d0.mkdir(home)
    d0.set_perms(home, [f"n{domid}", "r0"])
    if introduce:
        d0.introduce(domid, g.mfn, g.port)
    return g


@pytest.fixture
def new(start, xensim):
    """An oxsd at level 4.22, its dom0 socket client, and a factory of introduced guests."""
    daemon = start("oxsd", LEVEL_422)
    d0 = xensim.SocketClient(daemon.socket_path)
    guests = []

    def guest(domid: int, introduce: bool = True):
        g = _guest(xensim, daemon, d0, domid, introduce)
        guests.append(g)
        return g

    yield daemon, d0, guest
    for g in guests:
        g.close()
    d0.close()


# -- the default level: nothing new ---------------------------------------------------

def test_default_level_answers_the_new_ops_enosys_and_takes_no_depth(start, xensim):
    daemon = start("oxsd")
    d0 = xensim.SocketClient(daemon.socket_path)
    g = _guest(xensim, daemon, d0, 5)
    try:
        for c in (d0, g):
            # (not empty: 4.17 answers an empty payload only when the next packet comes)
            for op, payload in ((XS_DIRECTORY_PART, _z("/", "0")), (XS_GET_FEATURE, _z("5")),
                                (XS_SET_FEATURE, _z("5", "0")), (XS_GET_QUOTA, _z("nodes")),
                                (XS_SET_QUOTA, _z("nodes", "5"))):
                assert _err(xensim, lambda: c.request(op, payload)) == "ENOSYS"
            assert _err(xensim, lambda: c.request(XS_WATCH, _z("/a", "t", "1"))) == "EINVAL"
        assert g.ring.server_features == 1  # RECONNECTION only, as oxenstored 4.17
        # DOMID_ANY is just a domid no one connects as
        d0.write("/pub", "v")
        d0.set_perms("/pub", ["n0", f"r{ANY}"])
        assert _err(xensim, lambda: g.read("/pub")) == "EACCES"
    finally:
        g.close()
        d0.close()


# -- DIRECTORY_PART ---------------------------------------------------------------------

def test_directory_part_small_directory_offsets_and_errors(new, xensim):
    daemon, d0, guest = new
    for name in ("aa", "b", "ccc"):
        d0.write(f"/d/{name}", "")
    gen, rest = part(d0, "/d", 0)
    assert rest == b"aa\0b\0ccc\0\0"  # the whole list, then one more NUL: the last part
    assert part(d0, "/d", 3) == (gen, b"b\0ccc\0\0")  # a byte offset into the list
    assert part(d0, "/d", 1) == (gen, b"a\0b\0ccc\0\0")  # mid-name: from that byte, as C
    assert part(d0, "/d", 9) == (gen, b"\0")  # at the end: an empty list
    assert part(d0, "/d", 10000) == (gen, b"\0")  # past the end
    assert part(d0, "/d", -1) == (gen, b"\0")  # C: unsigned, so far past the end
    assert part(d0, "/d/aa", 0)[1] == b"\0"  # no children
    assert _err(xensim, lambda: part(d0, "/nope", 0)) == "ENOENT"
    assert _err(xensim, lambda: d0.request(XS_DIRECTORY_PART, _z("/d"))) == "EINVAL"
    assert _err(xensim, lambda: d0.request(XS_DIRECTORY_PART, b"/d\x000")) == "EINVAL"
    # the same generation while the list stays, another one once it changes
    d0.write("/d/aa", "a value")  # a child's value is not the list
    assert part(d0, "/d", 0)[0] == gen
    d0.write("/d/dd", "")
    gen2, rest = part(d0, "/d", 0)
    assert gen2 != gen and rest == b"aa\0b\0ccc\0dd\0\0"
    d0.rm("/d/dd")
    assert part(d0, "/d", 0)[0] not in (gen2,)
    # a guest: relative paths, its permissions
    g = guest(5)
    g.write("data/x", "1")
    assert part(g, "data", 0)[1] == b"x\0\0"
    d0.set_perms("/d", ["n0"])
    assert _err(xensim, lambda: part(g, "/d", 0)) == "EACCES"


def test_directory_part_in_a_transaction_sees_the_transaction(new, xensim):
    daemon, d0, guest = new
    d0.write("/t/a", "")
    tx = d0.transaction_start()
    d0.write("/t/b", "", tx)
    data = d0.request(XS_DIRECTORY_PART, _z("/t", "0"), tx)
    assert data.split(b"\0", 1)[1] == b"a\0b\0\0"
    assert part(d0, "/t", 0)[1] == b"a\0\0"
    d0.transaction_end(tx)
    assert part(d0, "/t", 0)[1] == b"a\0b\0\0"


def test_a_directory_changing_between_parts_changes_the_generation(new):
    daemon, d0, guest = new
    names = [f"entry-{i:04d}-{'x' * 20}" for i in range(600)]  # ~17 KB: five parts
    for n in names:
        d0.write(f"/big/{n}", "")

    def add_one(n):
        if n == 2:
            d0.write("/big/added-in-between", "")

    got, parts, restarts = list_all(d0, "/big", add_one)
    assert restarts == 1 and parts > 5
    assert got == sorted(names + ["added-in-between"])


def test_a_guest_lists_5000_entries_over_its_ring_and_gets_each_name_once(new):
    daemon, d0, guest = new
    g = guest(5)
    d0.mkdir("/local/domain/5/many")
    names = [f"n{i}" for i in range(5000)]
    for n in names:
        d0.write(f"/local/domain/5/many/{n}", "")
    d0.set_perms("/local/domain/5/many", ["n5", "r0"])
    got, parts, restarts = list_all(g, "many")
    assert restarts == 0 and parts >= 7  # ~29 KB of names, < 4 KB a part
    assert len(got) == len(set(got)) == 5000
    assert sorted(got) == sorted(names)
    # the order of DIRECTORY, which is too big for the ring (E2BIG) but not for a socket
    assert got == d0.directory("/local/domain/5/many")


def test_directory_part_edge_cases_over_a_guest_ring(new, xensim):
    """Offset at and past the end, and a directory changing between parts, on a ring."""
    daemon, d0, guest = new
    g = guest(5)
    for name in ("aa", "b"):
        g.write(f"data/d/{name}", "")
    gen, rest = part(g, "data/d", 0)
    assert rest == b"aa\0b\0\0"
    assert part(g, "data/d", 3) == (gen, b"b\0\0")
    for off in (5, 6, 10000, 1 << 31, -1):  # the list is 5 bytes long
        assert part(g, "data/d", off) == (gen, b"\0")
    assert _err(xensim, lambda: part(g, "data/nope", 0)) == "ENOENT"
    names = [f"entry-{i:04d}-{'x' * 20}" for i in range(600)]  # ~17 KB: five parts
    for n in names:
        d0.write(f"/local/domain/5/big/{n}", "")  # inherits n5 r0: the guest's

    def add_one(n):
        if n == 2:  # another connection changes the list while the guest reads it
            d0.write("/local/domain/5/big/added-in-between", "")

    got, parts, restarts = list_all(g, "big", add_one)
    assert restarts == 1 and parts > 5
    assert got == sorted(names + ["added-in-between"])


def _start_cxenstored(xensim):
    sim_root = make_scratch("oxt-cx-sim-")
    scratch = make_scratch("oxt-cx-")
    sim = xensim.Sim(str(sim_root))
    cx = xensim.start_oxenstored(sim, str(scratch), daemon="cxenstored",
                                 extra_args=["--entry-size", "65536"])
    return cx, sim_root, scratch


def test_directory_part_is_byte_identical_to_c_xenstored_4_17(new, xensim):
    """Parts for the same child list, C xenstored 4.17 against oxsd 4.22, but the gencnt:
    C's counts every node write of the whole store; the test checks what xenstore.txt
    promises of it instead (the same while the list stays, another once it changes)."""
    daemon, d0, guest = new
    cx, sim_root, scratch = _start_cxenstored(xensim)
    c0 = xensim.SocketClient(cx.socket_path)
    try:
        names = [f"k{i:05d}-{'y' * (i % 37)}" for i in range(400)]  # sorted = insertion order
        for c in (d0, c0):
            for n in names:
                c.write(f"/cmp/{n}", "v")
            c.mkdir("/cmp/zz-empty")
        names.append("zz-empty")
        total = sum(len(n) + 1 for n in names)
        # Where a part is cut depends on the length of the gencnt before it (C's maxlen):
        # move oxsd's counter on (listing a changing scratch node) until the first
        # listing of /cmp gets as many digits as C's gencnt of /cmp.
        want, bumps = len(part(c0, "/cmp", 0)[0]), 0
        while len(str(int(part(d0, "/bump", 0)[0] if bumps else b"0") + 1)) < want:
            bumps += 1
            d0.write(f"/bump/{bumps}", "")
        for path in ("/cmp", "/cmp/zz-empty", "/cmp/k00000-"):
            for off in (0, 1, 7, 4000, 4085, total - 3, total - 1, total, total + 1, 1 << 20):
                (g1, ours), (g2, theirs) = part(d0, path, off), part(c0, path, off)
                assert ours == theirs, (path, off)
                assert path != "/cmp" or len(g1) == len(g2)
        # a whole listing: the same parts
        off = 0
        while True:
            ours, theirs = part(d0, "/cmp", off)[1], part(c0, "/cmp", off)[1]
            assert ours == theirs, off
            if ours.endswith(b"\0\0") or ours == b"\0":
                break
            off += len(ours)
        assert off > 2 * 4000  # three parts at least
        # generation counts behave alike
        for c in (d0, c0):
            g1 = part(c, "/cmp", 0)[0]
            assert part(c, "/cmp", 100)[0] == g1
            c.write("/cmp/zzz", "")
            assert part(c, "/cmp", 100)[0] != g1
        for payload in (_z("/cmp"), _z("/nope", "0")):
            assert (_err(xensim, lambda: d0.request(XS_DIRECTORY_PART, payload))
                    == _err(xensim, lambda: c0.request(XS_DIRECTORY_PART, payload)))
    finally:
        c0.close()
        cx.stop()
        shutil.rmtree(scratch, ignore_errors=True)
        shutil.rmtree(sim_root, ignore_errors=True)


# -- GET_FEATURE / SET_FEATURE and the ring ------------------------------------------------

def test_features_get_set_and_the_ring(new, xensim):
    daemon, d0, guest = new
    assert d0.request(XS_GET_FEATURE) == b"15\0"  # RECONNECTION | ERROR | WATCHDEPTH | DOMID_ANY
    g5 = guest(5)
    assert g5.ring.server_features == 15
    assert g5.request(XS_GET_FEATURE) == b"15\0"
    assert d0.request(XS_GET_FEATURE, _z("5")) == b"15\0"
    assert _err(xensim, lambda: g5.request(XS_GET_FEATURE, _z("5"))) == "EACCES"
    assert _err(xensim, lambda: g5.request(XS_SET_FEATURE, _z("6", "1"))) == "EACCES"
    assert _err(xensim, lambda: d0.request(XS_SET_FEATURE, _z("5", "1"))) == "EBUSY"
    g6 = guest(6, introduce=False)  # the hypervisor knows it; not introduced yet
    assert _err(xensim, lambda: d0.request(XS_SET_FEATURE, _z("6", "16"))) == "EINVAL"  # unknown
    assert _err(xensim, lambda: d0.request(XS_SET_FEATURE, _z("6"))) == "EINVAL"
    assert _err(xensim, lambda: d0.request(XS_SET_FEATURE, _z("x6", "1"))) == "EINVAL"
    assert _err(xensim, lambda: d0.request(XS_SET_FEATURE, _z("77", "1"))) == "ENOENT"
    assert _err(xensim, lambda: d0.request(XS_GET_FEATURE, _z("77"))) == "ENOENT"
    assert _err(xensim, lambda: d0.request(XS_GET_FEATURE, _z("5", "6"))) == "EINVAL"
    assert d0.request(XS_SET_FEATURE, _z("6", "1")) == b"OK\0"
    assert d0.request(XS_GET_FEATURE, _z("6")) == b"1\0"
    d0.introduce(6, g6.mfn, g6.port)
    assert g6.ring.server_features == 1
    assert g6.request(XS_GET_FEATURE) == b"1\0"
    # without WATCHDEPTH a depth is an error, as C xenstored
    assert _err(xensim, lambda: g6.request(XS_WATCH, _z("data", "t", "1"))) == "EINVAL"
    # without ERROR the error field stays 0; with it a corrupt ring is reported
    for g, expected in ((g6, 0), (g5, 2)):  # XENSTORE_ERROR_RINGIDX
        g.ring._set(2052, g.ring.req_cons + 5000)  # req_prod far past req_cons
        g.client.notify()
    _wait_until(lambda: g5.ring.error == 2, "the error field of guest 5")
    _wait_until(lambda: "bad client D6" in daemon.log_path.read_text(errors="replace"),
                "guest 6 marked bad")
    assert g6.ring.error == 0
    assert d0.read("/local/domain/5") == b""  # the daemon serves on


# -- DOMID_ANY in permissions ---------------------------------------------------------------

def test_domid_any_counts_for_every_domain_when_the_writer_has_the_feature(new, xensim):
    """core.c perm_allows_conn, domain.c domain_alloc_permrefs, over the socket and rings."""
    daemon, d0, guest = new
    g5 = guest(5)
    g6 = guest(6, introduce=False)
    assert d0.request(XS_SET_FEATURE, _z("6", "7")) == b"OK\0"  # all but DOMID_ANY
    d0.introduce(6, g6.mfn, g6.port)
    assert g6.ring.server_features == 7
    g7 = guest(7)
    # set over the socket (dom0 has every feature): any domain reads, none writes
    d0.write("/pub", "v")
    d0.set_perms("/pub", ["n0", f"r{ANY}"])
    assert d0.get_perms("/pub") == ["n0", f"r{ANY}"]
    for g in (g5, g6, g7):
        assert g.read("/pub") == b"v"
        assert _err(xensim, lambda: g.write("/pub", "x")) == "EACCES"
    d0.write("/pub/child", "c")  # a new node inherits the record, DOMID_ANY included
    assert g7.read("/pub/child") == b"c"
    assert g7.get_perms("/pub/child") == ["n0", f"r{ANY}"]
    g5.watch("/pub/child", "p")
    assert g5.wait_watch(5) == ("/pub/child", "p")
    d0.write("/pub/child", "c2")
    assert _events(g5) == [("/pub/child", "p")]  # the watch filter is the same check
    # the first matching entry wins, DOMID_ANY matching all
    d0.set_perms("/pub", ["n0", "n7", f"b{ANY}"])
    assert _err(xensim, lambda: g7.read("/pub")) == "EACCES"
    g5.write("/pub", "by 5")
    # the owner DOMID_ANY: every domain has the owner's rights; none may give it away
    d0.write("/common", "")
    d0.set_perms("/common", [f"n{ANY}"])
    g5.write("/common/from5", "x")
    g7.set_perms("/common", [f"n{ANY}", "r0"])
    assert _err(xensim, lambda: g7.set_perms("/common", ["n7"])) == "EACCES"  # oxenstored's rule
    # set over a guest's ring, with the feature
    g5.write("data/open", "5")
    g5.set_perms("data/open", ["n5", f"r{ANY}"])
    assert g7.read("/local/domain/5/data/open") == b"5"
    # from a guest without the feature: the entry is kept but ignored, the owner refused
    g6.write("data/closed", "6")
    g6.set_perms("data/closed", ["n6", f"r{ANY}"])
    assert g6.get_perms("data/closed") == ["n6", f"r{ANY}"]
    assert _err(xensim, lambda: g5.read("/local/domain/6/data/closed")) == "EACCES"
    assert _err(xensim, lambda: g6.set_perms("data/closed", [f"n{ANY}"])) == "ENOENT"
    g5.watch("/local/domain/6/data/closed", "c")
    assert g5.wait_watch(5) == ("/local/domain/6/data/closed", "c")  # the first: unchecked
    g6.write("data/closed", "again")
    assert _events(g5) == []
    # the same perms set again by dom0 count
    d0.set_perms("/local/domain/6/data/closed", ["n6", f"r{ANY}"])
    assert g5.read("/local/domain/6/data/closed") == b"again"
    # a released domain takes its own entries along, never DOMID_ANY's (domain.c
    # domain_adjust_node_perms)
    d0.set_perms("/pub", ["n0", "r6", f"r{ANY}"])
    d0.release(6)
    assert d0.get_perms("/pub") == ["n0", f"r{ANY}"]
    assert g7.read("/pub") == b"by 5"


def test_release_domain_opened_to_every_domain_with_domid_any(new, xensim):
    """C master starts @releaseDomain as n0 r<DOMID_ANY> (core.c setup_structure); oxsd
    keeps oxenstored's n0 (the tree of every 4.17 scenario shows it), dom0 sets C's."""
    daemon, d0, guest = new
    g5, g6 = guest(5), guest(6)
    assert d0.get_perms("@releaseDomain") == ["n0"]
    g5.watch("@releaseDomain", "all")
    g5.watch("@releaseDomain/6", "six")
    assert len(_events(g5)) == 2  # the initial events
    d0.release(6)
    assert _events(g5) == []  # n0: dom0's only
    d0.set_perms("@releaseDomain", ["n0", f"r{ANY}"])
    g7 = guest(7)
    d0.release(7)
    assert _events(g5) == [("@releaseDomain", "all")]
    g5.watch("@releaseDomain/8", "eight")
    assert len(_events(g5)) == 1
    guest(8)
    d0.release(8)
    assert sorted(_events(g5)) == [("@releaseDomain", "all"), ("@releaseDomain/8", "eight")]
    del g6, g7


# -- GET_QUOTA / SET_QUOTA ------------------------------------------------------------------

def test_quotas_get_set_and_enforced_per_domain(new, xensim):
    daemon, d0, guest = new
    assert d0.request(XS_GET_QUOTA) == (b"nodes watches outstanding memory soft-memory "
                                        b"transactions transaction-nodes node-permissions "
                                        b"path-max node-size\0")  # C master's, in its order
    assert d0.request(XS_GET_QUOTA, _z("nodes")) == b"1000\0"  # Debian's quota-maxentity
    g = guest(5)
    h = guest(6)
    assert _err(xensim, lambda: g.request(XS_GET_QUOTA)) == "EACCES"
    assert _err(xensim, lambda: g.request(XS_SET_QUOTA, _z("5", "nodes", "1"))) == "EACCES"
    assert _err(xensim, lambda: d0.request(XS_GET_QUOTA, _z("5", "bogus"))) == "EINVAL"
    assert _err(xensim, lambda: d0.request(XS_GET_QUOTA, _z("5", "nodes", "1"))) == "EINVAL"
    assert _err(xensim, lambda: d0.request(XS_SET_QUOTA, _z("nodes"))) == "EINVAL"
    assert _err(xensim, lambda: d0.request(XS_SET_QUOTA, _z("5", "nodes", "-1"))) == "EINVAL"
    assert _err(xensim, lambda: d0.request(XS_SET_QUOTA, _z("77", "nodes", "1"))) == "ENOENT"
    assert d0.request(XS_GET_QUOTA, _z("5", "nodes")) == b"1000\0"  # the global one
    for i in range(4):
        g.write(f"data/n{i}", "x")  # guest 5 owns 6 nodes: its home, data, n0..n3
    # a quota below the current use: nothing goes, nothing new comes
    assert d0.request(XS_SET_QUOTA, _z("5", "nodes", "2")) == b"OK\0"
    assert d0.request(XS_GET_QUOTA, _z("5", "nodes")) == b"2\0"
    assert _err(xensim, lambda: g.write("data/n9", "x")) == "ENOSPC"
    g.write("data/n0", "overwritten")  # no new node
    assert g.read("data/n0") == b"overwritten"
    for i in range(4):
        g.rm(f"data/n{i}")  # 2 left: still no room for a third
    assert _err(xensim, lambda: g.write("data/n9", "x")) == "ENOSPC"
    assert d0.request(XS_SET_QUOTA, _z("5", "nodes", "4")) == b"OK\0"
    g.write("data/n9", "x")
    g.write("data/n10", "x")
    assert _err(xensim, lambda: g.write("data/n11", "x")) == "ENOSPC"
    h.write("data/free", "x")  # guest 6 keeps the global quota
    assert d0.request(XS_SET_QUOTA, _z("5", "nodes", "0")) == b"OK\0"  # 0: no limit
    g.write("data/n11", "x")
    # node-size: E2BIG, as C xenstored (and as oxenstored's global maxsize)
    assert d0.request(XS_SET_QUOTA, _z("5", "node-size", "4")) == b"OK\0"
    assert _err(xensim, lambda: g.write("data/big", "12345")) == "E2BIG"
    g.write("data/small", "1234")
    # watches and transactions: ENOSPC past the per-domain value
    assert d0.request(XS_SET_QUOTA, _z("5", "watches", "1")) == b"OK\0"
    g.watch("data", "t1")
    assert g.wait_watch(5) == ("data", "t1")
    assert _err(xensim, lambda: g.watch("data", "t2")) == "ENOSPC"
    assert _err(xensim, lambda: g.watch("data", "t1")) == "EEXIST"
    assert d0.request(XS_SET_QUOTA, _z("5", "transactions", "1")) == b"OK\0"
    tx = g.transaction_start()
    assert _err(xensim, lambda: g.transaction_start()) == "ENOSPC"
    g.transaction_end(tx, False)
    g.transaction_end(g.transaction_start(), False)
    # the global value: GET gives it back, domains without their own follow it
    assert d0.request(XS_SET_QUOTA, _z("watches", "2")) == b"OK\0"
    assert d0.request(XS_GET_QUOTA, _z("watches")) == b"2\0"
    assert d0.request(XS_GET_QUOTA, _z("6", "watches")) == b"2\0"
    assert d0.request(XS_GET_QUOTA, _z("5", "watches")) == b"1\0"
    h.watch("a", "1")
    h.watch("b", "2")
    assert _err(xensim, lambda: h.watch("c", "3")) == "ENOSPC"
    # dom0 is never limited
    assert d0.request(XS_SET_QUOTA, _z("0", "nodes", "1")) == b"OK\0"
    d0.write("/dom0/a", "")
    d0.write("/dom0/b", "")


def test_global_quotas_still_give_equota(new, xensim):
    """A domain without a value of its own is checked as oxenstored checks it: EQUOTA."""
    daemon, d0, guest = new
    g = guest(5)
    for i in range(101):  # Debian's quota-maxwatch = 100, and oxenstored allows one more
        g.watch(f"w{i}", "t")
    assert _err(xensim, lambda: g.watch("w-last", "t")) == "EQUOTA"


def test_quotas_below_current_use_for_watches_and_transactions(new, xensim):
    """Set over dom0's ring and over the socket: what exists stays, growth is refused."""
    daemon, d0, guest = new
    g = guest(5)
    ring0 = xensim.dom0_ring_client(xensim.Sim(str(daemon.sim_dir)))
    try:
        for i in range(3):
            g.watch(f"data/w{i}", "t")
        assert len(_events(g)) == 3
        tx1, tx2 = g.transaction_start(), g.transaction_start()
        assert ring0.request(XS_SET_QUOTA, _z("5", "watches", "1")) == b"OK\0"
        assert d0.request(XS_SET_QUOTA, _z("5", "transactions", "1")) == b"OK\0"
        assert ring0.request(XS_GET_QUOTA, _z("5", "transactions")) == b"1\0"
        g.write("data/w2", "x")
        assert _events(g) == [("data/w2", "t")]  # the watches there still fire
        assert _err(xensim, lambda: g.watch("data/w9", "t")) == "ENOSPC"
        g.unwatch("data/w0", "t")
        g.unwatch("data/w1", "t")
        assert _err(xensim, lambda: g.watch("data/w9", "t")) == "ENOSPC"  # 1 of 1
        g.unwatch("data/w2", "t")
        g.watch("data/w9", "t")
        # both transactions opened before go on and commit
        g.write("data/t1", "1", tx1)
        assert _err(xensim, lambda: g.transaction_start()) == "ENOSPC"
        g.transaction_end(tx1)
        assert _err(xensim, lambda: g.transaction_start()) == "ENOSPC"  # tx2: 1 of 1
        g.write("data/t2", "2", tx2)
        g.transaction_end(tx2)
        assert g.read("data/t1") == b"1" and g.read("data/t2") == b"2"
        g.transaction_end(g.transaction_start(), False)
    finally:
        ring0.handle.close()


def test_every_c_quota_name_is_answered_and_path_and_perm_quotas_are_enforced(new, xensim):
    daemon, d0, guest = new
    g5, g6 = guest(5), guest(6)
    names = d0.request(XS_GET_QUOTA).rstrip(b"\0").decode().split()
    assert len(names) == 10
    for n in names:  # what libxl_retrieve_domain_configuration reads back
        assert d0.request(XS_GET_QUOTA, _z("5", n)).rstrip(b"\0").isdigit()
    for n in ("memory", "soft-memory", "transaction-nodes", "node-permissions"):
        assert d0.request(XS_GET_QUOTA, _z(n)) == b"0\0"  # nothing limits them: 0
    assert _err(xensim, lambda: d0.request(XS_GET_QUOTA, _z("soft-nodes"))) == "EINVAL"
    path_max = int(d0.request(XS_GET_QUOTA, _z("path-max")).rstrip(b"\0"))  # quota-path-max
    # kept and reported as C xenstored does them, without effect here
    for n in ("outstanding", "memory", "soft-memory", "transaction-nodes"):
        assert d0.request(XS_SET_QUOTA, _z("5", n, "1")) == b"OK\0"
        assert d0.request(XS_GET_QUOTA, _z("5", n)) == b"1\0"
    tx = g5.transaction_start()
    for i in range(3):
        g5.write(f"data/tx{i}", "x", tx)
    g5.transaction_end(tx)
    # path-max, measured as quota-path-max (after /local/domain/<domid>/): EINVAL past it
    assert d0.request(XS_SET_QUOTA, _z("5", "path-max", "20")) == b"OK\0"
    g5.write("data/" + "x" * 15, "")  # 20
    for long in ("data/" + "x" * 16, "/local/domain/5/data/" + "x" * 16):
        assert _err(xensim, lambda: g5.write(long, "")) == "EINVAL"
    assert _err(xensim, lambda: part(g5, "data/" + "x" * 16, 0)) == "EINVAL"
    g6.write("data/" + "x" * 16, "")  # guest 6 keeps quota-path-max
    d0.write("/local/domain/5/data/" + "y" * 30, "")  # dom0 is never limited
    assert d0.request(XS_SET_QUOTA, _z("path-max", "30")) == b"OK\0"  # the global value
    assert _err(xensim, lambda: g6.write("data/" + "w" * 26, "")) == "EINVAL"
    g6.write("data/" + "w" * 25, "")
    assert _err(xensim, lambda: g5.write("data/" + "w" * 16, "")) == "EINVAL"  # its own: 20
    assert d0.request(XS_SET_QUOTA, _z("5", "path-max", "0")) == b"OK\0"  # 0: no limit
    g5.write("data/" + "z" * path_max, "")  # longer than quota-path-max
    d0.request(XS_SET_QUOTA, _z("path-max", str(path_max)))
    assert _err(xensim, lambda: g6.write("data/" + "z" * path_max, "")) == "EINVAL"
    # node-permissions: ENOSPC past it, for that domain only
    assert d0.request(XS_SET_QUOTA, _z("5", "node-permissions", "2")) == b"OK\0"
    g5.set_perms("data", ["n5", "r0"])
    assert _err(xensim, lambda: g5.set_perms("data", ["n5", "r0", "r6"])) == "ENOSPC"
    assert g5.get_perms("data") == ["n5", "r0"]
    g6.set_perms("data", ["n6", "r0", "r5"])
    d0.set_perms("/local/domain/5/data", ["n5", "r0", "r6", "r7"])


# -- WATCH <depth> and the domain special watches --------------------------------------------

def _events(c, n_max: int = 20, quiet: float = 0.3) -> List[Tuple[str, str]]:
    """Every event until none came for `quiet` seconds (after a request that flushed them)."""
    c.request(XS_GET_FEATURE)  # its reply comes after the events fired before it
    out = list(c.events)
    c.events.clear()
    while len(out) < n_max:
        e = c.wait_watch(quiet)
        if e is None:
            break
        out.append(e)
    return out


def test_watch_depth_over_socket_and_ring(new, xensim):
    daemon, d0, guest = new
    d0.write("/a/b/c", "")
    for depth in ("0", "1", "2"):
        d0.request(XS_WATCH, _z("/a", f"d{depth}", depth))
    d0.request(XS_WATCH, _z("/", "root1", "1"))
    d0.watch("/a", "all")
    assert sorted(_events(d0)) == sorted([("/a", "d0"), ("/a", "d1"), ("/a", "d2"),
                                          ("/", "root1"), ("/a", "all")])
    d0.write("/a", "v")
    assert sorted(_events(d0)) == sorted([("/a", t) for t in ("d0", "d1", "d2", "all")]
                                         + [("/a", "root1")])
    d0.write("/a/b", "v")
    assert sorted(_events(d0)) == sorted([("/a/b", t) for t in ("d1", "d2", "all")])
    d0.write("/a/b/c", "v")
    assert sorted(_events(d0)) == sorted([("/a/b/c", t) for t in ("d2", "all")])
    d0.write("/a/b/c/d", "v")
    assert _events(d0) == [("/a/b/c/d", "all")]
    assert _err(xensim, lambda: d0.request(XS_WATCH, _z("/a", "neg", "-1"))) == "EINVAL"
    assert _err(xensim, lambda: d0.request(XS_WATCH, _z("/a", "d0", "0"))) == "EEXIST"
    # a guest, relative: depth counts below its relative path too
    g = guest(5)
    g.request(XS_WATCH, _z("data", "g1", "1"))
    g.request(XS_WATCH, _z("data", "g0", "0"))
    assert sorted(_events(g)) == [("data", "g0"), ("data", "g1")]
    g.write("data/x", "1")
    g.write("data/x/y", "1")
    assert _events(g) == [("data/x", "g1")]
    g.write("data", "v")
    assert sorted(_events(g)) == [("data", "g0"), ("data", "g1")]  # depth 0: the node only
    g.request(XS_WATCH, _z("/local/domain/5/data/x", "abs0", "0"))  # absolute, on a ring
    assert _events(g) == [("/local/domain/5/data/x", "abs0")]
    g.write("data/x/y", "2")
    assert _events(g) == []
    g.write("data/x", "2")
    assert sorted(_events(g)) == [("/local/domain/5/data/x", "abs0"), ("data/x", "g1")]


def test_release_and_introduce_domain_watches_with_domid(new, xensim):
    daemon, d0, guest = new
    d0.watch("@releaseDomain", "plain")
    d0.request(XS_WATCH, _z("@releaseDomain", "depth1", "1"))
    d0.watch("@releaseDomain/5", "just5")
    d0.watch("@releaseDomain/7", "just7")
    d0.request(XS_WATCH, _z("@introduceDomain", "intro1", "1"))
    assert len(_events(d0)) == 5  # the initial events
    g5 = guest(5)
    assert _events(d0) == [("@introduceDomain/5", "intro1")]
    d0.release(5)
    assert sorted(_events(d0)) == sorted([("@releaseDomain", "plain"),
                                          ("@releaseDomain/5", "depth1"),
                                          ("@releaseDomain/5", "just5")])
    g6 = guest(6)
    _events(d0)
    xensim.Sim(str(daemon.sim_dir)).destroy_domain(6)  # VIRQ_DOM_EXC: a dead domain
    _wait_until(lambda: not d0.is_introduced(6), "domain 6 cleaned up")
    assert sorted(_events(d0)) == sorted([("@releaseDomain", "plain"),
                                          ("@releaseDomain/6", "depth1")])
    del g5, g6


# -- live update carries the new state ---------------------------------------------------------

def test_live_update_carries_quotas_features_depths_generations_and_domid_any(new, xensim):
    daemon, d0, guest = new
    g = guest(5)
    g6 = guest(6, introduce=False)
    d0.request(XS_SET_FEATURE, _z("6", "1"))
    d0.introduce(6, g6.mfn, g6.port)
    g6.write("data/closed", "6")
    g6.set_perms("data/closed", ["n6", f"r{ANY}"])  # guest 6 lacks DOMID_ANY: ignored
    d0.write("/lu-any/a", "")
    d0.set_perms("/lu-any", ["n0", f"r{ANY}"])
    d0.write("/lu-any/b", "w")  # inherits /lu-any's record; /lu-any/a keeps n0
    assert g.read("/lu-any/b") == b"w"
    d0.request(XS_SET_QUOTA, _z("5", "path-max", "20"))
    d0.request(XS_SET_QUOTA, _z("5", "watches", "3"))
    d0.request(XS_SET_QUOTA, _z("nodes", "900"))
    d0.request(XS_WATCH, _z("/lu", "deep0", "0"))
    assert d0.wait_watch(5) == ("/lu", "deep0")
    d0.write("/lu/a", "")
    gen = part(d0, "/lu", 0)[0]
    pid = daemon.pid
    deadline = time.monotonic() + 30
    while (reply := d0.control("live-update", "-s", "-t", "30")) == b"BUSY":
        assert time.monotonic() < deadline
        time.sleep(0.1)
    assert reply == b"OK" and daemon.pid == pid
    assert "Live reload: database loaded" in daemon.log_path.read_text(errors="replace")
    assert d0.request(XS_GET_FEATURE, _z("6")) == b"1\0"
    assert d0.request(XS_GET_QUOTA, _z("5", "watches")) == b"3\0"
    assert d0.request(XS_GET_QUOTA, _z("nodes")) == b"900\0"
    # the per-path table is not dumped: a listing across the update starts over,
    # with a number never given before it (the counter is dumped)
    after = part(d0, "/lu", 0)[0]
    assert int(after) > int(gen)
    assert part(d0, "/lu", 0)[0] == after
    d0.write("/lu", "v")
    d0.write("/lu/c/d", "")
    assert _events(d0) == [("/lu", "deep0")]  # the depth survived
    # DOMID_ANY: honoured where it was, still ignored where it was
    assert g.read("/lu-any") == b"" and g.read("/lu-any/b") == b"w"
    assert _err(xensim, lambda: g.read("/lu-any/a")) == "EACCES"
    assert _err(xensim, lambda: g.read("/local/domain/6/data/closed")) == "EACCES"
    assert d0.get_perms("/local/domain/6/data/closed") == ["n6", f"r{ANY}"]
    # path-max applies to the restored ring connection
    g.write("data/" + "x" * 15, "")
    assert _err(xensim, lambda: g.write("data/" + "x" * 16, "")) == "EINVAL"


# -- the 4.17 corpus with oxsd at level 4.22 ---------------------------------------------------

SCENARIOS = Path(__file__).resolve().parents[1] / "scenarios"
AT_422 = ["--protocol-level", "4.22"]
# Old ops, guests and their permissions and quotas, watches, the zero-length quirk, the
# dump: the same bytes as the original's (the whole corpus: 40 of 44, docs/protocol-4.22.md).
SAME_AT_422 = ("guests.scn", "setperms.scn", "watches.scn", "framing.scn", "db_dump.scn")


def test_the_417_corpus_is_the_originals_with_oxsd_at_level_422(ocaml_ref, capsys):
    status = diff_main([str(SCENARIOS / n) for n in SAME_AT_422]
                       + ["-q", "--oxsd-args=--protocol-level 4.22"])
    out = capsys.readouterr().out
    assert status == 0 and out.endswith(
        f"{len(SAME_AT_422)} scenarios, {len(SAME_AT_422)} identical, 0 differ\n"), out


def test_at_level_422_the_corpus_differs_only_where_it_uses_the_new_wire(ocaml_ref):
    """ring_page.scn reads the ring's server_features; args_split.scn sends WATCH with a
    third argument, which 4.22 takes as a depth (the other two: docs/protocol-4.22.md)."""
    ring = diff_scenario(load(SCENARIOS / "ring_page.scn"), guests=SimGuests(),
                         keep_different=False, oxsd_args=AT_422)
    assert [d.where for d in ring.differences] == ["connection g"], ring.report()
    changed = [line.strip() for line in ring.differences[0].text.splitlines()
               if line.strip().startswith(("- [", "+ ["))]
    assert changed == [
        "- [line  12] [mark] ring server_features=0x1 connection=0x0 req_cons=0x0 "
        "req_prod=0x0 rsp_cons=0x0 rsp_prod=0x0",
        "+ [line  12] [mark] ring server_features=0xf connection=0x0 req_cons=0x0 "
        "req_prod=0x0 rsp_cons=0x0 rsp_prod=0x0"], ring.report()
    args = diff_scenario(load(SCENARIOS / "args_split.scn"), keep_different=False,
                         oxsd_args=AT_422)
    assert args.first_packet_difference().line == 42, args.report()  # WATCH "/a\0tok\0\0"
    assert "+ [line  42] WATCH rid=29 tx=0 len=3 \"OK\\0\"" in args.report()
