"""oxsd.db: the `$xenstored-dump-format` dump and its restore (persistence.md §1-2).

The reference texts below are dumps written by Debian's oxenstored 4.17 on
the simulated hypervisor (SIGTERM / live update), copied verbatim.
"""
from __future__ import annotations

import logging
import os
import socket
import stat

import pytest

from oxsd import db as DB
from oxsd import perms as P
from oxsd.config import Settings
from oxsd.connections import Connections
from oxsd.domains import Domains
from oxsd.logging_ import AccessLog
from oxsd.store import Path, Store
from oxsd.utils import hexify

DOM0 = P.Connection.full_rights
OCAML_BIN = "/root/.cache/ocaml-ref/_deps/root/usr/lib/xen-4.17/bin/oxenstored"

# oxenstored 4.17, SIGTERM after: guest 5 introduced with a watch on "data",
# a socket client watching /local, /local/domain/5/data/x = 1, /a = "\0\1\xff,zz".
REFERENCE_DUMP = """\
$xenstored-dump-format
global,3
evtchn-dev,5,2
dom,0,0,1,3
dom,5,4096,1,4
watch,5,64617461,746f6b
socket,7
watch,-7,2f6c6f63616c,7430
store,2f,6e30,
store,2f746f6f6c,6e30,
store,2f746f6f6c2f78656e73746f726564,6e30,2f726f6f742f2e63616368652f6f63616d6c2d7265662f5f646570732f726f6f742f7573722f6c69622f78656e2d342e31372f62696e2f6f78656e73746f726564
store,2f6c6f63616c,6e30,
store,2f6c6f63616c2f646f6d61696e,6e30,
store,2f6c6f63616c2f646f6d61696e2f35,6e35007230,
store,2f6c6f63616c2f646f6d61696e2f352f64617461,6e35007230,
store,2f6c6f63616c2f646f6d61696e2f352f646174612f78,6e35007230,31
store,2f61,6e30,0001ff2c7a7a
store,2f4072656c65617365446f6d61696e,6e30,
store,2f40696e74726f64756365446f6d61696e,6e30,
"""


# -- a hypervisor that records what the restore asks of it ----------------------

class FakeEvtchn:
    def __init__(self, fd=None):
        self._fd = 99 if fd is None else fd
        self.next_port = 10
        self.virqs = []
        self.interdomain = []
        self.notified = []

    def fd(self):
        return self._fd

    def bind_virq(self, virq):
        self.virqs.append(virq)
        self.next_port += 1
        return self.next_port

    def bind_interdomain(self, domid, port):
        self.interdomain.append((domid, port))
        self.next_port += 1
        return self.next_port

    def notify(self, port):
        self.notified.append(port)

    def unbind(self, port):
        pass


class FakeHv:
    def __init__(self):
        self.handles = []
        self.maps = []

    def open_evtchn(self, fd=None):
        h = FakeEvtchn(fd)
        self.handles.append((fd, h))
        return h

    def map_ring(self, domid, mfn):
        self.maps.append((domid, mfn))
        return bytearray(4096)

    def map_file(self, path):
        self.maps.append((0, path))
        return bytearray(4096)

    def read_port_file(self, path):
        return 1


def specials_store(settings=None) -> Store:
    st = Store.create(settings or Settings())
    for sp in Path.specials:
        st.write(DOM0, sp, b"")
    return st


class World:
    """A store, connections and a fake hypervisor, as build_daemon makes them."""

    def __init__(self, settings=None):
        self.settings = settings or Settings()
        self.store = specials_store(self.settings)
        self.cons = Connections(self.settings, AccessLog.disabled())
        self.hv = FakeHv()

    def domains_init(self, event):
        return Domains(event, self.hv, self.settings, lambda: None)

    def restore(self, text, owned=None, hv=True):
        data = text.encode("latin-1") if isinstance(text, str) else text
        return DB.from_channel(self.store, self.cons, self.domains_init,
                               self.hv if hv else None, data, owned)

    def close(self):
        for con in self.cons.iter_anonymous():
            self.cons.del_anonymous(con)


@pytest.fixture
def world():
    w = World()
    yield w
    w.close()


def store_lines(text):
    return [ln for ln in text.splitlines() if ln.startswith("store,")]


def adopt_pair():
    """A connected socket pair; the first end's fd is handed over (detached) to a restore."""
    a, b = socket.socketpair()
    return a.detach(), b


# -- writing ------------------------------------------------------------------------------

def test_store_lines_are_the_reference_bytes(world):
    """Same tree as the reference run -> the same store lines, byte for byte."""
    st = world.store
    st.mkdir(P.Connection.create(0), Path.of_string("/local"))
    st.mkdir(DOM0, Path.of_string("/tool"))
    st.write(DOM0, Path.of_string("/tool/xenstored"), OCAML_BIN.encode())
    st.mkdir(DOM0, Path.of_string("/local/domain"))
    st.mkdir(DOM0, Path.of_string("/local/domain/5"))
    st.setperms(DOM0, Path.of_string("/local/domain/5"), P.Node.of_strings(["n5", "r0"]))
    st.mkdir(DOM0, Path.of_string("/local/domain/5/data"))
    st.write(DOM0, Path.of_string("/local/domain/5/data/x"), b"1")
    st.write(DOM0, Path.of_string("/a"), b"\x00\x01\xff,zz")
    text = DB.to_bytes(st, world.cons, None, None).decode()
    assert text.splitlines()[:2] == ["$xenstored-dump-format", "global,-1"]
    assert store_lines(text) == store_lines(REFERENCE_DUMP)


def test_root_with_empty_value_has_an_empty_last_field(world):
    text = DB.to_bytes(world.store, world.cons, None, None).decode()
    assert "store,2f,6e30,\n" in text
    assert text.endswith("\n")


def test_perms_are_joined_by_nul_without_a_trailing_nul(world):
    world.store.write(DOM0, Path.of_string("/x"), b"")
    world.store.setperms(DOM0, Path.of_string("/x"), P.Node.of_strings(["b5", "r0", "w7"]))
    text = DB.to_bytes(world.store, world.cons, None, None).decode()
    assert "store,2f78,6235007230007737,\n" in text


def test_dump_is_pre_order_parent_before_children(world):
    for p in ("/vm", "/vm/a", "/vm/a/b", "/vm/z", "/vm/a/c"):
        world.store.write(DOM0, Path.of_string(p), b"")
    paths = [bytes.fromhex(ln.split(",")[1]).decode()
             for ln in store_lines(DB.to_bytes(world.store, world.cons, None, None).decode())]
    assert paths[:7] == ["/", "/vm", "/vm/z", "/vm/a", "/vm/a/c", "/vm/a/b", "/@releaseDomain"]


@pytest.mark.parametrize("keys,order", [
    ([7, 8], [7, 8]), ([8, 7], [7, 8]),      # reference: socket,7 then socket,8
    ([10, 11], [11, 10]),                     # reference: socket,11 then socket,10
    ([0, 5, 6], [0, 5, 6]), ([6, 5, 0], [0, 5, 6]),
])
def test_connections_are_dumped_in_ocaml_hashtbl_order(keys, order):
    assert DB._hash_order({k: k for k in keys}) == order


def test_connection_records_precede_their_watches(world):
    restored = world.restore(
        "$xenstored-dump-format\nevtchn-dev,40,2\ndom,5,4096,1,4\n")
    assert restored.doms is not None
    dcon = world.cons.find_domain(5)
    world.cons.add_watch(dcon, "data", b"tok")
    world.cons.add_watch(dcon, "@releaseDomain", b"r")
    fd, peer = adopt_pair()
    try:
        scon = world.cons.add_anonymous(socket.socket(fileno=fd))
        world.cons.add_watch(scon, "/local", b"t0")
        lines = DB.to_bytes(world.store, world.cons, None,
                            restored.doms.eventchn).decode().splitlines()
    finally:
        peer.close()
    assert lines[1:7] == [
        "global,-1", "evtchn-dev,40,2", "dom,5,4096,1,4",
        "watch,5,4072656c65617365446f6d61696e,72", "watch,5,64617461,746f6b",
        f"socket,{fd}"]
    assert lines[7] == f"watch,-{fd},2f6c6f63616c,7430"


def test_dump_makes_the_listening_and_client_sockets_inheritable(world):
    listen = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    a, b = socket.socketpair()
    try:
        assert not listen.get_inheritable() and not a.get_inheritable()
        world.cons.add_anonymous(a)
        text = DB.to_bytes(world.store, world.cons, listen, None).decode()
        assert f"global,{listen.fileno()}\n" in text
        assert listen.get_inheritable() and a.get_inheritable()
    finally:
        listen.close()
        b.close()


def test_to_file_truncates_and_creates_mode_0600(world, tmp_path):
    path = tmp_path / "db"
    path.write_text("x" * 100000)
    old = os.umask(0)
    try:
        DB.to_file(world.store, world.cons, None, None, str(tmp_path / "new"))
    finally:
        os.umask(old)
    DB.to_file(world.store, world.cons, None, None, str(path))
    assert path.read_bytes() == DB.to_bytes(world.store, world.cons, None, None)
    assert stat.S_IMODE((tmp_path / "new").stat().st_mode) == 0o600


def test_from_file_reads_back_what_to_file_wrote(world, tmp_path):
    world.store.write(DOM0, Path.of_string("/vm"), b"\x00\x01\xff")
    path = str(tmp_path / "db")
    DB.to_file(world.store, world.cons, None, None, path)
    other = World()
    DB.from_file(other.store, other.cons, other.domains_init, other.hv, path)
    assert other.store.read(DOM0, Path.of_string("/vm")) == b"\x00\x01\xff"


# -- reading the reference dump --------------------------------------------------------------

def test_reference_dump_restores_store_domains_sockets_and_watches(world, caplog):
    fd, peer = adopt_pair()
    text = REFERENCE_DUMP.replace("global,3\n", "global,-1\n")
    text = text.replace("socket,7\n", f"socket,{fd}\n").replace("watch,-7,", f"watch,-{fd},")
    try:
        with caplog.at_level(logging.INFO, logger="oxsd.xenstored"):
            restored = world.restore(text)
        # the inherited handle, the dumped DOM_EXC port: nothing re-bound
        fd_opened, handle = world.hv.handles[0]
        assert fd_opened == 5 and handle.virqs == [] and handle.interdomain == []
        assert restored.doms.eventchn.domexc == 2
        dom5 = restored.doms.find(5)
        assert (dom5.mfn, dom5.ports.remote, dom5.ports.local) == (4096, 1, 4)
        dom0 = restored.doms.find(0)
        assert (dom0.ports.remote, dom0.ports.local) == (1, 3)
        assert world.hv.maps == [(0, world.settings.xenstored_kva), (5, 4096)]
        con5 = world.cons.find_domain(5)
        assert con5.list_watches() == [("data", b"tok")]
        scon = world.cons.find(fd)
        assert scon.list_watches() == [("/local", b"t0")]
        assert scon.domstr == "A1"  # a new number in the new process
        # a restored watch sends no initial event
        assert not con5.has_output() and not scon.has_output()
        assert fd in restored.adopted_fds
        redump = DB.to_bytes(world.store, world.cons, None, restored.doms.eventchn).decode()
        assert store_lines(redump) == store_lines(REFERENCE_DUMP)
        assert redump.splitlines()[2:8] == text.splitlines()[2:8]
    finally:
        peer.close()
    msgs = [r.getMessage() for r in caplog.records]
    assert msgs[0] == ('restoring: ignoring unknown line: global,-1 '
                       '(exception: Unix.Unix_error(Unix.EBADF, "listen", ""))')
    assert msgs[-1] == "Completed loading xenstore dump"


def test_restored_connection_answers_on_its_socket(world):
    fd, peer = adopt_pair()
    try:
        world.restore(f"$xenstored-dump-format\nsocket,{fd}\n")
        con = world.cons.find(fd)
        con.send_ack(0, 7, 1)
        con.do_output()
        assert peer.recv(64).endswith(b"OK\0")
    finally:
        peer.close()


def test_restore_rebuilds_quota_counts(world):
    text = ("$xenstored-dump-format\n"
            "store,2f,6e30,\n"
            "store,2f61,6e35,\n"           # /a owned by 5
            "store,2f612f62,6e35,\n"       # /a/b owned by 5
            "store,2f63,6e30,\n")
    world.restore(text)
    assert world.store.get_quota().get(5) == 2


def test_global_line_of_our_fresh_socket_reuses_it_and_ignores_extra_fields(world, tmp_path):
    fresh = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    fresh.bind(str(tmp_path / "sock"))
    try:
        restored = world.restore(f"$xenstored-dump-format\nglobal,{fresh.fileno()},7\n",
                                 owned={fresh.fileno(): fresh})
        assert restored.listen_sock is fresh
    finally:
        fresh.close()


def test_global_line_adopts_an_inherited_listening_socket(world, tmp_path):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(str(tmp_path / "sock"))
    fd = s.detach()
    restored = world.restore(f"$xenstored-dump-format\nglobal,{fd}\n")
    try:
        assert restored.listen_sock.fileno() == fd
        c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        c.connect(str(tmp_path / "sock"))  # listening
        c.close()
    finally:
        restored.listen_sock.close()


def test_global_line_of_a_non_socket_is_ignored(world, caplog, tmp_path):
    f = open(tmp_path / "file", "w")
    try:
        with caplog.at_level(logging.WARNING, logger="oxsd.xenstored"):
            restored = world.restore(f"$xenstored-dump-format\nglobal,{f.fileno()}\n")
        assert restored.listen_sock is None
        os.fstat(f.fileno())  # still open, still ours
    finally:
        f.close()
    assert "Unix.Unix_error(Unix.ENOTSOCK" in caplog.text


def test_global_line_with_a_closed_fd_leaves_no_listening_socket(world, caplog):
    r, w = os.pipe()
    os.close(r)
    os.close(w)
    with caplog.at_level(logging.WARNING, logger="oxsd.xenstored"):
        restored = world.restore(f"$xenstored-dump-format\nglobal,{r}\n")
    assert restored.listen_sock is None
    assert (f"restoring: ignoring unknown line: global,{r} "
            '(exception: Unix.Unix_error(Unix.EBADF, "listen", ""))') in caplog.text


def test_socket_line_of_a_non_socket_fd_is_ignored(world, caplog):
    r, w = os.pipe()
    try:
        with caplog.at_level(logging.WARNING, logger="oxsd.xenstored"):
            world.restore(f"$xenstored-dump-format\nsocket,{r}\nsocket,999999\n")
    finally:
        os.close(r)
        os.close(w)
    assert world.cons.iter_anonymous() == []
    assert [rec.getMessage() for rec in caplog.records][:2] == [
        f"Ignoring invalid socket FD {r}", "Ignoring invalid socket FD 999999"]


def test_dom_line_without_local_port_binds_the_remote_port(world):
    restored = world.restore("$xenstored-dump-format\nevtchn-dev,40,2\ndom,5,4096,7\n")
    handle = world.hv.handles[0][1]
    assert handle.interdomain == [(5, 7)]
    assert restored.doms.find(5).ports.local == handle.next_port


def test_dom_line_without_evtchn_dev_opens_a_fresh_handle(world, caplog):
    with caplog.at_level(logging.WARNING, logger="oxsd.xenstored"):
        restored = world.restore("$xenstored-dump-format\ndom,5,4096,1,4\n")
    fd, handle = world.hv.handles[0]
    assert fd is None and handle.virqs == [3]  # a fresh handle binds VIRQ_DOM_EXC
    assert restored.doms.find(5).ports.local == 4
    assert "No event channel file descriptor available in dump!" in caplog.text


def test_dom_line_without_hypervisor_warns_and_is_skipped(world, caplog):
    with caplog.at_level(logging.WARNING, logger="oxsd.xenstored"):
        restored = world.restore("$xenstored-dump-format\ndom,5,4096,1,4\n", hv=False)
    assert world.cons.domains == {} and restored.doms is None
    assert "No event channel file descriptor available in dump!" in caplog.text
    assert "restoring: ignoring unknown line: dom,5,4096,1,4" in caplog.text


def test_no_domain_line_still_gives_a_registry(world, caplog):
    with caplog.at_level(logging.WARNING, logger="oxsd.xenstored"):
        restored = world.restore("$xenstored-dump-format\nstore,2f,6e30,\n")
    assert restored.doms is not None and restored.doms.number() == 0
    assert "No event channel file descriptor available in dump!" in caplog.text


def test_evtchn_line_naming_an_fd_we_hold_is_refused(world):
    fresh = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        world.restore(f"$xenstored-dump-format\nevtchn-dev,{fresh.fileno()},2\n",
                      owned={fresh.fileno(): fresh})
        assert all(fd != fresh.fileno() for fd, _ in world.hv.handles)
    finally:
        fresh.close()


def test_value_over_maxsize_is_skipped_with_its_subtree(caplog):
    """[quirk] the size check applies to dom0 too; the children then miss their parent."""
    w = World(Settings(quota_maxsize=4))
    text = ("$xenstored-dump-format\n"
            "store,2f61,6e30,3132333435\n"     # /a = "12345": too long
            "store,2f612f62,6e30,31\n"         # /a/b
            "store,2f63,6e30,31\n")            # /c
    with caplog.at_level(logging.WARNING, logger="oxsd.xenstored"):
        w.restore(text)
    assert not w.store.path_exists(Path.of_string("/a"))
    assert w.store.read(DOM0, Path.of_string("/c")) == b"1"
    assert "(exception: Quota.Data_too_big)" in caplog.text


def test_duplicate_watch_line_is_ignored_with_a_warning(world, caplog):
    text = ("$xenstored-dump-format\nevtchn-dev,40,2\ndom,5,4096,1,4\n"
            "watch,5,64617461,746f6b\nwatch,5,64617461,746f6b\n")
    with caplog.at_level(logging.WARNING, logger="oxsd.xenstored"):
        world.restore(text)
    assert world.cons.find_domain(5).list_watches() == [("data", b"tok")]
    assert "watch,5,64617461,746f6b (exception: Define.Already_exist)" in caplog.text


def test_watch_of_an_unknown_connection_is_ignored(world, caplog):
    with caplog.at_level(logging.WARNING, logger="oxsd.xenstored"):
        world.restore("$xenstored-dump-format\nwatch,-123,2f61,74\nwatch,9,2f61,74\n")
    assert caplog.text.count("(exception: Not_found)") == 2


@pytest.mark.parametrize("line,exc", [
    ("store,zz,6e30,", None),
    ("dom,x,0,1,2", 'Failure("int_of_string")'),
    ("store,2f61,,", 'Invalid_argument("index out of bounds")'),
    ("store,2f2f,6e30,", "Define.Invalid_path"),
])
def test_bad_lines_are_logged_and_skipped(world, caplog, line, exc):
    text = f"$xenstored-dump-format\n{line}\nstore,2f6f6b,6e30,31\n"
    with caplog.at_level(logging.WARNING, logger="oxsd.xenstored"):
        world.restore(text)
    assert world.store.read(DOM0, Path.of_string("/ok")) == b"1"  # loading went on
    msg = caplog.records[0].getMessage()
    assert msg.startswith(f"restoring: ignoring unknown line: {line} (exception: ")
    if exc is not None:
        assert msg == f"restoring: ignoring unknown line: {line} (exception: {exc})"


@pytest.mark.parametrize("line", ["bogus", "", "socket,1,2", "evtchn-dev,1", "watch,1,2",
                                  "store,2f,6e30"])
def test_unknown_records_are_warned_without_exception(world, caplog, line):
    with caplog.at_level(logging.WARNING, logger="oxsd.xenstored"):
        world.restore(f"$xenstored-dump-format\n{line}\n")
    assert [r.getMessage() for r in caplog.records] == [
        f"restoring: ignoring unknown line: {line}",
        "No event channel file descriptor available in dump!"]


def test_wrong_header_is_fatal(world):
    with pytest.raises(DB.BadFormat) as info:
        world.restore("$xenstored-dump-format-v2\nstore,2f,6e30,\n")
    assert info.value.ocaml_str() == 'Xenstored.DB.Bad_format("header")'


def test_empty_file_is_fatal(world):
    with pytest.raises(EOFError):
        world.restore("")


def test_round_trip_keeps_every_node_value_and_perm(world):
    st = world.store
    st.write(DOM0, Path.of_string("/bin"), bytes(range(256)) * 2)
    st.mkdir(DOM0, Path.of_string("/x"))
    for i in range(20):
        st.write(DOM0, Path.of_string(f"/x/n{i}"), str(i).encode())
        st.setperms(DOM0, Path.of_string(f"/x/n{i}"),
                    P.Node.of_strings([f"b{i}", "r0", f"w{i + 1}"]))
    text = DB.to_bytes(st, world.cons, None, None)
    other = World()
    other.restore(text)
    assert DB.to_bytes(other.store, other.cons, None, None) == text
    assert other.store.get_quota().get(7) == st.get_quota().get(7)


def test_dumped_fds_lists_the_fd_carrying_lines():
    data = b"$xenstored-dump-format\nglobal,3\nevtchn-dev,5,2\ndom,0,0,1,3\nsocket,7\n"
    assert list(DB.dumped_fds(data)) == [("global", 3), ("evtchn-dev", 5), ("socket", 7)]


def test_hexify_of_a_watch_token_with_any_byte(world):
    fd, peer = adopt_pair()
    try:
        token = bytes(range(1, 256))
        world.restore(f"$xenstored-dump-format\nsocket,{fd}\n"
                      f"watch,-{fd},{hexify('@x')},{token.hex()}\n")
        assert world.cons.find(fd).list_watches() == [("@x", token)]
    finally:
        peer.close()
