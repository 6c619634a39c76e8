"""xenstored log and access log: formats, levels, truncation, rotation, syslog (logging.ml)."""
from __future__ import annotations

import logging
import os
import re
import stat
import syslog as std_syslog
from pathlib import Path
from unittest import mock

import pytest

from oxsd import loggers as W
from oxsd import logging_ as L
from oxsd.config import ConfigError, Settings, UnknownLevel
from oxsd.syslog import Facility, UnknownFacility
from oxsd.xb.op import Op

DATE = r"\d{8}T\d\d:\d\d:\d\d\.\d{3}Z"


@pytest.fixture(autouse=True)
def _clean_xenstored_log():
    yield
    L.teardown_xenstored_log()


@pytest.fixture
def syslog_calls():
    calls = []
    with mock.patch("oxsd.syslog._syslog.syslog", side_effect=lambda p, m: calls.append((p, m))):
        yield calls


def lines(path: Path) -> list[str]:
    return path.read_text(encoding="latin-1").splitlines()


def strip_dates(text_lines):
    return [re.sub(r"^\[" + DATE + r"([]|])", r"[D\1", s) for s in text_lines]


# -- dates and truncation --------------------------------------------------

def test_date_is_utc_with_truncated_milliseconds():
    assert W.string_of_date(0.0) == "19700101T00:00:00.000Z"
    assert W.string_of_date(1700000000.9999) == "20231114T22:13:20.999Z"
    assert W.string_of_date(1700000001.0005) == "20231114T22:13:21.000Z"
    assert W.string_of_date(1700000000.5) == "20231114T22:13:20.500Z"


@pytest.mark.parametrize("nb,line,out", [
    (180, "x" * 179, "x" * 179),
    (180, "x" * 180, "x" * 177 + ".."),
    (5, "abcde", "ab.."),
    (2, "abc", ".."),
    (1, "a", ".."),
    (1, "", ""),
])
def test_truncate_line_keeps_nb_chars_minus_3_plus_dots(nb, line, out):
    assert W.truncate_line(nb, line) == out
    assert W.truncate_line(nb, line.encode()) == out.encode()  # the access log's bytes lines


# -- file logger -------------------------------------------------------------

def test_file_logger_appends_and_creates_0644(tmp_path):
    p = tmp_path / "x.log"
    p.write_text("old\n")
    old = os.umask(0)
    try:
        lg = W.make_file_logger(str(p), 10, 100, -1)
        lg.write("new")
        lg.stop()
        q = tmp_path / "y.log"
        W.make_file_logger(str(q), 10, 100, -1).stop()
        assert stat.S_IMODE(q.stat().st_mode) == 0o644
    finally:
        os.umask(old)
    assert lines(p) == ["old", "new"]


def test_first_rotation_after_nb_lines_plus_one_lines_and_hook_runs(tmp_path):
    p = tmp_path / "x.log"
    hook = mock.Mock()
    lg = W.make_file_logger(str(p), 3, 2, -1, hook)
    for i in range(3):
        lg.write(f"l{i}")
    assert lines(Path(f"{p}.1")) == ["l0", "l1", "l2"]
    assert p.read_text() == "" and hook.call_count == 1
    for i in range(3, 9):
        lg.write(f"l{i}")
    lg.stop()
    # targets stop below nb_files: only .1 and .2 exist, the oldest is dropped
    assert lines(Path(f"{p}.1")) == ["l6", "l7", "l8"]
    assert lines(Path(f"{p}.2")) == ["l3", "l4", "l5"]
    assert not Path(f"{p}.3").exists() and hook.call_count == 3


def test_a_failing_rotation_hook_does_not_make_every_next_line_rotate(tmp_path):
    p = tmp_path / "x.log"
    hook = mock.Mock(side_effect=OSError(30, "Read-only file system"))
    lg = W.make_file_logger(str(p), 5, 2, -1, hook)
    for i in range(9):
        try:
            lg.write(f"l{i}")
        except OSError:
            pass
    lg.stop()
    assert hook.call_count == 3  # every 3 lines, not every line once the hook failed
    assert lines(Path(f"{p}.1")) == ["l6", "l7", "l8"]


def test_rotation_with_one_file_truncates_in_place(tmp_path):
    p = tmp_path / "x.log"
    lg = W.make_file_logger(str(p), 1, 0, -1)
    lg.write("a")
    lg.write("b")
    lg.stop()
    assert p.read_text() == "" and not Path(f"{p}.1").exists()


def test_rotation_shifts_existing_chain_highest_first(tmp_path):
    p = tmp_path / "x.log"
    for suffix, text in (("", "cur"), (".1", "one"), (".2", "two"), (".4", "four")):
        Path(f"{p}{suffix}").write_text(text)
    W.log_rotate(str(p), 10)
    assert [Path(f"{p}.{i}").read_text() for i in (1, 2, 3)] == ["cur", "one", "two"]
    assert Path(f"{p}.4").read_text() == "four"  # the chain stopped at the missing .3


def test_rotation_quirk_moves_dot_zero_when_file_is_missing(tmp_path):
    p = tmp_path / "x.log"
    Path(f"{p}.0").write_text("zero")
    W.log_rotate(str(p), 10)
    assert Path(f"{p}.1").read_text() == "zero"


def test_restart_reopens_the_path_and_keeps_the_line_count(tmp_path):
    p = tmp_path / "x.log"
    lg = W.make_file_logger(str(p), 5, 3, -1)
    lg.write("a")
    lg.write("b")
    os.rename(p, tmp_path / "moved.log")  # logrotate
    lg.restart()
    lg.write("c")
    lg.write("d")  # 4th line since the start: rotates
    lg.stop()
    assert lines(tmp_path / "moved.log") == ["a", "b"]
    assert lines(Path(f"{p}.1")) == ["c", "d"]


def test_file_logger_truncates_lines_when_nb_chars_positive(tmp_path):
    p = tmp_path / "x.log"
    lg = W.make_file_logger(str(p), 5, 100, 6)
    lg.write("123456789")
    lg.write("12345")
    lg.stop()
    assert lines(p) == ["123..", "12345"]


# -- xenstored log -------------------------------------------------------------

def xs_settings(tmp_path, **kw) -> Settings:
    return Settings(xenstored_log_file=str(tmp_path / "xenstored.log"), **kw)


def test_xenstored_log_starts_with_bare_banner_and_formats_lines(tmp_path):
    L.setup_xenstored_log(xs_settings(tmp_path, xenstored_log_level="debug"))
    logging.getLogger("oxsd.xenstored").info("found lazy domain %d, credit %d", 5, 36)
    logging.getLogger("oxsd.quota").warning("domain 5 cannot create entry: quota reached")
    logging.getLogger("oxsd.process").error("got a bad client %-8s", "D7")
    logging.getLogger("oxsd.store|node").debug("pending port 12")
    out = lines(tmp_path / "xenstored.log")
    assert out[0] == "Xen Storage Daemon, version 1.0"
    assert all(re.match(r"\[" + DATE + r"\|", s) for s in out[1:])
    assert strip_dates(out[1:]) == [
        "[D| info|xenstored] found lazy domain 5, credit 36",
        "[D| warn|quota] domain 5 cannot create entry: quota reached",
        "[D|error|process] got a bad client D7      ",
        "[D|debug|store|node] pending port 12",
    ]


def test_a_xenstored_log_that_cannot_be_written_is_said_once_on_stderr(tmp_path, capsys):
    L.setup_xenstored_log(xs_settings(tmp_path, xenstored_log_level="info"))
    handler = L.xenstored_log_handler()
    fd = handler.logger.fd
    handler.logger.fd = os.open(os.devnull, os.O_RDONLY)  # every write fails (EBADF)
    log = logging.getLogger("oxsd.xenstored")
    for i in range(5):
        log.info("lost %d", i)
    os.close(handler.logger.fd)
    handler.logger.fd = fd
    log.info("kept")
    err = capsys.readouterr().err.splitlines()
    path = tmp_path / "xenstored.log"
    assert err == [f"oxenstored: cannot write the xenstored log {path}: Bad file descriptor; "
                   "its lines are dropped until it can be written again",
                   f"oxenstored: the xenstored log {path} is written again; 5 lines were dropped"]
    assert strip_dates(lines(path)[1:]) == [
        "[D| info|xenstored] kept",
        f"[D| warn|xenstored] the xenstored log {path} is written again; 5 lines were dropped"]


def test_an_access_log_that_cannot_be_written_is_said_once_in_the_xenstored_log(tmp_path):
    L.setup_xenstored_log(xs_settings(tmp_path, xenstored_log_level="info"))
    access = L.AccessLog(Settings(access_log_file=str(tmp_path / "access.log")))
    fd = access.logger.fd
    access.logger.fd = os.open(os.devnull, os.O_RDONLY)
    for i in range(4):
        access.xb_op(0, "A1", Op.WRITE, b"/a\0%d" % i)
    os.close(access.logger.fd)
    access.logger.fd = fd
    access.xb_op(0, "A1", Op.WRITE, b"/b\0x")
    path = tmp_path / "access.log"
    assert strip_dates(lines(tmp_path / "xenstored.log")[1:]) == [
        f"[D| warn|xenstored] cannot write the access log {path}: Bad file descriptor; "
        "its lines are dropped until it can be written again",
        f"[D| warn|xenstored] the access log {path} is written again; 4 lines were dropped"]
    assert len(lines(path)) == 1


def test_xenstored_log_level_filters_lower_levels(tmp_path):
    L.setup_xenstored_log(xs_settings(tmp_path))  # default: warn
    log = logging.getLogger("oxsd.domains")
    log.debug("d")
    log.info("i")
    log.warning("w")
    log.error("e")
    assert strip_dates(lines(tmp_path / "xenstored.log")[1:]) == ["[D| warn|domains] w",
                                                                   "[D|error|domains] e"]
    assert not L.debug_enabled()


@pytest.mark.parametrize("kw", [{"xenstored_log_level": "null"}, {"xenstored_log_nb_files": 0}])
def test_no_file_log_is_created_for_null_level_or_no_files(tmp_path, kw):
    h = L.setup_xenstored_log(xs_settings(tmp_path, **kw))
    logging.getLogger("oxsd.xenstored").error("nothing")
    assert not (tmp_path / "xenstored.log").exists()
    h.restart()  # the SIGHUP action is harmless without a log


def test_sighup_restart_reopens_xenstored_log(tmp_path):
    h = L.setup_xenstored_log(xs_settings(tmp_path))
    os.rename(tmp_path / "xenstored.log", tmp_path / "old.log")
    h.restart()
    logging.getLogger("oxsd.xenstored").error("after")
    assert strip_dates(lines(tmp_path / "xenstored.log")) == ["[D|error|xenstored] after"]


def test_teardown_restores_the_oxsd_logger(tmp_path):
    root = logging.getLogger("oxsd")
    before = root.level
    L.setup_xenstored_log(xs_settings(tmp_path, xenstored_log_level="error"))
    assert root.level == logging.ERROR
    L.teardown_xenstored_log()
    assert root.level == before
    assert not any(isinstance(h, L.XenstoredLogHandler) for h in root.handlers)


def test_bad_level_in_settings_is_refused():
    with pytest.raises(UnknownLevel):
        L.setup_xenstored_log(Settings(xenstored_log_level="loud"))


def test_xenstored_log_to_syslog_has_key_prefix_and_mapped_priority(tmp_path, syslog_calls,
                                                                    monkeypatch):
    monkeypatch.delenv("TZ", raising=False)
    L.setup_xenstored_log(Settings(xenstored_log_file="syslog:local3", xenstored_log_level="info"))
    assert os.environ["TZ"] == "/etc/localtime"
    logging.getLogger("oxsd.perms").info("Permission denied: Domain 3 has no permission")
    logging.getLogger("oxsd.xenstored").error("a\nb\n")
    logging.getLogger("oxsd.xenstored").debug("filtered")
    f = std_syslog.LOG_LOCAL3
    assert syslog_calls == [
        (f | std_syslog.LOG_INFO, "Xen Storage Daemon, version 1.0"),
        (f | std_syslog.LOG_INFO, "[perms] Permission denied: Domain 3 has no permission"),
        (f | std_syslog.LOG_ERR, "[xenstored] a"),
        (f | std_syslog.LOG_ERR, "b"),
    ]


def test_syslog_null_level_still_writes_the_banner_only(syslog_calls):
    L.setup_xenstored_log(Settings(xenstored_log_file="syslog:daemon", xenstored_log_level="null"))
    logging.getLogger("oxsd.xenstored").error("dropped")
    assert [m for _, m in syslog_calls] == ["Xen Storage Daemon, version 1.0"]


def test_log_destination_parsing():
    assert W.log_destination_of_string("/var/log/x") == W.File("/var/log/x")
    assert W.log_destination_of_string("syslog:uucp") == W.Syslog_(Facility.UUCP)
    with pytest.raises(UnknownFacility):
        W.log_destination_of_string("syslog:Daemon")


# -- access log ------------------------------------------------------------------

DATE0 = "20240101T10:00:00.000Z"


@pytest.fixture
def fixed_date(monkeypatch):
    monkeypatch.setattr(L, "string_of_date", lambda t=None: DATE0)
    monkeypatch.setattr(L, "date_bytes", lambda: DATE0.encode())


def access(tmp_path, **kw) -> tuple[L.AccessLog, Path]:
    kw.setdefault("access_log_file", str(tmp_path / "access.log"))
    return L.AccessLog(Settings(**kw)), Path(kw["access_log_file"])


def test_access_line_format_for_every_event(tmp_path):
    a, p = access(tmp_path, access_log_transactions_ops=True, access_log_read_ops=True)
    a.new_connection(0, "A1")
    a.xb_op(0, "A1", Op.WRITE, b"/a\0hi")
    a.xb_op(0, "A1", Op.WATCH, b"/a\0tok\0")
    a.xb_answer(0, "A1", Op.WATCH_EVENT, b"/a\0tok\0")
    a.xb_answer(0, "A1", Op.ERROR, b"EACCES\0")
    a.start_transaction(3, "A1")
    a.end_transaction(3, "A1")
    a.commit(3, "A1")
    a.conflict(4, "D5")
    a.write_coalesce(5, "D5", "/local/x")
    a.read_coalesce(5, "D5", "/local/y")
    a.watch_not_fired("D2", "n0", "/local/domain/0")
    a.live_update()
    a.end_connection(0, "A1")
    a.close()
    out = lines(p)
    assert all(re.match(r"\[" + DATE + r"\]  ", s) for s in out)
    assert strip_dates(out) == [
        "[D]  A1           newconn   ",
        "[D]  A1           write     /a hi",
        "[D]  A1           watch     /a tok ",
        "[D]  A1           w event   /a tok ",
        "[D]  A1           error     EACCES ",
        "[D]  A1.3         t start   ",
        "[D]  A1.3         t end     ",
        "[D]  A1.3         commit    ",
        "[D]  D5.4         conflict  ",
        "[D]  D5.5         coalesce  write /local/x",
        "[D]  D5.5         coalesce  read /local/y",
        "[D]  D2           w notfired EPERM perms=[n0] path=/local/domain/0",
        "[D]               debug     Live update begin",
        "[D]  A1           endconn   ",
    ]


def test_tid_field_is_padded_to_12_and_never_cut(tmp_path):
    a, p = access(tmp_path)
    a.commit(7, "r(12):D12345")
    a.commit(0, "=======>")
    assert strip_dates(lines(p)) == ["[D]  r(12):D12345.7 commit    ",
                                     "[D]  =======>     commit    "]


def test_type_field_strings_match_logging_ml():
    assert {op.name: L._TYPE_FIELD[op] for op in Op} == {
        "DEBUG": "debug    ", "DIRECTORY": "directory", "READ": "read     ",
        "GET_PERMS": "getperms ", "WATCH": "watch    ", "UNWATCH": "unwatch  ",
        "TRANSACTION_START": "t start  ", "TRANSACTION_END": "t end    ",
        "INTRODUCE": "introduce", "RELEASE": "release  ", "GET_DOMAIN_PATH": "getdomain",
        "WRITE": "write    ", "MKDIR": "mkdir    ", "RM": "rm       ", "SET_PERMS": "setperms ",
        "WATCH_EVENT": "w event  ", "ERROR": "error    ", "IS_INTRODUCED": "is introduced",
        "RESUME": "resume   ", "SET_TARGET": "settarget", "INVALID": "invalid  ",
        "RESET_WATCHES": "reset watches",
        # op.ml 4.17 decodes 22..26 as Invalid: logged as such.
        "DIRECTORY_PART": "invalid  ", "GET_FEATURE": "invalid  ", "SET_FEATURE": "invalid  ",
        "GET_QUOTA": "invalid  ", "SET_QUOTA": "invalid  "}


def test_data_escaping_is_ocaml_string_escaped_after_nul_to_space():
    assert L.sanitize_data(b'a\0"b\\c\n\t\r\x08\x7f\x80\xff\'') == \
        'a \\"b\\\\c\\n\\t\\r\\b\\127\\128\\255\''


@pytest.mark.parametrize("byte", range(256))
def test_every_byte_is_written_as_sanitize_data_escapes_it(tmp_path, fixed_date, byte):
    # The file path takes one translate for plain data and escapes anything else.
    a, p = access(tmp_path)
    data = b"/p\0" + bytes([byte]) + b"\0v"
    a.xb_op(3, "D7", Op.WRITE, data)
    a.write_coalesce(0, "D7", data)
    assert lines(p) == [f"[{DATE0}]  D7.3         write     " + L.sanitize_data(data),
                        f"[{DATE0}]  D7           coalesce  " + L.sanitize_data(b"write " + data)]


def test_syslog_access_line_has_no_date_and_the_same_fields(syslog_calls):
    a = L.AccessLog(Settings(access_log_file="syslog:local2"))
    a.xb_op(2, "D3", Op.WRITE, b"/a\0\x01b")
    a.watch_not_fired("D3", "n0", "/a")
    f = std_syslog.LOG_LOCAL2
    assert syslog_calls == [
        (f | std_syslog.LOG_INFO, " D3.2         write     /a \\001b"),
        (f | std_syslog.LOG_INFO, " D3           w notfired EPERM perms=[n0] path=/a")]


def test_request_op_filter_defaults(tmp_path):
    a, p = access(tmp_path)
    for op in Op:
        a.xb_op(0, "A1", op, b"")
    logged = [s.split()[2] for s in strip_dates(lines(p))]
    assert logged == ["debug", "watch", "unwatch", "write", "mkdir", "rm", "setperms", "w",
                      "error", "settarget", "invalid", "reset"] + ["invalid"] * 5  # ops 22..26


def test_read_and_special_ops_need_their_flags_and_transactions_never_log_as_requests(tmp_path):
    a, p = access(tmp_path, access_log_read_ops=True, access_log_special_ops=True,
                  access_log_transactions_ops=True)
    for op in (Op.READ, Op.DIRECTORY, Op.GET_PERMS, Op.INTRODUCE, Op.RELEASE,
               Op.GET_DOMAIN_PATH, Op.IS_INTRODUCED, Op.RESUME,
               Op.TRANSACTION_START, Op.TRANSACTION_END):
        a.xb_op(1, "D1", op, b"x")
    types = [s[18:-2] for s in strip_dates(lines(p))]
    assert types == ["read     ", "directory", "getperms ", "introduce", "release  ", "getdomain",
                     "is introduced", "resume   "]


def test_transaction_lines_need_flag_and_nonzero_tid(tmp_path):
    a, p = access(tmp_path)
    a.start_transaction(3, "A1")
    b, q = access(tmp_path, access_log_transactions_ops=True, access_log_file=str(tmp_path / "b"))
    b.start_transaction(0, "A1")
    b.end_transaction(0, "A1")
    assert lines(p) == [] and lines(q) == []


def test_answers_log_errors_and_events_only_enoent_needs_read_ops(tmp_path):
    a, p = access(tmp_path)
    a.xb_answer(1, "D1", Op.ERROR, b"ENOENT\0")
    a.xb_answer(1, "D1", Op.READ, b"value")
    a.xb_answer(1, "D1", Op.WRITE, b"OK\0")
    a.xb_answer(1, "D1", Op.ERROR, b"EINVAL\0")
    assert strip_dates(lines(p)) == ["[D]  D1.1         error     EINVAL "]
    b, q = access(tmp_path, access_log_read_ops=True, access_log_file=str(tmp_path / "b"))
    b.xb_answer(0, "D1", Op.ERROR, b"ENOENT\0")
    b.read_coalesce(1, "D1", "/p")
    assert strip_dates(lines(q)) == ["[D]  D1           error     ENOENT ",
                                     "[D]  D1.1         coalesce  read /p"]


def test_read_coalesce_is_silent_without_read_ops(tmp_path):
    a, p = access(tmp_path)
    a.read_coalesce(1, "D1", "/p")
    assert lines(p) == []


def test_lines_are_cut_at_179_chars_with_dots(tmp_path):
    a, p = access(tmp_path)
    a.xb_op(0, "D1", Op.WRITE, b"/p\0" + b"\xff" * 2000)
    a.xb_op(0, "D1", Op.WRITE, b"/p\0" + b"v" * 140)
    out = lines(p)
    assert [len(s) for s in out] == [179, 179]
    assert out[0].endswith("\\255\\..") and out[1].endswith("v..")


@pytest.mark.parametrize("nb_chars", [1, 2, 3, 30, 60, 61, 62, 63, 64, 65, 66, 67, 200])
def test_cutting_data_before_escaping_gives_the_same_line(tmp_path, fixed_date, nb_chars):
    data = bytes(range(256)) * 2
    a, p = access(tmp_path, access_log_nb_chars=nb_chars)
    for n in range(0, 70):
        a.xb_op(0, "D1", Op.WRITE, data[n:n + 80])
    expected = [W.truncate_line(nb_chars, f"[{DATE0}]  D1           write     " +
                                L.sanitize_data(data[n:n + 80])) for n in range(70)]
    assert lines(p) == expected


def test_access_log_rotation_calls_post_rotate(tmp_path):
    hook = mock.Mock()
    p = tmp_path / "access.log"
    a = L.AccessLog(Settings(access_log_file=str(p), access_log_nb_lines=1,
                             access_log_nb_files=3), post_rotate=hook)
    a.commit(1, "A1")
    a.commit(2, "A1")
    assert hook.call_count == 1 and len(lines(Path(f"{p}.1"))) == 2


def test_access_log_write_failures_are_ignored(tmp_path):
    a, p = access(tmp_path)
    a.xb_op(0, "A1", Op.WRITE, b"/a\0b")
    os.close(a.fileno())
    with pytest.raises(OSError):  # the file logger itself does fail now...
        a.logger.write("probe", logging.INFO)
    with mock.patch.object(a.logger, "write_bytes", wraps=a.logger.write_bytes) as write:
        a.xb_op(0, "A1", Op.WRITE, b"/c\0d")  # ...and the access log swallows the EBADF
        a.commit(1, "A1")
    assert write.call_count == 2  # both lines were attempted
    a.close()
    assert strip_dates(lines(p)) == ["[D]  A1           write     /a b"]


def test_access_log_restart_reopens_after_logrotate(tmp_path):
    a, p = access(tmp_path)
    a.commit(1, "A1")
    os.rename(p, tmp_path / "old")
    a.restart()
    a.commit(2, "A1")
    assert len(lines(tmp_path / "old")) == 1 and len(lines(p)) == 1


@pytest.mark.parametrize("make", [
    lambda tmp: L.AccessLog.disabled(),
    lambda tmp: L.AccessLog(Settings(access_log_file=str(tmp / "access.log")), activate=False),
    lambda tmp: L.AccessLog(Settings(access_log_file=str(tmp / "access.log"),
                                     access_log_nb_files=0)),
])
def test_disabled_access_log_is_a_null_object_and_creates_no_file(tmp_path, make):
    a = make(tmp_path)
    assert isinstance(a, L.NullAccessLog) and not a.enabled
    a.new_connection(0, "A1")
    a.xb_op(0, "A1", Op.WRITE, b"/a\0b")
    a.xb_answer(0, "A1", Op.ERROR, b"EINVAL\0")
    a.watch_not_fired("A1", "n0", "/a")
    a.live_update()
    a.restart()
    a.close()
    assert not (tmp_path / "access.log").exists()


def test_syslog_access_log_lines_start_with_space_and_map_levels(syslog_calls):
    a = L.AccessLog(Settings(access_log_file="syslog:local1", access_log_nb_files=0))
    assert a.enabled
    a.new_connection(0, "A1")
    a.xb_op(0, "A1", Op.WRITE, b"/a\0" + b"x" * 300)
    a.xb_answer(0, "A1", Op.ERROR, b"EACCES\0")
    a.xb_answer(0, "A1", Op.WATCH_EVENT, b"/a\0t\0")
    f = std_syslog.LOG_LOCAL1
    assert syslog_calls == [
        (f | std_syslog.LOG_DEBUG, " A1           newconn   "),
        (f | std_syslog.LOG_INFO, " A1           write     /a " + "x" * 300),
        (f | std_syslog.LOG_WARNING, " A1           error     EACCES "),
        (f | std_syslog.LOG_INFO, " A1           w event   /a t "),
    ]


# -- fatal exceptions -------------------------------------------------------

def test_fallback_handler_prints_ocaml_name_to_stderr_and_log(tmp_path, capsys):
    L.setup_xenstored_log(xs_settings(tmp_path))
    try:
        raise ConfigError([("a", "unknown key")])
    except ConfigError as e:
        L.fallback_exception_handler(e, e.__traceback__)
    err = capsys.readouterr().err
    assert err.startswith("Fatal exception: Config.Error(_)\n  File ")
    logged = lines(tmp_path / "xenstored.log")
    assert strip_dates(logged)[1] == "[D|error|xenstored-fallback] Fatal exception: Config.Error(_)"


def test_fallback_handler_without_log_uses_syslog_daemon_err(syslog_calls, capsys):
    L.fallback_exception_handler(RuntimeError("boom"))
    assert capsys.readouterr().err == "Fatal exception: RuntimeError('boom')\n\n"
    assert syslog_calls == [(std_syslog.LOG_DAEMON | std_syslog.LOG_ERR,
                             "Fatal exception: RuntimeError('boom')")]
