"""Constants and shared exceptions (port of define.ml).

The OCaml module also holds the mutable limits (maxwatch, maxtransaction,
path_max, ...).  Those live in `oxsd.config.Settings` instead and are passed
to whoever needs them; only true constants stay here.

Public API:

* constants: `xenstored_major`, `xenstored_minor`, `xs_daemon_socket`,
  `default_config_dir`, `domid_self`, `xenstore_payload_max`,
  `xenstore_rel_path_max`;
* store exceptions: `NotADirectory`, `NotAValue`, `AlreadyExist`,
  `DoesntExist`, `LookupDoesntExist`, `InvalidPath`, `PermissionDenied`,
  `UnknownOperation`;
* quota exceptions (re-exported by `oxsd.quota` as `LimitReached`,
  `DataTooBig`, `TransactionOpened`): `QuotaLimitReached`, `DataTooBig`,
  `TransactionOpened`;
* stand-ins for OCaml's built-in exceptions: `NotFound` (a `KeyError`),
  `InvalidArgument` (a `ValueError`), `Failure` (carries the OCaml message,
  e.g. `"Nativeint.of_string"`), `IntOfStringFailure` (`Failure
  "int_of_string"`, also a `ValueError`).

Error-name mapping done by the request handler (process.ml: process_packet):
InvalidPath/InvalidArgument/IntOfStringFailure (any ValueError) -> EINVAL,
AlreadyExist -> EEXIST, DoesntExist/LookupDoesntExist/NotFound (any
KeyError) -> ENOENT, PermissionDenied -> EACCES, QuotaLimitReached and
TransactionOpened -> EQUOTA, DataTooBig -> E2BIG, UnknownOperation -> ENOSYS;
a plain Failure (Nativeint.of_string) is not mapped (EIO).
"""
from __future__ import annotations

__all__ = [
    "xenstored_major", "xenstored_minor", "xs_daemon_socket", "default_config_dir",
    "domid_self", "xenstore_payload_max", "xenstore_rel_path_max",
    "NotADirectory", "NotAValue", "AlreadyExist", "DoesntExist", "LookupDoesntExist",
    "InvalidPath", "PermissionDenied", "UnknownOperation",
    "QuotaLimitReached", "DataTooBig", "TransactionOpened", "NoSpace", "Busy",
    "NotFound", "InvalidArgument", "Failure", "IntOfStringFailure",
]

xenstored_major = 1
xenstored_minor = 0

# Compiled-in paths of the Debian build (paths.ml.in, as Debian configures it).
xs_daemon_socket = "/var/run/xenstored/socket"
default_config_dir = "/etc/xen"

domid_self = 0x7FF0

# xs_wire.h (libs/xb/partial.ml)
xenstore_payload_max = 4096
xenstore_rel_path_max = 2048


class NotADirectory(Exception):
    """Not_a_directory of string (defined but never raised by the 4.17 store)."""


class NotAValue(Exception):
    """Not_a_value of string (defined but never raised by the 4.17 store)."""


class AlreadyExist(Exception):
    """The node exists (MKDIR catches it; duplicate WATCH raises it): EEXIST."""


class DoesntExist(Exception):
    """The final node of a path is missing: ENOENT (RM turns it into OK)."""


class LookupDoesntExist(Exception):
    """An ancestor is missing while rebuilding a path: ENOENT. Carries the name."""

    def __init__(self, name: str = "") -> None:
        super().__init__(name)
        self.name = name


class InvalidPath(Exception):
    """Bad path syntax or length: EINVAL."""


class PermissionDenied(Exception):
    """A permission check failed: EACCES."""


class UnknownOperation(Exception):
    """Unknown op: ENOSYS."""


class QuotaLimitReached(Exception):
    """Quota.Limit_reached (entries, watches, requests): EQUOTA."""


class DataTooBig(Exception):
    """Quota.Data_too_big (value over quota-maxsize): E2BIG."""


class TransactionOpened(Exception):
    """Quota.Transaction_opened (too many open transactions): EQUOTA."""


class Busy(Exception):
    """EBUSY: XS_SET_FEATURE after the domain's INTRODUCE (protocol level 4.22)."""


class NoSpace(Exception):
    """A per-domain quota of protocol level 4.22 (XS_SET_QUOTA) is reached: ENOSPC, as C xenstored."""


class NotFound(KeyError):
    """OCaml's Not_found: ENOENT.  Any KeyError is treated the same way."""


class InvalidArgument(ValueError):
    """OCaml's Invalid_argument: EINVAL."""

    def ocaml_str(self) -> str:
        return f'Invalid_argument("{self.args[0] if self.args else ""}")'


class Failure(Exception):
    """OCaml's Failure; `msg` decides the error (only "int_of_string" is EINVAL)."""

    def __init__(self, msg: str) -> None:
        super().__init__(msg)
        self.msg = msg


class IntOfStringFailure(Failure, ValueError):
    """`Failure "int_of_string"`: EINVAL (a ValueError, unlike Nativeint.of_string's Failure)."""

    def __init__(self, msg: str = "int_of_string") -> None:
        super().__init__(msg)
