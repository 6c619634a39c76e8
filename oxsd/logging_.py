"""The xenstored log and the access log (port of logging.ml).

Goals: the same bytes in the same files as oxenstored (logging.ml), and an
access log cheap enough for the request path.

**Loggers.**  A `FileLogger` or `SyslogLogger` does the writing
(`make_file_logger` / `make_syslog_logger`): truncation to `nb_chars`,
rotation by line count with the original's rename rules, reopen on SIGHUP
(`restart`), one syslog call per line.  The file logger writes each line
with one `os.write` on an O_APPEND descriptor: the original flushes after
every line, and a direct write is that same single syscall without a
Python buffer in front.  It is synchronous on purpose: a writer thread
would break "no threads in the core", and on a local file the write costs
a few microseconds (see `bench/` numbers in the report).

**xenstored log.**  Modules log through the standard library:
`logging.getLogger("oxsd.<key>")`, where `<key>` is the OCaml key
(`xenstored`, `process`, `connection`, `connections`, `domain`, `domains`,
`perms`, `quota`, `store|node`, `disk`, `transaction`).
`setup_xenstored_log(settings)` attaches one `XenstoredLogHandler` to the
`oxsd` logger, sets that logger's level from `xenstored-log-level`
(debug < info < warn < error < null) and writes the bare first line
`Xen Storage Daemon, version 1.0`.  A file line is
`[<date>|<level right-aligned in 5>|<key>] <message>`; a syslog line is
`[<key>] <message>`.  When the original would create no log (file
destination with level `null` or `nb-files <= 0`) the level is set so high
that nothing is even formatted.  `teardown_xenstored_log()` undoes the
set-up (tests, live update).

**Access log.**  `AccessLog(settings, activate, post_rotate)` has one method
per `Logging.*` access function; `AccessLog.disabled()` (or any
configuration without an access log) gives a `NullAccessLog` whose methods
do nothing.  Lines: `[<date>]  <tid field, 12 cols> <type field> <data>`,
data with NUL -> space then OCaml `String.escaped`; write failures are
ignored.  To keep the hot path short the per-op filter and type strings are
tables indexed by op code, the date string is rebuilt once per second, and
data longer than the line limit is cut *before* escaping (the truncated
line is the same).

`fallback_exception_handler(exc, tb)` prints `Fatal exception: ...` the way
the original's uncaught-exception handler does.
"""
from __future__ import annotations

import logging
import math
import os
import time
import traceback
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Optional, Tuple, Union

from . import syslog as Syslog
from .config import LOG_LEVELS, UnknownLevel
from .define import xenstored_major, xenstored_minor
from .printexc import ocaml_exn_str
from .utils import ocaml_escaped
from .xb.op import NEWER_OPS, Op

if TYPE_CHECKING:  # pragma: no cover
    from .config import Settings

__all__ = [
    "File", "Syslog_", "LogDestination", "log_destination_of_string",
    "level_of_string", "LEVEL_NULL", "string_of_date", "truncate_line",
    "FileLogger", "SyslogLogger", "make_file_logger", "make_syslog_logger",
    "XenstoredLogHandler", "setup_xenstored_log", "teardown_xenstored_log",
    "debug_enabled", "AccessLog", "NullAccessLog", "sanitize_data",
    "fallback_exception_handler", "exn_to_string", "BANNER", "ROOT_LOGGER",
]

BANNER = f"Xen Storage Daemon, version {xenstored_major}.{xenstored_minor}"
ROOT_LOGGER = "oxsd"

# A logging level above everything: the OCaml `Null` level (max_int).
LEVEL_NULL = logging.CRITICAL + 100

_LEVEL_OF_STRING = {"debug": logging.DEBUG, "info": logging.INFO, "warn": logging.WARNING,
                    "error": logging.ERROR, "null": LEVEL_NULL}
assert tuple(_LEVEL_OF_STRING) == LOG_LEVELS

# Without a handler the stdlib's last-resort handler would print warnings on
# stderr; the original discards messages logged before its log exists.
logging.getLogger(ROOT_LOGGER).addHandler(logging.NullHandler())


def level_of_string(s: str) -> int:
    """Logging.level_of_string, as a stdlib level; `UnknownLevel` otherwise."""
    try:
        return _LEVEL_OF_STRING[s]
    except KeyError:
        raise UnknownLevel(s) from None


def _level_name(levelno: int) -> str:
    if levelno >= logging.ERROR:
        return "error"
    if levelno >= logging.WARNING:
        return "warn"
    if levelno >= logging.INFO:
        return "info"
    return "debug"


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


class _DateCache:
    """string_of_date with the part up to the seconds computed once per second."""

    __slots__ = ("sec", "head")

    def __init__(self) -> None:
        self.sec = -1
        self.head = ""

    def __call__(self, t: Optional[float] = None) -> str:
        if t is None:
            t = time.time()
        sec = math.floor(t)
        if sec != self.sec:
            tm = time.gmtime(sec)
            self.head = "%d%02d%02dT%02d:%02d:%02d." % (
                tm.tm_year, tm.tm_mon, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec)
            self.sec = sec
        return self.head + _MS[int(1000.0 * (t - sec))]


# string_of_date(t=None): UTC `YYYYMMDDTHH:MM:SS.mmmZ`, milliseconds truncated (logging.ml: string_of_date).
string_of_date = _DateCache()


def truncate_line(nb_chars: int, line: str) -> str:
    """Lines longer than nb_chars-1 keep max(nb_chars-1, 2)-2 characters plus `..`."""
    if len(line) > nb_chars - 1:
        n = max(nb_chars - 1, 2)
        return line[:n - 2] + ".."
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
        if self.nb_chars > 0 and len(s) > self.nb_chars - 1:
            s = truncate_line(self.nb_chars, s)
        fd = self.fd
        if fd is None:
            raise OSError("log file is closed")
        s += "\n"
        try:  # lines hold one character per byte (latin-1); anything wider goes out as UTF-8
            data = s.encode("latin-1")
        except UnicodeEncodeError:
            data = s.encode("utf-8", "surrogateescape")
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
            reason = getattr(exc, "strerror", None) or exn_to_string(exc)
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


def _say_on_stderr(message: str) -> None:
    import sys
    sys.stderr.write(f"oxenstored: {message}\n")
    sys.stderr.flush()


def _say_in_xenstored_log(message: str) -> None:
    logging.getLogger("oxsd.xenstored").warning("%s", message)


# -- xenstored log ----------------------------------------------------------------

class XenstoredLogHandler(logging.Handler):
    """The `oxsd` logger's handler: renders the OCaml prefix and writes through a Logger."""

    def __init__(self, destination: LogDestination, logger: Optional[Logger]) -> None:
        super().__init__(logging.NOTSET)
        self.destination = destination
        self.logger = logger
        self.is_syslog = isinstance(destination, Syslog_)
        # Where else to say the log cannot be written: stderr (the log is the failing one).
        self.failures = WriteFailures("xenstored log", getattr(destination, "path", ""),
                                      _say_on_stderr)

    @staticmethod
    def key_of(name: str) -> str:
        return name[5:] if name.startswith("oxsd.") else name

    def format_line(self, record: logging.LogRecord) -> str:
        key = self.key_of(record.name)
        msg = record.getMessage()
        if self.is_syslog:
            return f"[{key}] {msg}"
        return f"[{string_of_date(record.created)}|{_level_name(record.levelno):>5}|{key}] {msg}"

    def emit(self, record: logging.LogRecord) -> None:
        logger = self.logger
        if logger is None:
            return
        try:
            logger.write(self.format_line(record), record.levelno)
        except Exception as exc:
            # A log that cannot be written must not take the daemon down.
            self.failures.failed(exc)
            return
        if self.failures.dropped:  # and in the log itself, now that it takes lines
            message = self.failures.recovered()
            try:
                logger.write(self.format_line(logging.LogRecord(
                    "oxsd.xenstored", logging.WARNING, "", 0, message, None, None)),
                    logging.WARNING)
            except Exception:
                pass

    def restart(self) -> None:
        """SIGHUP: reopen the file; errors leave the log closed (lines dropped)."""
        if self.logger is not None:
            try:
                self.logger.restart()
            except OSError:
                pass

    def stop(self) -> None:
        if self.logger is not None:
            self.logger.stop()

    def fileno(self) -> Optional[int]:
        """The open log file's descriptor (to keep across daemonising), if any."""
        return self.logger.fileno() if self.logger is not None else None

    def close(self) -> None:
        self.stop()
        super().close()


_saved_root_level: Optional[int] = None


def setup_xenstored_log(settings: "Settings") -> XenstoredLogHandler:
    """Logging.init_xenstored_log: install the handler on `oxsd` and write the banner line.

    Returns the handler (its `restart()` is the SIGHUP action).  If the
    configuration creates no log, the handler has no logger and the level
    is set above everything.  Raises OSError if the file cannot be opened,
    like the original.
    """
    global _saved_root_level
    teardown_xenstored_log()
    level = level_of_string(settings.xenstored_log_level)
    dest = log_destination_of_string(settings.xenstored_log_file)
    logger: Optional[Logger] = None
    if isinstance(dest, File):
        if level != LEVEL_NULL and settings.xenstored_log_nb_files > 0:
            logger = make_file_logger(dest.path, settings.xenstored_log_nb_files,
                                      settings.xenstored_log_nb_lines,
                                      settings.xenstored_log_nb_chars)
    else:
        logger = make_syslog_logger(dest.facility)
    handler = XenstoredLogHandler(dest, logger)
    root = logging.getLogger(ROOT_LOGGER)
    _saved_root_level = root.level
    root.setLevel(level if logger is not None else LEVEL_NULL)
    root.addHandler(handler)
    if logger is not None:
        try:
            logger.write(BANNER, logging.INFO)
        except OSError:
            pass
    return handler


def teardown_xenstored_log() -> None:
    """Remove our handler(s) from `oxsd`, close their files and restore the level."""
    global _saved_root_level
    root = logging.getLogger(ROOT_LOGGER)
    for h in list(root.handlers):
        if isinstance(h, XenstoredLogHandler):
            root.removeHandler(h)
            h.close()
    if _saved_root_level is not None:
        root.setLevel(_saved_root_level)
        _saved_root_level = None


def xenstored_log_handler() -> Optional[XenstoredLogHandler]:
    for h in logging.getLogger(ROOT_LOGGER).handlers:
        if isinstance(h, XenstoredLogHandler):
            return h
    return None


def debug_enabled() -> bool:
    return logging.getLogger(ROOT_LOGGER).isEnabledFor(logging.DEBUG)


# -- access log -------------------------------------------------------------------

def _type_fields() -> Tuple[str, ...]:
    names = {
        Op.DEBUG: "debug    ", Op.DIRECTORY: "directory", Op.READ: "read     ",
        Op.GET_PERMS: "getperms ", Op.WATCH: "watch    ", Op.UNWATCH: "unwatch  ",
        Op.TRANSACTION_START: "t start  ", Op.TRANSACTION_END: "t end    ",
        Op.INTRODUCE: "introduce", Op.RELEASE: "release  ", Op.GET_DOMAIN_PATH: "getdomain",
        Op.IS_INTRODUCED: "is introduced", Op.RESUME: "resume   ", Op.WRITE: "write    ",
        Op.MKDIR: "mkdir    ", Op.RM: "rm       ", Op.SET_PERMS: "setperms ",
        Op.RESET_WATCHES: "reset watches", Op.SET_TARGET: "settarget",
        Op.ERROR: "error    ", Op.WATCH_EVENT: "w event  ", Op.INVALID: "invalid  ",
    }
    # 4.17's op.ml decodes these as Invalid: its access log says so.
    names.update({op: "invalid  " for op in NEWER_OPS})
    return tuple(names[Op(i)] for i in range(len(Op)))


_TYPE_FIELD = _type_fields()
COALESCE = "coalesce "
CONFLICT = "conflict "
COMMIT = "commit   "
NEWCONN = "newconn  "
ENDCONN = "endconn  "
WATCH_NOT_FIRED = "w notfired"

_READ_OPS = frozenset({Op.READ, Op.DIRECTORY, Op.GET_PERMS})
_TRANSACTION_OPS = frozenset({Op.TRANSACTION_START, Op.TRANSACTION_END})
_SPECIAL_OPS = frozenset({Op.INTRODUCE, Op.RELEASE, Op.GET_DOMAIN_PATH, Op.IS_INTRODUCED,
                          Op.RESUME})

_NUL_TO_SPACE = bytes.maketrans(b"\0", b" ")
# Bytes String.escaped leaves alone, once NULs are spaces: the common case.
_PLAIN = bytes([0x00, 0x20, 0x21] + list(range(0x23, 0x5c)) + list(range(0x5d, 0x7f)))


def sanitize_data(data: Union[bytes, str]) -> str:
    """NUL -> space, then OCaml String.escaped."""
    if type(data) is not bytes:
        data = data.encode("latin-1", "replace") if isinstance(data, str) else bytes(data)
    if not data.translate(None, _PLAIN):  # every byte plain: nothing to escape
        return data.translate(_NUL_TO_SPACE).decode("ascii")
    return ocaml_escaped(data.translate(_NUL_TO_SPACE))


class AccessLog:
    """The access log (Logging.access_logging and friends); see the module doc.

    `con` is the connection's log name (`A1`, `D5`, `r(3):D5`, ...), `tid`
    the transaction id, `data` the payload bytes, `ty` an `Op`.
    Constructing it with the log disabled (`activate=False`, or a file
    destination with `access-log-nb-files <= 0`) returns a `NullAccessLog`.
    """

    enabled = True

    def __new__(cls, settings: "Optional[Settings]" = None, activate: bool = True,
                post_rotate: Optional[Callable[[], None]] = None) -> "AccessLog":
        if cls is AccessLog and (settings is None or not activate or (
                not settings.access_log_file.startswith("syslog:")
                and settings.access_log_nb_files <= 0)):
            return object.__new__(NullAccessLog)
        return object.__new__(cls)

    def __init__(self, settings: "Optional[Settings]" = None, activate: bool = True,
                 post_rotate: Optional[Callable[[], None]] = None) -> None:
        assert settings is not None
        dest = log_destination_of_string(settings.access_log_file)
        self.destination = dest
        if isinstance(dest, File):
            self.logger: Logger = make_file_logger(
                dest.path, settings.access_log_nb_files, settings.access_log_nb_lines,
                settings.access_log_nb_chars, post_rotate or (lambda: None))
            self._prefix_open: Optional[str] = "["
            self._prefix_close = "] "
            self._max_data = settings.access_log_nb_chars  # cut data before escaping
        else:
            self.logger = make_syslog_logger(dest.facility)
            self._prefix_open = None
            self._prefix_close = ""
            self._max_data = 0
        self.failures = WriteFailures("access log", getattr(dest, "path", "syslog"),
                                      _say_in_xenstored_log)
        self.read_ops = settings.access_log_read_ops
        self.transaction_ops = settings.access_log_transactions_ops
        self.special_ops = settings.access_log_special_ops
        # logs_op[op]: whether xb_op logs requests of that op (callers may test it first).
        self.logs_op: Tuple[bool, ...] = tuple(self._op_filter(Op(i)) for i in range(len(Op)))

    @classmethod
    def disabled(cls) -> "NullAccessLog":
        return NullAccessLog()

    def _op_filter(self, op: Op) -> bool:
        if op in _READ_OPS:
            return self.read_ops
        if op in _TRANSACTION_OPS:
            return False  # logged as "t start"/"t end" by start/end_transaction
        if op in _SPECIAL_OPS:
            return self.special_ops
        return True

    def _log(self, con: str, tid: int, type_field: str, data: Union[bytes, str],
             level: int) -> None:
        try:
            if self._max_data > 0 and len(data) > self._max_data:
                # Every byte escapes to >= 1 char, so the cut line is the same.
                data = data[:self._max_data]
            prefix = ("" if self._prefix_open is None
                      else self._prefix_open + string_of_date() + self._prefix_close)
            tidf = con if tid == 0 else f"{con}.{tid}"
            if type(data) is bytes and not data.translate(None, _PLAIN):
                text = data.translate(_NUL_TO_SPACE).decode("ascii")  # sanitize_data's usual case
            else:
                text = sanitize_data(data)
            self.logger.write("%s %-12s %s %s" % (prefix, tidf, type_field, text), level)
        except Exception as exc:
            self.failures.failed(exc)  # never fatal (the original ignores them all)
            return
        if self.failures.dropped:
            self.failures.recovered()

    # -- one method per Logging.* access function --
    def new_connection(self, tid: int, con: str) -> None:
        self._log(con, tid, NEWCONN, b"", logging.DEBUG)

    def end_connection(self, tid: int, con: str) -> None:
        self._log(con, tid, ENDCONN, b"", logging.DEBUG)

    def read_coalesce(self, tid: int, con: str, path: Union[str, bytes]) -> None:
        if self.read_ops:
            self._log(con, tid, COALESCE, _prefixed(b"read ", path), logging.DEBUG)

    def write_coalesce(self, tid: int, con: str, path: Union[str, bytes]) -> None:
        self._log(con, tid, COALESCE, _prefixed(b"write ", path), logging.DEBUG)

    def conflict(self, tid: int, con: str) -> None:
        self._log(con, tid, CONFLICT, b"", logging.DEBUG)

    def commit(self, tid: int, con: str) -> None:
        self._log(con, tid, COMMIT, b"", logging.DEBUG)

    def xb_op(self, tid: int, con: str, ty: Op, data: bytes) -> None:
        if self.logs_op[ty]:
            self._log(con, tid, _TYPE_FIELD[ty], data, logging.INFO)

    def start_transaction(self, tid: int, con: str) -> None:
        if self.transaction_ops and tid != 0:
            self._log(con, tid, _TYPE_FIELD[Op.TRANSACTION_START], b"", logging.DEBUG)

    def end_transaction(self, tid: int, con: str) -> None:
        if self.transaction_ops and tid != 0:
            self._log(con, tid, _TYPE_FIELD[Op.TRANSACTION_END], b"", logging.DEBUG)

    def live_update(self) -> None:
        self.xb_op(0, "", Op.DEBUG, b"Live update begin")

    def xb_answer(self, tid: int, con: str, ty: Op, data: bytes) -> None:
        if ty == Op.ERROR:
            if data[:6] == b"ENOENT" and not self.read_ops:
                return
            self._log(con, tid, _TYPE_FIELD[Op.ERROR], data, logging.WARNING)
        elif ty == Op.WATCH_EVENT:
            self._log(con, tid, _TYPE_FIELD[Op.WATCH_EVENT], data, logging.INFO)

    def watch_not_fired(self, con: str, perms: str, path: str) -> None:
        self._log(con, 0, WATCH_NOT_FIRED, f"EPERM perms=[{perms}] path={path}", logging.INFO)

    def restart(self) -> None:
        """SIGHUP: reopen the file; errors leave the log closed (lines dropped)."""
        try:
            self.logger.restart()
        except OSError:
            pass

    def close(self) -> None:
        self.logger.stop()

    def fileno(self) -> Optional[int]:
        return self.logger.fileno()


def _prefixed(head: bytes, path: Union[str, bytes]) -> bytes:
    return head + (path if isinstance(path, bytes) else path.encode("latin-1", "replace"))


class NullAccessLog(AccessLog):
    """The access log when it is off: every method is a no-op."""

    enabled = False
    logs_op: Tuple[bool, ...] = (False,) * len(Op)

    def __init__(self, *args: object, **kwargs: object) -> None:
        pass

    def _noop(self, *args: Any, **kwargs: Any) -> None:
        pass

    new_connection = end_connection = read_coalesce = write_coalesce = _noop
    conflict = commit = xb_op = start_transaction = end_transaction = _noop
    live_update = xb_answer = watch_not_fired = restart = close = _noop

    def fileno(self) -> Optional[int]:
        return None


# -- uncaught exceptions ------------------------------------------------------------

def exn_to_string(exc: BaseException) -> str:
    """Printexc.to_string where we know the OCaml form (KeyError is Not_found, Failure,
    Sys_error, ...: printexc.ocaml_exn_str), else the Python repr."""
    return ocaml_exn_str(exc)


def fallback_exception_handler(exc: BaseException, tb: object = None) -> None:
    """Report an exception that ends the daemon: stderr, then the xenstored log or syslog.

    The caller exits with status 2 afterwards.
    """
    import sys
    bt = "".join(traceback.format_tb(tb)) if tb is not None else ""  # type: ignore[arg-type]
    msg = f"Fatal exception: {exn_to_string(exc)}\n{bt}"
    try:
        sys.stderr.write(msg + "\n")
        sys.stderr.flush()
    except Exception:
        pass
    handler = xenstored_log_handler()
    if handler is not None and handler.logger is not None:
        logging.getLogger("oxsd.xenstored-fallback").error("%s", msg)
        handler.stop()
    else:
        try:
            Syslog.log(Syslog.Facility.DAEMON, Syslog.Level.ERR, msg)
        except Exception as e:
            try:
                sys.stderr.write(f"Fatal exception: {exn_to_string(e)}\n")
            except Exception:
                pass
