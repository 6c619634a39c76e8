"""oxsd.perms: permission strings, connection identities and checks (perms.ml)."""
import logging

import pytest

from oxsd import perms as P
from oxsd.config import Settings
from oxsd.define import IntOfStringFailure, InvalidArgument, PermissionDenied

R, W, B, N = P.READ, P.WRITE, P.RDWR, P.NONE


def node(s: str) -> P.Node:
    return P.Node.of_strings(s.split())


def guest(domid, target=None):
    c = P.Connection.create(domid, [R, W])
    return c if target is None else c.set_target(target, [R, W])


# -- parsing and printing ----------------------------------------------------

def test_of_string_first_entry_is_owner_and_other_rest_is_acl():
    p = P.Node.of_string(b"b5\0r0\0w7\0")
    assert p == P.Node(5, B, ((0, R), (7, W)))
    assert p.get_owner() == 5 and p.get_other() is B and p.get_acl() == ((0, R), (7, W))


def test_of_string_drops_the_last_piece_whatever_it_is():
    assert P.Node.of_string("b5\0r0") == P.Node(5, B, ())
    with pytest.raises(InvalidArgument):
        P.Node.of_string("r5")  # only one piece: dropped, then empty


@pytest.mark.parametrize("data", [b"", b"\0", b"x5\0", b"r\0", b"r5x\0", b"b5\0\0\0"])
def test_of_string_bad_input_is_einval(data):
    with pytest.raises(ValueError):  # InvalidArgument or Failure "int_of_string"
        P.Node.of_string(data)


def test_perm_of_string_uses_int_of_string():
    assert P.perm_of_string("r0x10") == (16, R)
    assert P.perm_of_string("n-1") == (-1, N)
    with pytest.raises(IntOfStringFailure):
        P.perm_of_string("r 5")
    with pytest.raises(InvalidArgument):
        P.perm_of_string("q5")


def test_to_string_prints_u_and_joins_with_sep():
    p = P.Node(5, B, ((0, R), (-1, N)))
    assert p.to_string() == "b5\0r0\0n9223372036854775807"
    assert P.Node.to_string(p, sep=" ") == "b5 r0 n9223372036854775807"
    assert P.default0.to_string() == "n0"


def test_permty_chars_round_trip():
    for c in "rwbn":
        assert P.char_of_permty(P.permty_of_char(c)) == c
    with pytest.raises(InvalidArgument):
        P.permty_of_char("x")


def test_node_records_are_immutable_and_compare_by_value():
    a = P.Node.create(5, R, [(1, W)])
    assert a == P.Node(5, R, ((1, W),))
    with pytest.raises(AttributeError):
        a.owner = 3  # type: ignore[misc]


def test_remove_domid_drops_acl_entries_or_gives_none_for_owner():
    p = node("b5 r3 w3 r4")
    assert p.remove_domid(5) is None
    assert p.remove_domid(3) == P.Node(5, B, ((4, R),))
    assert p.remove_domid(9) == p


def test_equiv_compares_printed_form():
    assert P.equiv(node("b5 r0"), P.Node.of_string("b5\0r0\0"))
    assert not P.equiv(node("b5 r0"), node("b5 r0 r0"))


# -- connection identities (perms.ml: Connection) ----------------------------------------------

def test_connection_identity_owners_and_dom0():
    c = guest(5)
    assert c.get_owners() == [5] and c.is_owner(5) and not c.is_owner(0)
    assert not c.is_dom0()
    t = c.set_target(7, [R, W])
    assert t.get_owners() == [5, 7] and t.is_owner(7)
    assert not t.is_dom0()


def test_a_domain_targeting_dom0_counts_as_dom0():
    assert guest(5, target=0).is_dom0()


def test_connection_to_string_like_ocaml_percent_i_percent_S():
    assert guest(5).to_string() == '5"rw"'
    assert guest(5, 7).to_string() == '5"rw"7"rw"'
    assert P.Connection.create(3).to_string() == '3"n"'


def test_connection_default_perms_and_full_rights():
    assert P.Connection.create(3) == P.Connection((3, (N,)), None)
    assert P.Connection.full_rights == P.Connection((0, (R, W)), None)
    assert P.ConnectionPerms is P.Connection
    # Different rights lists make different identities (blocks live update).
    assert P.Connection.create(0) != P.Connection.full_rights


# -- checks (perms.ml: check) ---------------------------------------------------------------

def test_dom0_and_owner_always_pass():
    p = node("n5")
    assert not P.lacks(guest(0), W, p)
    assert not P.lacks(guest(5), W, p)
    assert not P.lacks(guest(9, target=5), W, p)  # owner through the target
    assert P.lacks(guest(6), R, p)


@pytest.mark.parametrize("perm,read_ok,write_ok", [
    ("n", False, False), ("r", True, False), ("w", False, True), ("b", True, True)])
def test_other_right_decides_for_unlisted_domains(perm, read_ok, write_ok):
    p = node(f"{perm}0")
    assert P.has(guest(6), R, p) is read_ok
    assert P.has(guest(6), W, p) is write_ok


def test_first_acl_entry_wins_over_later_and_other():
    p = node("b0 n6 b6")
    assert P.lacks(guest(6), R, p)
    assert P.has(guest(7), R, p)


def test_target_identity_acl_is_consulted_after_main():
    p = node("n0 r7")
    assert P.has(guest(6, target=7), R, p)
    assert P.lacks(guest(6, target=7), W, p)


def test_perms_activate_false_grants_everything():
    p = node("n0")
    assert not P.lacks(guest(6), W, p, activate=False)
    assert P.check_owner(guest(6), p, activate=False)


def test_check_raises_permission_denied():
    with pytest.raises(PermissionDenied):
        P.check(guest(6), W, node("r0"))
    P.check(guest(6), R, node("r0"))


def test_check_owner():
    assert P.check_owner(guest(0), node("n5"))
    assert P.check_owner(guest(5), node("n5"))
    assert not P.check_owner(guest(6), node("n5 b6"))


@pytest.mark.parametrize("perm,request_,msg", [
    ("n", R, "Permission denied: Domain 6 has no permission"),
    ("r", W, "Permission denied: Domain 6 has read only access"),
    ("w", R, "Permission denied: Domain 6 has write only access"),
])
def test_denials_are_logged_at_info_on_oxsd_perms(caplog, perm, request_, msg):
    with caplog.at_level(logging.INFO, logger="oxsd.perms"):
        assert P.lacks(guest(6), request_, node(f"{perm}0"))
    assert [(r.name, r.levelno, r.getMessage()) for r in caplog.records] == [
        ("oxsd.perms", logging.INFO, msg)]


def test_one_log_line_per_identity_tried(caplog):
    with caplog.at_level(logging.INFO, logger="oxsd.perms"):
        P.lacks(guest(6, target=7), R, node("n0"))
    assert [r.getMessage() for r in caplog.records] == [
        "Permission denied: Domain 6 has no permission",
        "Permission denied: Domain 7 has no permission"]


def test_no_log_when_dom0_or_owner(caplog):
    with caplog.at_level(logging.INFO, logger="oxsd.perms"):
        P.lacks(guest(0), R, node("n5"))
        P.lacks(guest(5), R, node("n5"))
    assert caplog.records == []


def test_can_fire_watch_any_record_granting_read_is_enough():
    s = Settings()
    assert P.can_fire_watch(guest(6), [node("n0"), node("r0")], s)
    assert not P.can_fire_watch(guest(6), [node("n0"), node("w0")], s)
    assert not P.can_fire_watch(guest(6), [], s)
    assert P.can_fire_watch(guest(0), [node("n5")], s)


def test_can_fire_watch_flags():
    assert P.can_fire_watch(guest(6), [], Settings(perms_watch_activate=False))
    assert P.can_fire_watch(guest(6), [node("n0")], Settings(perms_activate=False))


# -- DOMID_ANY (protocol level 4.22; C xenstored core.c perm_allows_conn) ---------------------

ANY = P.DOMID_ANY  # 0x7ff5 = 32757


def any_node(s: str) -> P.Node:
    return P.honour_domid_any(node(s))


def test_domid_any_is_xen_h_value_and_prints_as_a_domid():
    assert ANY == 0x7FF5
    p = any_node("n0 r32757")
    assert type(p) is P.AnyDomainNode
    assert p.to_string(" ") == "n0 r32757" and p == node("n0 r32757")
    assert P.honour_domid_any(node("n0 r5")) == node("n0 r5")
    assert type(P.honour_domid_any(node("n0 r5"))) is P.Node  # nothing to honour
    assert type(P.honour_domid_any(node("n32757"))) is P.AnyDomainNode  # the owner


def test_an_honoured_domid_any_entry_gives_every_domain_its_right():
    p = any_node("n0 r32757")
    for domid in (1, 6, 0x7FEF):
        assert P.has(guest(domid), R, p) and P.lacks(guest(domid), W, p)
    assert P.has(guest(0), W, p)  # dom0 as ever


def test_in_a_plain_record_domid_any_names_no_domain_that_can_connect():
    p = node("n0 r32757")  # written at 4.17, or by a writer without the feature
    assert P.lacks(guest(6), R, p)
    assert P.lacks(guest(6, target=7), R, p)


def test_first_matching_entry_wins_with_domid_any_too():
    p = any_node("b0 n6 r32757 b7")
    assert P.lacks(guest(6), R, p)  # its own entry comes first
    assert P.has(guest(7), R, p) and P.lacks(guest(7), W, p)  # DOMID_ANY comes first
    assert P.has(guest(8), R, p) and P.lacks(guest(8), W, p)  # `other` (b) never reached
    # the main domain's first match, then the target's
    q = any_node("n0 n6 w32757")
    assert P.lacks(guest(6, target=9), R, q) and P.has(guest(6, target=9), W, q)


def test_the_owner_domid_any_makes_every_domain_owner():
    p = any_node("n32757")
    assert P.has(guest(6), W, p) and P.has(guest(6), R, p)
    assert P.check_owner(guest(6), p)
    assert not P.check_owner(guest(6), node("n32757"))  # plain: no one connects as 32757
    assert P.check_owner(guest(6), any_node("n5 r32757")) is False  # ACL entries do not own


def test_domid_any_denials_log_as_others(caplog):
    with caplog.at_level(logging.INFO, logger="oxsd.perms"):
        assert P.lacks(guest(6, target=7), W, any_node("n0 r32757"))
    assert [r.getMessage() for r in caplog.records] == [
        "Permission denied: Domain 6 has read only access",
        "Permission denied: Domain 7 has read only access"]


def test_releasing_a_domain_keeps_domid_any_and_the_record_class():
    p = any_node("n5 r6 r32757")
    q = p.remove_domid(6)
    assert type(q) is P.AnyDomainNode and q.to_string(" ") == "n5 r32757"
    assert p.remove_domid(5) is None  # the owner's node goes, as ever
    assert P.has(guest(9), R, q)


def test_watches_fire_through_domid_any():
    s = Settings()
    assert P.can_fire_watch(guest(6), [node("n0"), any_node("n0 r32757")], s)
    assert not P.can_fire_watch(guest(6), [node("n0"), node("n0 r32757")], s)
