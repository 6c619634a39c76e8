"""oxenstored.conf: the one configuration object (port of config.ml + xenstored.ml parse_config).

`Settings` holds every key oxenstored 4.17 knows, named after the key with
'-' replaced by '_', with the built-in default (not Debian's file).  It is
built once at start-up from the file and the flags, and passed to whoever
needs it: there are no module-level mutable limits (unlike define.ml).

Reading a file (config.ml: read, xenstored.ml: parse_config):

* `parse_lines(data)` splits the text into `(key, value)` pairs exactly as
  `Config.parse_line`: trim spaces and tabs only (a CR stays), skip empty
  lines and lines starting with `#`, split at the first `=`, skip lines
  without `=`; no inline comments.
* `validate(settings, pairs)` applies each pair in file order with the
  OCaml value grammars (`bool_of_string`, `int_of_string`,
  `float_of_string`), checks `xenstored-log-level` and the `syslog:`
  facility of the two log-file keys, and returns the errors **newest
  first** (the OCaml list is built by prepending), as `(key, message)`.
  A bad value leaves the field unchanged; later good lines still apply.
* `error_lines(errors)` gives the exact stderr lines of xenstored.ml.
* `Settings.load(path, strict=False)` does it all: prints the error lines
  (and `error: config: <Sys_error text>` when the file cannot be read) to
  stderr and returns the settings; with `strict=True` (`--config-test`)
  validation errors raise `ConfigError` after printing.  An unreadable file
  never raises (the original's `--config-test` then still says the
  configuration is valid).

The file is read as bytes and decoded like a file name
(`os.fsdecode`), so paths with any bytes survive; error messages quote
values with OCaml's escaping.  `gc-max-overhead` is accepted, validated as
an int and stored; nothing uses it (there is no OCaml GC to tune).
"""
from __future__ import annotations

import math
import os
import re
import sys
from dataclasses import dataclass, fields
from typing import Callable, Dict, List, Optional, Sequence, TextIO, Tuple

from .define import Failure
from .utils import int_of_string, ocaml_escaped

__all__ = [
    "Settings", "ConfigError", "UnknownLevel", "LOG_LEVELS",
    "parse_lines", "parse", "validate", "read", "error_lines", "sys_error_text",
    "bool_of_string", "int_of_string", "float_of_string", "check_log_destination",
]

# xenstored-log-level values, lowest first (Logging.level_of_string).
LOG_LEVELS = ("debug", "info", "warn", "error", "null")


class ConfigError(Exception):
    """Config.Error: the (key, message) list of a strict read, newest first."""

    def __init__(self, errors: Sequence[Tuple[str, str]]) -> None:
        super().__init__(list(errors))
        self.errors = list(errors)

    def ocaml_str(self) -> str:
        """Printexc.to_string of Config.Error (its argument is not printable)."""
        return "Config.Error(_)"


class UnknownLevel(ValueError):
    """Logging.Unknown_level: a `xenstored-log-level` that is not in LOG_LEVELS."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.name = name

    def ocaml_str(self) -> str:
        return f'Logging.Unknown_level("{ocaml_escaped(os.fsencode(self.name))}")'


@dataclass
class Settings:
    merge_activate: bool = True
    conflict_burst_limit: float = 5.0
    conflict_max_history_seconds: float = 0.05
    conflict_rate_limit_is_aggregate: bool = True
    perms_activate: bool = True
    perms_watch_activate: bool = True
    quota_activate: bool = True
    quota_maxwatch: int = 100
    quota_transaction: int = 10
    quota_maxentity: int = 1000
    quota_maxsize: int = 2048
    quota_maxrequests: int = 1024
    quota_maxoutstanding: int = 1024
    quota_maxwatchevents: int = 1024
    quota_path_max: int = 2048
    gc_max_overhead: int = 120
    test_eagain: bool = False
    persistent: bool = False
    xenstored_log_file: str = "/var/log/xen/xenstored.log"
    xenstored_log_level: str = "warn"
    xenstored_log_nb_files: int = 10
    xenstored_log_nb_lines: int = 13215
    xenstored_log_nb_chars: int = -1
    access_log_file: str = "/var/log/xen/xenstored-access.log"
    access_log_nb_files: int = 20
    access_log_nb_lines: int = 13215
    access_log_nb_chars: int = 180
    access_log_read_ops: bool = False
    access_log_transactions_ops: bool = False
    access_log_special_ops: bool = False
    allow_debug: bool = False
    ring_scan_interval: int = 20
    pid_file: str = "/var/run/xen/xenstored.pid"
    xenstored_kva: str = ""
    xenstored_port: str = ""
    # oxsd: "4.17" (oxenstored 4.17's wire protocol) or "4.22" (oxsd.protocol_level).
    protocol_level: str = "4.17"
    # oxsd: microseconds the loop polls before it sleeps after serving requests
    # (scheduler: Scheduler.busy_poll_ns); 0 sleeps at once, as the original.
    busy_poll_us: int = 50

    @classmethod
    def load(cls, path: str, strict: bool = False, stderr: Optional[TextIO] = None) -> "Settings":
        """Read `path` over the built-in defaults, reporting errors as oxenstored does."""
        err = sys.stderr if stderr is None else stderr
        try:
            settings, errors = read(path, cls())
        except OSError as e:
            _print(err, "error: config: " + sys_error_text(e))
            return cls()
        for line in error_lines(errors):
            _print(err, line)
        if errors and strict:
            raise ConfigError(errors)
        return settings


def _print(stream: TextIO, line: str) -> None:
    """Write one line, keeping any undecodable bytes of the file as they were."""
    data = line.encode("utf-8", "surrogateescape") + b"\n"
    buf = getattr(stream, "buffer", None)
    if buf is not None:
        stream.flush()
        buf.write(data)
        buf.flush()
    else:
        stream.write(data.decode("utf-8", "replace"))


# -- value grammars (OCaml 4.13 runtime) -----------------------------------

def bool_of_string(s: str) -> bool:
    """OCaml bool_of_string: exactly "true" or "false"."""
    if s == "true":
        return True
    if s == "false":
        return False
    raise ValueError("bool_of_string")


# strtod(3) (glibc, C locale) as used by float_of_string for non-0x input:
# leading C white space, then decimal, inf/infinity, nan[(chars)] or hex.
_STRTOD_DEC = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?\Z")
_STRTOD_INF = re.compile(r"([+-]?)(?:inf|infinity)\Z", re.IGNORECASE)
_STRTOD_NAN = re.compile(r"[+-]?nan(?:\([0-9A-Za-z_]*\))?\Z", re.IGNORECASE)
_STRTOD_HEX = re.compile(r"([+-]?)0[xX]((?:[0-9a-fA-F]+\.?[0-9a-fA-F]*|\.[0-9a-fA-F]+)"
                         r"(?:[pP][+-]?[0-9]+)?)\Z")
_C_SPACE = " \t\n\v\f\r"
# The exponent after 'p' is read with strtol: optional blanks and sign, digits.
_HEX_EXP = re.compile(r"[ \t\n\v\f\r]*([+-]?[0-9]+)\Z")
_INT_MAX = 2**31 - 1


def _hex_float(body: str) -> float:
    """caml_float_of_hex on what follows "0x" (the sign is handled by the caller)."""
    mant = 0
    n_digits = 0
    point = -1
    exp = 0
    i = 0
    while i < len(body):
        c = body[i]
        i += 1
        if c == ".":
            if point >= 0:
                raise ValueError
            point = n_digits
        elif c in "pP":
            m = _HEX_EXP.match(body, i)
            if i == len(body) or m is None:
                raise ValueError
            e = int(m.group(1))
            if e <= -_INT_MAX - 1:
                return 0.0
            if e >= _INT_MAX:
                return math.inf if mant else 0.0
            exp = e
            break
        else:
            d = int(c, 16)  # ValueError on a bad digit
            mant = mant * 16 + d
            n_digits += 1
    if n_digits == 0:
        raise ValueError
    if point >= 0:
        exp -= 4 * (n_digits - point)
    if mant == 0:
        return 0.0
    try:
        return float.fromhex(f"0x{mant:x}p{exp}")
    except OverflowError:
        return math.inf


def float_of_string(s: str) -> float:
    """OCaml float_of_string: '_' dropped anywhere, 0x hex floats, else strtod (inf, nan, ...)."""
    t = s.replace("_", "")
    try:
        if not t or "\0" in t:
            raise ValueError
        u = t[1:] if t[0] in "+-" else t
        if u[:2] in ("0x", "0X"):
            v = _hex_float(u[2:])
            return -v if t[0] == "-" else v
        t = t.lstrip(_C_SPACE)
        if _STRTOD_DEC.match(t):
            return float(t)
        m = _STRTOD_INF.match(t)
        if m:
            return -math.inf if m.group(1) == "-" else math.inf
        if _STRTOD_NAN.match(t):
            return math.nan
        m = _STRTOD_HEX.match(t)
        if m:
            body = m.group(2)
            if "p" not in body.lower():
                body += "p0"
            v = float.fromhex("0x" + body)
            return -v if m.group(1) == "-" else v
    except (ValueError, OverflowError):
        pass
    raise Failure("float_of_string")


# -- log destinations and levels (checked here, used by logging_) ---------

def check_log_level(s: str) -> str:
    if s not in LOG_LEVELS:
        raise UnknownLevel(s)
    return s


def check_log_destination(s: str) -> str:
    """A `syslog:<facility>` value must name a known facility; anything else is a file."""
    if s.startswith("syslog:"):
        from .syslog import facility_of_string
        facility_of_string(s[len("syslog:"):])
    return s


# -- the file format ---------------------------------------------------------

_BLANKS = " \t"


def _trim_end(s: str) -> str:
    """Config.trim_end: strips trailing blanks but never the first character."""
    i = len(s) - 1
    while i > 0 and s[i] in _BLANKS:
        i -= 1
    return s[:i + 1] if i >= 0 else ""


def parse_lines(text: str) -> List[Tuple[str, str]]:
    """Config.parse_line over a whole text: the (key, value) pairs in file order."""
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()  # input_line: a final newline ends the last line, adds none
    pairs = []
    for raw in lines:
        line = _trim_end(raw.lstrip(_BLANKS))
        if not line or line[0] == "#":
            continue
        key, eq, value = line.partition("=")
        if eq:
            pairs.append((_trim_end(key), value.lstrip(_BLANKS)))
    return pairs


def parse(filename: str) -> List[Tuple[str, str]]:
    """Read and split a config file; OSError if it cannot be opened or read."""
    fd = os.open(filename, os.O_RDONLY)
    try:
        chunks = []
        while True:
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        os.close(fd)
    return parse_lines(os.fsdecode(b"".join(chunks)))


def sys_error_text(e: OSError) -> str:
    """OCaml's Sys_error text: "<path>: <strerror>" when opening fails, bare strerror on read."""
    msg = e.strerror or str(e)
    return f"{e.filename}: {msg}" if e.filename is not None else msg


# key -> (field, converter).  Converters raise to reject a value.
_Conv = Callable[[str], object]
_SPEC: Dict[str, Tuple[str, _Conv]] = {}


PROTOCOL_LEVELS = ("4.17", "4.22")  # oxsd.protocol_level, docs/protocol-4.22.md


class UnknownProtocolLevel(ValueError):
    def ocaml_str(self) -> str:
        return f'Failure("protocol-level: {self.args[0]} is none of {", ".join(PROTOCOL_LEVELS)}")'


def check_protocol_level(value: str) -> str:
    """The `protocol-level` value converter (also for --protocol-level)."""
    if value not in PROTOCOL_LEVELS:
        raise UnknownProtocolLevel(value)
    return value


def _build_spec() -> None:
    special: Dict[str, _Conv] = {
        "xenstored_log_level": check_log_level,
        "xenstored_log_file": check_log_destination,
        "access_log_file": check_log_destination,
        "protocol_level": check_protocol_level,
    }
    by_type: Dict[str, _Conv] = {"bool": bool_of_string, "int": int_of_string,
                                 "float": float_of_string, "str": str}
    for f in fields(Settings):
        ty = f.type if isinstance(f.type, str) else f.type.__name__
        conv = special.get(f.name, by_type[ty])
        _SPEC[f.name.replace("_", "-")] = (f.name, conv)


_build_spec()


def _error_message(exc: Exception) -> str:
    """The text OCaml's Config.validate records for a failed conversion."""
    if isinstance(exc, Failure):
        if exc.msg == "int_of_string":
            return "expect int arg"
        if exc.msg == "float_of_string":
            return "expect float arg"
        return f'Failure("{exc.msg}")'
    if isinstance(exc, ValueError) and exc.args == ("bool_of_string",):
        # 4.17 catches Failure "bool_of_string", but bool_of_string raises
        # Invalid_argument, so the generic printer is used.
        return 'Invalid_argument("bool_of_string")'
    ocaml_str = getattr(exc, "ocaml_str", None)
    return ocaml_str() if ocaml_str else repr(exc)


def validate(settings: Settings, pairs: Sequence[Tuple[str, str]]) -> List[Tuple[str, str]]:
    """Apply each (key, value) in order; return the errors newest first."""
    errors: List[Tuple[str, str]] = []
    for key, value in pairs:
        spec = _SPEC.get(key)
        if spec is None:
            errors.append((key, "unknown key"))
            continue
        name, conv = spec
        try:
            setattr(settings, name, conv(value))
        except Exception as exc:  # each converter's failure becomes one error line
            errors.append((key, _error_message(exc)))
    errors.reverse()
    return errors


def read(filename: str,
         settings: Optional[Settings] = None) -> Tuple[Settings, List[Tuple[str, str]]]:
    """Parse and validate `filename` over `settings` (defaults if None); OSError if unreadable."""
    pairs = parse(filename)
    settings = Settings() if settings is None else settings
    return settings, validate(settings, pairs)


def error_lines(errors: Sequence[Tuple[str, str]]) -> List[str]:
    """The stderr lines for `errors` (already newest first)."""
    return [f"config: unknown key {k}" if e == "unknown key" else f"config: {k}: {e}"
            for k, e in errors]
