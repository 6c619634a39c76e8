"""oxsd.sim: the daemon-side sim backend against the reference guest side (xensim.py), and
oxsd's own sim tooling against the contract (oxsd/sim/layout.py)."""
from __future__ import annotations

import errno
import importlib
import os
import select
import shutil
import socket
import struct
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest
from support.env import unavailable

from oxsd.evtchn import VIRQ_DOM_EXC, EvtchnError
from oxsd.sim import cli
from oxsd.sim.client import XsError
from oxsd.sim.guest import Guest, Ring, RingError, Sim, dom0_ring_client
from oxsd.sim.hv import SimHypervisor
from oxsd.sim.layout import SimDir, parse_port
from oxsd.xb.op import Op
from oxsd.xb.packet import HEADER
from oxsd.backend import open_backend
from oxsd.hypervisor import Error

REPO = Path(__file__).resolve().parents[2]
REF_DIR = Path(os.environ.get("OCAML_REF") or REPO.parent / "shared" / "ocaml-ref")


@pytest.fixture(scope="module")
def X():
    if not (REF_DIR / "xensim.py").is_file():
        unavailable(f"reference xensim.py not found in {REF_DIR} (set OCAML_REF)")
    sys.path.insert(0, str(REF_DIR))
    try:
        return importlib.import_module("xensim")
    finally:
        sys.path.remove(str(REF_DIR))


@pytest.fixture
def simdir():
    d = tempfile.mkdtemp(prefix="oxs", dir="/tmp")  # short: AF_UNIX paths are <= 107 bytes
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def ref(X, simdir):
    """A reference sim with guest 5; our daemon-side backend on the same dir."""
    sim = X.Sim(simdir)
    g = X.Guest(sim, 5)
    hv = SimHypervisor(simdir, 0)
    h = hv.evtchn_open()
    yield sim, g, hv, h
    h.close()
    g.close()


def wait_pending(h, timeout=2.0):
    """The daemon's way: poll the fd, then pending()."""
    r, _, _ = select.select([h.fd()], [], [], timeout)
    return h.pending() if r else None


# -- event channels: daemon side vs reference guests ------------------------

def test_bind_interdomain_to_reference_guest_rewrites_its_port_file(ref):
    sim, g, hv, h = ref
    local = h.bind_interdomain(5, g.port)
    mine = parse_port(open(hv.sim.port_file(0, local)).read())
    assert (mine.owner, mine.kind, mine.peer_dom, mine.peer_port) == \
        (h.path, "interdomain", 5, g.port)
    theirs = sim.read_port(5, g.port)
    # the guest keeps ownership; its peer is now us
    assert (theirs["owner"], theirs["kind"], theirs["peer_dom"], theirs["peer_port"]) == \
        (g.evtchn.path, "interdomain", 0, local)


def test_notifications_flow_both_ways_with_reference_guest(ref):
    sim, g, hv, h = ref
    local = h.bind_interdomain(5, g.port)
    h.notify(local)
    assert g.evtchn.pending(2.0) == g.port
    g.evtchn.notify(g.port)
    assert wait_pending(h) == local
    assert h.pending() is None  # one event, one datagram
    h.unmask(local)


def test_bind_interdomain_needs_an_unbound_remote_port(ref):
    sim, g, hv, h = ref
    h.bind_interdomain(5, g.port)
    with pytest.raises(EvtchnError) as ei:
        h.bind_interdomain(5, g.port)  # already bound: EINVAL, as in Xen
    assert ei.value.errno == errno.EINVAL
    with pytest.raises(EvtchnError) as ei:
        h.bind_interdomain(5, 999)  # no such port
    assert ei.value.errno == errno.EINVAL


def test_dom_exc_virq_from_reference_destroy_arrives(ref):
    sim, g, hv, h = ref
    virq_port = h.bind_virq(VIRQ_DOM_EXC)
    assert open(hv.sim.virq_file(3)).read() == f"0:{virq_port}\n"
    sim.destroy_domain(5)
    assert wait_pending(h) == virq_port
    with pytest.raises(Error):
        hv.domain_getinfo(5)


def test_unbind_gives_the_guest_port_back_unbound_and_drops_virq(ref):
    sim, g, hv, h = ref
    local = h.bind_interdomain(5, g.port)
    virq_port = h.bind_virq(VIRQ_DOM_EXC)
    h.unbind(local)
    h.unbind(virq_port)
    assert sim.read_port(5, g.port)["kind"] == "unbound"
    assert not os.path.exists(hv.sim.port_file(0, local))
    assert not os.path.exists(hv.sim.virq_file(3))
    with pytest.raises(EvtchnError) as ei:
        h.unbind(local)  # not ours any more
    assert ei.value.errno == errno.EINVAL


def test_close_unbinds_every_port_and_removes_the_socket(ref):
    sim, g, hv, h = ref
    local = h.bind_interdomain(5, g.port)
    h.close()
    assert sim.read_port(5, g.port)["kind"] == "unbound"
    assert not os.path.exists(hv.sim.port_file(0, local))
    assert not os.path.exists(h.path)


def test_daemon_notify_never_blocks_on_a_guest_that_stopped_reading(ref):
    sim, g, hv, h = ref
    local = h.bind_interdomain(5, g.port)
    t0 = time.monotonic()
    for _ in range(200):  # far beyond net.unix.max_dgram_qlen
        h.notify(local)
    assert time.monotonic() - t0 < 0.5
    assert g.evtchn.drain()  # the queued ones are there; the rest were coalesced


def test_notify_to_a_closed_peer_is_dropped_silently(X, ref):
    sim, g, hv, h = ref
    local = h.bind_interdomain(5, g.port)
    g.evtchn.sock.close()  # the guest process "died": files stay, nobody listens
    h.notify(local)  # no exception: Xen's notify succeeds whatever the peer does
    h.notify(local)
    assert sim.read_port(0, local)["kind"] == "interdomain"  # nothing was unbound
    # Dropped, not parked: a guest that binds the port afterwards sees no old event,
    # and the next notify reaches it.
    other = X.EvtchnHandle(sim, 5)
    try:
        sim.write_port(5, g.port, other.path, f"0:{local}")
        assert other.pending(0.2) is None
        h.notify(local)
        assert other.pending(2.0) == g.port
    finally:
        other.close(unbind=False)


def test_notify_reroutes_once_when_the_cached_owner_is_gone(X, ref):
    sim, g, hv, h = ref
    local = h.bind_interdomain(5, g.port)
    h.notify(local)  # caches the route to g's socket
    assert g.evtchn.pending(2.0) == g.port
    other = X.EvtchnHandle(sim, 5)
    try:
        g.evtchn.close(unbind=False)
        sim.write_port(5, g.port, other.path, f"0:{local}")  # peer file replaced by rename
        h.notify(local)
        assert other.pending(2.0) == g.port
    finally:
        other.close(unbind=False)


def test_notify_on_unbound_or_virq_port_is_dropped_and_foreign_port_is_einval(ref):
    sim, g, hv, h = ref
    unbound = h.bind_unbound_port(5)
    virq_port = h.bind_virq(VIRQ_DOM_EXC)
    h.notify(unbound)
    h.notify(virq_port)
    with pytest.raises(EvtchnError) as ei:
        h.notify(12345)
    assert ei.value.errno == errno.EINVAL


def test_pending_ignores_malformed_datagrams(ref):
    sim, g, hv, h = ref
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.sendto(b"xx", h.path)
    s.sendto(struct.pack("<I", 9), h.path)
    s.close()
    assert wait_pending(h) == 9
    assert h.pending() is None


def test_handle_fd_is_inherited_for_live_update_by_default(ref):
    sim, g, hv, h = ref
    assert os.get_inheritable(h.fd())
    h2 = hv.evtchn_open(cloexec=True)
    try:
        assert not os.get_inheritable(h2.fd())
        assert h2.path != h.path
        assert os.path.basename(h2.path).startswith(f"h-{os.getpid()}-")
    finally:
        h2.close()


def test_fdopen_recovers_the_handle_and_its_ports(ref):
    sim, g, hv, h = ref
    local = h.bind_interdomain(5, g.port)
    virq_port = h.bind_virq(VIRQ_DOM_EXC)
    h2 = hv.evtchn_fdopen(os.dup(h.fd()))
    try:
        assert h2.path == h.path
        assert h2.ports() == sorted([local, virq_port])
        h2.notify(local)
        assert g.evtchn.pending(2.0) == g.port
        sim.raise_virq(VIRQ_DOM_EXC)
        assert wait_pending(h2) == virq_port
    finally:
        h2.sock.close()


def test_fdopen_of_a_non_unix_socket_fails(simdir, X):
    X.Sim(simdir)
    hv = SimHypervisor(simdir, 0)
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        with pytest.raises(EvtchnError) as ei:
            hv.evtchn_fdopen(s.fileno())
        assert ei.value.errno == errno.EINVAL
    finally:
        s.close()


# -- domain info ------------------------------------------------------------

@pytest.mark.parametrize("state, dying, shutdown, code", [
    ("running\n", False, False, 0),
    ("shutdown:3\n", False, True, 3),
    ("shutdown", False, True, 0),
    ("dying", True, False, 0),
    ("bogus\n", False, False, 0),  # unknown word: running
])
def test_domain_getinfo_follows_the_state_word(X, simdir, state, dying, shutdown, code):
    sim = X.Sim(simdir)
    sim.create_domain(7)
    with open(sim.path("domains", 7), "w") as f:
        f.write(state)
    info = SimHypervisor(simdir, 0).domain_getinfo(7)
    assert (info.dying, info.shutdown, info.shutdown_code) == (dying, shutdown, code)


def test_domain_getinfo_states_match_reference_transitions(ref):
    sim, g, hv, h = ref
    assert hv.domain_getinfo(5).running
    sim.shutdown_domain(5, 2)
    i = hv.domain_getinfo(5)
    assert (i.shutdown, i.shutdown_code) == (True, 2)
    sim.set_domain_state(5, "dying")
    assert hv.domain_getinfo(5).dying
    sim.destroy_domain(5)
    with pytest.raises(Error) as ei:
        hv.domain_getinfo(5)
    assert ei.value.errno == errno.ESRCH
    with pytest.raises(Error):
        hv.domain_getinfo(0x7FF0)


def test_getinfolist_is_ascending_from_first(X, simdir):
    sim = X.Sim(simdir)
    for d in (9, 3, 12):
        sim.create_domain(d)
    hv = SimHypervisor(simdir, 0)
    assert [i.domid for i in hv.domain_getinfolist(3, 2)] == [3, 9]
    assert [i.domid for i in hv.domain_getinfolist(10, 5)] == [12]


# -- pages ------------------------------------------------------------------

def test_foreign_and_grant_maps_share_the_reference_guest_page(ref):
    sim, g, hv, h = ref
    fpage = hv.map_foreign(5, g.mfn)
    gpage = hv.map_grant(5)
    try:
        g.ring.write_req(b"hello")
        assert bytes(fpage[0:5]) == b"hello" and bytes(gpage[0:5]) == b"hello"
        fpage[1024:1027] = b"rsp"
        assert bytes(g.ring.mm[1024:1027]) == b"rsp"
        words = memoryview(fpage).cast("I")
        assert words[2052 // 4] == 5  # req_prod as one aligned 32-bit read
        words.release()
    finally:
        fpage.close()
        gpage.close()


def test_map_of_missing_frame_or_domain_fails_like_xen(ref):
    sim, g, hv, h = ref
    with pytest.raises(Error) as ei:
        hv.map_foreign(5, g.mfn + 100)
    assert ei.value.errno == errno.EFAULT
    with pytest.raises(Error) as ei:
        hv.map_foreign(42, g.mfn)
    assert ei.value.errno == errno.ESRCH
    with pytest.raises(Error) as ei:
        hv.map_grant(5, 7)
    assert ei.value.errno == errno.EFAULT


def test_short_frame_file_is_efault(ref):
    sim, g, hv, h = ref
    with open(sim.path("mem", 5, 77), "wb") as f:
        f.write(b"x" * 100)
    with pytest.raises(Error) as ei:
        hv.map_foreign(5, 77)
    assert ei.value.errno == errno.EFAULT


def test_dom0_ring_files_and_xen_default_names_map_to_the_sim(ref):
    sim, g, hv, h = ref
    assert hv.read_port_file("/proc/xen/xsd_port") == sim.xsd_port
    assert hv.read_port_file(hv.sim.xsd_port_file) == sim.xsd_port
    kva = hv.map_file("/proc/xen/xsd_kva")
    try:
        kva[0:2] = b"k0"
        with open(sim.path("xsd_kva"), "rb") as f:
            assert f.read(2) == b"k0"
    finally:
        kva.close()


def test_open_backend_takes_domid_from_env(simdir, X, monkeypatch):
    X.Sim(simdir)
    monkeypatch.setenv("XENSIM_DOMID", "4")
    hv = open_backend(simdir)
    assert hv.domid == 4
    with hv.evtchn_open() as h:
        p = h.bind_unbound_port(0)
        assert os.path.exists(hv.sim.port_file(4, p))


# -- oxsd's tooling vs the contract and the reference -------------------------

def test_sim_init_layout_matches_the_contract(simdir, X):
    sim = Sim(simdir)
    assert open(sim.domain_file(0)).read() == "running\n"
    assert os.path.getsize(sim.xsd_kva) == 4096
    raw = open(sim.xsd_port_file, "rb").read()
    assert raw.isdigit()  # no trailing newline: int_of_string
    info = sim.read_port(0, int(raw))
    assert (info.owner, info.kind) == (sim.dom0_ring_owner(), "unbound")
    ref = X.Sim(simdir, create=False)  # the reference reads our layout
    assert ref.xsd_port == int(raw)


def test_sim_rejects_dirs_too_long_for_socket_names():
    with pytest.raises(ValueError):
        Sim("/tmp/" + "x" * 100, create=False)


def test_guest_page_port_and_grant_link_as_the_reference_expects(simdir, X):
    sim = Sim(simdir)
    g = Guest(sim, 5)
    try:
        assert g.mfn == 0x1000
        assert os.path.samefile(sim.mem_file(5, g.mfn), sim.grant_file(5, 1))
        info = sim.read_port(5, g.port)
        assert (info.owner, info.kind) == (g.evtchn.path, "unbound")
        # a reference daemon-side handle binds and notifies our guest
        rh = X.EvtchnHandle(X.Sim(simdir, create=False), 0)
        try:
            local = rh.bind_interdomain(5, g.port)
            rh.notify(local)
            assert g.evtchn.wait(2.0) == g.port
            g.evtchn.notify(g.port)
            assert rh.pending(2.0) == local
        finally:
            rh.close()
        assert sim.read_port(5, g.port).kind == "unbound"
    finally:
        g.close()
    assert not os.path.exists(sim.port_file(5, g.port))


def test_second_guest_page_takes_the_next_free_mfn(simdir):
    sim = Sim(simdir)
    a, b = Guest(sim, 5), Guest(sim, 5)
    try:
        assert (a.mfn, b.mfn) == (0x1000, 0x1001)
        assert a.port != b.port
    finally:
        a.close()
        b.close()


def test_sim_state_changes_raise_dom_exc_to_our_daemon_handle(simdir):
    sim = Sim(simdir)
    sim.create_domain(8)
    hv = SimHypervisor(simdir, 0)
    with hv.evtchn_open() as h:
        virq_port = h.bind_virq(VIRQ_DOM_EXC)
        sim.shutdown_domain(8, 1)
        assert wait_pending(h) == virq_port
        assert hv.domain_getinfo(8).shutdown_code == 1
        sim.destroy_domain(8, dying_first=True)
        assert wait_pending(h) == virq_port and wait_pending(h) == virq_port
        assert sim.domain_state(8) is None
        assert sim.raise_virq(VIRQ_DOM_EXC)
    assert not sim.raise_virq(VIRQ_DOM_EXC)  # closed: nobody bound to it


def test_close_dead_handles_frees_ports_of_handles_nobody_holds(simdir):
    sim = Sim(simdir)
    g = Guest(sim, 5)
    hv = SimHypervisor(simdir, 0)
    h = hv.evtchn_open()
    local = h.bind_interdomain(5, g.port)
    h.bind_virq(VIRQ_DOM_EXC)
    h.sock.close()  # the daemon died: its files stay
    try:
        assert sim.close_dead_handles() == 2
        assert sim.read_port(5, g.port).kind == "unbound"
        assert not os.path.exists(sim.port_file(0, local))
        assert not os.path.exists(sim.virq_file(3))
        assert not os.path.exists(h.path)
        assert sim.ports(0) == [sim.xsd_port]  # dom0's ring port is not a handle's
        assert sim.close_dead_handles() == 0  # the live guest handle is kept
    finally:
        g.close()


# -- the ring client, served by a hand-driven fake daemon ----------------------

class FakeDaemon:
    """The daemon side of one guest ring, driven step by step by the test."""

    def __init__(self, simdir, guest):
        self.hv = SimHypervisor(simdir, 0)
        self.h = self.hv.evtchn_open()
        self.local = self.h.bind_interdomain(guest.domid, guest.port)
        self.page = self.hv.map_foreign(guest.domid, guest.mfn)
        self.idx = memoryview(self.page).cast("I")

    def take_request(self) -> tuple[int, int, bytes]:
        cons, prod = self.idx[512], self.idx[513]
        data = bytes(self.page[cons % 1024:prod % 1024]) if prod != cons else b""
        self.idx[512] = prod
        op, rid, _tx, ln = HEADER.unpack_from(data)
        return op, rid, data[16:16 + ln]

    def put(self, op: int, rid: int, payload: bytes, notify: bool) -> None:
        pkt = HEADER.pack(op, rid, 0, len(payload)) + payload
        prod = self.idx[515]
        off = 1024 + prod % 1024
        self.page[off:off + len(pkt)] = pkt
        self.idx[515] = prod + len(pkt)
        if notify:
            self.h.notify(self.local)

    def close(self):
        self.idx.release()
        self.page.close()
        self.h.close()


@pytest.mark.parametrize("lazy", [False, True])
def test_ring_client_request_reply_and_notify_policy(simdir, lazy):
    sim = Sim(simdir)
    g = Guest(sim, 5, lazy=lazy)
    d = FakeDaemon(simdir, g)
    try:
        rid = g.send(Op.READ, b"data/x\0")
        # notified guests tell the daemon about the request; lazy ones never do
        assert (wait_pending(d.h, 0.5) == d.local) is (not lazy)
        assert d.take_request() == (Op.READ, rid, b"data/x\0")
        d.put(Op.READ, rid, b"42", notify=not lazy)
        assert g.recv_reply(rid, timeout=5.0) == (Op.READ, 0, b"42")
        # after consuming replies a notified guest notifies again
        assert (wait_pending(d.h, 0.5) == d.local) is (not lazy)
        assert g.notifies == (0 if lazy else 2)
    finally:
        d.close()
        g.close()


def test_ring_client_queues_watch_events_and_raises_xs_errors(simdir):
    sim = Sim(simdir)
    g = Guest(sim, 5)
    d = FakeDaemon(simdir, g)
    try:
        d.put(Op.WATCH_EVENT, 0, b"data/y\0tok\0", notify=True)
        assert g.wait_watch(5.0) == ("data/y", "tok")
        assert g.wait_watch(0.05) is None
        done = threading.Event()

        def serve():  # answer the next request with ENOENT
            deadline = time.monotonic() + 5
            while d.idx[513] == d.idx[512] and time.monotonic() < deadline:
                time.sleep(0.001)
            _op, rid, _ = d.take_request()
            d.put(Op.ERROR, rid, b"ENOENT\0", notify=True)
            done.set()

        t = threading.Thread(target=serve)
        t.start()
        with pytest.raises(XsError) as ei:
            g.read("nope")
        t.join(5)
        assert done.is_set() and ei.value.err == "ENOENT"
    finally:
        d.close()
        g.close()


def test_ring_indexes_are_32bit_words_and_wrap_modulo_2_32(simdir):
    sim = Sim(simdir)
    mfn = sim.alloc_page(5)
    r = Ring(sim.mem_file(5, mfn))
    try:
        assert (r._idx.format, r._idx.itemsize) == ("I", 4)
        r._set(2048, 0xFFFFFFFE)  # req_cons
        r._set(2052, 0xFFFFFFFE)  # req_prod
        assert r.write_req(b"abcd") == 4
        assert r.req_prod == 2  # wrapped
        assert bytes(r._mem[1022:1024]) + bytes(r._mem[0:2]) == b"abcd"
        r._set(2048, 2 + 5000)  # inconsistent: more than a ring in flight
        with pytest.raises(RingError):
            r.write_req(b"x")
    finally:
        r.close()


def test_ring_write_stops_at_a_full_ring(simdir):
    sim = Sim(simdir)
    r = Ring(sim.mem_file(5, sim.alloc_page(5)))
    try:
        assert r.write_req(b"x" * 1500) == 1024
        assert r.write_req(b"y") == 0
    finally:
        r.close()


def test_dom0_ring_client_owns_xsd_port_without_freeing_it(simdir):
    sim = Sim(simdir)
    hv = SimHypervisor(simdir, 0)
    port = hv.read_port_file("")
    with hv.evtchn_open() as h:
        local = h.bind_interdomain(0, port)  # what the daemon does at start-up
        c = dom0_ring_client(sim)
        h.notify(local)
        assert c.evtchn.wait(2.0) == port
        c.notify()
        assert wait_pending(h) == local
        c.close()
        assert os.path.exists(sim.port_file(0, port))


# -- CLI ----------------------------------------------------------------------

def test_cli_init_domains_and_ports(simdir, capsys):
    assert cli.main([simdir, "init"]) == 0
    assert cli.main([simdir, "create-domain", "7"]) == 0
    assert cli.main([simdir, "shutdown", "7", "2"]) == 0
    assert open(os.path.join(simdir, "domains", "7")).read() == "shutdown:2\n"
    assert cli.main([simdir, "destroy", "7"]) == 0
    assert not os.path.exists(os.path.join(simdir, "domains", "7"))
    capsys.readouterr()
    assert cli.main([simdir, "ports"]) == 0
    port = open(os.path.join(simdir, "xsd_port")).read()
    assert capsys.readouterr().out == \
        f"0/{port}: owner={simdir}/evtchn/xsd-0 peer=unbound\n"
    assert cli.main([simdir, "raise-virq", "3"]) == 0
    assert capsys.readouterr().out == "False\n"
    assert cli.main([simdir, "close-dead-handles"]) == 0
    assert capsys.readouterr().out == "0\n"


def test_cli_guest_prints_its_introduce_triple_and_cleans_up(simdir, capsys):
    assert cli.main([simdir, "guest", "5", "-c", "quit"]) == 0
    out = capsys.readouterr().out.split()
    assert out == ["domid=5", "mfn=4096", "port=1"]
    assert SimDir(simdir).ports(5) == []  # the guest's port went with it


def test_cli_guest_command_without_a_daemon_times_out_as_an_error(simdir, capsys):
    assert cli.main([simdir, "guest", "5", "--timeout", "0.05", "-c", "read x"]) == 1
    assert capsys.readouterr().out.splitlines()[1:] == ["error: timeout"]
