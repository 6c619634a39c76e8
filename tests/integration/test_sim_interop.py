"""oxsd's sim tooling (oxsd.sim) against the OCaml reference oxenstored 4.17 on a sim dir.

The interoperability half of the sim dir contract (oxsd/sim/layout.py): the
sim dir, guests, rings and clients made by oxsd are served by Debian's oxenstored running on the fake
libraries.  Needs root (the launcher uses `unshare -m`) and the built
reference, which the session fixture `xensim` (tests/conftest.py) builds.
"""
from __future__ import annotations

import os
import shutil
import tempfile
import time

import pytest

from oxsd.sim import cli
from oxsd.sim.client import SocketClient, XsError
from oxsd.sim.guest import Guest, Sim, dom0_ring_client

LAZY_TIMEOUT = 45.0  # the ring scan runs inside periodic_ops: at most every 15 s


@pytest.fixture(scope="module")
def X(xensim):
    """The reference kit's xensim, built (or the test skipped/failed) by the session fixture."""
    return xensim


@pytest.fixture(scope="module")
def daemon(X):
    """The reference daemon on a sim dir created by oxsd's Sim; short paths (AF_UNIX)."""
    simdir = tempfile.mkdtemp(prefix="oxi", dir="/tmp")
    scratch = tempfile.mkdtemp(prefix="oxr", dir="/tmp")
    sim = Sim(simdir)
    ox = X.start_oxenstored(simdir, scratch, ring_scan_interval=1)
    d0 = SocketClient(ox.socket_path)
    yield sim, ox, d0
    d0.close()
    ox.stop()
    sim.close()
    shutil.rmtree(simdir, ignore_errors=True)
    shutil.rmtree(scratch, ignore_errors=True)


def introduce(d0, g):
    home = f"/local/domain/{g.domid}"
    d0.mkdir(home)
    d0.set_perms(home, [f"n{g.domid}", "r0"])
    d0.introduce(g.domid, g.mfn, g.port)


def test_socket_client_ops_against_reference(daemon):
    sim, ox, d0 = daemon
    d0.write("/interop/a", "1")
    assert d0.read("/interop/a") == b"1"
    assert d0.directory("/interop") == ["a"]
    d0.set_perms("/interop/a", ["n0", "r3"])
    assert d0.get_perms("/interop/a") == ["n0", "r3"]
    tx = d0.transaction_start()
    d0.write("/interop/b", b"\x00\xff", tx)
    d0.transaction_end(tx)
    assert d0.read("/interop/b") == b"\x00\xff"
    with pytest.raises(XsError) as ei:
        d0.read("/interop/missing")
    assert ei.value.err == "ENOENT"
    assert d0.get_domain_path(7) == "/local/domain/7"
    assert d0.is_introduced(0)
    # pipelining: two requests in flight, replies matched by req_id
    r1 = d0.send(2, b"/interop/a\0")
    r2 = d0.send(2, b"/interop/b\0")
    assert d0.recv_reply(r2, 5)[2] == b"\x00\xff" and d0.recv_reply(r1, 5)[2] == b"1"


def test_guest_from_oxsd_tooling_is_served_over_the_ring(daemon):
    sim, ox, d0 = daemon
    g = Guest(sim, 5)
    try:
        introduce(d0, g)
        assert d0.is_introduced(5)
        g.write("data/x", "1")  # relative to /local/domain/5
        assert g.read("data/x") == b"1"
        assert d0.read("/local/domain/5/data/x") == b"1"
        g.watch("data", "tok")
        assert g.wait_watch(5) == ("data", "tok")  # the initial event
        d0.write("/local/domain/5/data/y", "v")
        assert g.wait_watch(5) == ("data/y", "tok")
        with pytest.raises(XsError) as ei:
            g.read("/local/domain/0/nope")
        assert ei.value.err in ("ENOENT", "EACCES")
        assert g.ring.server_features == 1  # the daemon advertised RECONNECTION
        # Events the guest did not have to wait for are still queued on its handle.
        assert g.notifies > 0 and g.events_seen + len(g.evtchn.drain()) > 0
    finally:
        g.close()


def test_dom0_ring_client_is_served(daemon):
    sim, ox, d0 = daemon
    d0.write("/interop/dom0ring", "r")
    c = dom0_ring_client(sim)
    try:
        assert c.read("/interop/dom0ring") == b"r"
        c.write("/interop/fromring", "z")
        assert d0.read("/interop/fromring") == b"z"
    finally:
        c.close()
    assert os.path.exists(sim.port_file(0, sim.xsd_port))  # still dom0's port


def test_lazy_guest_is_answered_after_the_ring_scan(daemon):
    sim, ox, d0 = daemon
    g = Guest(sim, 6, lazy=True)
    try:
        introduce(d0, g)
        d0.write("/local/domain/6/lazy", "yes")
        t0 = time.monotonic()
        assert g.request(2, b"lazy\0", timeout=LAZY_TIMEOUT) == b"yes"
        assert time.monotonic() - t0 < LAZY_TIMEOUT
        assert g.notifies == 0  # answered without a single event from the guest
        assert "found lazy domain 6" in ox.log()
    finally:
        g.close()


def test_shutdown_then_destroy_fire_release_domain(daemon):
    sim, ox, d0 = daemon
    g = Guest(sim, 7)
    w = SocketClient(ox.socket_path)
    try:
        introduce(d0, g)
        g.write("alive", "1")
        w.watch("@releaseDomain", "rel")
        assert w.wait_watch(5) == ("@releaseDomain", "rel")
        sim.shutdown_domain(7, 2)
        assert w.wait_watch(10) == ("@releaseDomain", "rel")
        assert g.read("alive") == b"1"  # a shut-down domain is still served
        sim.destroy_domain(7)
        assert w.wait_watch(10) == ("@releaseDomain", "rel")
        deadline = time.monotonic() + 10
        while sim.read_port(7, g.port).kind != "unbound" and time.monotonic() < deadline:
            time.sleep(0.01)
        assert sim.read_port(7, g.port).kind == "unbound"  # the daemon unbound its end
        assert not d0.is_introduced(7)
        with pytest.raises(XsError):
            d0.read("/local/domain/7")  # nodes owned by the domain were removed
    finally:
        w.close()
        g.close()


def test_cli_guest_introduces_itself_and_runs_commands(daemon, capsys):
    sim, ox, d0 = daemon
    d0.mkdir("/local/domain/8")
    d0.set_perms("/local/domain/8", ["n8", "r0"])
    rc = cli.main([sim.root, "guest", "8", "--introduce", ox.socket_path, "--timeout", "10",
                   "-c", "write data/x 1", "-c", "read data/x", "-c", "getperms data/x"])
    out = capsys.readouterr().out.splitlines()
    assert rc == 0
    assert out[0].startswith("domid=8 mfn=") and out[1:] == ["1", "n8 r0"]
    assert d0.read("/local/domain/8/data/x") == b"1"
