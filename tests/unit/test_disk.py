"""oxsd.disk: the `persistent` legacy dump and its reader (disk.ml)."""
import logging
import os
import stat

import pytest

from oxsd import disk
from oxsd import perms as P
from oxsd.config import Settings
from oxsd.define import Failure, InvalidArgument
from oxsd.store import Path, Store
from oxsd.utils import ocaml_escaped

DOM0 = P.Connection.full_rights


def fresh() -> Store:
    st = Store.create(Settings())
    for sp in Path.specials:
        st.write(DOM0, sp, b"")
    st.mkdir(P.Connection.create(0), Path.of_string("/local"))
    st.mkdir(DOM0, Path.of_string("/tool"))
    st.write(DOM0, Path.of_string("/tool/xenstored"), b"/usr/lib/xen-4.17/bin/oxenstored")
    return st


@pytest.fixture
def rundir(tmp_path, monkeypatch):
    monkeypatch.setenv("XENSTORED_RUNDIR", str(tmp_path))
    return tmp_path


# -- unescaping ----------------------------------------------------------------

def test_string_unescaped_undoes_ocaml_escaped_for_every_byte():
    data = bytes(range(256)) + b"\\\"'\n\t\r\b"
    assert disk.string_unescaped(ocaml_escaped(data)) == data


@pytest.mark.parametrize("s,exc,text", [
    ("\\q", disk.BadEscape, "Disk.Bad_escape"),
    ("ab\\", InvalidArgument, 'Invalid_argument("index out of bounds")'),
    ("\\x4", InvalidArgument, 'Invalid_argument("index out of bounds")'),
    ("\\xg0", Failure, 'Failure("unhexify")'),
    ("\\1a2", Failure, 'Failure("undecify")'),
    ("\\999", InvalidArgument, 'Invalid_argument("Char.chr")'),
])
def test_string_unescaped_fails_like_the_original(s, exc, text):
    with pytest.raises(exc) as info:
        disk.string_unescaped(s)
    assert disk.ocaml_exn_str(info.value) == text


# -- the perms splitter [quirk] ------------------------------------------------------

def test_parse_perm_of_empty_is_empty():
    assert disk.parse_perm("") == []


@pytest.mark.parametrize("s", ["n0", "b5\\000r0", "r"])
def test_parse_perm_always_fails_on_a_non_empty_string(s):
    with pytest.raises(InvalidArgument) as info:
        disk.parse_perm(s)
    assert disk.ocaml_exn_str(info.value) == 'Invalid_argument("String.sub / Bytes.sub")'


# -- Disk.read ------------------------------------------------------------------------

def test_read_of_a_legacy_dump_logs_the_sub_error_and_changes_nothing(rundir, caplog):
    st = fresh()
    st.mkdir(DOM0, Path.of_string("/vm"))
    st.write(DOM0, Path.of_string("/vm/a"), b"hello\n")
    (rundir / "db").write_bytes(st.dump_buffer())
    target = fresh()
    before = target.dump_buffer()
    with caplog.at_level(logging.ERROR, logger="oxsd.disk"):
        disk.read(target)
    assert [r.getMessage() for r in caplog.records] == [
        'caught exn Invalid_argument("String.sub / Bytes.sub")']
    # The first line wrote the root's value "" (it already was) before failing.
    assert target.dump_buffer() == before


def test_read_of_the_root_line_sets_its_value_before_failing(rundir, caplog):
    (rundir / "db").write_bytes(b"/{n0} = abc\\n\n/local{n0}\n")
    st = fresh()
    with caplog.at_level(logging.ERROR, logger="oxsd.disk"):
        disk.read(st)
    assert st.read(DOM0, Path.of_string("/")) == b"abc\n"
    assert st.get_node(Path.of_string("/local")).children == {}
    assert 'caught exn Invalid_argument("String.sub / Bytes.sub")' in caplog.text


def test_read_of_a_db_dump_fails_on_the_header(rundir, caplog):
    (rundir / "db").write_text("$xenstored-dump-format\nglobal,3\n")
    st = fresh()
    before = st.dump_buffer()
    with caplog.at_level(logging.ERROR, logger="oxsd.disk"):
        disk.read(st)
    assert [r.getMessage() for r in caplog.records] == ["caught exn Not_found"]
    assert st.dump_buffer() == before


def test_read_without_a_file_logs_sys_error(rundir, caplog):
    with caplog.at_level(logging.ERROR, logger="oxsd.disk"):
        disk.read(fresh())
    assert [r.getMessage() for r in caplog.records] == [
        f'caught exn Sys_error("{rundir}/db: No such file or directory")']


def test_read_stops_at_the_first_empty_line(rundir):
    (rundir / "db").write_bytes(b"\n/{n0} = never\n")
    st = fresh()
    disk.read(st)
    assert st.read(DOM0, Path.of_string("/")) == b""


def test_file_readlines_keeps_bytes_and_a_last_line_without_newline(tmp_path):
    f = tmp_path / "x"
    f.write_bytes(b"a\xff\nb\n\nc\n")
    assert disk.file_readlines(str(f)) == ["a\xff", "b"]
    f.write_bytes(b"a\nlast")
    assert disk.file_readlines(str(f)) == ["a", "last"]


# -- Disk.write --------------------------------------------------------------------------

def test_write_puts_the_legacy_dump_in_db_through_db_hash(rundir):
    st = fresh()
    st.mkdir(DOM0, Path.of_string("/vm"))
    st.write(DOM0, Path.of_string("/vm/a"), b"v\x00\xff")
    st.setperms(DOM0, Path.of_string("/vm/a"), P.Node.of_strings(["b5", "r0"]))
    (rundir / "db").write_text("older and longer content " * 100)
    disk.write(st)
    db = rundir / "db"
    assert db.read_bytes() == st.dump_buffer()
    assert b"vm/a{b5\\000r0} = v\\000\\255\n" in db.read_bytes()
    assert not (rundir / "db#").exists()


def test_write_creates_the_file_mode_0600(rundir):
    old = os.umask(0)
    try:
        disk.write(fresh())
    finally:
        os.umask(old)
    assert stat.S_IMODE((rundir / "db").stat().st_mode) == 0o600


def test_write_failure_is_logged_not_raised(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("XENSTORED_RUNDIR", str(tmp_path / "missing"))
    with caplog.at_level(logging.ERROR, logger="oxsd.disk"):
        disk.write(fresh())
    assert caplog.records[0].getMessage() == (
        f'caught exn Sys_error("{tmp_path}/missing/db#: No such file or directory")')
