"""oxsd.store: paths, immutable nodes and the store operations (store.ml)."""
import io
import logging
import platform

import pytest

from oxsd import perms as P
from oxsd.config import Settings
from oxsd.define import (AlreadyExist, DataTooBig, DoesntExist, InvalidPath, LookupDoesntExist,
                         PermissionDenied, QuotaLimitReached)
from oxsd.quota import Quota
from oxsd.store import Node, Path, PathCache, Store, dump_store_buf, traversal

DOM0 = P.Connection.full_rights


def guest(domid, target=None):
    c = P.Connection.create(domid, [P.READ, P.WRITE])
    return c if target is None else c.set_target(target, [P.READ, P.WRITE])


def p(s):
    return Path.of_string(s)


def perms(s):
    return P.Node.of_strings(s.split())


def fresh(settings=None) -> Store:
    """The initial tree of a fresh daemon (xenstored.ml: main)."""
    st = Store.create(settings or Settings())
    for sp in Path.specials:
        st.write(DOM0, sp, b"")
    st.mkdir(P.Connection.create(0), p("/local"))
    st.mkdir(DOM0, p("/tool"))
    st.write(DOM0, p("/tool/xenstored"), b"oxsd")
    return st


def with_guest_dir(domid=5, settings=None) -> Store:
    st = fresh(settings)
    st.mkdir(DOM0, p("/local/domain"))
    st.mkdir(DOM0, p(f"/local/domain/{domid}"))
    st.setperms(DOM0, p(f"/local/domain/{domid}"), perms(f"n{domid} r0"))
    return st


# -- Path ----------------------------------------------------------------------

@pytest.mark.parametrize("s,comps", [
    ("/", ()), ("/a", ("a",)), ("/local/domain/5", ("local", "domain", "5")),
    ("/A-z_0@", ("A-z_0@",)), ("@introduceDomain", ("@introduceDomain",)),
    ("@foo/bar baz\xff", ("@foo/bar baz\xff",)), ("/@foo/bar", ("@foo", "bar")),
])
def test_of_string_valid(s, comps):
    assert Path.of_string(s) == comps
    assert isinstance(Path.of_string(s), Path)


@pytest.mark.parametrize("s", ["", "a", "a/b", "/a/", "//", "/a//b", "/.", "/a/..", "/a b",
                               "/a\nb", "/\xe9", "/a/b\n", "/a:b", "/a.b"])
def test_of_string_invalid(s):
    with pytest.raises(InvalidPath):
        Path.of_string(s)


def test_of_string_accepts_bytes():
    assert Path.of_string(b"/a/b") == ("a", "b")


def test_create_resolves_relative_paths_under_the_connection_base():
    assert Path.create("data/x", "/local/domain/5/", 2048) == ("local", "domain", "5", "data", "x")
    assert Path.create(b"/a", "/local/domain/5/", 2048) == ("a",)
    assert Path.create("@releaseDomain", "/local/domain/5/", 2048) == ("@releaseDomain",)


def test_create_errors():
    with pytest.raises(InvalidPath):
        Path.create("", "/local/domain/0/", 2048)
    with pytest.raises(InvalidPath):
        Path.create("a/", "/local/domain/0/", 2048)  # resolves to something invalid
    with pytest.raises(InvalidPath):
        Path.create("x" * 1025, "/local/domain/0/", 1024)
    assert len(Path.create("x" * 1024, "/local/domain/0/", 1024)[-1]) == 1024


def test_to_string_and_list():
    assert p("/a/b").to_string() == "/a/b"
    assert p("/").to_string() == "/"
    assert p("@x").to_string() == "/@x"
    assert p("/a/b").to_string_list() == ("a", "b")


def test_parent_hierarchy_common_prefix():
    assert p("/a/b").get_parent() == p("/a")
    assert p("/").get_parent() == p("/")
    assert p("/a/b").get_hierarchy() == [(), ("a",), ("a", "b")]
    assert Path.get_common_prefix(p("/a/b/c"), p("/a/b/d")) == ("a", "b")
    assert Path.get_common_prefix(p("/a"), p("/b")) == ()
    assert isinstance(p("/a/b").get_parent(), Path)


def test_of_path_and_name():
    assert Path.of_path_and_name((), "") == ()
    assert Path.of_path_and_name((), "a") == ("a",)
    assert Path.of_path_and_name(("a",), "b") == ("a", "b")


def test_specials_are_single_component_at_paths():
    assert Path.specials == [("@introduceDomain",), ("@releaseDomain",)]


# -- initial tree (xenstored.ml: main) ---------------------------------------------------

def test_fresh_tree_lists_at_nodes_first_as_root_children():
    st = fresh()
    assert st.ls(DOM0, p("/")) == ["@introduceDomain", "@releaseDomain", "local", "tool"]
    assert st.read(DOM0, p("/@introduceDomain")) == b""
    assert st.get_node(p("@introduceDomain")) is st.get_node(p("/@introduceDomain"))


def test_fresh_tree_quota_counts_five_dom0_entries():
    assert dict(fresh().quota.cur) == {0: 5}


def test_at_path_with_slash_is_one_root_child_not_reachable_by_slash_path():
    st = fresh()
    st.write(DOM0, p("@foo/bar"), b"v")
    assert "@foo/bar" in st.ls(DOM0, p("/"))
    with pytest.raises(KeyError):
        st.read(DOM0, p("/@foo/bar"))


# -- read / ls / getperms ----------------------------------------------------------

def test_read_missing_node_or_ancestor_is_key_error():
    st = fresh()
    with pytest.raises(KeyError):
        st.read(DOM0, p("/nope"))
    with pytest.raises(KeyError):
        st.read(DOM0, p("/nope/deeper"))
    with pytest.raises(KeyError):
        st.ls(DOM0, p("/nope"))
    with pytest.raises(KeyError):
        st.getperms(DOM0, p("/nope"))


def test_read_checks_only_the_node_itself():
    st = with_guest_dir(5)
    st.write(DOM0, p("/local/domain/5/pub"), b"x")
    st.setperms(DOM0, p("/local/domain/5/pub"), perms("n0 r6"))
    assert st.read(guest(6), p("/local/domain/5/pub")) == b"x"  # parent unreadable to 6
    with pytest.raises(PermissionDenied):
        st.read(guest(6), p("/local/domain/5"))
    with pytest.raises(PermissionDenied):
        st.ls(guest(6), p("/local/domain/5"))
    with pytest.raises(PermissionDenied):
        st.getperms(guest(6), p("/local/domain/5"))


def test_root_read_checks_root():
    st = fresh()
    with pytest.raises(PermissionDenied):
        st.read(guest(6), p("/"))
    assert st.read(DOM0, p("/")) == b""


def test_ls_sorts_ascending_by_byte_value():
    st = fresh()
    st.mkdir(DOM0, p("/tool/d"))
    for name in ["b", "B", "a", "_", "0", "-", "@z", "aa", "Z"]:
        st.write(DOM0, p("/tool/d/" + name), b"")
    assert st.ls(DOM0, p("/tool/d")) == ["-", "0", "@z", "B", "Z", "_", "a", "aa", "b"]
    assert st.ls(DOM0, p("/tool/xenstored")) == []


def test_getperms_returns_record():
    st = with_guest_dir(5)
    assert st.getperms(guest(5), p("/local/domain/5")) == perms("n5 r0")


def test_path_exists_needs_no_permission():
    st = with_guest_dir(5)
    assert st.path_exists(p("/"))
    assert st.path_exists(p("/local/domain/5"))
    assert not st.path_exists(p("/local/domain/6"))
    assert not st.path_exists(p("/x/y/z"))


# -- write (store.ml: write) ------------------------------------------------------------------

def test_write_creates_node_with_parent_record_owner_included():
    st = with_guest_dir(5)
    st.setperms(DOM0, p("/local/domain/5"), perms("n5 r0 b6"))
    st.write(guest(6), p("/local/domain/5/x"), b"v")
    assert st.getperms(DOM0, p("/local/domain/5/x")) == perms("n5 r0 b6")
    assert dict(st.quota.cur)[5] == 2  # charged to the parent's owner, not the writer
    assert 6 not in st.quota.cur


def test_write_existing_checks_node_new_checks_parent():
    st = with_guest_dir(5)
    st.write(DOM0, p("/local/domain/5/ro"), b"")
    st.setperms(DOM0, p("/local/domain/5/ro"), perms("n0 r5"))
    with pytest.raises(PermissionDenied):
        st.write(guest(5), p("/local/domain/5/ro"), b"x")
    st.write(guest(5), p("/local/domain/5/new"), b"x")


def test_write_missing_ancestor_is_lookup_doesnt_exist():
    st = fresh()
    with pytest.raises(LookupDoesntExist):
        st.write(DOM0, p("/a/b/c"), b"")


def test_write_value_bytes_stored_exactly():
    st = fresh()
    st.write(DOM0, p("/a"), b"x\0y\0")
    assert st.read(DOM0, p("/a")) == b"x\0y\0"


def test_write_root_sets_root_value_and_no_entry():
    st = fresh()
    st.write(DOM0, p("/"), b"r")
    assert st.read(DOM0, p("/")) == b"r"
    assert dict(st.quota.cur) == {0: 5}
    with pytest.raises(PermissionDenied):
        st.write(guest(5), p("/"), b"x")


def test_quota_check_comes_before_permission_check():
    s = Settings(quota_maxsize=4, quota_maxentity=2)
    st = with_guest_dir(5, s)
    # no rights at all on /tool, yet E2BIG rather than EACCES
    with pytest.raises(DataTooBig):
        st.write(guest(5), p("/tool/x"), b"12345")
    st.write(guest(5), p("/local/domain/5/a"), b"")
    assert dict(st.quota.cur)[5] == 2
    # at the entry limit a new node under its own dir gives EQUOTA...
    with pytest.raises(QuotaLimitReached):
        st.write(guest(5), p("/local/domain/5/b"), b"")
    # ...and EQUOTA even without rights: the checked owner is the parent's owner
    st.setperms(DOM0, p("/local/domain/5/a"), perms("n5"))
    with pytest.raises(QuotaLimitReached):
        st.write(guest(6), p("/local/domain/5/a/x"), b"")


def test_existing_node_only_size_is_checked():
    s = Settings(quota_maxsize=4, quota_maxentity=1)
    st = with_guest_dir(5, s)
    st.write(guest(5), p("/local/domain/5"), b"1234")  # at the limit, existing
    with pytest.raises(DataTooBig):
        st.write(guest(5), p("/local/domain/5"), b"12345")


def test_dom0_size_limited_but_not_count_limited():
    s = Settings(quota_maxsize=4, quota_maxentity=1)
    st = with_guest_dir(5, s)
    st.write(DOM0, p("/local/domain/5/a"), b"")
    st.write(DOM0, p("/local/domain/5/b"), b"")
    assert dict(st.quota.cur)[5] == 3  # dom0 pushes the guest past maxent
    with pytest.raises(DataTooBig):
        st.write(DOM0, p("/tool/big"), b"12345")


def test_target_zero_guest_is_dom0_for_quota():
    st = with_guest_dir(5, Settings(quota_maxentity=1))
    with pytest.raises(QuotaLimitReached):  # a plain guest 5 is at its one entry already
        st.write(guest(5), p("/local/domain/5/a"), b"")
    st.write(guest(5, target=0), p("/local/domain/5/a"), b"")
    st.write(guest(5, target=0), p("/local/domain/5/b"), b"")
    assert dict(st.quota.cur)[5] == 3  # counted, like dom0's writes, but never refused
    assert st.ls(DOM0, p("/local/domain/5")) == ["a", "b"]


def test_quota_activate_false():
    st = with_guest_dir(5, Settings(quota_activate=False, quota_maxsize=1, quota_maxentity=1))
    st.write(guest(5), p("/local/domain/5/a"), b"long value")
    st.write(guest(5), p("/local/domain/5/b"), b"")
    assert dict(st.quota.cur)[5] == 3  # still counted


def test_perms_activate_false_lets_guests_write_anywhere():
    st = fresh(Settings(perms_activate=False))
    st.write(guest(5), p("/tool/x"), b"v")
    assert st.read(guest(6), p("/tool/x")) == b"v"


# -- mkdir (store.ml: mkdir) ------------------------------------------------------------------

def test_mkdir_existing_writable_raises_already_exist():
    st = with_guest_dir(5)
    with pytest.raises(AlreadyExist):
        st.mkdir(guest(5), p("/local/domain/5"))


def test_mkdir_existing_not_writable_is_eacces():
    st = with_guest_dir(5)
    with pytest.raises(PermissionDenied):
        st.mkdir(guest(6), p("/local/domain/5"))


def test_mkdir_creates_empty_child_with_parent_perms_and_charges_owner():
    st = with_guest_dir(5)
    st.mkdir(guest(5), p("/local/domain/5/d"))
    assert st.read(guest(5), p("/local/domain/5/d")) == b""
    assert st.getperms(DOM0, p("/local/domain/5/d")) == perms("n5 r0")
    assert dict(st.quota.cur)[5] == 2


def test_mkdir_root_changes_nothing():
    st = fresh()
    root = st.root
    st.mkdir(guest(5), p("/"))
    assert st.root is root
    assert dict(st.quota.cur) == {0: 5}


def test_mkdir_quota_checked_for_guest_only_when_missing():
    st = with_guest_dir(5, Settings(quota_maxentity=1))
    with pytest.raises(QuotaLimitReached):
        st.mkdir(guest(5), p("/local/domain/5/d"))
    with pytest.raises(AlreadyExist):
        st.mkdir(guest(5), p("/local/domain/5"))


# -- rm (store.ml: rm) ----------------------------------------------------------------------

def test_rm_missing_final_node_is_doesnt_exist():
    st = fresh()
    with pytest.raises(DoesntExist):
        st.rm(DOM0, p("/nope"))


def test_rm_missing_parent_is_key_error_enoent():
    st = fresh()
    with pytest.raises(KeyError):
        st.rm(DOM0, p("/nope/x"))


def test_rm_checks_write_on_node_and_uncharges_every_owner():
    st = with_guest_dir(5)
    st.mkdir(guest(5), p("/local/domain/5/a"))
    st.write(DOM0, p("/local/domain/5/a/b"), b"")
    st.setperms(DOM0, p("/local/domain/5/a/b"), perms("n7"))
    assert dict(st.quota.cur) == {0: 6, 5: 2, 7: 1}
    with pytest.raises(PermissionDenied):
        st.rm(guest(6), p("/local/domain/5/a"))
    st.rm(guest(5), p("/local/domain/5"))
    assert dict(st.quota.cur) == {0: 6}
    assert not st.path_exists(p("/local/domain/5"))


def test_rm_root_drops_children_and_uncharges_root_owner_too():
    st = fresh()
    st.rm(DOM0, p("/"))
    assert st.ls(DOM0, p("/")) == []
    assert dict(st.quota.cur) == {0: -1}  # 5 entries + the root itself
    with pytest.raises(PermissionDenied):
        fresh().rm(guest(5), p("/"))


# -- setperms (store.ml: setperms) --------------------------------------------------------------------

def test_setperms_missing_node_is_doesnt_exist_missing_parent_key_error():
    st = fresh()
    with pytest.raises(DoesntExist):
        st.setperms(DOM0, p("/nope"), perms("n0"))
    with pytest.raises(KeyError):
        st.setperms(DOM0, p("/nope/x"), perms("n0"))


def test_only_dom0_may_change_owner():
    st = with_guest_dir(5)
    with pytest.raises(PermissionDenied):
        st.setperms(guest(5), p("/local/domain/5"), perms("n6"))
    st.setperms(guest(5), p("/local/domain/5"), perms("n5 b6"))
    assert st.getperms(DOM0, p("/local/domain/5")) == perms("n5 b6")


def test_non_owner_with_write_right_cannot_setperms(caplog):
    st = with_guest_dir(5)
    st.setperms(DOM0, p("/local/domain/5"), perms("n5 b6"))
    with caplog.at_level(logging.INFO, logger="oxsd.store|node"):
        with pytest.raises(PermissionDenied):
            st.setperms(guest(6), p("/local/domain/5"), perms("n5"))
    assert ("oxsd.store|node", "Permission denied: Domain 5 not owner") in [
        (r.name, r.getMessage()) for r in caplog.records]


def test_setperms_root_checks_write_only():
    st = fresh()
    st.setperms(DOM0, p("/"), perms("n0 r5"))
    assert st.getperms(guest(5), p("/")) == perms("n0 r5")


def test_setperms_moves_one_entry_between_owners_children_keep_theirs():
    st = with_guest_dir(5)
    st.write(DOM0, p("/local/domain/5/c"), b"")
    before = dict(st.quota.cur)
    st.setperms(DOM0, p("/local/domain/5"), perms("n9"))
    after = dict(st.quota.cur)
    assert after[5] == before[5] - 1 and after[9] == 1
    assert st.getperms(DOM0, p("/local/domain/5/c")) == perms("n5 r0")


# -- immutability and sharing ----------------------------------------------------------

def test_write_rebuilds_path_to_root_and_shares_untouched_subtrees():
    st = with_guest_dir(5)
    old_root = st.root
    tool = st.get_node(p("/tool"))
    dom = st.get_node(p("/local/domain"))
    st.write(DOM0, p("/local/domain/5/x"), b"1")
    assert st.root is not old_root
    assert st.get_node(p("/tool")) is tool
    assert st.get_node(p("/local/domain")) is not dom
    # the old version is intact
    assert Path.get_node(old_root, p("/local/domain/5/x")) is None


def test_same_value_write_still_builds_new_parents_but_keeps_the_node():
    st = with_guest_dir(5)
    st.write(DOM0, p("/local/domain/5/x"), b"1")
    root, node = st.root, st.get_node(p("/local/domain/5/x"))
    st.write(DOM0, p("/local/domain/5/x"), b"1")
    assert st.root is not root
    assert st.get_node(p("/local/domain/5/x")) is node


def test_same_value_write_to_root_keeps_root_object():
    st = fresh()
    root = st.root
    st.write(DOM0, p("/"), b"")
    assert st.root is root


def test_failed_operation_leaves_root_unchanged():
    st = with_guest_dir(5)
    root = st.root
    for op in (lambda: st.write(guest(6), p("/local/domain/5/x"), b""),
               lambda: st.rm(guest(6), p("/local/domain/5")),
               lambda: st.mkdir(guest(6), p("/local/domain/5/y"))):
        with pytest.raises(PermissionDenied):
            op()
    assert st.root is root


def test_node_set_value_same_value_is_same_object():
    n = Node.create("a", P.default0, b"v")
    assert n.set_value(b"v") is n
    assert n.set_value(b"w") is not n and n.value == b"v"


def test_node_helpers():
    n = Node.create("p", P.default0, b"")
    c = Node.create("c", P.default0, b"1")
    n2 = n.add_child(c)
    assert n.children == {} and n2.find("c") is c and n2.exists("c")
    assert n2.find_opt("x") is None
    with pytest.raises(KeyError):
        n2.find("x")
    c2 = c.set_value(b"2")
    assert n2.replace_child(c, c2).find("c") is c2
    assert n2.find("c") is c
    assert not n2.del_childname("c").exists("c")
    with pytest.raises(KeyError):
        n.del_childname("c")
    assert n2.del_all_children().children == {}
    assert n2.unpack() == ("p", P.default0, b"")
    assert n2.get_owner() == 0


def test_copy_shares_root_and_counters_not_later_changes():
    st = fresh()
    st.incr_transaction_abort()
    cp = st.copy()
    assert cp.root is st.root and cp.stat_transaction_abort == 1
    cp.write(DOM0, p("/new"), b"")
    assert not st.path_exists(p("/new"))
    assert dict(st.quota.cur) == {0: 5} and dict(cp.quota.cur) == {0: 6}


# -- set_node (coalesced commit) ----------------------------------------------------------

def test_set_node_grafts_subtree_and_merges_quota():
    live = with_guest_dir(5)
    txn = live.copy()
    orig_quota = txn.quota
    txn.write(guest(5), p("/local/domain/5/t"), b"txn")
    live.write(DOM0, p("/tool/other"), b"")
    live.set_node(p("/local/domain/5"), txn.get_node(p("/local/domain/5")), orig_quota, txn.quota)
    assert live.read(DOM0, p("/local/domain/5/t")) == b"txn"
    assert live.read(DOM0, p("/tool/other")) == b""
    assert dict(live.quota.cur) == {0: 7, 5: 2}


def test_set_node_adds_missing_last_component_and_replaces_root():
    st = fresh()
    n = Node.create("new", P.default0, b"x")
    st.set_node(p("/new"), n, st.quota, st.quota)
    assert st.get_node(p("/new")) is n
    r = Node.create("", P.default0, b"")
    st.set_node(p("/"), r, st.quota, st.quota)
    assert st.root is r


def test_apply_modify_missing_ancestor_and_root():
    st = fresh()
    with pytest.raises(LookupDoesntExist) as ei:
        Path.apply_modify(st.root, p("/x/y/z"), lambda n, name: n)
    assert ei.value.name == "x"
    with pytest.raises(InvalidPath):
        Path.apply_modify(st.root, p("/"), lambda n, name: n)


def test_get_node_missing_ancestor_is_key_error_missing_node_none():
    st = fresh()
    assert Path.get_node(st.root, p("/")) is st.root
    assert Path.get_node(st.root, p("/nope")) is None
    with pytest.raises(KeyError):
        Path.get_node(st.root, p("/nope/x"))
    assert st.get_deepest_existing_node(p("/tool/x/y")) == (st.get_node(p("/tool")), False)
    assert st.get_deepest_existing_node(p("/tool")) == (st.get_node(p("/tool")), True)


# -- reset_permissions (store.ml: reset_permissions) -----------------------------------------------------------------

def test_reset_permissions_drops_owned_subtrees_and_acl_entries(caplog):
    st = with_guest_dir(5)
    st.write(DOM0, p("/local/domain/5/x"), b"")  # owned by 5
    st.setperms(DOM0, p("/local/domain/5/x"), perms("n5"))
    st.write(DOM0, p("/tool/shared"), b"")
    st.setperms(DOM0, p("/tool/shared"), perms("n0 r5 b6 w5"))
    st.write(DOM0, p("/tool/shared/sub"), b"")
    st.setperms(DOM0, p("/tool/shared/sub"), perms("n5"))
    st.write(DOM0, p("/local/domain/5/x/dom0owned"), b"")
    st.setperms(DOM0, p("/local/domain/5/x/dom0owned"), perms("n0"))
    with caplog.at_level(logging.DEBUG, logger="oxsd.store|node"):
        st.reset_permissions(5)
    assert not st.path_exists(p("/local/domain/5"))
    assert st.path_exists(p("/local/domain"))
    assert st.getperms(DOM0, p("/tool/shared")) == perms("n0 b6")
    assert not st.path_exists(p("/tool/shared/sub"))
    assert 5 not in st.quota.cur
    msgs = [(r.name, r.levelname, r.getMessage()) for r in caplog.records]
    assert msgs[0] == ("oxsd.store|node", "INFO", "Cleaning up xenstore ACLs for domid 5")
    assert ("oxsd.store|node", "DEBUG", "Changed permissions for node shared") in msgs


def test_reset_permissions_does_not_uncharge_other_owners_in_dropped_subtree():
    st = with_guest_dir(5)
    st.write(DOM0, p("/local/domain/5/d"), b"")
    st.setperms(DOM0, p("/local/domain/5/d"), perms("n0"))
    before0 = dict(st.quota.cur)[0]
    st.reset_permissions(5)
    assert dict(st.quota.cur)[0] == before0  # [quirk]


def test_reset_permissions_rebuilds_every_node():
    st = with_guest_dir(5)
    tool = st.get_node(p("/tool"))
    st.reset_permissions(9)
    assert st.get_node(p("/tool")) is not tool
    assert st.get_node(p("/tool")).perms == tool.perms


def test_reset_permissions_root_owned_by_domid_stays_with_owner_minus_one():
    st = fresh()
    st.reset_permissions(0)
    assert st.root.perms.owner == -1
    assert st.ls(DOM0, p("/")) == []


def test_reset_permissions_drops_nodes_owned_by_minus_one():
    st = fresh()
    st.setperms(DOM0, p("/tool"), perms("n-1"))
    st.reset_permissions(7)
    assert not st.path_exists(p("/tool"))


def test_deep_trees_do_not_hit_recursion_limit():
    st = fresh()
    path = "/tool" + "/a" * 1500
    comps = Path.of_string(path)
    node = Node.create("a", P.default0, b"deep")
    for _ in range(1500 - 1):
        node = Node("a", P.default0, b"", {"a": node})
    st.set_node(p("/tool/a"), node, st.quota, st.quota)
    assert st.read(DOM0, comps) == b"deep"
    st.reset_permissions(5)
    assert st.stats()[0] == 5 + 1 + 1500
    assert st.dump_buffer().count(b"\n") == 5 + 1 + 1500
    st.rm(DOM0, p("/tool/a"))


# -- dumps (store.ml: dump) ----------------------------------------------------------------

def test_dump_matches_legacy_text_format():
    st = fresh()
    st.write(DOM0, p("/tool/xenstored"), b"/usr/lib/xen-4.17/bin/oxenstored")
    st.mkdir(DOM0, p("/local/domain"))
    st.mkdir(DOM0, p("/local/domain/5"))
    st.setperms(DOM0, p("/local/domain/5"), perms("b5 r0"))
    out = io.BytesIO()
    st.dump(out)
    assert out.getvalue() == (
        b"/{n0}\n"
        b"/tool{n0}\n"
        b"tool/xenstored{n0} = /usr/lib/xen-4.17/bin/oxenstored\n"
        b"/local{n0}\n"
        b"local/domain{n0}\n"
        b"local/domain/5{b5\\000r0}\n"
        b"/@releaseDomain{n0}\n"
        b"/@introduceDomain{n0}\n")


def test_dump_escapes_values():
    st = Store.create(Settings())
    st.write(DOM0, p("/a"), b'x\n"\xff\0')
    assert dump_store_buf(st.root) == b'/{n0}\n/a{n0} = x\\n\\"\\255\\000\n'


def test_traversal_is_preorder_descending_with_parent_paths():
    st = Store.create(Settings())
    for s in ["/b", "/a", "/a/y", "/a/x", "/B"]:
        st.write(DOM0, p(s), b"")
    seen = []
    st.dump_fct(lambda path, node: seen.append((path, node.name)))
    assert seen == [((), ""), ((), "b"), ((), "a"), (("a",), "y"), (("a",), "x"), ((), "B")]
    seen2 = []
    traversal(st.root, lambda path, node: seen2.append(node.name))
    assert seen2 == [n for _, n in seen]


def test_stats_counts_nodes_and_commit_counters():
    st = fresh()
    st.incr_transaction_abort()
    st.incr_transaction_coalesce()
    st.incr_transaction_coalesce()
    assert st.stats() == (6, 1, 2)
    assert st.symbol_stats()[1] == 6


def test_get_ops_binds_identity():
    st = fresh()
    ops = st.get_ops(DOM0)
    ops.write(p("/x"), b"1")
    ops.setperms(p("/x"), perms("n5"))
    assert ops.read(p("/x")) == b"1" and ops.getperms(p("/x")) == perms("n5")
    assert "x" in ops.ls(p("/")) and ops.path_exists(p("/x"))
    ops.rm(p("/x"))
    ops.mkdir(p("/y"))
    assert ops.store is st and st.path_exists(p("/y"))


# -- guest work independent of the number of other domains ---------------------

def many_domains(n: int) -> Store:
    """n domains each owning its home and one node; domain 5 also owns a 100-node subtree."""
    st = fresh()
    st.mkdir(DOM0, p("/local/domain"))
    for d in range(1, n + 1):
        st.mkdir(DOM0, p(f"/local/domain/{d}"))
        st.setperms(DOM0, p(f"/local/domain/{d}"), perms(f"n{d} r0"))
        st.write(guest(d), p(f"/local/domain/{d}/x"), b"1")
    st.mkdir(guest(5), p("/local/domain/5/sub"))
    for i in range(100):
        st.write(guest(5), p(f"/local/domain/5/sub/{i}"), b"v")
    return st


def allocated_by(fn) -> int:
    """Peak bytes allocated while `fn` runs (deterministic for the same data, unlike time)."""
    import tracemalloc
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        fn()
        return tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()


def guest_ops_cost(n: int) -> dict:
    st = many_domains(n)
    me = guest(5)
    q = st.quota
    return {
        "create": allocated_by(lambda: st.write(me, p("/local/domain/5/new"), b"v")),
        "write": allocated_by(lambda: st.write(me, p("/local/domain/5/x"), b"2")),
        "rm": allocated_by(lambda: st.rm(me, p("/local/domain/5/sub"))),
        "merge": allocated_by(lambda: Quota.merge(q, q.add_entry(5), q.add_entry(7))),
    }


@pytest.mark.skipif(platform.python_implementation() != "CPython",
                    reason="measured with tracemalloc, which only CPython has")
def test_guest_create_write_rm_and_commit_cost_the_same_with_30_or_3000_domains():
    """Before: each copied the quota table and /local/domain's child map (O(domains))."""
    few, many = guest_ops_cost(30), guest_ops_cost(3000)
    for op in few:
        assert many[op] <= few[op] + 4096, (op, few[op], many[op])


# -- PathCache (Path.create, parsed once per path) ------------------------------------

@pytest.mark.parametrize("raw,base", [
    (b"/bench/k1", "/local/domain/0/"), (b"device/vif/0/state", "/local/domain/5/"),
    (b"/local/domain/5/device", "/local/domain/0/"), (b"@releaseDomain", "/local/domain/3/"),
    (b"/", "/local/domain/0/"),
])
def test_path_cache_gives_what_path_create_gives(raw, base):
    cache = PathCache()
    first = cache.create(raw, base, 2048)
    assert first == Path.create(raw, base, 2048)
    assert cache.create(raw, base, 2048) is first  # the second time from the table


def test_path_cache_keys_on_the_connection_path_too():
    cache = PathCache()
    assert cache.create(b"data", "/local/domain/5/", 2048) == Path.of_string("/local/domain/5/data")
    assert cache.create(b"data", "/local/domain/6/", 2048) == Path.of_string("/local/domain/6/data")


def test_path_cache_keys_on_the_path_max_too():
    cache = PathCache()
    assert cache.create(b"/abcd", "/local/domain/0/", 5) == Path(("abcd",))
    with pytest.raises(InvalidPath):
        cache.create(b"/abcd", "/local/domain/0/", 4)  # a connection with a lower limit


@pytest.mark.parametrize("raw", [b"/a//b", b"", b"/a/", b"/" + b"x" * 30])
def test_path_cache_never_keeps_an_invalid_path(raw):
    cache = PathCache()
    for _ in range(2):
        with pytest.raises(InvalidPath):
            cache.create(raw, "/local/domain/0/", 20)
    assert len(cache._paths) == 0


def test_path_cache_stays_bounded_whatever_the_client_sends():
    cache = PathCache()
    for i in range(3 * PathCache.MAX):
        assert cache.create(b"/p%d" % i, "/local/domain/0/", 4096) == Path(("p%d" % i,))
        assert len(cache._paths) <= PathCache.MAX
    long_path = b"/" + b"x" * PathCache.MAX_LEN
    assert cache.create(long_path, "/local/domain/0/", 4096) == Path(("x" * PathCache.MAX_LEN,))
    assert (long_path, "/local/domain/0/", 4096) not in cache._paths
