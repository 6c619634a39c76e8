"""oxsd.quota: entry counts, size limit and the commit merge (quota.ml, quota.ml: merge)."""
import logging

import pytest

from oxsd.config import Settings
from oxsd.quota import DataTooBig, LimitReached, Quota


def q(maxent=3, maxsize=10, activate=True, **cur):
    return Quota(maxent, maxsize, activate, {int(k[1:]): v for k, v in cur.items()})


def test_create_takes_limits_from_settings():
    s = Settings(quota_maxentity=7, quota_maxsize=99, quota_activate=False)
    quota = Quota.create(s)
    assert (quota.maxent, quota.maxsize, quota.activate, dict(quota.cur)) == (7, 99, False, {})


def test_size_over_maxsize_is_e2big_equal_is_fine():
    quota = q()
    quota.check(-1, 10)
    with pytest.raises(DataTooBig):
        quota.check(-1, 11)


def test_size_limit_applies_to_dom0_too():
    with pytest.raises(DataTooBig):
        q().check(0, 11)


def test_count_at_maxent_is_equota():
    quota = q(d5=2)
    quota.check(5, 0)
    with pytest.raises(LimitReached):
        q(d5=3).check(5, 0)
    with pytest.raises(LimitReached):
        q(d5=4).check(5, 0)


def test_domain_without_count_is_never_refused():
    q(maxent=0).check(5, 0)


def test_dom0_and_negative_ids_have_no_entry_limit():
    q(d0=100).check(0, 0)
    q(**{"d-1": 100}).check(-1, 0)


def test_size_is_checked_before_count():
    with pytest.raises(DataTooBig):
        q(d5=3).check(5, 11)


def test_activate_false_disables_both_checks():
    quota = q(activate=False, d5=100)
    quota.check(5, 1000)


def test_warnings_print_owner_with_percent_u(caplog):
    with caplog.at_level(logging.WARNING, logger="oxsd.quota"):
        with pytest.raises(DataTooBig):
            q().check(-1, 11)
        with pytest.raises(LimitReached):
            q(d5=3).check(5, 0)
    assert [(r.name, r.getMessage()) for r in caplog.records] == [
        ("oxsd.quota", "domain 9223372036854775807 err create entry: data too big 11"),
        ("oxsd.quota", "domain 5 cannot create entry: quota reached")]


def test_add_and_del_entry_return_new_objects():
    a = q()
    b = a.add_entry(5)
    assert dict(a.cur) == {} and dict(b.cur) == {5: 1}
    assert a.copy() is a or dict(a.copy().cur) == dict(a.cur)


def test_count_reaching_zero_is_removed_and_may_go_negative():
    a = q(d5=1).del_entry(5)
    assert 5 not in a.cur
    b = a.del_entry(5)
    assert dict(b.cur) == {5: -1}
    assert 5 not in b.add_entry(5).cur


def test_delete_forgets_a_domain():
    a = q(d5=2, d6=1)
    assert dict(a.delete(5).cur) == {6: 1}
    assert a.delete(9) is a
    assert dict(a.cur) == {5: 2, 6: 1}


def test_merge_adds_transaction_delta_to_live():
    orig = q(d5=2, d6=1)
    mod = q(d5=4, d6=1, d7=1)
    dest = q(d5=10, d6=3)
    merged = Quota.merge(orig, mod, dest)
    assert dict(merged.cur) == {5: 12, 6: 3, 7: 1}
    assert dict(dest.cur) == {5: 10, 6: 3}


def test_merge_loses_decrease_of_a_count_that_dropped_to_zero():
    # [quirk] only domids present in the transaction's final counts are visited.
    orig = q(d5=1, d6=2)
    mod = q(d6=1)  # dom5 went 1 -> 0 (removed), dom6 2 -> 1
    dest = q(d5=1, d6=2)
    assert dict(Quota.merge(orig, mod, dest).cur) == {5: 1, 6: 1}


def test_merge_removes_entry_reaching_zero_in_dest():
    assert dict(Quota.merge(q(d5=2), q(d5=1), q(d5=1)).cur) == {}


def test_to_string_for_control_quota():
    assert q(maxent=1000, d5=3).to_string(5) == "dom5 quota: 3/1000"
    assert q().to_string(6) == "dom6 quota: not set"


def test_get_returns_zero_for_missing():
    assert q(d5=3).get(5) == 3 and q().get(5) == 0
