"""Scenario files: a hand-writable script of client actions.

The format is described in tests/scenarios/README.md.  In short::

    title  WRITE keeps every byte after the first NUL
    spec   process.ml: split
    config access-log-read-ops = true
    option quiet=0.1
    conn a b
    a: WRITE "/a\\0x\\0y\\0"           # send, wait for the reply (same req_id)
    a: READ tx=0 rid=9 "/a\\0"
    a: send TRANSACTION_START ""      # send only
    a: raw "\\x02\\0\\0\\0"            # raw bytes
    a: quiet                          # drain until quiet, checkpoint on a
    quiet 0.3                         # drain all, checkpoint on all
    g: poke rsp_cons=0x80000000       # ring guests: write ring fields,
    g: peek connection rsp_prod       #   record them, notify the daemon,
    g: notify                         #   wait for a field's value
    g: await connection=0
    dump                              # record the daemon's DB dump file

The parser produces a ``Scenario`` of ``Step`` objects; it knows nothing about
sockets.  Payload parts that name ``${guest.attr}`` variables are resolved by
the runner, per daemon.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from .wire import RING_OFFSETS, op_code

__all__ = ["Scenario", "Step", "Var", "ScenarioError", "parse", "load",
           "parse_string_literal"]

DEFAULT_QUIET = 0.1
DEFAULT_TIMEOUT = 3.0
ACCESSLOG_MODES = ("ordered", "sorted", "off")
# struct xenstore_domain_interface fields a guest step may peek or poke
RING_ACTIONS = ("poke", "peek", "notify", "await")
RING_FIELDS = tuple(RING_OFFSETS)


class ScenarioError(ValueError):
    """A syntax error, with file and line."""


@dataclass(frozen=True)
class Var:
    """A ``${name.attr}`` payload part, resolved at run time."""

    name: str



@dataclass
class Step:
    """One action.  ``conn`` is None for global actions."""

    line: int
    text: str                      # the source line, for reports
    action: str                    # request send raw wait events quiet close eof
    #                                poke peek notify await, conn guest sim dump
    conn: str | None = None
    op: int = 0
    tx_id: int = 0
    req_id: int | None = None      # None: the connection's next id
    length: int | None = None      # declared length override
    new_tx: int | None = None      # TRANSACTION_START: the id it got when recorded
    payload: list = field(default_factory=list)  # bytes and Var parts
    count: int = 1                 # wait/events
    seconds: float | None = None   # quiet; None = scenario default
    args: list[str] = field(default_factory=list)  # conn/guest/sim words, ring fields
    values: list[int] = field(default_factory=list)  # poke/await values (per field)


@dataclass
class Scenario:
    path: str
    title: str = ""
    spec: str = ""
    config: list[str] = field(default_factory=list)
    quiet: float = DEFAULT_QUIET
    timeout: float = DEFAULT_TIMEOUT
    accesslog: str = "ordered"
    tree: bool = True
    domain_init: bool = True
    dump: bool = False             # compare the DB dump written at exit
    steps: list[Step] = field(default_factory=list)

    @property
    def name(self) -> str:
        return Path(self.path).stem

    @property
    def needs_guests(self) -> bool:
        return any(s.action in ("guest", "sim") for s in self.steps)


_ESCAPES = {"0": b"\0", "n": b"\n", "t": b"\t", "r": b"\r", "\\": b"\\", '"': b'"'}
_CONN_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_KEYWORDS = {"title", "spec", "config", "option", "conn", "guest", "sim", "quiet", "dump"}


def parse_string_literal(text: str, pos: int) -> tuple[bytes, int]:
    """Parse a ``"..."`` literal starting at text[pos]; return (bytes, end)."""
    assert text[pos] == '"'
    out = bytearray()
    i = pos + 1
    while i < len(text):
        c = text[i]
        if c == '"':
            return bytes(out), i + 1
        if c == "\\":
            if i + 1 >= len(text):
                break
            e = text[i + 1]
            if e == "x":
                digits = text[i + 2:i + 4]
                if len(digits) != 2 or not all(d in "0123456789abcdefABCDEF" for d in digits):
                    raise ValueError(f"bad \\x escape at column {i + 1}")
                out.append(int(digits, 16))
                i += 4
                continue
            if e not in _ESCAPES:
                raise ValueError(f"unknown escape \\{e} at column {i + 1}")
            out += _ESCAPES[e]
            i += 2
            continue
        if ord(c) > 0x7E or ord(c) < 0x20:
            raise ValueError(f"non-ASCII or control character at column {i + 1}; use \\xNN")
        out.append(ord(c))
        i += 1
    raise ValueError("unterminated string")


def _tokens(text: str) -> list:
    """Split a line into words (str) and literals (bytes) and Vars; drop comments."""
    out: list = []
    i = 0
    while i < len(text):
        c = text[i]
        if c.isspace():
            i += 1
        elif c == "#":
            break
        elif c == '"':
            data, i = parse_string_literal(text, i)
            m = re.match(r"\*(\d+)", text[i:])
            if m:
                data *= int(m.group(1))
                i += m.end()
            out.append(data)
        elif text.startswith("${", i):
            end = text.find("}", i)
            if end < 0:
                raise ValueError("unterminated ${...}")
            out.append(Var(text[i + 2:end]))
            i = end + 1
        else:
            j = i
            while j < len(text) and not text[j].isspace() and text[j] not in '"#':
                j += 1
            out.append(text[i:j])
            i = j
    return out


def _int(word: str) -> int:
    return int(word, 0)


def _parse_request(step: Step, words: list) -> None:
    """``OP [tx=N] [rid=N] [len=N] payload...``"""
    if not words or not isinstance(words[0], str):
        raise ValueError("expected an op name or number")
    step.op = op_code(words[0])
    for w in words[1:]:
        if isinstance(w, str) and "=" in w:
            key, _, value = w.partition("=")
            if key == "tx":
                step.tx_id = _int(value)
            elif key == "rid":
                step.req_id = _int(value)
            elif key == "len":
                step.length = _int(value)
            elif key == "newtx":
                step.new_tx = _int(value)
            else:
                raise ValueError(f"unknown request option {key!r}")
        elif isinstance(w, (bytes, Var)):
            step.payload.append(w)
        else:
            raise ValueError(f"unexpected word {w!r} (payloads are quoted strings)")
    if step.new_tx is not None and step.op != op_code("TRANSACTION_START"):
        raise ValueError("newtx= is only for TRANSACTION_START")
    for key, value in (("tx", step.tx_id), ("rid", step.req_id), ("len", step.length),
                       ("newtx", step.new_tx)):
        if value is not None and not 0 <= value <= 0xFFFFFFFF:
            raise ValueError(f"{key}={value} does not fit in 32 bits")


def _parse_conn_action(step: Step, words: list) -> None:
    head = words[0] if words else None
    rest = words[1:]
    if head in ("send",):
        step.action = "send"
        _parse_request(step, rest)
    elif head == "raw":
        step.action = "raw"
        if not rest or not all(isinstance(w, (bytes, Var)) for w in rest):
            raise ValueError("raw takes quoted strings")
        step.payload = list(rest)
    elif head in ("wait", "events"):
        step.action = head
        step.count = _int(rest[0]) if rest else 1
    elif head == "quiet":
        step.action = "quiet"
        step.seconds = float(rest[0]) if rest else None
    elif head in ("close", "eof", "notify"):
        step.action = head
        if rest:
            raise ValueError(f"{head} takes no argument")
    elif head in ("poke", "await", "peek"):
        step.action = head
        if not rest or not all(isinstance(w, str) for w in rest):
            raise ValueError(f"{head} takes ring field names"
                             + ("" if head == "peek" else "=VALUE"))
        for w in rest:
            name, sep, value = w.partition("=")
            if name not in RING_FIELDS:
                raise ValueError(f"unknown ring field {name!r} (one of {', '.join(RING_FIELDS)})")
            if bool(sep) == (head == "peek"):
                raise ValueError(f"{head} {w!r}: " + ("no value" if head == "peek"
                                                      else "FIELD=VALUE"))
            step.args.append(name)
            if sep:
                number = _int(value)
                if not 0 <= number <= 0xFFFFFFFF:
                    raise ValueError(f"{w}: does not fit in 32 bits")
                step.values.append(number)
    else:
        step.action = "request"
        _parse_request(step, words)


def _parse_option(scn: Scenario, words: list) -> None:
    for w in words:
        key, sep, value = str(w).partition("=")
        if not sep:
            raise ValueError(f"option needs NAME=VALUE, got {w!r}")
        if key == "quiet":
            scn.quiet = float(value)
        elif key == "timeout":
            scn.timeout = float(value)
        elif key == "accesslog":
            if value not in ACCESSLOG_MODES:
                raise ValueError(f"accesslog must be one of {ACCESSLOG_MODES}")
            scn.accesslog = value
        elif key == "tree":
            scn.tree = value in ("on", "true", "1")
        elif key == "domain-init":
            scn.domain_init = value in ("on", "true", "1")
        elif key == "dump":
            scn.dump = value in ("on", "true", "1")
        else:
            raise ValueError(f"unknown option {key!r}")


def parse(text: str, path: str = "<string>") -> Scenario:
    """Parse scenario text."""
    scn = Scenario(path=path)
    known: set[str] = set()   # connection names opened so far
    guests: set[str] = set()  # those of them that are ring guests
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        try:
            step = _parse_line(scn, line, lineno, known, guests)
        except (ValueError, IndexError) as e:
            raise ScenarioError(f"{path}:{lineno}: {e}\n    {raw}") from None
        if step is not None:
            scn.steps.append(step)
    return scn


def _parse_line(scn: Scenario, line: str, lineno: int, known: set[str],
                guests: set[str]) -> Step | None:
    """One line's step; header lines (title, spec, config, option) set `scn` and give None."""
    first, _, rest = line.partition(" ")
    if first in ("title", "spec", "config"):
        value = rest.strip()
        if first == "config":
            scn.config.append(value)
        else:
            setattr(scn, first, (getattr(scn, first) + " " + value).strip())
        return None
    words = _tokens(line)
    if first == "option":
        _parse_option(scn, words[1:])
        return None
    step = Step(line=lineno, text=line, action="")
    if first == "conn" or first == "guest":
        _parse_open(step, first, words, known, guests)
    elif first == "sim":
        step.action = "sim"
        step.args = [str(w) for w in words[1:]]
        if not step.args:
            raise ValueError("sim ACTION ARGS...")
    elif first == "quiet":
        step.action = "quiet"
        step.seconds = float(words[1]) if len(words) > 1 else None
    elif first == "dump":
        step.action = "dump"
        if len(words) > 1:
            raise ValueError("dump takes no argument")
    elif first.endswith(":"):
        name = first[:-1]
        if name not in known:
            raise ValueError(f"unknown connection {name!r} (open it with conn)")
        step.conn = name
        _parse_conn_action(step, words[1:])
        if step.action in RING_ACTIONS and name not in guests:
            raise ValueError(f"{step.action}: {name!r} is not a ring guest")
    else:
        raise ValueError("cannot parse line (connection actions are 'NAME: ...')")
    return step


def _parse_open(step: Step, first: str, words: list, known: set[str], guests: set[str]) -> None:
    """``conn NAME...`` or ``guest NAME DOMID [lazy]``: the names join `known` (and `guests`)."""
    names = [w for w in words[1:] if isinstance(w, str)]
    if not names:
        raise ValueError(f"{first} needs a name")
    if first == "guest":
        if len(names) < 2:
            raise ValueError("guest NAME DOMID [lazy]")
        _int(names[1])
        names_new = [names[0]]
    else:
        names_new = names
    for n in names_new:
        if not _CONN_NAME.match(n) or n in _KEYWORDS:
            raise ValueError(f"bad connection name {n!r}")
        if n in known:
            raise ValueError(f"connection {n!r} opened twice")
        known.add(n)
        if first == "guest":
            guests.add(n)
    step.action = first
    step.args = names


def load(path: str | Path) -> Scenario:
    """Parse a scenario file."""
    return parse(Path(path).read_text(), str(path))
