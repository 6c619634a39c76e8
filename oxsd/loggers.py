"""The writers under both logs: a rotated file or syslog (logging.ml's loggers).

Ports `logging.ml: log_destination` (`File` / `Syslog`, `log_destination_of_string`),
`string_of_date`, `truncate_line`, `log_rotate`, the `logger` record and its two
makers `make_file_logger` / `make_syslog_logger` (`FileLogger`, `SyslogLogger`),
and oxsd's `WriteFailures` (what a log does when it cannot be written,
docs/deviations.md).  logging_.py builds the xenstored log and the access log
on them.

The file logger writes each line with one `os.write` on an O_APPEND
descriptor: the original flushes after every line, and a direct write is that
same single syscall without a Python buffer in front.  It is synchronous on
purpose: a writer thread would break "no threads in the core", and on a local
file the write costs a few microseconds.
"""
from __future__ import annotations

import logging
import math
import os
import time
from dataclasses import dataclass
from typing import AnyStr, Callable, Optional, Union

from . import syslog as Syslog
from .printexc import ocaml_exn_str

__all__ = [
    "LEVEL_NULL", "File", "Syslog_", "LogDestination", "log_destination_of_string",
    "string_of_date", "date_bytes", "truncate_line", "log_rotate", "FileLogger", "SyslogLogger",
    "Logger", "make_file_logger", "make_syslog_logger", "WriteFailures",
]

# A logging level above everything: the OCaml `Null` level (max_int).
LEVEL_NULL = logging.CRITICAL + 100


def _syslog_level(levelno: int) -> Syslog.Level:
    """error -> LOG_ERR, warn -> LOG_WARNING, info -> LOG_INFO, else (debug, null) -> LOG_DEBUG."""
    if levelno >= LEVEL_NULL:
        return Syslog.Level.DEBUG
    if levelno >= logging.ERROR:
        return Syslog.Level.ERR
    if levelno >= logging.WARNING:
        return Syslog.Level.WARNING
    if levelno >= logging.INFO:
        return Syslog.Level.INFO
    return Syslog.Level.DEBUG


# -- destinations -------------------------------------------------------------

@dataclass(frozen=True)
class File:
    path: str


@dataclass(frozen=True)
class Syslog_:
    facility: Syslog.Facility


LogDestination = Union[File, Syslog_]


def log_destination_of_string(s: str) -> LogDestination:
    """`syslog:<facility>` (UnknownFacility if the name is bad) or a file path."""
    prefix = "syslog:"
    if s.startswith(prefix):
        return Syslog_(Syslog.facility_of_string(s[len(prefix):]))
    return File(s)


# -- date -------------------------------------------------------------------------

_MS = tuple("%03dZ" % i for i in range(1000))
_MS_BYTES = tuple(ms.encode() for ms in _MS)


class _DateCache:
    """string_of_date with the part up to the seconds computed once per second."""

    __slots__ = ("sec", "head", "head_bytes")

    def __init__(self) -> None:
        self.sec = -1
        self.head = ""
        self.head_bytes = b""

    def _new_second(self, sec: int) -> None:
        tm = time.gmtime(sec)
        self.head = "%d%02d%02dT%02d:%02d:%02d." % (
            tm.tm_year, tm.tm_mon, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec)
        self.head_bytes = self.head.encode()
        self.sec = sec

    def __call__(self, t: Optional[float] = None) -> str:
        if t is None:
            t = time.time()
        sec = math.floor(t)
        if sec != self.sec:
            self._new_second(sec)
        return self.head + _MS[int(1000.0 * (t - sec))]

    def as_bytes(self) -> bytes:
        """The date of now, ASCII bytes (the access log's lines are built as bytes)."""
        t = time.time()
        sec = int(t)  # t > 0: the floor
        if sec != self.sec:
            self._new_second(sec)
        return self.head_bytes + _MS_BYTES[int(1000.0 * (t - sec))]


# string_of_date(t=None): UTC `YYYYMMDDTHH:MM:SS.mmmZ`, milliseconds truncated
# (logging.ml: string_of_date).
string_of_date = _DateCache()
# date_bytes(): the same date of now, as ASCII bytes (the access log's lines).
date_bytes = string_of_date.as_bytes


def truncate_line(nb_chars: int, line: AnyStr) -> AnyStr:
    """Lines longer than nb_chars-1 keep max(nb_chars-1, 2)-2 characters (bytes) plus `..`."""
    if len(line) > nb_chars - 1:
        n = max(nb_chars - 1, 2)
        return line[:n - 2] + (b".." if isinstance(line, bytes) else "..")
    return line


# -- loggers ----------------------------------------------------------------------

class FileLogger:
    """make_file_logger: append, truncate, count lines, rotate, reopen."""

    def __init__(self, path: str, nb_files: int, nb_lines: int, nb_chars: int,
                 post_rotate: Callable[[], None]) -> None:
        self.path = path
        self.nb_files = nb_files
        self.nb_lines = nb_lines
        self.nb_chars = nb_chars
        self.post_rotate = post_rotate
        self.counter = 0
        # Xen's packages create /var/log/xen; a host without them (or a fresh
        # machine running the README) has none, where the original would die.
        parent = os.path.dirname(path)
        if parent:
            os.makedirs(parent, mode=0o755, exist_ok=True)
        self.fd: Optional[int] = self._open_append()

    def _open_append(self) -> int:
        return os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def fileno(self) -> Optional[int]:
        return self.fd

    def stop(self) -> None:
        """Close the file (the data is already written); errors ignored."""
        fd, self.fd = self.fd, None
        if fd is not None:
            try:
                os.close(fd)
            except OSError:
                pass

    def restart(self) -> None:
        """SIGHUP: close and reopen in append mode (for logrotate); the line count is kept."""
        self.stop()
        self.fd = self._open_append()

    def rotate(self) -> None:
        log_rotate(self.path, self.nb_files)
        self.stop()
        self.fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666)
        # Reset first: a failing hook must not make every next line rotate again (the
        # original resets after it, so a failing dump rotates and dumps on every line).
        self.counter = 0
        self.post_rotate()

    def write(self, s: str, level: int = logging.DEBUG) -> None:
        try:  # lines hold one character per byte (latin-1); anything wider goes out as UTF-8
            data = s.encode("latin-1")
        except UnicodeEncodeError:
            data = s.encode("utf-8", "surrogateescape")
        self.write_bytes(data)

    def write_bytes(self, line: bytes) -> None:
        """`write` of a line already encoded, without its newline; truncated on its bytes, as
        the original's strings are bytes."""
        nb_chars = self.nb_chars
        if nb_chars > 0 and len(line) > nb_chars - 1:  # the test first: no call per line
            line = truncate_line(nb_chars, line)
        fd = self.fd
        if fd is None:
            raise OSError("log file is closed")
        data = line + b"\n"
        n = os.write(fd, data)
        while n < len(data):  # regular files do not short-write, but be exact anyway
            data = data[n:]
            n = os.write(fd, data)
        self.counter += 1
        if self.counter > self.nb_lines:
            self.rotate()


def log_rotate(path: str, nb_files: int) -> None:
    """Shift `path` -> `.1` -> `.2` ... (targets below nb_files), highest first."""
    renames = []
    n = 1
    while n < nb_files:
        if n == 1 and os.path.exists(path):
            renames = [(path, 1)]
        else:
            src = f"{path}.{n - 1}"  # for n = 1 that is "<path>.0", as the original
            if not os.path.exists(src):
                break
            renames.insert(0, (src, n))
        n += 1
    for src, k in renames:
        os.rename(src, f"{path}.{k}")


class SyslogLogger:
    """make_syslog_logger: no date or level of our own; one call per line."""

    def __init__(self, facility: Syslog.Facility) -> None:
        self.facility = facility
        # Spare libc the stat of /etc/localtime on every call (as the original does).
        if not os.environ.get("TZ"):
            os.environ["TZ"] = "/etc/localtime"

    def fileno(self) -> Optional[int]:
        return None

    def stop(self) -> None:
        pass

    def restart(self) -> None:
        pass

    def rotate(self) -> None:
        pass

    def write(self, s: str, level: int = logging.DEBUG) -> None:
        Syslog.log(self.facility, _syslog_level(level), s)


Logger = Union[FileLogger, SyslogLogger]


def make_file_logger(path: str, nb_files: int, nb_lines: int, nb_chars: int,
                     post_rotate: Callable[[], None] = lambda: None) -> FileLogger:
    return FileLogger(path, nb_files, nb_lines, nb_chars, post_rotate)


def make_syslog_logger(facility: Syslog.Facility) -> SyslogLogger:
    return SyslogLogger(facility)


# -- a log that cannot be written ------------------------------------------------

@dataclass
class WriteFailures:
    """Lines a log could not write (full or read-only filesystem), said once per episode.

    The original dies at the first xenstored-log line it cannot write
    (an uncaught `Sys_error` from `flush`) and drops access-log lines
    silently; oxsd keeps serving, reports the first failure once through
    `report`, counts what it drops and says how many when a line gets
    through again (docs/deviations.md).  The success path costs one test.
    """

    what: str  # "xenstored log" / "access log"
    path: str
    report: Callable[[str], None]
    dropped: int = 0

    def failed(self, exc: BaseException) -> None:
        if self.dropped == 0:
            reason = getattr(exc, "strerror", None) or ocaml_exn_str(exc)
            self._say(f"cannot write the {self.what} {self.path}: {reason}; "
                      "its lines are dropped until it can be written again")
        self.dropped += 1

    def recovered(self) -> str:
        """Say (and return) that the log takes lines again, and how many were lost."""
        dropped, self.dropped = self.dropped, 0
        message = f"the {self.what} {self.path} is written again; {dropped} lines were dropped"
        self._say(message)
        return message

    def _say(self, message: str) -> None:
        try:
            self.report(message)
        except Exception:  # the report's own destination may be the failing one
            pass
