"""What of a run legitimately differs between two daemons, masked before comparison.

The access log's dates, the xenstored log's dates, times, backtraces and the
OCaml runtime's own statistics, a DB dump's file descriptor numbers and socket
order, and the value of ``/tool/xenstored`` (each daemon writes its own path).
"""
from __future__ import annotations

import re
from pathlib import Path

__all__ = ["MASKED", "MASKED_NODES", "mask_dump", "read_dump", "mask_access_log",
           "mask_xenstored_log", "XLOG_RUNTIME_STATS"]

MASKED = "<masked>"
# nodes whose value legitimately differs between the daemons
MASKED_NODES = {"/tool/xenstored"}
_DATE = re.compile(r"^\[\d{8}T\d\d:\d\d:\d\d\.\d{3}Z\]")

_DUMP_FD = re.compile(r"^(global|socket|evtchn-dev),(-?\d+)")
_DUMP_SOCKET_WATCH = re.compile(r"^watch,-\d+,")
_DUMP_TOOL = "store," + b"/tool/xenstored".hex() + ","
_LEGACY_TOOL = "tool/xenstored{"


def mask_dump(text: str) -> list[str]:
    """A DB dump (xenstored.ml: DB.to_channel, or store.ml: dump's legacy format of ``persistent``)
    made comparable: file descriptor numbers are masked (``global,FD``; ``-1``
    is kept), socket connections, which come in the hash order of their fds,
    are sorted as blocks (a ``socket`` line with its ``watch`` lines), and
    ``/tool/xenstored``'s value (the daemon's path) is masked."""
    head: list[str] = []
    sockets: list[list[str]] = []
    tail: list[str] = []
    for line in text.splitlines():
        if line.startswith(_DUMP_TOOL):  # the daemon's own path (MASKED_NODES)
            line = line.rsplit(",", 1)[0] + "," + MASKED
        elif line.startswith(_LEGACY_TOOL):  # persistent = true's legacy format
            line = line.split(" = ", 1)[0] + " = " + MASKED
        m = _DUMP_FD.match(line)
        if m and m.group(2) != "-1":
            line = f"{m.group(1)},FD{line[m.end():]}"
        if line.startswith("socket,"):
            sockets.append([line])
        elif sockets and _DUMP_SOCKET_WATCH.match(line):
            sockets[-1].append("watch,-FD," + line.split(",", 2)[2])
        elif line.startswith("store,") or sockets:
            tail.append(line)
        else:
            head.append(line)
    return head + [line for block in sorted(sockets) for line in block] + tail


def read_dump(path: Path) -> list[str]:
    try:
        return mask_dump(path.read_text(errors="surrogateescape"))
    except FileNotFoundError:
        return ["(no DB dump file)"]


def mask_access_log(text: str) -> list[str]:
    """Access-log lines with the date replaced (the rest kept verbatim)."""
    return [_DATE.sub("[DATE]", line) for line in text.splitlines()]


# ``[date|level|key] message``: the date is the part every line has that differs
_XLOG_DATE = re.compile(r"^\[\d{8}T\d\d:\d\d:\d\d\.\d{3}Z\|")
# (pattern, replacement) on the message: values that legitimately differ
# between two daemons running the same session
_XLOG_MASKS = [
    # wall-clock time since the previous report (since the epoch for the first)
    (re.compile(r"^(Transaction conflict statistics for last )\S+( seconds:)$"), r"\1<time>\2"),
    # how long the periodic operations took
    (re.compile(r"^(periodic_ops took )\S+( seconds\.)$"), r"\1<time>\2"),
    # the socket connections at the report: the only one compared is at
    # start-up, where the launcher's readiness probe may or may not have been
    # accepted yet
    (re.compile(r"^(  con stat: anonymous\()\d+, \d+ o, \d+ w\)"), r"\1<n>, <n> o, <n> w)"),
]
# messages ending in a backtrace (Printexc.get_backtrace / traceback.format_exc):
# the text after the exception and the lines that continue it are source
# locations of the daemon's own implementation, OCaml's or Python's
_XLOG_BACKTRACE = re.compile(
    r"^(process packet: .*\. |caught exception .*: )"
    r"(?:Raised |Re-raised |Called from |Traceback \(most recent call last\):|$)")
# statistics of the OCaml runtime itself, which oxsd does not have and does
# not print: the Symbol weak table (its entry count depends on when the GC
# last ran) and the GC counters
XLOG_RUNTIME_STATS = ("|xenstored] sytbl stat: ", "|xenstored]   mem stat: ")


def mask_xenstored_log(text: str, scratch: str = "") -> list[str]:
    """xenstored-log lines as ``[DATE|level|key] message``, runtime values
    masked and the OCaml runtime's statistics lines dropped.  Lines with no
    prefix (the start-up banner, continuation lines of a multi-line message)
    are kept as they are, except those of a backtrace.  Paths: the reference
    sees ``SCRATCH/run`` mounted over ``/run`` and logs ``/var/run/...``; oxsd
    logs the real path; both are written ``/var/run/...``, and the rest of the
    scratch dir ``SCRATCH``."""
    out = []
    in_backtrace = False
    for line in text.splitlines():
        if scratch:
            line = line.replace(scratch + "/run/", "/var/run/").replace(scratch, "SCRATCH")
        m = _XLOG_DATE.match(line)
        if m is None:
            if not in_backtrace:
                out.append(line)
            continue
        in_backtrace = False
        line = "[DATE|" + line[m.end():]
        if any(s in line for s in XLOG_RUNTIME_STATS):
            continue
        head, sep, msg = line.partition("] ")
        for pattern, repl in _XLOG_MASKS:
            msg = pattern.sub(repl, msg)
        bt = _XLOG_BACKTRACE.match(msg)
        if bt:
            msg = bt.group(1) + "<backtrace>"
            in_backtrace = True
        out.append(head + sep + msg)
    return out
