"""oxsd.db: the `$xenstored-dump-format` dump written and read as xenstored.ml's DB does."""
from __future__ import annotations

import logging
import os
import socket
import stat
import tempfile

import pytest

from oxsd import db as DB
from oxsd import perms as Perms
from oxsd.config import Settings
from oxsd.connections import Connections
from oxsd.logging_ import AccessLog
from oxsd.store import Path, Store
from oxsd.utils import hexify

FULL = Perms.Connection.full_rights


def _fresh() -> tuple[Store, Connections]:
    settings = Settings()
    return Store.create(settings), Connections(settings, AccessLog.disabled())


def _store_with_nodes() -> Store:
    store, _ = _fresh()
    for d in ("/vm", "/vm/a"):
        store.mkdir(FULL, Path.of_string(d))
    store.write(FULL, Path.of_string("/vm/a/b"), b"hello")
    store.write(FULL, Path.of_string("/vm/bin"), b"\x00\x01\xff")
    store.setperms(FULL, Path.of_string("/vm/a"),
                   Perms.Node.of_string(b"b5\0r0\0w7\0"))
    return store


def _no_domains(_event):
    raise AssertionError("no domain expected")


def _load(data: bytes, store=None, cons=None, owned=None):
    if store is None:
        store, cons = _fresh()
    restored = DB.from_channel(store, cons, _no_domains, None, data, owned)
    return store, cons, restored


def _store_lines(lines) -> list[str]:
    return [ln for ln in lines if ln.startswith("store,")]


def test_dump_header_global_and_store_lines_as_the_original_writes_them():
    store = _store_with_nodes()
    _, cons = _fresh()
    lines = DB.to_lines(store, cons, None, None)
    assert lines[0] == "$xenstored-dump-format\n"
    assert lines[1] == "global,-1\n"
    # root first, perms "n0" hexified, empty value as nothing after the comma
    assert lines[2] == "store,2f,6e30,\n"
    assert f"store,{hexify('/vm/a')},{hexify('b5' + chr(0) + 'r0' + chr(0) + 'w7')},\n" in lines
    assert f"store,{hexify('/vm/a/b')},6e30,{b'hello'.hex()}\n" in lines
    assert f"store,{hexify('/vm/bin')},6e30,0001ff\n" in lines


def test_dump_is_pre_order_parent_before_children():
    store = _store_with_nodes()
    _, cons = _fresh()
    paths = [bytes.fromhex(ln.split(",")[1]).decode() for ln in
             _store_lines(DB.to_lines(store, cons, None, None))]
    for i, p in enumerate(paths):
        if p != "/":
            parent = p.rsplit("/", 1)[0] or "/"
            assert parent in paths[:i], (p, paths)


def test_store_round_trips_values_and_perms_through_the_dump():
    store = _store_with_nodes()
    _, cons = _fresh()
    data = DB.to_bytes(store, cons, None, None)
    store2, cons2, restored = _load(data)
    assert restored.listen_sock is None and restored.doms is None
    assert _store_lines(DB.to_lines(store2, cons2, None, None)) == \
        _store_lines(DB.to_lines(store, cons, None, None))
    assert store2.getperms(FULL, Path.of_string("/vm/a")) == Perms.Node.of_string(b"b5\0r0\0w7\0")


def test_wrong_header_is_fatal_bad_format():
    with pytest.raises(DB.BadFormat):
        _load(b"$xenstored-dump-format-v2\nstore,2f,6e30,\n")


def test_empty_dump_is_fatal_end_of_file():
    with pytest.raises(EOFError):
        _load(b"")


def test_unknown_and_malformed_lines_are_logged_and_skipped(caplog):
    caplog.set_level(logging.WARNING, logger="oxsd.xenstored")
    data = (b"$xenstored-dump-format\n"
            b"frobnicate,1\n"
            b"store,zz,6e30,\n"
            + f"store,{hexify('/kept')},6e30,{b'v'.hex()}\n".encode())
    store, _, _ = _load(data)
    assert store.read(FULL, Path.of_string("/kept")) == b"v"
    text = caplog.text
    assert "restoring: ignoring unknown line: frobnicate,1" in text
    assert "restoring: ignoring unknown line: store,zz,6e30, (exception:" in text


def test_socket_line_with_a_dead_fd_is_ignored_with_a_warning(caplog):
    caplog.set_level(logging.WARNING, logger="oxsd.xenstored")
    r, w = os.pipe()  # a valid fd that is not a socket, and one that is closed
    os.close(w)
    try:
        _, cons, _ = _load(f"$xenstored-dump-format\nsocket,{r}\nsocket,{w}\n".encode())
    finally:
        os.close(r)
    assert cons.anonymous == {}
    assert f"Ignoring invalid socket FD {r}" in caplog.text
    assert f"Ignoring invalid socket FD {w}" in caplog.text


def test_socket_line_adopts_an_inherited_socket_with_its_watches():
    a, b = socket.socketpair()
    fd = a.detach()
    try:
        data = (f"$xenstored-dump-format\nsocket,{fd}\n"
                f"watch,{-fd},{hexify('/vm')},{hexify('tok')}\n").encode()
        _, cons, restored = _load(data)
        assert list(cons.anonymous) == [fd]
        con = cons.anonymous[fd]
        assert con.list_watches() == [("/vm", b"tok")]
        assert fd in restored.adopted_fds
        # and it is dumped again as the same socket with the same watch
        lines = DB.to_lines(Store.create(Settings()), cons, None, None)
        assert f"socket,{fd}\n" in lines
        assert f"watch,{-fd},{hexify('/vm')},{hexify('tok')}\n" in lines
        assert os.get_inheritable(fd)  # kept across the live-update exec
    finally:
        b.close()
        try:
            os.close(fd)
        except OSError:
            pass


def test_global_line_reuses_an_owned_listening_socket_and_ignores_extra_fields():
    d = tempfile.mkdtemp(prefix="oxdb", dir="/tmp")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(os.path.join(d, "s"))
        sock.listen(1)
        data = f"$xenstored-dump-format\nglobal,{sock.fileno()},99\n".encode()
        _, _, restored = _load(data, owned={sock.fileno(): sock})
        assert restored.listen_sock is sock
    finally:
        sock.close()
        os.unlink(os.path.join(d, "s"))
        os.rmdir(d)


def test_global_line_with_a_dead_fd_leaves_no_listening_socket(caplog):
    caplog.set_level(logging.WARNING, logger="oxsd.xenstored")
    r, w = os.pipe()
    os.close(r)
    os.close(w)
    _, _, restored = _load(f"$xenstored-dump-format\nglobal,{r}\n".encode())
    assert restored.listen_sock is None
    assert f"restoring: ignoring unknown line: global,{r} (exception: Unix.Unix_error(Unix.EBADF" \
        in caplog.text


def test_dump_makes_the_listening_socket_inheritable():
    d = tempfile.mkdtemp(prefix="oxdb", dir="/tmp")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(os.path.join(d, "s"))
        sock.listen(1)
        assert not os.get_inheritable(sock.fileno())
        store, cons = _fresh()
        lines = DB.to_lines(store, cons, sock, None)
        assert lines[1] == f"global,{sock.fileno()}\n"
        assert os.get_inheritable(sock.fileno())
    finally:
        sock.close()
        os.unlink(os.path.join(d, "s"))
        os.rmdir(d)


def test_to_file_creates_the_dump_mode_0600_and_truncates(tmp_path):
    path = str(tmp_path / "db")
    with open(path, "wb") as f:
        f.write(b"x" * 100000)
    os.chmod(path, 0o644)
    store, cons = _fresh()
    DB.to_file(store, cons, None, None, path)
    with open(path, "rb") as f:
        assert f.read() == DB.to_bytes(store, cons, None, None)
    os.unlink(path)
    DB.to_file(store, cons, None, None, path)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600


def test_from_file_reads_back_what_to_file_wrote(tmp_path):
    store = _store_with_nodes()
    _, cons = _fresh()
    path = str(tmp_path / "db")
    DB.to_file(store, cons, None, None, path)
    store2, cons2 = _fresh()
    DB.from_file(store2, cons2, _no_domains, None, path)
    assert store2.read(FULL, Path.of_string("/vm/a/b")) == b"hello"
    assert store2.read(FULL, Path.of_string("/vm/bin")) == b"\x00\x01\xff"


def test_dom_line_without_hypervisor_warns_and_is_skipped(caplog):
    caplog.set_level(logging.WARNING, logger="oxsd.xenstored")
    _, cons, restored = _load(b"$xenstored-dump-format\ndom,5,4096,1,4\n")
    assert cons.domains == {} and restored.doms is None
    assert "No event channel file descriptor available in dump!" in caplog.text
    assert "restoring: ignoring unknown line: dom,5,4096,1,4" in caplog.text


def test_dumped_fds_lists_the_fd_carrying_lines():
    data = b"$xenstored-dump-format\nglobal,3\nevtchn-dev,5,2\ndom,0,0,1,3\nsocket,7\n"
    assert list(DB.dumped_fds(data)) == [("global", 3), ("evtchn-dev", 5), ("socket", 7)]
