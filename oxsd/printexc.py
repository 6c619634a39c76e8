"""OCaml's Printexc.to_string for the exceptions oxsd reports in its logs.

The xenstored log prints exceptions the way the OCaml runtime does
(`caught exn Failure("int_of_string")`, `Sys_error("<file>: <reason>")`,
`Not_found`).  Used by the logs (logging_, loggers), the DB dump
reader (db) and the legacy disk reader (disk); a leaf module (it imports
only oxsd.define), so none of them depends on another for it.
"""
from __future__ import annotations

import errno

from .define import (AlreadyExist, DataTooBig, DoesntExist, Failure, InvalidPath,
                     PermissionDenied, QuotaLimitReached)

__all__ = ["ocaml_exn_str"]

_OCAML_NAMES = {
    InvalidPath: "Define.Invalid_path",
    AlreadyExist: "Define.Already_exist",
    DoesntExist: "Define.Doesnt_exist",
    PermissionDenied: "Define.Permission_denied",
    DataTooBig: "Quota.Data_too_big",
    QuotaLimitReached: "Quota.Limit_reached",
}


def ocaml_exn_str(exc: BaseException) -> str:
    """Printexc.to_string for the exceptions the daemon reports (else the Python repr).

    An exception class that knows its OCaml form says so with an `ocaml_str()`
    method (Disk.Bad_escape, the eventchn stubs' Failure, ...)."""
    ocaml_str = getattr(exc, "ocaml_str", None)
    if callable(ocaml_str):
        return ocaml_str()
    for cls, name in _OCAML_NAMES.items():
        if isinstance(exc, cls):
            return name
    if isinstance(exc, Failure):
        return f'Failure("{exc.msg}")'
    if isinstance(exc, KeyError):
        return "Not_found"
    if isinstance(exc, EOFError):
        return "End_of_file"
    if isinstance(exc, OSError):
        if exc.filename is not None:  # open_in / open_out: Sys_error "<file>: <reason>"
            return f'Sys_error("{exc.filename}: {exc.strerror}")'
        name = errno.errorcode.get(exc.errno or 0, str(exc.errno))
        call = getattr(exc, "ocaml_call", "")
        return f'Unix.Unix_error(Unix.{name}, "{call}", "")'
    return repr(exc)
