"""oxsd-diff: run scenario files on two daemons and compare them byte for byte.

    oxsd-diff tests/scenarios                 # ocaml vs oxsd, every *.scn
    oxsd-diff -k ocaml,ocaml tests/scenarios  # determinism check of the harness
    oxsd-diff --show ocaml tests/scenarios/watches.scn  # what the reference does
    oxsd-diff --list tests/scenarios          # the corpus by spec area
    oxsd-diff --reference /usr/lib/xen-4.17/bin/oxenstored tests/scenarios
    oxsd-diff --oxsd-args='--protocol-level 4.22' tests/scenarios  # flags for oxsd alone
    oxsd-diff record --listen /tmp/p.sock --upstream /run/xenstored/socket -o t.scn
    oxsd-diff import-access-log xenstored-access.log [-o t.scn]

Scenarios with ring guests (``guest``/``sim`` lines) run on oxsd's own
simulated hypervisor tooling (oxsd.sim).  Traces written by ``oxsd -T FILE``
and by ``record`` are scenarios too.

Exit status: 0 all identical, 1 differences, 2 a daemon could not be run.
"""
from __future__ import annotations

import argparse
import os
import re
import shlex
import shutil
import sys
from collections import Counter
from pathlib import Path
from typing import Sequence

from .accesslog import import_access_log
from .compare import Comparison, compare
from .daemons import KINDS, DaemonError, DaemonSettings, make_scratch, start_daemon
from .guests import SimGuests
from .proxy import serve
from .runner import GuestBackend, Recording, run_scenario
from .scenario import Scenario, ScenarioError, load
from .wire import describe, escape

__all__ = ["main", "record", "diff_scenario", "scenario_files", "format_recording",
           "corpus_table"]

SUFFIX = ".scn"


def scenario_files(paths: list[str]) -> list[Path]:
    """Scenario files named, or found (sorted) in the directories named."""
    out: list[Path] = []
    for p in map(Path, paths):
        out += sorted(p.glob(f"*{SUFFIX}")) if p.is_dir() else [p]
    return out


def settings_for(scn: Scenario, binary: str | None = None,
                 extra_args: Sequence[str] = ()) -> DaemonSettings:
    return DaemonSettings(extra_conf=list(scn.config), domain_init=scn.domain_init,
                          binary=binary, extra_args=list(extra_args))


def record(kind: str, scn: Scenario, guests: GuestBackend | None = None,
           keep: bool = False, binary: str | None = None,
           oxsd_args: Sequence[str] = ()) -> Recording:
    """Start a fresh daemon of `kind`, run the scenario, stop it.  `binary`
    replaces Debian's oxenstored for the ``ocaml`` kind; `oxsd_args` are
    added to the command line of the ``oxsd`` kind only."""
    scratch = make_scratch(f"oxd-{kind[:2]}-")
    try:
        daemon = start_daemon(kind, scratch, settings=settings_for(
            scn, binary if kind == "ocaml" else None,
            oxsd_args if kind == "oxsd" else ()))
    except DaemonError:
        shutil.rmtree(scratch, ignore_errors=True)  # the error carries its output
        raise
    try:
        rec = run_scenario(daemon, scn, guests)
    finally:
        daemon.stop()
    rec.scratch = str(scratch)
    if not keep:
        _discard(rec)
    return rec


def _discard(rec: Recording) -> None:
    """Remove a recording's scratch dir (its path stays in reports)."""
    shutil.rmtree(rec.scratch, ignore_errors=True)
    rec.scratch += " (removed)"


def diff_scenario(scn: Scenario, kinds: tuple[str, str] = ("ocaml", "oxsd"),
                  guests: GuestBackend | None = None, keep: bool = False,
                  keep_different: bool = True, binary: str | None = None,
                  oxsd_args: Sequence[str] = ()) -> Comparison:
    """Run a scenario on two fresh daemons and compare the recordings.
    The scratch dirs (configs, logs, daemon output) are kept with keep=True,
    or when the recordings differ and keep_different is set."""
    recs: list[Recording] = []
    try:
        for kind in kinds:
            recs.append(record(kind, scn, guests, keep=True, binary=binary,
                               oxsd_args=oxsd_args))
    except DaemonError:
        for rec in recs:
            _discard(rec)
        raise
    cmp = compare(scn, recs[0], recs[1])
    if not keep and (cmp.identical or not keep_different):
        for rec in recs:
            _discard(rec)
    return cmp


def format_recording(rec: Recording) -> str:
    """A recording as text: what each connection received, log, tree."""
    out = [f"== {rec.kind}"]
    for name, entries in rec.transcripts.items():
        out.append(f"-- connection {name}")
        for e in entries:
            if e.kind == "packet":
                out.append(f"   [line {e.line:>3}] {describe(e.data)}")
            elif e.kind == "partial":
                out.append(f'   [line {e.line:>3}] partial "{escape(e.data)}"')
            else:
                out.append(f"   [line {e.line:>3}] {e.kind}: {e.data}")
    out.append("-- access log")
    out += ["   " + line for line in rec.access_log]
    out.append("-- access-log files")
    out += ["   " + line for line in rec.log_files]
    out.append("-- tree")
    out += ["   " + line for line in rec.tree]
    out.append("-- domain clean-up")
    out += ["   " + line for line in rec.domains]
    for when, lines in rec.dumps:
        out.append(f"-- DB dump at {when}")
        out += ["   " + line for line in lines]
    out.append(f"-- daemon: {'alive' if rec.alive_at_end else 'dead'} at the end, "
               f"SIGTERM: exit status {rec.exit_status}")
    out += [f"!! {err}" for err in rec.errors]
    return "\n".join(out)


_SPEC_FILE = re.compile(r"\b([a-z_]+\.(?:ml|c))\b")
_SENDING = ("request", "send", "raw")


def corpus_table(scenarios: list[Scenario]) -> str:
    """Each scenario (requests sent, guests, the OCaml source files its spec
    line cites), then totals per source file: the corpus size by area."""
    out = [f"{'scenario':<26} {'requests':>8} {'guests':>6}  spec areas"]
    areas: Counter = Counter()
    area_requests: Counter = Counter()
    total = 0
    for scn in scenarios:
        n = sum(1 for s in scn.steps if s.action in _SENDING)
        total += n
        files = sorted(set(_SPEC_FILE.findall(scn.spec)))
        for f in files:
            areas[f] += 1
            area_requests[f] += n
        out.append(f"{scn.name:<26} {n:>8} {'yes' if scn.needs_guests else '':>6}  "
                   + ", ".join(files))
    out.append("")
    out.append(f"{'spec area':<26} {'scenarios':>9} {'requests':>9}")
    for area, count in sorted(areas.items(), key=lambda kv: (-kv[1], kv[0])):
        out.append(f"{area:<26} {count:>9} {area_requests[area]:>9}")
    guests = sum(1 for scn in scenarios if scn.needs_guests)
    out.append(f"{len(scenarios)} scenarios ({guests} with ring guests), {total} requests")
    return "\n".join(out)


SUBCOMMANDS = ("record", "import-access-log")


def _record_main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="oxsd-diff record",
                                 description="recording proxy in front of any xenstored")
    ap.add_argument("--listen", required=True, help="socket path clients connect to")
    ap.add_argument("--upstream", required=True, help="the daemon's socket")
    ap.add_argument("-o", "--output", required=True, help="scenario file to write")
    args = ap.parse_args(argv)
    return serve(args.listen, args.upstream, args.output)


def _import_main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="oxsd-diff import-access-log",
                                 description="turn an access log into a scenario "
                                 "(what is lost: see oxsd/diff/accesslog.py)")
    ap.add_argument("logfile")
    ap.add_argument("-o", "--output", help="scenario file to write (default: stdout)")
    args = ap.parse_args(argv)
    text = import_access_log(Path(args.logfile).read_text(errors="surrogateescape"),
                             source=args.logfile)
    if args.output is None:
        sys.stdout.write(text)
        return 0
    Path(args.output).write_text(text)
    print(f"wrote {args.output}")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in SUBCOMMANDS:
        return {"record": _record_main, "import-access-log": _import_main}[argv[0]](argv[1:])
    return _diff_main(argv)


def _diff_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="oxsd-diff", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("paths", nargs="+", help=f"scenario files or directories of *{SUFFIX}")
    ap.add_argument("-k", "--kinds", default="ocaml,oxsd",
                    help="the two daemons to compare (default ocaml,oxsd)")
    ap.add_argument("--show", metavar="KIND", choices=KINDS,
                    help="run on one daemon and print what it did, no comparison")
    ap.add_argument("--ocaml-binary", "--reference", metavar="PATH", dest="ocaml_binary",
                    help="oxenstored binary to run as the 'ocaml' kind (default: Debian's, "
                         "from the reference kit), on the same simulated hypervisor")
    ap.add_argument("--oxsd-args", metavar="ARGS", default="",
                    help="more command-line arguments for the oxsd daemon(s) only, one "
                         "shell-quoted string, e.g. --oxsd-args='--protocol-level 4.22'")
    ap.add_argument("--list", action="store_true",
                    help="list the scenarios and the corpus size by spec area; run nothing")
    ap.add_argument("--no-guests", action="store_true",
                    help="skip scenarios with ring guests instead of running them on oxsd.sim")
    ap.add_argument("--keep", action="store_true", help="keep scratch dirs")
    ap.add_argument("-q", "--quiet", action="store_true", help="only report differences")
    return ap


def _diff_main(argv: list[str]) -> int:
    ap = _diff_parser()
    args = ap.parse_args(argv)
    kinds = tuple(args.kinds.split(","))
    oxsd_args = shlex.split(args.oxsd_args)
    if len(kinds) != 2 or not set(kinds) <= set(KINDS):
        ap.error(f"--kinds takes two of {', '.join(KINDS)}")
    if args.ocaml_binary and not os.access(args.ocaml_binary, os.X_OK):
        print(f"--ocaml-binary {args.ocaml_binary}: not an executable file", file=sys.stderr)
        return 2
    try:
        scenarios = [load(p) for p in scenario_files(args.paths)]
    except (OSError, ScenarioError) as e:
        print(e, file=sys.stderr)
        return 2
    if args.list:
        print(corpus_table(scenarios))
        return 0
    guests = SimGuests()
    counts: Counter[str] = Counter()
    status = 0
    for scn in scenarios:
        status = max(status, _run_one(scn, args, kinds, guests, counts, oxsd_args))
    if not args.show:
        line = (f"{len(scenarios)} scenarios, {counts['identical']} identical, "
                f"{counts['differ']} differ")
        for key in ("skipped", "failed"):
            if counts[key]:
                line += f", {counts[key]} {key}"
        print(line)
    return status


def _run_one(scn: Scenario, args: argparse.Namespace, kinds: tuple[str, ...],
             guests: GuestBackend, counts: Counter[str], oxsd_args: Sequence[str]) -> int:
    """Run (or --show) one scenario, print its report, count it; its exit status."""
    if scn.needs_guests and args.no_guests:
        print(f"{scn.path}: skipped (needs ring guests)")
        counts["skipped"] += 1
        return 0
    backend = guests if scn.needs_guests else None
    try:
        if args.show:
            print(format_recording(record(args.show, scn, backend, keep=args.keep,
                                          binary=args.ocaml_binary, oxsd_args=oxsd_args)))
            return 0
        cmp = diff_scenario(scn, kinds, backend, keep=args.keep, binary=args.ocaml_binary,
                            oxsd_args=oxsd_args)
    except DaemonError as e:
        print(f"{scn.path}: cannot run: {e}", file=sys.stderr)
        counts["failed"] += 1
        return 2
    counts["identical" if cmp.identical else "differ"] += 1
    if not (args.quiet and cmp.identical):
        print(cmp.report(), flush=True)
    return 0 if cmp.identical else 1
