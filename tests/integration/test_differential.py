"""Byte-for-byte differential tests: oxsd against Debian's oxenstored.

Every scenario in tests/scenarios/ (format: tests/scenarios/README.md) runs
on a fresh daemon of each kind with the same config; replies and watch events
per connection, the access log per connection (dates masked), the whole tree
afterwards and the SIGTERM exit are compared (oxsd/diff).

The harness is checked too: each scenario run twice on the reference must
compare identical (the first of these runs is the one oxsd is compared with) (otherwise a difference against oxsd could be noise), and
must not hit a reply timeout (a scenario waiting for a reply that never
comes is a badly written scenario, e.g. a zero-length payload without
``send``).
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from oxsd.diff.cli import record
from oxsd.diff.compare import compare, group_access_log
from oxsd.diff.daemons import (DaemonError, DaemonSettings, debian_conf, find_ocaml_ref,
                               make_scratch, write_config)
from oxsd.diff.runner import Entry, Recording
from oxsd.diff.scenario import ScenarioError, load, parse
from oxsd.diff.wire import Packet

SCENARIO_DIR = Path(__file__).resolve().parents[1] / "scenarios"
SCENARIOS = sorted(SCENARIO_DIR.glob("*.scn"))
_TIMEOUT_MARK = re.compile(r"no reply|timed out|still open|not sent|send failed")


# The reference's recording of each scenario is made once and used twice: by
# the oxsd comparison and by the determinism check (3 daemon runs per
# scenario instead of 4).
_REFERENCE: dict[Path, Recording] = {}


def _record(scn_path: Path, kind: str, guest_backend) -> Recording:
    scn = load(scn_path)
    try:
        return record(kind, scn, guest_backend if scn.needs_guests else None)
    except DaemonError as e:
        pytest.fail(f"{scn_path.name}: cannot start a daemon: {e}", pytrace=False)


def _reference(scn_path: Path, guest_backend) -> Recording:
    if scn_path not in _REFERENCE:
        _REFERENCE[scn_path] = _record(scn_path, "ocaml", guest_backend)
    return _REFERENCE[scn_path]


def test_scenario_directory_is_not_empty():
    assert len(SCENARIOS) >= 15


@pytest.mark.parametrize("path", SCENARIOS, ids=lambda p: p.stem)
def test_scenario_oxsd_matches_reference(path, ocaml_ref, guest_backend):
    reference = _reference(path, guest_backend)
    cmp = compare(load(path), reference, _record(path, "oxsd", guest_backend))
    assert cmp.identical, cmp.report() + f"\n(inspect: oxsd-diff --keep {path})"


@pytest.mark.parametrize("path", SCENARIOS, ids=lambda p: p.stem)
def test_scenario_is_deterministic_on_reference(path, ocaml_ref, guest_backend):
    first = _reference(path, guest_backend)
    cmp = compare(load(path), first, _record(path, "ocaml", guest_backend))
    _REFERENCE.pop(path, None)
    assert cmp.identical, cmp.report()
    for rec in (cmp.a, cmp.b):
        assert not rec.errors, rec.errors
        stuck = [f"{name}: {e.data}" for name, entries in rec.transcripts.items()
                 for e in entries if e.kind == "mark" and _TIMEOUT_MARK.search(str(e.data))]
        assert not stuck, "scenario waits for replies that never come: " + "; ".join(stuck)


# ------------------------------------------------------- the harness itself

def test_oxsd_config_is_the_reference_launchers_config(ocaml_ref):
    """write_config mirrors run-oxenstored.sh; only the pid-file line differs
    (the reference sees SCRATCH/run mounted over /run)."""
    settings = DaemonSettings(extra_conf=["quota-maxwatch = 7", "access-log-read-ops = true"],
                              log_level="debug", ring_scan_interval=-1)
    scratch = make_scratch("oxt-cf-")
    sim = scratch / "sim"
    env = {"XS_LOG_LEVEL": "debug", "RING_SCAN_INTERVAL": "-1", "XS_ACCESS_LOG": "1",
           "XS_CONF_EXTRA": "quota-maxwatch = 7\naccess-log-read-ops = true"}
    try:
        # run the launcher with a bad option so that oxenstored exits at once
        subprocess.run([str(ocaml_ref / "run-oxenstored.sh"), str(sim), str(scratch),
                        "--no-such-option"], env={**os.environ, **env},
                       capture_output=True, timeout=60)
        reference = (scratch / "oxenstored.conf").read_text().splitlines()
        ours = scratch / "ours.conf"
        write_config(ours, scratch, sim, settings, pid_file="/var/run/xen/xenstored.pid")
        assert ours.read_text().splitlines() == reference
        assert "pid-file = /var/run/xen/xenstored.pid" in reference
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def test_debian_config_is_found():
    assert debian_conf().read_text().count("quota-maxsize = 2048") == 1


def test_scenario_parser_escapes_and_repeats():
    scn = parse('conn a\na: WRITE tx=3 rid=0x10 "/a\\0" "x\\x00\\xff\\"\\\\"*2  # c\n'
                'a: send 22 len=9999 ""\na: raw "\\n\\t\\r"\nquiet 0.5\n')
    write, send, raw, quiet = scn.steps[1:]
    assert (write.action, write.op, write.tx_id, write.req_id) == ("request", 11, 3, 16)
    assert b"".join(write.payload) == b'/a\0' + b'x\0\xff"\\' * 2
    assert (send.action, send.op, send.length, send.payload) == ("send", 22, 9999, [b""])
    assert raw.payload == [b"\n\t\r"]
    assert (quiet.action, quiet.seconds) == ("quiet", 0.5)


@pytest.mark.parametrize("text", [
    'a: READ "/x\\0"',                  # connection not opened
    'conn a\na: FROB "/x\\0"',          # unknown op
    'conn a\na: READ "/x\\q"',          # unknown escape
    'conn a\na: READ "/x',              # unterminated
    'conn a\na: READ "caf\xe9"',        # non-ASCII literal
    'conn a\na: READ tx=4294967296 ""',  # does not fit
    'conn a a',                         # opened twice
    'conn quiet',                       # keyword as a name
])
def test_scenario_parser_rejects(text):
    with pytest.raises(ScenarioError):
        parse(text)


def _recording(kind, packets, log=(), tree=(), status=0):
    return Recording(kind=kind, transcripts={"a": [Entry("packet", p, 3) for p in packets]},
                     access_log=list(log), tree=list(tree), exit_status=status)


def test_compare_reports_first_differing_packet():
    scn = parse('conn a\na: READ "/x\\0"\n', "x.scn")
    ok = Packet(2, 1, 0, b"hi")
    a = _recording("ocaml", [ok, Packet(2, 2, 0, b"v")])
    b = _recording("oxsd", [ok, Packet(16, 2, 0, b"ENOENT\0")])
    cmp = compare(scn, a, b)
    assert not cmp.identical
    report = cmp.report()
    assert "connection a" in report and "item #2" in report
    assert 'ERROR rid=2 tx=0 len=7 "ENOENT\\0"' in report
    assert compare(scn, a, _recording("oxsd", [ok, Packet(2, 2, 0, b"v")])).identical


def test_compare_access_log_per_connection_ignores_interleaving():
    scn = parse("conn a\n")
    la = ["[DATE]  A2           write     /a 1", "[DATE]  A3           w event   /a t ",
          "[DATE]  A3           watch     /b t ", "[DATE]  A3           error     EINVAL "]
    # other connections' lines, and a connection's sent-packet lines against
    # its request lines, may interleave differently
    lb = [la[2], la[0], la[1], la[3]]
    assert compare(scn, _recording("x", [], la), _recording("y", [], lb)).identical
    # but not the order of one connection's sent packets
    lc = [la[0], la[3], la[2], la[1]]
    cmp = compare(scn, _recording("x", [], la), _recording("y", [], lc))
    assert [d.where for d in cmp.differences] == ["access log of A3, lines written when sending"]
    ld = ["[DATE]  A2           write     /a 2"] + la[1:]
    cmp = compare(scn, _recording("x", [], la), _recording("y", [], ld))
    assert [d.where for d in cmp.differences] == [
        "access log of A2, lines written while processing requests"]
    groups = group_access_log(["[DATE]  r(3):A2.4    error     EINVAL ",
                               "[DATE]  A2.4         error     EINVAL "])
    assert set(groups) == {("A2", "in"), ("A2", "out")}


def test_compare_store_and_exit_status():
    scn = parse("conn a\n")
    a = _recording("x", [], tree=["/ perms=b'n0\\x00' value=b''"])
    b = _recording("y", [], tree=["/ perms=b'r0\\x00' value=b''"], status=-9)
    wheres = [d.where for d in compare(scn, a, b).differences]
    assert wheres == ["daemon", "store after the run (full tree walk)"]


def test_reference_kit_is_found(ocaml_ref):
    assert find_ocaml_ref() == ocaml_ref
