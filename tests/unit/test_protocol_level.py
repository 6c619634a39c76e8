"""Protocol level 4.22 pieces without a daemon: DIRECTORY_PART's cut, generations,
quota checks, the switch, the dump records (the wire is tests/integration/test_protocol_422.py)."""
from __future__ import annotations

import pytest

from oxsd import define as Define
from oxsd import perms as Perms
from oxsd import parse_arg
from oxsd.config import Settings, validate
from oxsd.db import from_channel_f, to_lines
from oxsd.directory_part import Generations, c_atoi, part
from oxsd.protocol_level import (FEATURES, LEVELS, DomainQuotas, ProtocolLevel, c_strings,
                                 check_level, parse_domid)
from oxsd.quota import Quota
from oxsd.store import Path, Store
from oxsd.xb.op import Op, of_cval


def names(*ns: str) -> bytes:
    return b"".join(n.encode() + b"\0" for n in ns)


def test_part_of_a_short_list_is_all_of_it_and_one_more_nul():
    assert part(7, names("a", "bb"), 0) == b"7\0a\0bb\0\0"
    assert part(7, names("a", "bb"), 2) == b"7\0bb\0\0"
    assert part(7, names("a", "bb"), 5) == b"7\0\0"  # at the end
    assert part(7, names("a", "bb"), 99) == b"7\0\0"  # past it
    assert part(12, b"", 0) == b"12\0\0"  # no children


def test_parts_are_cut_at_name_ends_within_the_payload_and_cover_the_list_once():
    children = names(*[f"name-{i:05d}" for i in range(2000)])  # 22 KB
    off, got, count = 0, b"", 0
    while True:
        data = part(123456, children, off)
        assert len(data) <= 4096
        assert data.startswith(b"123456\0")
        body = data[7:]
        count += 1
        if body.endswith(b"\0\0") or body == b"\0":
            got += body[:-1]
            break
        assert body.endswith(b"\0") and len(body) > 4096 - 7 - 12  # as full as it gets
        got += body
        off += len(body)
    assert got == children and count == 6


def test_c_atoi():
    assert [c_atoi(x) for x in (b"12", b" 7x", b"-3", b"+4", b"", b"abc", b"\t9")] == \
        [12, 7, -3, 4, 0, 0, 9]


def test_generations_are_stable_while_the_list_is_and_never_reused():
    g = Generations()
    p, q = Path.of_string("/a"), Path.of_string("/b")
    first = g.of(p, names("x"))
    assert g.of(p, names("x")) == first
    assert g.of(q, names("x")) != first  # another path, its own number
    second = g.of(p, names("x", "y"))
    assert second > first
    assert g.of(p, names("x")) > second  # back to the old list: still a new number


def test_the_switch_is_a_config_key_and_a_flag():
    s = Settings()
    assert s.protocol_level == "4.17"
    assert validate(s, [("protocol-level", "4.22")]) == [] and s.protocol_level == "4.22"
    errors = validate(s, [("protocol-level", "5")])
    assert errors and errors[0][0] == "protocol-level" and s.protocol_level == "4.22"
    assert parse_arg.parse_argv(["x", "--protocol-level", "4.22"]).protocol_level == "4.22"
    assert parse_arg.parse_argv(["x"]).protocol_level is None
    assert "protocol-level" not in parse_arg.usage_string()  # the usage stays oxenstored's
    with pytest.raises(ValueError):
        check_level("4.18")
    with pytest.raises(parse_arg.ArgBad) as bad:
        parse_arg.parse_argv(["xenstored", "--protocol-level=4.18"])
    assert bad.value.text.startswith("xenstored: wrong argument '4.18'; option "
                                     "'--protocol-level' expects one of: 4.17 4.22.\n")
    assert parse_arg.PROTOCOL_LEVELS == LEVELS


def test_new_ops_decode_but_outside_them_is_invalid():
    assert [of_cval(i) for i in (21, 22, 26, 27, 0xFFFF)] == [
        Op.RESET_WATCHES, Op.DIRECTORY_PART, Op.SET_QUOTA, Op.INVALID, Op.INVALID]


def test_argument_helpers():
    assert c_strings(b"") == [] and c_strings(b"a\0b\0") == [b"a", b"b"]
    assert c_strings(b"a\0b") == [b"a", b"b"]
    assert parse_domid(b"65535") == 65535
    for bad in (b"65536", b"-1", b"x", b""):
        with pytest.raises(ValueError):
            parse_domid(bad)


def test_domain_quota_checks_replace_the_global_ones_for_that_domain():
    settings = Settings()
    limits = DomainQuotas(settings)
    q = Quota(3, 10, cur={5: 3, 6: 3}).with_limits(limits)
    with pytest.raises(Define.QuotaLimitReached):  # no value of its own: oxenstored's EQUOTA
        q.check(5, 1)
    limits.domains[5] = {"nodes": 5}
    q.check(5, 1)
    q.add_entry(5).check(5, 1)
    with pytest.raises(Define.NoSpace):  # C xenstored's ENOSPC
        q.add_entry(5).add_entry(5).check(5, 1)
    with pytest.raises(Define.QuotaLimitReached):
        q.check(6, 1)  # another domain keeps the global limit
    with pytest.raises(Define.DataTooBig):
        q.check(5, 11)  # the global size limit still holds
    limits.domains[5]["node-size"] = 20
    q.check(5, 11)
    limits.domains[5]["nodes"] = 0  # 0: no limit
    q.add_entry(5).add_entry(5).add_entry(5).check(5, 20)
    q.check(0, 5)  # dom0: never per-domain
    assert limits.reported(6, "nodes") == settings.quota_maxentity
    assert limits.reported(5, "node-size") == 20


class _FakeCons:
    def __init__(self):
        self.domains = {}

    def iter(self):
        return []


class _FakeProcess:
    def __init__(self):
        self.cons = _FakeCons()
        self.settings = Settings()
        self.doms = None
        self.store = Store.create(self.settings)


def _tree(store, honoured: bool):
    """/a (n0 r32757, DOMID_ANY honoured or not) with a child /a/b, /c plain."""
    full = Perms.Connection.full_rights
    for p in ("/a", "/a/b", "/c"):
        store.write(full, Path.of_string(p), b"")
    perms = Perms.Node.of_strings(["n0", "r32757"])
    if honoured:
        perms = Perms.honour_domid_any(perms)
    store.setperms(full, Path.of_string("/a"), perms)
    store.write(full, Path.of_string("/a/d"), b"")  # inherits /a's record


def test_dump_records_round_trip_and_the_original_would_skip_them():
    level = ProtocolLevel(_FakeProcess())
    level.generations.counter = 41
    level.features[6] = 1
    level.quotas.global_["nodes"] = 900
    level.quotas.domains[5] = {"watches": 3, "path-max": 100}
    _tree(level.process.store, honoured=True)
    lines = level.dump_lines()
    assert lines == ["xs-generation,41\n", "xs-feature,6,1\n", "xs-quota,-1,nodes,900\n",
                     "xs-quota,5,watches,3\n", "xs-quota,5,path-max,100\n",
                     "xs-domid-any,2f61\n", "xs-domid-any,2f612f64\n"]  # /a, /a/d
    again = ProtocolLevel(_FakeProcess())
    _tree(again.process.store, honoured=False)  # the dump's store lines: plain records
    unknown = []
    data = ("$xenstored-dump-format\n" + "".join(lines) + "xs-bogus,1\n").encode()
    noop = lambda *a: None  # noqa: E731
    from_channel_f(data, noop, noop, noop, noop, noop, noop, None,
                   lambda fields: again.restore_line(fields, lambda ident: None)
                   or unknown.append(fields) is not None)
    assert again.generations.counter == 41 and again.features == {6: 1}
    assert again.quotas.global_ == {"nodes": 900}
    assert again.quotas.domains == {5: {"watches": 3, "path-max": 100}}
    assert unknown == [["xs-bogus", "1"]]
    kinds = {p: type(again.process.store.get_node(Path.of_string(p)).perms).__name__
             for p in ("/a", "/a/b", "/a/d", "/c")}
    assert kinds == {"/a": "AnyDomainNode", "/a/b": "Node", "/a/d": "AnyDomainNode",
                     "/c": "Node"}
    assert again.dump_lines() == lines
    assert FEATURES == 15  # RECONNECTION | ERROR | WATCHDEPTH | DOMID_ANY


def test_the_417_dump_is_unchanged_without_extra_lines():
    class Store:
        def dump_fct(self, f):
            pass

    class Cons:
        domains: dict = {}
        anonymous: dict = {}

    assert to_lines(Store(), Cons(), None, None) == ["$xenstored-dump-format\n", "global,-1\n"]
