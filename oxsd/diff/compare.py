"""Compare two recordings of the same scenario and explain the differences."""
from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, field

from .runner import Entry, Recording
from .scenario import Scenario
from .wire import describe, escape

__all__ = ["Difference", "Comparison", "compare", "group_access_log",
           "compare_xenstored_logs", "split_xenstored_log", "XLOG_PARTS"]

_CONN_FIELD = re.compile(r"^\[DATE\]  (\S*)")
_CONN_NAME = re.compile(r"^(?:r\(\d+\):)?([AD]\d+)")


@dataclass
class Difference:
    where: str          # "connection a", "access log A2", "store", "daemon"
    text: str           # readable explanation (several lines)
    line: int | None = None  # scenario line of a first differing packet


@dataclass
class Comparison:
    scenario: Scenario
    a: Recording
    b: Recording
    differences: list[Difference] = field(default_factory=list)

    @property
    def identical(self) -> bool:
        return not self.differences

    def first_packet_difference(self) -> Difference | None:
        """The connection difference that happened earliest in the scenario."""
        found = [d for d in self.differences if d.line is not None]
        # line 0 is the final drain, after every step
        return min(found, key=lambda d: d.line or 1 << 30) if found else None

    def report(self) -> str:
        head = f"{self.scenario.path}: " + (
            "identical" if self.identical else f"{len(self.differences)} difference(s)")
        head += f"  [{self.a.kind} vs {self.b.kind}]"
        if self.scenario.title:
            head += f"\n  {self.scenario.title}"
        if self.scenario.spec:
            head += f"  ({self.scenario.spec})"
        parts = [head]
        first = self.first_packet_difference()
        if first is not None:
            parts.append(f"  first difference: {first.where}, during "
                         f"{_step_text(self.scenario, first.line)}")
        for d in self.differences:
            parts.append(f"  --- {d.where}\n" + _indent(d.text, 4))
        if not self.identical:
            parts.append(f"  scratch dirs: {self.a.kind}={self.a.scratch} "
                         f"{self.b.kind}={self.b.scratch}")
        return "\n".join(parts)


def _indent(text: str, n: int) -> str:
    pad = " " * n
    return "\n".join(pad + line for line in text.splitlines())


def _exit_text(status: int | None) -> str:
    if status is not None and status < 0:
        return f"did not exit, killed by signal {-status}"
    return f"exited with status {status}"


def _entry_text(e: Entry | None) -> str:
    if e is None:
        return "(nothing)"
    if e.kind == "packet":
        return describe(e.data)
    if e.kind == "partial":
        return f'incomplete packet at end of stream: "{escape(e.data)}"'
    return f"[{e.kind}] {e.data}"


def _last_request(scn: Scenario, line: int):
    """The last step that sent something, at or before `line` (0: the end)."""
    last = None
    for s in scn.steps:
        if line and s.line > line:
            break
        if s.action in ("request", "send", "raw"):
            last = s
    return last


def _step_text(scn: Scenario, line: int) -> str:
    if line == 0:
        return "the final drain"
    for s in scn.steps:
        if s.line == line:
            return f"line {line}: {s.text}"
    return f"line {line}"


def _entry_short(e: Entry) -> str:
    """An entry as compared (no receive-time information)."""
    if e.kind == "packet":
        return describe(e.data, 120)
    if e.kind == "partial":
        return f'incomplete packet: "{escape(e.data)[:120]}"'
    return f"[{e.kind}] {e.data}"


UNIFIED_CONTEXT = 2
UNIFIED_MAX_LINES = 40


def unified_entries(ta: list[Entry], tb: list[Entry], ka: str, kb: str,
                    context: int = UNIFIED_CONTEXT, limit: int = UNIFIED_MAX_LINES) -> list[str]:
    """Every difference between two transcripts as a unified view of decoded
    packets; each line shows the scenario line it was received during."""
    keys_a = [e.key() for e in ta]
    keys_b = [e.key() for e in tb]
    out = [f"all differences ('-' {ka}, '+' {kb}; [line N]: received during line N):"]
    matcher = difflib.SequenceMatcher(None, keys_a, keys_b, autojunk=False)

    def show(sign: str, e: Entry) -> str:
        where = "end" if e.line == 0 else f"{e.line:>3}"
        return f"{sign} [line {where}] {_entry_short(e)}"

    for group in matcher.get_grouped_opcodes(context):
        i1, i2, j1, j2 = group[0][1], group[-1][2], group[0][3], group[-1][4]
        out.append(f"@@ {ka} items {i1 + 1}-{i2}, {kb} items {j1 + 1}-{j2} @@")
        for tag, a1, a2, b1, b2 in group:
            if tag == "equal":
                out += [show(" ", e) for e in ta[a1:a2]]
                continue
            out += [show("-", e) for e in ta[a1:a2]]
            out += [show("+", e) for e in tb[b1:b2]]
        if len(out) > limit:
            out = out[:limit] + [f"... (cut at {limit} lines)"]
            break
    return out


def _compare_transcript(scn: Scenario, name: str, ta: list[Entry], tb: list[Entry],
                        ka: str, kb: str) -> Difference | None:
    keys_a = [e.key() for e in ta]
    keys_b = [e.key() for e in tb]
    if keys_a == keys_b:
        return None
    i = 0
    while i < min(len(keys_a), len(keys_b)) and keys_a[i] == keys_b[i]:
        i += 1
    ea = ta[i] if i < len(ta) else None
    eb = tb[i] if i < len(tb) else None
    line = (ea or eb).line
    lines = [f"first difference at item #{i + 1} "
             f"(received during {_step_text(scn, line)})"]
    cause = _last_request(scn, line)
    if cause is not None and cause.line != line:
        lines.append(f"last request sent before it: line {cause.line}: {cause.text}")
    width = max(len(ka), len(kb))
    lines.append(f"{ka:<{width}} : {_entry_text(ea)}")
    lines.append(f"{kb:<{width}} : {_entry_text(eb)}")
    if i:
        lines.append("last common item: " + _entry_text(ta[i - 1]))
    lines.append(f"items: {ka}={len(ta)} {kb}={len(tb)}")
    lines += unified_entries(ta, tb, ka, kb)
    return Difference(f"connection {name}", "\n".join(lines), line)


# Lines the daemons write when they send a packet (errors, watch events);
# all the others are written while processing input.  Within one connection
# each kind is in a fixed order, but how the two kinds interleave depends on
# when the client's next request arrives compared with the daemon's next
# loop iteration (e.g. the initial watch event is sent one iteration after
# the WATCH reply), so the two are compared as separate sequences.
_OUTPUT_TYPES = ("error    ", "w event  ")
SIDES = {"in": "written while processing requests", "out": "written when sending"}


def group_access_log(lines: list[str]) -> dict[tuple[str, str], list[str]]:
    """Access-log lines per (connection, side), order kept within each.

    The connection is A<n>/D<n> (replayed requests ``r(<tid>):A2`` count as A2);
    the side is ``out`` for lines written when a packet is sent, else ``in``.
    Lines of different connections are not compared in order: that depends on
    the daemons' iteration order over ready connections."""
    groups: dict[tuple[str, str], list[str]] = {}
    for line in lines:
        m = _CONN_FIELD.match(line)
        field_ = m.group(1) if m else ""
        n = _CONN_NAME.match(field_)
        rest = line[m.end():].lstrip(" ") if m else ""
        side = "out" if rest.startswith(_OUTPUT_TYPES) and not field_.startswith("r(") else "in"
        groups.setdefault((n.group(1) if n else field_, side), []).append(line)
    return groups


def _compare_access_logs(mode: str, la: list[str], lb: list[str],
                         ka: str, kb: str) -> list[Difference]:
    if mode == "off":
        return []
    ga, gb = group_access_log(la), group_access_log(lb)
    out = []
    for key in sorted(set(ga) | set(gb)):
        xa, xb = ga.get(key, []), gb.get(key, [])
        if mode == "sorted":
            xa, xb = sorted(xa), sorted(xb)
        if xa != xb:
            diff = difflib.unified_diff(xa, xb, ka, kb, lineterm="", n=2)
            name, side = key
            out.append(Difference(f"access log of {name or '(unnamed)'}, lines {SIDES[side]}",
                                  "\n".join(list(diff)[:60])))
    return out


# xenstored-log lines whose number or place depends on timing, not on the
# session; each kind is taken out of the in-order comparison and compared
# in the weaker form that is deterministic on the reference:
_XLOG_SOCKET = ("|xenstored] new connection through socket",  # accept of one client and
                "|xenstored] closing socket connection")      # EOF of another: either order
_XLOG_PENDING = "|xenstored] pending port "
_XLOG_LAZY = "|xenstored] found lazy domain "
_XLOG_PERIODIC_START = "|xenstored] periodic_ops starting"
_XLOG_PERIODIC_END = "|xenstored] periodic_ops took "
# the statistics report (at start-up, then every 120 s) and the ring scan's
# result: all a periodic run logs at level info
_XLOG_PERIODIC_INFO = re.compile(
    r"^\[DATE\| info\|xenstored\] (Transaction conflict statistics for last |Dom\d+ caused "
    r"|\d+ failed transactions; of these |store stat: |  con stat: |found lazy domain )")
XLOG_PARTS = {
    "order": "in order",
    "sockets": "socket connections accepted/closed, counted (the accept of one client "
               "and the EOF of another are seen in either order)",
    "ports": "event-channel ports that had an event (a guest's notifications coalesce "
             "depending on timing; oxsd reads every queued one at once and logs each "
             "port once)",
    "lazy": "lazy domains found by later ring scans (every 15 s or more: when, "
            "depends on the run's duration)",
}


def _periodic_info(line: str) -> str | None:
    """"scan", "stats" (the report's first line), "more" (its other lines) or None."""
    m = _XLOG_PERIODIC_INFO.match(line)
    if m is None:
        return None
    return {"found lazy domain ": "scan",
            "Transaction conflict statistics for last ": "stats"}.get(m.group(1), "more")


def split_xenstored_log(lines: list[str]) -> dict[str, list[str]]:
    """A masked xenstored log (masks.mask_xenstored_log) as the parts that
    are compared (XLOG_PARTS).

    Periodic operations run every 15 s of idle time: the first run, at
    start-up, stays in place; later runs (``periodic_ops starting`` ...
    ``took`` at level debug; at info, the ring scan's lazy-domain lines and
    the statistics report, in this order) fall wherever the wall clock puts
    them, so only their lazy-domain lines are kept, as a sorted list."""
    parts: dict[str, list[str]] = {key: [] for key in XLOG_PARTS}
    periodic_runs = 0
    in_block = False      # inside periodic_ops starting ... took (debug)
    info_phase = None     # at info: where in a run the previous line was
    for line in lines:
        if _XLOG_PERIODIC_START in line:
            periodic_runs += 1
            in_block = True
        elif in_block and _XLOG_PERIODIC_END in line:
            in_block = False
            if periodic_runs > 1:
                continue
        elif not in_block:
            phase = _periodic_info(line)
            # a run logs its lazy domains, then its report: a new run begins
            # with a lazy line after anything but lazy lines, or with a report
            # not right after a lazy line
            if (phase == "scan" and info_phase != "scan"
                    or phase == "stats" and info_phase != "scan"
                    or phase == "more" and info_phase is None):
                periodic_runs += 1
            info_phase = phase
        if any(m in line for m in _XLOG_SOCKET):
            parts["sockets"].append(line)
        elif _XLOG_PENDING in line:
            parts["ports"].append(line)
        elif periodic_runs > 1 and (in_block or info_phase is not None):
            if _XLOG_LAZY in line:
                parts["lazy"].append(line)
        else:
            parts["order"].append(line)
    parts["sockets"].sort()
    parts["ports"] = sorted(set(parts["ports"]))
    parts["lazy"].sort()
    return parts


XLOG_DIFF_LINES = 80


def compare_xenstored_logs(la: list[str], lb: list[str], ka: str, kb: str,
                           level: str = "") -> list[Difference]:
    """The xenstored logs (masked by masks.mask_xenstored_log): each part of
    split_xenstored_log as a unified diff (headed by the log level if given)."""
    if la == lb:
        return []
    pa, pb = split_xenstored_log(la), split_xenstored_log(lb)
    out = []
    for key, what in XLOG_PARTS.items():
        if pa[key] != pb[key]:
            diff = list(difflib.unified_diff(pa[key], pb[key], ka, kb, lineterm="", n=2))
            if len(diff) > XLOG_DIFF_LINES:
                diff = diff[:XLOG_DIFF_LINES] + [f"... (cut at {XLOG_DIFF_LINES} lines)"]
            head = [f"(xenstored-log-level {level})"] if level else []
            out.append(Difference(f"xenstored log: {what}", "\n".join(head + diff)))
    return out


def compare(scn: Scenario, a: Recording, b: Recording) -> Comparison:
    """Everything observable must be equal: per-connection transcripts, the
    access log per connection (dates masked) and its files, the tree
    afterwards, the domain clean-up, DB dumps taken, liveness."""
    cmp = Comparison(scn, a, b)
    diffs = cmp.differences
    for rec in (a, b):
        for err in rec.errors:
            diffs.append(Difference(f"harness ({rec.kind})", err))
    if a.alive_at_end != b.alive_at_end:
        dead = b if a.alive_at_end else a
        diffs.append(Difference("daemon", f"{dead.kind} died during the scenario "
                                f"(exit status {dead.exit_status}); output tail:\n"
                                f"{dead.output_tail}"))
    elif a.alive_at_end and a.exit_status != b.exit_status:
        diffs.append(Difference("daemon", "after SIGTERM: " + "; ".join(
            f"{r.kind} {_exit_text(r.exit_status)}" for r in (a, b))))
    for name in list(dict.fromkeys(list(a.transcripts) + list(b.transcripts))):
        d = _compare_transcript(scn, name, a.transcripts.get(name, []),
                                b.transcripts.get(name, []), a.kind, b.kind)
        if d:
            diffs.append(d)
    diffs += _compare_access_logs(scn.accesslog, a.access_log, b.access_log, a.kind, b.kind)
    level = a.log_level if a.log_level == b.log_level else f"{a.log_level}/{b.log_level}"
    diffs += compare_xenstored_logs(a.xenstored_log, b.xenstored_log, a.kind, b.kind, level)
    for where, xa, xb in (
            ("store after the run (full tree walk)", a.tree, b.tree),
            ("domain clean-up (event channels before the guests close, then "
             "IS_DOMAIN_INTRODUCED)", a.domains, b.domains),
            ("access-log files (rotation)", a.log_files, b.log_files)):
        if xa != xb:
            diff = difflib.unified_diff(xa, xb, a.kind, b.kind, lineterm="", n=1)
            diffs.append(Difference(where, "\n".join(list(diff)[:60])))
    dumps_a, dumps_b = dict(a.dumps), dict(b.dumps)
    for when in dict.fromkeys([w for w, _ in a.dumps] + [w for w, _ in b.dumps]):
        xa, xb = dumps_a.get(when, ["(not taken)"]), dumps_b.get(when, ["(not taken)"])
        if xa != xb:
            diff = difflib.unified_diff(xa, xb, a.kind, b.kind, lineterm="", n=1)
            diffs.append(Difference(f"DB dump at {when} (fds masked)",
                                    "\n".join(list(diff)[:60])))
    return cmp
