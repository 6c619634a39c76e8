"""oxsd.db: the `$xenstored-dump-format` dump and its restore (xenstored.ml: DB).

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
from oxsd.printexc import ocaml_exn_str
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


def test_to_file_fsyncs_the_whole_dump_before_the_rename_then_the_directory(world, tmp_path,
                                                                           monkeypatch):
    path = tmp_path / "db"
    path.write_text("previous")
    synced = []
    real_fsync = os.fsync

    def fsync(fd):
        target = os.readlink(f"/proc/self/fd/{fd}")
        content = (tmp_path / "db.tmp").read_bytes() if target.endswith(".tmp") else None
        synced.append((os.path.basename(target), content, path.read_text()))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    DB.to_file(world.store, world.cons, None, None, str(path))
    whole = DB.to_bytes(world.store, world.cons, None, None)
    assert synced == [("db.tmp", whole, "previous"),  # all of it, and db not yet replaced
                      (tmp_path.name, None, whole.decode("latin-1"))]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["db"]


@pytest.mark.parametrize("fail", ["write", "fsync", "rename"])
def test_a_dump_that_fails_keeps_the_previous_one_and_no_temporary(world, tmp_path,
                                                                   monkeypatch, fail):
    path = tmp_path / "db"
    path.write_text("previous")

    def no_space(*args):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, fail, no_space)
    with pytest.raises(OSError) as failed:
        DB.to_file(world.store, world.cons, None, None, str(path))
    monkeypatch.undo()
    assert path.read_text() == "previous"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["db"]
    assert ocaml_exn_str(failed.value) == 'Sys_error("No space left on device")'


def test_a_dump_that_cannot_be_created_names_the_dump(world, tmp_path):
    with pytest.raises(OSError) as failed:
        DB.to_file(world.store, world.cons, None, None, str(tmp_path / "missing" / "db"))
    assert ocaml_exn_str(failed.value) == (
        f'Sys_error("{tmp_path}/missing/db: No such file or directory")')


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


# -- open transactions carried by a forced live update (oxsd only) ------------------------------

from oxsd.history import History  # noqa: E402
from oxsd.packet import Ack, Error, Reply  # noqa: E402
from oxsd.process import LiveUpdate, Process  # noqa: E402
from oxsd.transaction import TransactionRegistry  # noqa: E402
from oxsd.xb.op import Op  # noqa: E402
from oxsd.xb.packet import Packet  # noqa: E402

GUEST5 = "$xenstored-dump-format\nevtchn-dev,40,2\ndom,5,4096,1,4\n"


class TxWorld(World):
    """A World with guest 5's ring connection (watching `data`) and a real Process."""

    def __init__(self, dump=None):
        super().__init__()
        if dump is None:
            for p in ("/local", "/local/domain", "/local/domain/5"):
                self.store.mkdir(DOM0, Path.of_string(p))
            self.store.setperms(DOM0, Path.of_string("/local/domain/5"),
                                P.Node.of_strings(["n5", "r0"]))
            self.store.mkdir(DOM0, Path.of_string("/local/domain/5/data"))  # inherits n5
            self.store.write(DOM0, Path.of_string("/local/domain/5/data/x"), b"1")
        self.restored = self.restore(GUEST5 if dump is None else dump)
        self.txreg = TransactionRegistry(self.settings)
        self.process = Process(store=self.store, cons=self.cons, doms=self.restored.doms,
                               settings=self.settings, access_log=AccessLog.disabled(),
                               txreg=self.txreg, history=History(self.txreg),
                               live_update=LiveUpdate("/bin/true", []))
        self.process.restore_transactions(self.restored.transactions)
        self.con = self.cons.find_domain(5)
        self.rid = 100
        if dump is None:
            self.request(0, Op.WATCH, b"data\0tok\0")
            self.replies()

    def request(self, tid, ty, data):
        """Send one request as guest 5; the reply packet."""
        self.rid += 1
        self.process.process_packet(self.con, Packet(tid, self.rid, ty, data))
        return self.replies()[0]

    def replies(self):
        q = self.con.xb.pkt_out
        return [q.pop() for _ in range(len(q))]

    def start(self):
        reply = self.request(0, Op.TRANSACTION_START, b"\0")
        return int(reply.data.rstrip(b"\0"))

    def dump(self):
        return DB.to_bytes(self.store, self.cons, None, self.restored.doms.eventchn,
                           with_transactions=True).decode()

    def value(self, path):
        return self.store.read(DOM0, Path.of_string(path))


def tx_lines(text):
    return [ln for ln in text.splitlines() if ln.startswith("transaction,")]


def test_transaction_line_is_the_documented_record():
    w = TxWorld()
    tid = w.start()
    w.rid = 2
    assert w.request(tid, Op.WRITE, b"data/a\0" + b"1").data == b"OK\0"
    assert tx_lines(w.dump()) == [
        "transaction,5,1,2,0b000000030000000100000008000000646174612f6100310b0000000300"
        "000001000000030000004f4b00"]


def test_dumps_hold_transactions_only_when_asked():
    w = TxWorld()
    plain = DB.to_bytes(w.store, w.cons, None, w.restored.doms.eventchn).decode()
    w.request(w.start(), Op.WRITE, b"data/a\0" + b"1")
    assert DB.to_bytes(w.store, w.cons, None, w.restored.doms.eventchn).decode() == plain
    full = w.dump()
    assert full.startswith(plain) and len(tx_lines(full)) == 1
    assert full[len(plain):] == tx_lines(full)[0] + "\n"  # after the store lines


def test_round_trip_recreates_each_transaction_with_its_id_operations_and_next_id():
    old = TxWorld()
    t1 = old.start()
    old.request(t1, Op.WRITE, b"data/a\0" + b"A")
    assert old.request(t1, Op.READ, b"data/a\0").data == b"A"
    assert old.request(t1, Op.READ, b"data/nope\0").data == b"ENOENT\0"
    t2 = old.start()
    old.request(t2, Op.MKDIR, b"data/dir\0")
    t3 = old.start()  # empty
    assert (t1, t2, t3) == (1, 2, 3)
    dumped = old.dump()

    new = TxWorld(dumped)
    con = new.con
    assert sorted(con.transactions) == [1, 2, 3] and con.next_tid == 4
    for tid in (1, 2, 3):
        before = old.con.transactions[tid].operations
        after = con.transactions[tid].operations
        assert [r for r, _ in after] == [r for r, _ in before]
        assert [type(x) for _, x in after] == [type(x) for _, x in before]
        assert [x for _, x in after if not isinstance(x, Ack)] == \
               [x for _, x in before if not isinstance(x, Ack)]
        assert not con.transactions[tid].restore_failed
    assert tx_lines(new.dump()) == tx_lines(dumped)  # and it dumps back the same
    assert con.list_watches() == [("data", b"tok")]
    # the transaction reads its own writes, the store does not see them yet
    assert new.request(1, Op.READ, b"data/a\0").data == b"A"
    assert new.request(0, Op.READ, b"data/a\0").data == b"ENOENT\0"
    # later requests, then the commit: OK and the watch fires
    new.request(1, Op.WRITE, b"data/b\0" + b"B")
    new.process.process_packet(con, Packet(1, 8, Op.TRANSACTION_END, b"T\0"))
    assert (Op.TRANSACTION_END, b"OK\0") in [(p.ty, p.data) for p in new.replies()]
    assert new.value("/local/domain/5/data/a") == b"A"
    assert new.value("/local/domain/5/data/b") == b"B"
    new.process.process_packet(con, Packet(2, 9, Op.TRANSACTION_END, b"T\0"))
    assert sorted((p.ty, p.data) for p in new.replies()) == [
        (Op.TRANSACTION_END, b"OK\0"), (Op.WATCH_EVENT, b"data/dir\0tok\0")]
    assert new.request(3, Op.TRANSACTION_END, b"F\0").data == b"OK\0"
    assert con.transactions == {}


def test_commit_fires_the_watches_of_the_carried_writes():
    old = TxWorld()
    old.request(old.start(), Op.WRITE, b"data/a\0" + b"A")
    new = TxWorld(old.dump())
    new.process.process_packet(new.con, Packet(1, 7, Op.TRANSACTION_END, b"T\0"))
    # the event is queued before the reply, as for any commit (process_watch runs first)
    assert [(p.ty, p.data) for p in new.replies()] == [(Op.WATCH_EVENT, b"data/a\0tok\0"),
                                                       (Op.TRANSACTION_END, b"OK\0")]


def test_new_transaction_ids_continue_after_the_restored_ones():
    old = TxWorld()
    t1 = old.start()
    old.request(old.start(), Op.TRANSACTION_END, b"F\0")  # 2 ended: next is 3
    new = TxWorld(old.dump())
    assert sorted(new.con.transactions) == [t1]
    assert new.start() == 3


def test_a_read_that_differs_on_the_restored_store_makes_the_commit_eagain():
    old = TxWorld()
    tid = old.start()
    assert old.request(tid, Op.READ, b"data/x\0").data == b"1"
    old.request(tid, Op.WRITE, b"data/y\0" + b"from-tx")
    old.request(0, Op.WRITE, b"data/x\0" + b"2")  # someone changes what it read
    new = TxWorld(old.dump())
    t = new.con.transactions[tid]
    assert t.restore_failed
    assert new.request(tid, Op.READ, b"data/y\0").data == b"from-tx"  # replayed all the same
    failed = new.txreg.failed_commits
    reply = new.request(tid, Op.TRANSACTION_END, b"T\0")
    assert (reply.ty, reply.data) == (Op.ERROR, b"EAGAIN\0")
    assert new.txreg.failed_commits == failed + 1
    assert new.request(0, Op.READ, b"data/y\0").data == b"ENOENT\0"
    assert tid not in new.con.transactions


def test_a_differing_transaction_can_still_be_aborted():
    old = TxWorld()
    tid = old.start()
    old.request(tid, Op.READ, b"data/x\0")
    old.request(0, Op.RM, b"data/x\0")
    new = TxWorld(old.dump())
    assert new.con.transactions[tid].restore_failed
    assert new.request(tid, Op.TRANSACTION_END, b"F\0").data == b"OK\0"


def test_a_differing_read_only_transaction_fails_too():
    """Without an update a read-only commit never fails; a carried one that read stale data does."""
    old = TxWorld()
    tid = old.start()
    old.request(tid, Op.READ, b"data/x\0")
    old.request(0, Op.WRITE, b"data/x\0" + b"2")
    new = TxWorld(old.dump())
    assert new.request(tid, Op.TRANSACTION_END, b"T\0").data == b"EAGAIN\0"


def test_a_write_that_now_fails_makes_the_commit_eagain():
    old = TxWorld()
    tid = old.start()
    old.request(tid, Op.WRITE, b"data/x\0" + b"tx")
    old.store.setperms(DOM0, Path.of_string("/local/domain/5/data/x"),
                       P.Node.of_strings(["n0"]))  # not guest 5's any more
    new = TxWorld(old.dump())
    assert new.con.transactions[tid].restore_failed
    assert new.request(tid, Op.TRANSACTION_END, b"T\0").data == b"EAGAIN\0"
    assert new.value("/local/domain/5/data/x") == b"1"


def test_a_recorded_op_outside_the_replayable_ones_makes_the_commit_eagain():
    old = TxWorld()
    tid = old.start()
    old.request(tid, Op.WRITE, b"data/a\0" + b"A")
    # recorded (EACCES for a guest), but a replay only redoes the simple ops
    assert old.request(tid, Op.INTRODUCE, b"7\0" + b"1\0" + b"1\0").data == b"EACCES\0"
    new = TxWorld(old.dump())
    assert new.con.transactions[tid].restore_failed
    assert new.request(tid, Op.TRANSACTION_END, b"T\0").data == b"EAGAIN\0"


def test_a_commit_conflicting_after_the_update_is_replayed_with_the_carried_operations():
    old = TxWorld()
    tid = old.start()
    assert old.request(tid, Op.READ, b"data/x\0").data == b"1"
    old.request(tid, Op.WRITE, b"data/x\0" + b"tx")
    new = TxWorld(old.dump())
    assert not new.con.transactions[tid].restore_failed
    new.request(0, Op.WRITE, b"data/x\0" + b"other")  # after the update
    assert new.request(tid, Op.TRANSACTION_END, b"T\0").data == b"EAGAIN\0"
    assert new.value("/local/domain/5/data/x") == b"other"


def test_restored_transaction_keeps_the_request_quota_count():
    old = TxWorld()
    old.settings.quota_maxrequests = 2
    tid = old.start()
    old.request(tid, Op.READ, b"data/x\0")
    old.request(tid, Op.READ, b"data/x\0")
    assert old.request(tid, Op.READ, b"data/x\0").data == b"EQUOTA\0"
    new = TxWorld(old.dump())
    new.settings.quota_maxrequests = 2
    assert new.request(tid, Op.READ, b"data/x\0").data == b"EQUOTA\0"


@pytest.mark.parametrize("ty,data,expected", [
    (Op.WRITE, b"OK\0", Ack(None)),
    (Op.READ, b"OK\0", Reply(b"OK\0")),       # a value that happens to read OK
    (Op.DIRECTORY, b"", Reply(b"")),
    (Op.ERROR, b"EACCES\0", Error("EACCES")),
])
def test_dumped_responses_read_back_as_what_was_recorded(ty, data, expected):
    w = TxWorld()
    req_ty = Op.READ if ty in (Op.READ, Op.ERROR) else ty
    request = Packet(1, 1, req_ty, b"x\0")
    got = w.process.response_of_packet(request, Packet(1, 1, ty, data))
    assert type(got) is type(expected)
    if not isinstance(got, Ack):
        assert got == expected
        assert DB.response_packet(request, got).data == data


def test_packets_of_bytes_refuses_a_cut_packet():
    whole = Packet(1, 2, Op.READ, b"abc\0").to_bytes()
    assert DB.packets_of_bytes(whole * 2) == [Packet(1, 2, Op.READ, b"abc\0")] * 2
    for cut in (whole[:10], whole[:-1]):
        with pytest.raises(ValueError):
            DB.packets_of_bytes(cut)


@pytest.mark.parametrize("line,exc", [
    ("transaction,9,1,2,", "Not_found"),             # no such connection
    ("transaction,5,0,2,", None),                     # not an id a connection can have
    ("transaction,5,1,2,0b00", None),                 # a cut packet
    ("transaction,5,1,2,zz", None),                   # not hex
])
def test_bad_transaction_lines_are_logged_and_skipped(caplog, line, exc):
    with caplog.at_level(logging.WARNING, logger="oxsd.xenstored"):
        w = TxWorld(GUEST5 + line + "\n")
    assert w.con.transactions == {}
    msg = caplog.records[0].getMessage()
    assert msg.startswith(f"restoring: ignoring unknown line: {line} (exception: ")
    if exc is not None:
        assert msg == f"restoring: ignoring unknown line: {line} (exception: {exc})"


def test_duplicate_transaction_line_is_ignored(caplog):
    with caplog.at_level(logging.WARNING, logger="oxsd.xenstored"):
        w = TxWorld(GUEST5 + "transaction,5,1,2,\ntransaction,5,1,2,\n")
    assert sorted(w.con.transactions) == [1]
    assert "(exception: Define.Already_exist)" in caplog.text


def test_a_loader_without_transaction_f_warns_like_the_original(caplog):
    """The original's from_channel_f has no such record: an unknown line, nothing else."""
    seen = []
    text = (GUEST5 + "store,2f,6e30,\ntransaction,5,1,2,\n").encode()
    with caplog.at_level(logging.WARNING, logger="oxsd.xenstored"):
        DB.from_channel_f(text, seen.append, lambda *a: None, seen.append, lambda *a: None,
                          seen.append, lambda *a: seen.append(a[0].to_string()))
    assert seen == ["/"]
    assert [r.getMessage() for r in caplog.records] == [
        "restoring: ignoring unknown line: transaction,5,1,2,"]


# -- when a forced update carries them --------------------------------------------------------

class FakeBlocker:
    domstr = "D5"
    perm = P.Connection.create(5, [P.READ, P.WRITE])

    def __init__(self, extra=False):
        self.extra = extra

    def number_of_transactions(self):
        return 1

    def has_output(self):
        return self.extra

    def has_extra_connection_data(self):
        return self.extra


class FakeCons:
    def __init__(self, blocking):
        self.blocking = blocking

    def prevents_quit(self):
        return list(self.blocking)


def _queued(force, timeout="1"):
    clock = Clock()
    lu = LiveUpdate("/bin/true", [], clock=clock)
    opts = ["-s", "-t", timeout] + (["-F"] if force else [])
    assert lu.parse_live_update(opts) == "BUSY"
    return lu, clock


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def test_forced_update_carries_when_only_transactions_block_after_the_deadline():
    lu, clock = _queued(force=True)
    cons = FakeCons([FakeBlocker(), FakeBlocker()])
    assert not lu.carries_transactions(cons)  # before the deadline
    clock.now += 1.5
    assert lu.should_run(cons) and lu.carries_transactions(cons)


@pytest.mark.parametrize("blocking", [[FakeBlocker(True)], [FakeBlocker(), FakeBlocker(True)], []])
def test_forced_update_does_not_carry_partial_packets_output_or_targets(blocking):
    lu, clock = _queued(force=True)
    clock.now += 1.5
    assert not lu.carries_transactions(FakeCons(blocking))


def test_update_without_force_never_carries():
    lu, clock = _queued(force=False)
    clock.now += 1.5
    cons = FakeCons([FakeBlocker()])
    assert not lu.carries_transactions(cons)
    assert not lu.should_run(cons)  # aborted, as the original
