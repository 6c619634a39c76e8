"""The xenstored log and the access log (port of logging.ml).

Goals: the same bytes in the same files as oxenstored (logging.ml), and an
access log cheap enough for the request path.

**Loggers** (loggers.py).  A `FileLogger` or `SyslogLogger` does the writing
(`make_file_logger` / `make_syslog_logger`): truncation to `nb_chars`,
rotation by line count with the original's rename rules, reopen on SIGHUP
(`restart`), one syslog call per line.

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
tables indexed by op code, the date string is rebuilt once per second, a
file line is built as bytes (one translate finds whether the data needs
escaping), and data longer than the line limit is cut *before* escaping
(the truncated line is the same).

`fallback_exception_handler(exc, tb)` prints `Fatal exception: ...` the way
the original's uncaught-exception handler does.
"""
from __future__ import annotations

import logging
import traceback
from typing import TYPE_CHECKING, Any, Callable, Optional, Tuple, Union

from . import syslog as Syslog
from .config import LOG_LEVELS, UnknownLevel
from .define import xenstored_major, xenstored_minor
from .loggers import (LEVEL_NULL, File, Logger, LogDestination, Syslog_, WriteFailures,
                      log_destination_of_string, make_file_logger, make_syslog_logger,
                      date_bytes, string_of_date)
from .printexc import ocaml_exn_str
from .utils import ocaml_escaped
from .xb.op import NEWER_OPS, OP_ERROR, OP_WATCH_EVENT, Op

if TYPE_CHECKING:  # pragma: no cover
    from .config import Settings

__all__ = [
    "level_of_string", "XenstoredLogHandler", "setup_xenstored_log", "teardown_xenstored_log",
    "debug_enabled", "AccessLog", "NullAccessLog", "sanitize_data",
    "fallback_exception_handler", "exn_to_string", "BANNER", "ROOT_LOGGER",
]

BANNER = f"Xen Storage Daemon, version {xenstored_major}.{xenstored_minor}"
ROOT_LOGGER = "oxsd"

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
_TYPE_FIELD_BYTES = tuple(field.encode() for field in _TYPE_FIELD)
COALESCE = b"coalesce "
CONFLICT = b"conflict "
COMMIT = b"commit   "
NEWCONN = b"newconn  "
ENDCONN = b"endconn  "
WATCH_NOT_FIRED = b"w notfired"

_READ_OPS = frozenset({Op.READ, Op.DIRECTORY, Op.GET_PERMS})
_TRANSACTION_OPS = frozenset({Op.TRANSACTION_START, Op.TRANSACTION_END})
_SPECIAL_OPS = frozenset({Op.INTRODUCE, Op.RELEASE, Op.GET_DOMAIN_PATH, Op.IS_INTRODUCED,
                          Op.RESUME})

_NUL_TO_SPACE = bytes.maketrans(b"\0", b" ")
# Bytes String.escaped leaves alone, once NULs are spaces: the common case.
_PLAIN = bytes([0x00, 0x20, 0x21] + list(range(0x23, 0x5c)) + list(range(0x5d, 0x7f)))
# One translate that turns NUL into a space and every byte String.escaped would escape
# into _MARK (itself escaped): with no _MARK in the result, that result is the line's data.
_MARK = 0x01
_PLAIN_OR_MARK = bytes(b if b in _PLAIN else _MARK for b in range(256)).replace(b"\0", b" ", 1)


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
            self._max_data = settings.access_log_nb_chars  # cut data before escaping
            self._log = self._log_to_file
        else:
            self.logger = make_syslog_logger(dest.facility)
            self._max_data = 0
            self._log = self._log_to_syslog
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

    def _log_to_file(self, con: str, tid: int, type_field: bytes, data: Union[bytes, str],
                     level: int) -> None:
        """`[<date>]  <tid field, 12 cols> <type field> <data>`, built as bytes (the hot path)."""
        try:
            if len(data) > self._max_data > 0:
                # Every byte escapes to >= 1 char, so the cut line is the same.
                data = data[:self._max_data]
            if type(data) is bytes:
                text = data.translate(_PLAIN_OR_MARK)
                if _MARK in text:  # something to escape (sanitize_data's rare case)
                    text = sanitize_data(data).encode("ascii")
            else:
                text = sanitize_data(data).encode("ascii")  # String.escaped: ASCII only
            tidf = con if tid == 0 else "%s.%d" % (con, tid)
            self.logger.write_bytes(b"[%s]  %-12s %s %s" % (  # type: ignore[union-attr]
                date_bytes(), tidf.encode("latin-1"), type_field, text))
        except Exception as exc:
            self.failures.failed(exc)  # never fatal (the original ignores them all)
            return
        if self.failures.dropped:
            self.failures.recovered()

    def _log_to_syslog(self, con: str, tid: int, type_field: bytes, data: Union[bytes, str],
                       level: int) -> None:
        """` <tid field, 12 cols> <type field> <data>`: syslog dates the line itself."""
        try:
            tidf = con if tid == 0 else f"{con}.{tid}"
            self.logger.write(" %-12s %s %s" % (tidf, type_field.decode("ascii"),
                                                sanitize_data(data)), level)
        except Exception as exc:
            self.failures.failed(exc)
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
            self._log(con, tid, _TYPE_FIELD_BYTES[ty], data, logging.INFO)

    def start_transaction(self, tid: int, con: str) -> None:
        if self.transaction_ops and tid != 0:
            self._log(con, tid, _TYPE_FIELD_BYTES[Op.TRANSACTION_START], b"", logging.DEBUG)

    def end_transaction(self, tid: int, con: str) -> None:
        if self.transaction_ops and tid != 0:
            self._log(con, tid, _TYPE_FIELD_BYTES[Op.TRANSACTION_END], b"", logging.DEBUG)

    def live_update(self) -> None:
        self.xb_op(0, "", Op.DEBUG, b"Live update begin")

    def xb_answer(self, tid: int, con: str, ty: Op, data: bytes) -> None:
        if ty == OP_ERROR:
            if data[:6] == b"ENOENT" and not self.read_ops:
                return
            self._log(con, tid, _TYPE_FIELD_BYTES[OP_ERROR], data, logging.WARNING)
        elif ty == OP_WATCH_EVENT:
            self._log(con, tid, _TYPE_FIELD_BYTES[OP_WATCH_EVENT], data, logging.INFO)

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
