"""oxsd.define: constants and the exception classes the handler maps to error names."""
import pytest

from oxsd import define as D
from oxsd import quota as Q


def test_constants_match_xs_wire_and_define_ml():
    assert D.domid_self == 0x7FF0
    assert D.xenstore_payload_max == 4096
    assert D.xenstore_rel_path_max == 2048
    assert D.xs_daemon_socket == "/var/run/xenstored/socket"
    assert (D.xenstored_major, D.xenstored_minor) == (1, 0)


def test_no_mutable_limits_in_define():
    # Limits live in Settings, not here (no module-level configuration).
    for name in ("maxwatch", "maxtransaction", "maxrequests", "path_max", "maxoutstanding"):
        assert not hasattr(D, name)


def test_not_found_is_a_key_error_so_dict_misses_mean_enoent():
    assert issubclass(D.NotFound, KeyError)


def test_invalid_argument_is_a_value_error():
    assert issubclass(D.InvalidArgument, ValueError)


def test_int_of_string_failure_is_value_error_but_plain_failure_is_not():
    e = D.IntOfStringFailure()
    assert isinstance(e, D.Failure) and isinstance(e, ValueError)
    assert e.msg == "int_of_string"
    assert not issubclass(D.Failure, ValueError)
    assert D.Failure("Nativeint.of_string").msg == "Nativeint.of_string"


def test_lookup_doesnt_exist_carries_the_missing_name():
    with pytest.raises(D.LookupDoesntExist) as ei:
        raise D.LookupDoesntExist("foo")
    assert ei.value.name == "foo"


def test_store_exceptions_are_distinct_from_key_error():
    # RM turns DoesntExist into OK but a KeyError (missing ancestor) into ENOENT.
    for exc in (D.DoesntExist, D.LookupDoesntExist, D.AlreadyExist, D.InvalidPath,
                D.PermissionDenied, D.UnknownOperation, D.NotADirectory, D.NotAValue):
        assert not issubclass(exc, KeyError)
        assert not issubclass(exc, ValueError)


def test_quota_exceptions_are_exported_by_both_modules():
    assert Q.LimitReached is D.QuotaLimitReached
    assert Q.QuotaLimitReached is D.QuotaLimitReached
    assert Q.DataTooBig is D.DataTooBig
    assert Q.TransactionOpened is D.TransactionOpened
