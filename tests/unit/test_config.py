"""Config file syntax, value grammars, error lines and --config-test semantics (config.ml, xenstored.ml: parse_config)."""
from __future__ import annotations

import dataclasses
import io
import math
import os
from pathlib import Path

import pytest

from oxsd import config
from oxsd.config import ConfigError, Settings, float_of_string, parse_lines

REPO = Path(__file__).resolve().parents[2]


def load(tmp_path: Path, text: bytes | str, strict: bool = False):
    p = tmp_path / "oxenstored.conf"
    p.write_bytes(text.encode() if isinstance(text, str) else text)
    err = io.StringIO()
    s = Settings.load(str(p), strict=strict, stderr=err)
    return s, err.getvalue()


# -- Settings -------------------------------------------------------------

def test_settings_defaults_are_the_builtin_ones():
    s = Settings()
    assert (s.quota_path_max, s.quota_maxsize, s.quota_maxentity) == (2048, 2048, 1000)
    assert (s.xenstored_log_level, s.xenstored_log_nb_chars) == ("warn", -1)
    assert s.access_log_nb_chars == 180
    assert (s.pid_file, s.xenstored_kva, s.xenstored_port) == ("/var/run/xen/xenstored.pid", "", "")
    assert s.conflict_max_history_seconds == 0.05 and s.merge_activate is True


def test_every_field_is_a_known_key():
    names = {f.name.replace("_", "-") for f in dataclasses.fields(Settings)}
    assert len(names) == 37  # oxenstored 4.17's 35 keys and oxsd's protocol-level, busy-poll-us
    assert {"gc-max-overhead", "access-log-transactions-ops", "ring-scan-interval"} <= names


# -- syntax (config.ml: parse_line) ------------------------------------------------

def test_only_spaces_and_tabs_are_trimmed_so_cr_stays():
    assert parse_lines(" \tquota-maxwatch \t=\t 5 \t\n") == [("quota-maxwatch", "5")]
    assert parse_lines("quota-maxwatch = 5\r\n") == [("quota-maxwatch", "5\r")]


def test_comment_and_empty_lines_are_skipped_and_comments_are_not_inline():
    text = "# a = 1\n   # b = 2\n\n  \t\nquota-maxwatch = 100 # x\n"
    assert parse_lines(text) == [("quota-maxwatch", "100 # x")]


def test_split_at_first_equal_sign_value_may_be_empty_or_contain_equals():
    assert parse_lines("a == 3\nb =\nc=x=y\n= 4\n") == [
        ("a", "= 3"), ("b", ""), ("c", "x=y"), ("", "4")]


def test_line_without_equal_sign_is_skipped_silently():
    assert parse_lines("garbage line\nquota-maxwatch=1") == [("quota-maxwatch", "1")]


def test_crlf_file_breaks_numbers_and_booleans(tmp_path):
    s, err = load(tmp_path, b"quota-maxwatch = 5\r\nperms-activate = false\r\n")
    assert s.quota_maxwatch == 100 and s.perms_activate is True
    assert err.splitlines() == ['config: perms-activate: Invalid_argument("bool_of_string")',
                                "config: quota-maxwatch: expect int arg"]


def test_repeated_key_last_valid_value_wins(tmp_path):
    s, err = load(tmp_path, "quota-maxwatch = 5\nquota-maxwatch = 7\nquota-maxwatch = x\n")
    assert s.quota_maxwatch == 7
    assert err == "config: quota-maxwatch: expect int arg\n"


# -- value grammars (config.ml: validate) --------------------------------------

@pytest.mark.parametrize("text,value", [
    ("-1", -1), ("+5", 5), ("0x10", 16), ("0o17", 15), ("0b101", 5), ("0u12", 12),
    ("1_000", 1000), ("0x7fffffffffffffff", -1), ("4611686018427387903", 2**62 - 1),
])
def test_int_values_use_ocaml_int_of_string(tmp_path, text, value):
    s, err = load(tmp_path, f"quota-maxwatch = {text}\n")
    assert (s.quota_maxwatch, err) == (value, "")


@pytest.mark.parametrize("text", ["10 #", "1.0", "", "0x_1", "_1", "4611686018427387904", "5\r"])
def test_bad_int_values_are_rejected(tmp_path, text):
    s, err = load(tmp_path, f"quota-maxwatch = {text}\n")
    assert s.quota_maxwatch == 100
    assert err == "config: quota-maxwatch: expect int arg\n"


@pytest.mark.parametrize("text,value", [
    ("5", 5.0), ("5.0", 5.0), (".5", 0.5), ("5.", 5.0), ("1e3", 1000.0), ("0x1p3", 8.0),
    ("-0x1.8p1", -3.0), ("1_0.5", 10.5), ("0x1p 3", 8.0), ("_5", 5.0), ("+.5e-2", 0.005),
    ("1e400", math.inf), ("Infinity", math.inf), ("-inf", -math.inf), ("0xA.8", 10.5),
])
def test_float_values_use_ocaml_float_of_string(text, value):
    assert float_of_string(text) == value


def test_float_nan_forms_are_accepted():
    assert math.isnan(float_of_string("nan")) and math.isnan(float_of_string("-NaN(x1)"))


@pytest.mark.parametrize("text", ["", "_", "1e", "0x", "0xp3", "0x1p", "5 ", "1.0.0", "0x1.2.3",
                                  "0x-1", "in", "1\0"])
def test_bad_float_values_fail_like_ocaml(text):
    with pytest.raises(config.Failure):
        float_of_string(text)


@pytest.mark.parametrize("text", ["True", "TRUE", "1", "yes", "", "tru", "true\x0b"])
def test_bool_values_are_exactly_true_or_false(tmp_path, text):
    s, err = load(tmp_path, f"perms-activate = false\nperms-activate = {text}\n")
    assert s.perms_activate is False
    assert err == 'config: perms-activate: Invalid_argument("bool_of_string")\n'


def test_string_values_are_verbatim(tmp_path):
    s, err = load(tmp_path, "pid-file = /a b/#c = d\n")
    assert (s.pid_file, err) == ("/a b/#c = d", "")


def test_non_utf8_bytes_survive_as_a_file_name(tmp_path):
    s, _ = load(tmp_path, b"pid-file = /tmp/\xff.pid\n")
    assert os.fsencode(s.pid_file) == b"/tmp/\xff.pid"


def test_gc_max_overhead_is_accepted_as_an_int(tmp_path):
    s, err = load(tmp_path, "gc-max-overhead = 80\n")
    assert (s.gc_max_overhead, err) == (80, "")


# -- log levels and syslog facilities -------------------------------------

def test_log_level_must_be_one_of_the_five_names(tmp_path):
    s, err = load(tmp_path, 'xenstored-log-level = info\nxenstored-log-level = Debug\n'
                            'xenstored-log-level = lo"ud\xe9\n'.encode("latin-1"))
    assert s.xenstored_log_level == "info"
    assert err.splitlines() == [
        'config: xenstored-log-level: Logging.Unknown_level("lo\\"ud\\233")',
        'config: xenstored-log-level: Logging.Unknown_level("Debug")']


@pytest.mark.parametrize("fac", ["auth", "authpriv", "cron", "daemon", "ftp", "kern", "local0",
                                 "local7", "lpr", "mail", "news", "syslog", "user", "uucp"])
def test_known_syslog_facilities_are_accepted(tmp_path, fac):
    s, err = load(tmp_path, f"access-log-file = syslog:{fac}\n")
    assert (s.access_log_file, err) == (f"syslog:{fac}", "")


def test_unknown_syslog_facility_is_an_error_and_keeps_the_old_value(tmp_path):
    s, err = load(tmp_path, "access-log-file = syslog:LOCAL0\nxenstored-log-file = syslog:\n")
    assert s.access_log_file == Settings().access_log_file
    assert err.splitlines() == ['config: xenstored-log-file: Syslog.Unknown_facility("")',
                                'config: access-log-file: Syslog.Unknown_facility("LOCAL0")']


# -- error reporting (xenstored.ml: parse_config): checked against Debian's oxenstored --

# Both files were run through `/usr/lib/xen-4.17/bin/oxenstored --config-test`;
# the expected lines are its stderr (minus the backtrace line).
ORACLE_1 = (b'quota-maxwatch = 100 # x\nfoo = 1\nperms-activate = yes\n'
            b'xenstored-log-level = lo"ud\xe9\nconflict-burst-limit = 5.0.0\n'
            b'access-log-file = syslog:bar\nxenstored-log-file = syslog:\n= 3\n'
            b'quota-maxentity = 0x_1\nconflict-max-history-seconds = 0x1p 3\n')
ORACLE_1_ERR = """\
config: quota-maxentity: expect int arg
config: unknown key 
config: xenstored-log-file: Syslog.Unknown_facility("")
config: access-log-file: Syslog.Unknown_facility("bar")
config: conflict-burst-limit: expect float arg
config: xenstored-log-level: Logging.Unknown_level("lo\\"ud\\233")
config: perms-activate: Invalid_argument("bool_of_string")
config: unknown key foo
config: quota-maxwatch: expect int arg
"""
ORACLE_2 = (b'a=b\r\n\tquota-maxwatch\t=\t 0x7fffffffffffffff \nquota-maxwatch = 1 # c\n'
            b'perms-activate=True\n#x=1\nnoeq\n  # y = 2\nquota-maxsize == 3\n'
            b'ring-scan-interval = 99999999999999999999\nconflict-burst-limit = 1e\n'
            b'conflict-burst-limit = _\nallow-debug = \nxenstored-log-level = Debug\n'
            b'xenstored-log-level=\naccess-log-file = syslog:LOCAL0\n'
            b'access-log-file = syslog:local0\nxenstored-log-file = syslog:lpr\n'
            b'gc-max-overhead = x\nquota-transaction = -0b1_01\n'
            b'conflict-max-history-seconds = \xff\n')
ORACLE_2_ERR = """\
config: conflict-max-history-seconds: expect float arg
config: gc-max-overhead: expect int arg
config: access-log-file: Syslog.Unknown_facility("LOCAL0")
config: xenstored-log-level: Logging.Unknown_level("")
config: xenstored-log-level: Logging.Unknown_level("Debug")
config: allow-debug: Invalid_argument("bool_of_string")
config: conflict-burst-limit: expect float arg
config: conflict-burst-limit: expect float arg
config: ring-scan-interval: expect int arg
config: quota-maxsize: expect int arg
config: perms-activate: Invalid_argument("bool_of_string")
config: quota-maxwatch: expect int arg
config: unknown key a
"""


def test_error_lines_are_in_reverse_file_order_with_the_oracle_texts(tmp_path):
    _, err = load(tmp_path, ORACLE_1)
    assert err == ORACLE_1_ERR
    _, err = load(tmp_path, ORACLE_2)
    assert err == ORACLE_2_ERR


def test_valid_keys_apply_even_after_errors(tmp_path):
    s, _ = load(tmp_path, ORACLE_2)
    assert s.quota_maxwatch == -1  # 0x7fff... wraps, the later "1 # c" fails
    assert s.access_log_file == "syslog:local0" and s.xenstored_log_file == "syslog:lpr"
    assert s.quota_transaction == -5
    assert s.conflict_max_history_seconds == 0.05


def test_strict_mode_prints_then_raises_config_error(tmp_path):
    with pytest.raises(ConfigError) as ei:
        load(tmp_path, "foo = 1\nquota-maxwatch = x\n", strict=True)
    assert ei.value.errors == [("quota-maxwatch", "expect int arg"), ("foo", "unknown key")]
    assert ei.value.ocaml_str() == "Config.Error(_)"


def test_strict_mode_without_errors_returns_settings(tmp_path):
    s, err = load(tmp_path, "quota-maxwatch = 3\n", strict=True)
    assert (s.quota_maxwatch, err) == (3, "")


@pytest.mark.parametrize("strict", [False, True])
def test_missing_file_prints_sys_error_and_gives_defaults(tmp_path, strict):
    err = io.StringIO()
    path = str(tmp_path / "nope.conf")
    s = Settings.load(path, strict=strict, stderr=err)
    assert s == Settings()
    assert err.getvalue() == f"error: config: {path}: No such file or directory\n"


def test_directory_gives_the_bare_read_error(tmp_path):
    err = io.StringIO()
    assert Settings.load(str(tmp_path), strict=True, stderr=err) == Settings()
    assert err.getvalue() == "error: config: Is a directory\n"


def test_read_returns_settings_and_errors_without_printing(tmp_path):
    p = tmp_path / "c.conf"
    p.write_text("quota-maxsize = 10\nbad = 1\n")
    s, errors = config.read(str(p))
    assert s.quota_maxsize == 10 and errors == [("bad", "unknown key")]
    assert config.error_lines(errors) == ["config: unknown key bad"]


# -- the shipped default file ----------------------------------------------

def test_shipped_config_lists_every_key_and_parses_without_errors():
    path = REPO / "oxenstored.conf"
    keys = [k for k, _ in config.parse(str(path))]
    # protocol-level and busy-poll-us are oxsd's: the original would warn "unknown key", so
    # they are comments there.
    assert sorted(keys + ["protocol-level", "busy-poll-us"]) == sorted(
        f.name.replace("_", "-") for f in dataclasses.fields(Settings))
    assert "\n# protocol-level = 4.17\n" in path.read_text()
    assert "\n# busy-poll-us = 50\n" in path.read_text()
    err = io.StringIO()
    s = Settings.load(str(path), strict=True, stderr=err)
    assert err.getvalue() == ""
    differs = {f.name for f in dataclasses.fields(Settings)
               if getattr(s, f.name) != getattr(Settings(), f.name)}
    # Only where Xen's own oxenstored.conf differs from the built-in defaults.
    assert differs == {"quota_path_max", "xenstored_kva", "xenstored_port"}
    assert (s.quota_path_max, s.xenstored_kva) == (1024, "/proc/xen/xsd_kva")


def test_shipped_config_has_a_comment_before_every_key():
    lines = (REPO / "oxenstored.conf").read_text().splitlines()
    for i, line in enumerate(lines):
        if line and not line.startswith("#"):
            assert lines[i - 1].startswith("# "), line
