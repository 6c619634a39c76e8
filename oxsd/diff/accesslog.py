"""Import an oxenstored access log as a scenario, as far as its content allows.

    oxsd-diff import-access-log xenstored-access.log -o t.scn

Each line ``[DATE]  CON[.TID]  TYPE DATA`` becomes a scenario line:
``newconn``/``endconn`` of a socket connection ``A<n>`` open and close it,
request lines become requests on it, ``error`` and ``w event`` lines (what
the daemon sent) become ``#   A<n> <- ...`` comments.  Ring connections
(``D<domid>``), replayed requests (``r(<tid>):...``) and internal lines
(``coalesce``, ``conflict``, ``w notfired``, ``debug`` of live update) are
kept as comments.

What the access log does not hold, and is therefore lost or guessed:

* read-only ops (READ, DIRECTORY, GET_PERMS) unless ``access-log-read-ops``,
  special ops (INTRODUCE, RELEASE, GET_DOMAIN_PATH, IS_INTRODUCED, RESUME)
  unless ``access-log-special-ops``: absent from the scenario;
* TRANSACTION_START/END unless ``access-log-transactions-ops``: a start is
  inferred at the first line of an unknown transaction id, an end (commit)
  at its ``commit``/``conflict``/``coalesce`` line; aborts are not logged at
  all (with the option on, a ``t end`` not followed by a commit line of the
  same transaction is an abort);
* replies (only errors other than ENOENT, and watch events, are logged);
* the exact payload: NULs were logged as spaces (the first space of a WRITE
  is taken as the NUL after the path, every other op gets all its spaces back
  as NULs, so values or tokens with spaces come back wrong), and data longer
  than ``access-log-nb-chars`` was cut;
* req_ids (the scenario's counter is used) and the timing between lines.

Transaction ids are kept as logged; each (logged or inferred) start carries
``newtx=<logged id>`` so that the replay maps them to the ids the replaying
daemon gives (a log that starts mid-connection, or a transaction aborted
before any logged op, would otherwise shift them).
"""
from __future__ import annotations

import re

from ..trace import format_request
from .wire import OP_CODES

__all__ = ["import_access_log", "unescape_ocaml"]

# the access log's type field -> op name (oxsd/logging_.py, logging.ml)
_REQUEST_TYPES = {
    "debug": "CONTROL", "directory": "DIRECTORY", "read": "READ", "getperms": "GET_PERMS",
    "watch": "WATCH", "unwatch": "UNWATCH", "introduce": "INTRODUCE", "release": "RELEASE",
    "getdomain": "GET_DOMAIN_PATH", "is introduced": "IS_INTRODUCED", "resume": "RESUME",
    "write": "WRITE", "mkdir": "MKDIR", "rm": "RM", "setperms": "SET_PERMS",
    "reset watches": "RESET_WATCHES", "settarget": "SET_TARGET", "invalid": "RESTRICT",
}
_OTHER_TYPES = ("newconn", "endconn", "t start", "t end", "error", "w event", "coalesce",
                "conflict", "commit", "w notfired")
_COMMIT_TYPES = ("commit", "conflict", "coalesce")
_TYPES = sorted(list(_REQUEST_TYPES) + list(_OTHER_TYPES), key=len, reverse=True)
_PREFIX = re.compile(r"^\[[^\]]*\] ")
_CON = re.compile(r"^(?:(r\(\d+\)):)?([AD])(\d+)(?:\.(\d+))?$")
_OCAML_ESC = re.compile(r"\\(\d{3}|.)", re.S)
_SIMPLE = {"n": "\n", "t": "\t", "r": "\r", "b": "\b", "\\": "\\", '"': '"', "'": "'",
           " ": " "}


def unescape_ocaml(text: str) -> bytes:
    """Undo OCaml's String.escaped (``\\n``, ``\\ddd`` decimal, ...)."""
    def sub(m: re.Match) -> str:
        e = m.group(1)
        return chr(int(e)) if e.isdigit() else _SIMPLE.get(e, "\\" + e)
    return _OCAML_ESC.sub(sub, text).encode("latin-1")


def _payload(op: str, data: bytes) -> bytes:
    if op == "WRITE":
        path, sep, value = data.partition(b" ")
        return path + b"\0" + value if sep else path
    return data.replace(b" ", b"\0")


def _split(line: str) -> tuple[str, str, str] | None:
    """(connection field, type, data) of one line, or None."""
    rest = _PREFIX.sub("", line, count=1).lstrip(" ")
    con, _, rest = rest.partition(" ")
    rest = rest.lstrip(" ")
    for t in _TYPES:
        if rest.startswith(t) and (len(rest) == len(t) or rest[len(t)] == " "):
            data = rest[len(t.ljust(9)) + 1:] if len(rest) > len(t.ljust(9)) else ""
            return con, t, data
    return None


def import_access_log(text: str, source: str = "") -> str:
    """Scenario text for an access log (see the module doc for what is lost)."""
    importer = _Importer(text.splitlines())
    importer.out += ["# imported from an access log" + (f": {source}" if source else ""),
                     "# lost: read/special/transaction ops unless logged, replies, NUL vs space,",
                     "# req_ids, long data (see oxsd/diff/accesslog.py)"]
    for i in range(len(importer.lines)):
        importer.line(i)
    return "\n".join(importer.out) + "\n"


class _Importer:
    """The scenario lines of an access log, one log line at a time."""

    def __init__(self, lines: list[str]) -> None:
        self.lines = lines
        self.fields = [_split(line) for line in lines]
        self.out: list[str] = []
        self.opened: set[str] = set()        # socket connections open in the scenario
        self.txs: dict[str, set[int]] = {}   # their open transactions

    def line(self, i: int) -> None:
        line, parts = self.lines[i], self.fields[i]
        m = _CON.match(parts[0]) if parts else None
        if parts is None or m is None or m.group(1) or m.group(2) == "D":
            self.out.append(f"# {line}")  # ring connections, replays, unparsed lines
            return
        _, kind, number, tid_text = m.groups()
        name, (_, t, data) = f"A{number}", parts
        tid = int(tid_text) if tid_text else 0
        raw = unescape_ocaml(data)
        open_txs = self.txs.setdefault(name, set())
        if t == "newconn":
            self.ensure(name)
        elif t == "endconn":
            if name in self.opened:
                self.out.append(f"{name}: close")
                self.opened.discard(name)
        elif t in ("error", "w event"):
            self.out.append(f'#   {name} <- {"ERROR" if t == "error" else "WATCH_EVENT"} {data}')
        elif t == "w notfired":
            self.out.append(f"# {line}")
        elif t == "t start":
            self.ensure(name)
            self.start(name, tid)
        elif t == "t end":
            if tid in open_txs:
                self.end(name, tid, self.committed(i, parts[0]))
        elif t in _COMMIT_TYPES:
            if t != "commit":
                self.out.append(f"# {line}")
            if tid in open_txs:  # no t end lines: access-log-transactions-ops is off
                self.end(name, tid, True, f"  # inferred from {t}")
        else:
            self.request(name, tid, _REQUEST_TYPES[t], raw, i + 1)

    def ensure(self, name: str) -> None:
        if name not in self.opened:
            self.opened.add(name)
            self.out.append(f"conn {name}")

    def request(self, name: str, tid: int, op: str, raw: bytes, lineno: int) -> None:
        self.ensure(name)
        if tid and tid not in self.txs[name]:
            self.start(name, tid, "  # inferred")
        self.out.append(format_request(name, OP_CODES[op], tid, 0, _payload(op, raw))
                        .replace(" rid=0", "") + f"  # log line {lineno}")

    def start(self, name: str, tid: int, note: str = "") -> None:
        self.txs[name].add(tid)
        self.out.append(format_request(name, OP_CODES["TRANSACTION_START"], 0, 0, b"\0",
                                       new_tx=tid).replace(" rid=0", "") + note)

    def end(self, name: str, tid: int, commit: bool, note: str = "") -> None:
        self.txs[name].discard(tid)
        self.out.append(format_request(name, OP_CODES["TRANSACTION_END"], tid, 0,
                                       b"T\0" if commit else b"F\0").replace(" rid=0", "")
                        + note)

    def committed(self, i: int, con: str) -> bool:
        """Whether the ``t end`` at line i committed: a commit writes its
        ``commit``/``conflict``/``coalesce`` line for the same ``A<n>.<tid>``
        next; an abort writes nothing more."""
        for later in self.fields[i + 1:]:
            if later and later[0] == con:
                return later[1] in _COMMIT_TYPES
        return False
