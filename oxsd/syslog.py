"""Syslog facilities and levels, and one-call-per-line logging (port of syslog.ml + syslog_stubs.c).

Facility names are those of the config values `syslog:<facility>`
(xenstored.ml: parse_config).  The original's C table is only right from `auth` to
`local7` (the later names all collapse into one OR-ed value); here every
name maps to its own constant, unlike logging.ml: make_syslog_logger.

`log(facility, level, msg)` sends one syslog(3) call per line of `msg`,
skips the empty piece after a final newline, and stops at a NUL byte
(the C stub works on a C string).  It uses the standard library's
`syslog` module, so the ident is the program name and no openlog options
are set, like the original which never calls openlog(3).
"""
from __future__ import annotations

import enum
import os
import syslog as _syslog

from .utils import ocaml_escaped

__all__ = ["Facility", "Level", "UnknownFacility", "facility_of_string", "log"]


class Facility(enum.IntEnum):
    AUTH = _syslog.LOG_AUTH
    AUTHPRIV = _syslog.LOG_AUTHPRIV
    CRON = _syslog.LOG_CRON
    DAEMON = _syslog.LOG_DAEMON
    FTP = getattr(_syslog, "LOG_FTP", 11 << 3)
    KERN = _syslog.LOG_KERN
    LOCAL0 = _syslog.LOG_LOCAL0
    LOCAL1 = _syslog.LOG_LOCAL1
    LOCAL2 = _syslog.LOG_LOCAL2
    LOCAL3 = _syslog.LOG_LOCAL3
    LOCAL4 = _syslog.LOG_LOCAL4
    LOCAL5 = _syslog.LOG_LOCAL5
    LOCAL6 = _syslog.LOG_LOCAL6
    LOCAL7 = _syslog.LOG_LOCAL7
    LPR = _syslog.LOG_LPR
    MAIL = _syslog.LOG_MAIL
    NEWS = _syslog.LOG_NEWS
    SYSLOG = _syslog.LOG_SYSLOG
    USER = _syslog.LOG_USER
    UUCP = _syslog.LOG_UUCP


class Level(enum.IntEnum):
    EMERG = _syslog.LOG_EMERG
    ALERT = _syslog.LOG_ALERT
    CRIT = _syslog.LOG_CRIT
    ERR = _syslog.LOG_ERR
    WARNING = _syslog.LOG_WARNING
    NOTICE = _syslog.LOG_NOTICE
    INFO = _syslog.LOG_INFO
    DEBUG = _syslog.LOG_DEBUG


class UnknownFacility(ValueError):
    """Syslog.Unknown_facility: a `syslog:<name>` value with a name not in the table."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.name = name

    def ocaml_str(self) -> str:
        """What OCaml's Printexc.to_string prints (used in config error lines)."""
        return f'Syslog.Unknown_facility("{ocaml_escaped(os.fsencode(self.name))}")'


_FACILITIES = {f.name.lower(): f for f in Facility}


def facility_of_string(s: str) -> Facility:
    """Exact, case-sensitive facility name; `UnknownFacility` otherwise."""
    try:
        return _FACILITIES[s]
    except KeyError:
        raise UnknownFacility(s) from None


def log(facility: Facility, level: Level, msg: str) -> None:
    """syslog(3) each line of `msg` (text up to the first NUL) at facility|level."""
    msg = msg.split("\0", 1)[0]
    lines = msg.split("\n")
    if lines[-1] == "":
        lines.pop()
    priority = int(facility) | int(level)
    for line in lines:
        _syslog.syslog(priority, line)
