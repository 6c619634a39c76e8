"""Compare two recordings of the same scenario and explain the differences."""
from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, field

from .runner import Entry, Recording
from .scenario import Scenario
from .wire import describe, escape

__all__ = ["Difference", "Comparison", "compare", "group_access_log"]

_CONN_FIELD = re.compile(r"^\[DATE\]  (\S*)")
_CONN_NAME = re.compile(r"^(?:r\(\d+\):)?([AD]\d+)")


@dataclass
class Difference:
    where: str          # "connection a", "access log A2", "store", "daemon"
    text: str           # readable explanation (several lines)


@dataclass
class Comparison:
    scenario: Scenario
    a: Recording
    b: Recording
    differences: list[Difference] = field(default_factory=list)

    @property
    def identical(self) -> bool:
        return not self.differences

    def report(self) -> str:
        head = f"{self.scenario.path}: " + (
            "identical" if self.identical else f"{len(self.differences)} difference(s)")
        head += f"  [{self.a.kind} vs {self.b.kind}]"
        if self.scenario.title:
            head += f"\n  {self.scenario.title}"
        if self.scenario.spec:
            head += f"  ({self.scenario.spec})"
        parts = [head]
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


def _step_text(scn: Scenario, line: int) -> str:
    if line == 0:
        return "the final drain"
    for s in scn.steps:
        if s.line == line:
            return f"line {line}: {s.text}"
    return f"line {line}"


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
    lines = [f"first difference at item #{i + 1} "
             f"(received during {_step_text(scn, (ea or eb).line)})"]
    width = max(len(ka), len(kb))
    lines.append(f"{ka:<{width}} : {_entry_text(ea)}")
    lines.append(f"{kb:<{width}} : {_entry_text(eb)}")
    if i:
        lines.append("last common item: " + _entry_text(ta[i - 1]))
    lines.append(f"items: {ka}={len(ta)} {kb}={len(tb)}")
    return Difference(f"connection {name}", "\n".join(lines))


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


def compare(scn: Scenario, a: Recording, b: Recording) -> Comparison:
    """Everything observable must be equal: per-connection transcripts, the
    access log per connection (dates masked), the tree afterwards, liveness."""
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
    if a.tree != b.tree:
        diff = difflib.unified_diff(a.tree, b.tree, a.kind, b.kind, lineterm="", n=1)
        diffs.append(Difference("store after the run (full tree walk)",
                                "\n".join(list(diff)[:60])))
    return cmp
