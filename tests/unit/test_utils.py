"""oxsd.utils: OCaml integer parsing/printing, String.escaped, hexify, path_validate."""
import os
import socket
import stat

import pytest

from oxsd import utils as U
from oxsd.define import Failure, IntOfStringFailure, InvalidPath

# -- int_of_string (OCaml int_of_string) ------------------------------------------


@pytest.mark.parametrize("s,v", [
    ("0", 0), ("5", 5), ("-5", -5), ("+5", 5), ("007", 7),
    ("0x10", 16), ("0X1f", 31), ("0o17", 15), ("0O7", 7), ("0b101", 5), ("0B1", 1),
    ("0u42", 42), ("0U7", 7), ("1_000", 1000), ("1_", 1), ("0x_", None), ("-0x1", -1),
    ("4611686018427387903", 2**62 - 1), ("-4611686018427387904", -2**62),
    ("0x7fffffffffffffff", -1), ("0x4000000000000000", -2**62),
    ("0u4611686018427387904", -2**62),
])
def test_int_of_string_accepts_ocaml_grammar(s, v):
    if v is None:
        with pytest.raises(IntOfStringFailure):
            U.int_of_string(s)
    else:
        assert U.int_of_string(s) == v


@pytest.mark.parametrize("s", [
    "", " 5", "5 ", "5\n", "-", "+", "0x", "_1", "+-1", "--1", "1a", "0x1g", "0b2", "0o8",
    "4611686018427387904", "-4611686018427387905", "0x8000000000000000",
    "0x10000000000000000", "5\x00", "\x005", "1.0", "0xg",
])
def test_int_of_string_rejects_with_failure_int_of_string(s):
    with pytest.raises(IntOfStringFailure) as ei:
        U.int_of_string(s)
    assert ei.value.msg == "int_of_string"


@pytest.mark.parametrize("s,v", [
    # OCaml 63-bit ints: max_int = 0x3fffffffffffffff, min_int = -0x4000000000000000
    ("0x3fffffffffffffff", 2**62 - 1), ("-0x4000000000000000", -2**62),
    ("0x4000000000000000", -2**62), ("-0x4000000000000001", 2**62 - 1),
    ("-0x7fffffffffffffff", 1), ("-0b1", -1), ("-0o1", -1), ("-0u4611686018427387904", -2**62),
])
def test_int_of_string_prefixed_values_wrap_like_ocaml(s, v):
    # parse_intnat negates the unsigned value, then Val_long keeps 63 bits:
    # "-0x4000000000000000" is min_int (not 2**62, which is no OCaml int)
    assert U.int_of_string(s) == v
    assert -2**62 <= v <= 2**62 - 1


def test_one_int_parser_everywhere():
    from oxsd import hypervisor, ocaml_int, stdext
    assert U.int_of_string is ocaml_int.int_of_string is stdext.int_of_string
    assert hypervisor.int_of_string is ocaml_int.int_of_string
    assert hypervisor.parse_port_file(b"-0x4000000000000000") == ocaml_int.MIN_INT
    assert (ocaml_int.MIN_INT, ocaml_int.MAX_INT) == (-0x4000000000000000, 0x3fffffffffffffff)


def test_int_of_string_takes_bytes_too():
    assert U.int_of_string(b"12") == 12


def test_nativeint_of_string_is_64_bit_and_wraps_with_prefix():
    assert U.nativeint_of_string("9223372036854775807") == 2**63 - 1
    assert U.nativeint_of_string("-9223372036854775808") == -2**63
    assert U.nativeint_of_string("0xffffffffffffffff") == -1
    assert U.nativeint_of_string("4611686018427387904") == 2**62


@pytest.mark.parametrize("s", ["9223372036854775808", "0x10000000000000000", "", "x", "1 "])
def test_nativeint_failure_is_not_a_value_error(s):
    # Not mapped by the handler: the request gets EIO.
    with pytest.raises(Failure) as ei:
        U.nativeint_of_string(s)
    assert ei.value.msg == "Nativeint.of_string"
    assert not isinstance(ei.value, ValueError)


@pytest.mark.parametrize("s,v", [
    ("5", 5), ("-5", 5), ("12ab34", 12), ("abc", 0), ("", 0), ("  7\0", 7), ("x0012y", 12),
    ("9" * 30, None),
])
def test_c_int_of_string_is_lenient(s, v):
    if v is None:
        # Overflow wraps like a 63-bit OCaml int.
        r = U.c_int_of_string(s)
        assert -2**62 <= r < 2**62
        assert r == ((int(s) + 2**62) % 2**63) - 2**62
    else:
        assert U.c_int_of_string(s) == v
        assert U.c_int_of_string(s.encode()) == v


def test_format_u_prints_negative_as_plus_2_pow_63():
    assert U.format_u(5) == "5"
    assert U.format_u(0) == "0"
    assert U.format_u(-1) == "9223372036854775807"
    assert U.format_u(-2**62) == str(2**62)


# -- String.escaped (logging.ml: access_logging) ----------------------------------------

def test_ocaml_escaped_specials_and_decimal_escapes():
    assert U.ocaml_escaped(b'a"b\\c\nd\te\rf\bg') == 'a\\"b\\\\c\\nd\\te\\rf\\bg'
    assert U.ocaml_escaped(b"\x00\x01\x7f\x80\xff") == "\\000\\001\\127\\128\\255"
    assert U.ocaml_escaped(b"it's ok ~") == "it's ok ~"
    assert U.ocaml_escaped("n0\0r5") == "n0\\000r5"
    assert U.ocaml_escaped(b"") == ""


# -- hexify / unhexify (xenstored.ml: DB.to_channel) -----------------------------------

def test_hexify_is_lowercase_two_digits_per_byte():
    assert U.hexify(b"/\x00\xff") == "2f00ff"
    assert U.hexify(b"") == ""
    assert U.hexify("n0") == "6e30"


def test_unhexify_inverts_hexify_and_is_lenient_like_the_original():
    data = bytes(range(256))
    assert U.unhexify(U.hexify(data)) == data
    assert U.unhexify("2F6e") == b"/n"
    assert U.unhexify("2f6") == b"/"  # odd last digit ignored
    assert U.unhexify("f_") == b"\x0f"  # int_of_string "0xf_"
    with pytest.raises(IntOfStringFailure):
        U.unhexify("zz")
    with pytest.raises(IntOfStringFailure):
        U.unhexify("_f")


# -- lists and strings -------------------------------------------------------

def test_trim_path_cuts_at_last_slash():
    assert U.trim_path("/a/b") == "/a"
    assert U.trim_path("/a") == ""
    assert U.trim_path("ab") == ""


def test_join_by_null():
    assert U.join_by_null([b"a", b"b", b""]) == b"a\0b\0"


def test_get_hierarchy_lists_every_prefix_root_first():
    assert U.get_hierarchy(["a", "b"]) == [(), ("a",), ("a", "b")]
    assert U.get_hierarchy([]) == [()]


def test_list_remove_compares_by_identity():
    a, b = [1], [1]
    assert U.list_remove(a, [a, b, a]) == [b]
    assert U.list_remove(a, [a, b])[0] is b


def test_filter_in_and_out():
    assert U.filter_out([1, 2], [1, 2, 3, 1]) == [3]
    assert U.filter_in([1, 2], [1, 2, 3, 1]) == [1, 2, 1]


# -- path_validate (store.ml: Path.create) -------------------------------------------

@pytest.mark.parametrize("path,counted", [
    ("/local/domain/5/x", 1), ("/local/domain/05/x", 1), ("/local/domain/1_2/x", 1),
    ("/local/domain/+5/x", 1), ("/local/domain/-5/x", 1),
    ("/local/domain/5", 15), ("/local/domain/0x10/x", 20), ("/local/domain//x", 16),
    ("/local/domain/_5/x", 18), ("/a", 2), ("@foo", 4),
    ("/local/domain/99999999999999999999/x", 36),  # overflow: whole length counts
    # 18 digits never overflow; at 19 OCaml's int_of_string decides (max_int = 2^62 - 1)
    ("/local/domain/999999999999999999/x", 1), ("/local/domain/4611686018427387903/x", 1),
    ("/local/domain/4611686018427387904/x", 35), ("/local/domain/1_000000000000000000/x", 1),
])
def test_path_validate_counts_only_the_part_after_local_domain_n(path, counted):
    assert U.path_validate(path, "/local/domain/7/", counted) == path
    with pytest.raises(InvalidPath):
        U.path_validate(path, "/local/domain/7/", counted - 1)


def test_path_validate_makes_relative_paths_absolute_and_checks_relative_part():
    assert U.path_validate("x/y", "/local/domain/7/", 3) == "/local/domain/7/x/y"
    with pytest.raises(InvalidPath):
        U.path_validate("x/y", "/local/domain/7/", 2)
    # A long domid does not eat into the limit.
    assert U.path_validate("ab", "/local/domain/123456/", 2) == "/local/domain/123456/ab"


def test_path_validate_empty_is_invalid():
    with pytest.raises(InvalidPath):
        U.path_validate("", "/local/domain/0/", 2048)


def test_path_validate_at_paths_are_not_prefixed():
    assert U.path_validate("@releaseDomain", "/local/domain/3/", 2048) == "@releaseDomain"


# -- unix helpers ------------------------------------------------------------

def test_read_file_single_integer(tmp_path):
    p = tmp_path / "port"
    p.write_bytes(b"42")
    assert U.read_file_single_integer(str(p)) == 42
    p.write_bytes(b"42\n")  # the original fails on a newline too
    with pytest.raises(IntOfStringFailure):
        U.read_file_single_integer(str(p))


def test_create_unix_socket_replaces_old_file_and_listens(tmp_path):
    name = str(tmp_path / "run" / "xenstored" / "socket")
    os.makedirs(os.path.dirname(name))
    open(name, "w").close()
    assert stat.S_ISREG(os.stat(name).st_mode)
    sock = U.create_unix_socket(name)
    try:
        assert stat.S_ISSOCK(os.stat(name).st_mode)  # the stale file was unlinked
        c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        c.settimeout(5)
        c.connect(name)
        sock.settimeout(5)
        served, _ = sock.accept()  # it listens: the connection is there to accept
        c.sendall(b"x")
        assert served.recv(1) == b"x"
        served.close()
        c.close()
    finally:
        sock.close()


def test_create_unix_socket_makes_missing_dirs_0700(tmp_path):
    name = str(tmp_path / "a" / "b" / "socket")
    sock = U.create_unix_socket(name)
    sock.close()
    assert os.stat(str(tmp_path / "a" / "b")).st_mode & 0o777 == 0o700


def test_format_float_is_printf_percent_capital_f():
    assert U.format_float(1795592004.0197546) == "1795592004.02"  # %.12g
    assert U.format_float(0.00014686584472656) == "0.000146865844727"
    assert U.format_float(120.0) == "120."
    assert U.format_float(1.0) == "1." and U.format_float(-1.0) == "-1."
    assert U.format_float(1e-05) == "1e-05"
