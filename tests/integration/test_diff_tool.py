"""The differential tool itself: -T traces, the recording proxy, the CLI with
ring guests on oxsd.sim, and that a broken oxsd is caught with the report
pointing at the packet.

The broken oxsd is made without touching product code: a sitecustomize.py
on the daemon subprocess's PYTHONPATH patches oxsd as it starts.
"""
from __future__ import annotations

import re
import select
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from oxsd.diff.cli import diff_scenario, main as diff_main, record
from oxsd.diff.daemons import DaemonError, DaemonSettings, debian_conf
from oxsd.diff.guests import SimGuests
from oxsd.diff.runner import run_scenario
from oxsd.diff.scenario import load, parse
from oxsd.diff.wire import describe
from support.patching import patch_oxsd_daemons

SCENARIOS = Path(__file__).resolve().parents[1] / "scenarios"


def _wait_for(pred, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def _proxy_ready(proxy: subprocess.Popen, timeout: float = 10.0) -> str:
    """The proxy's ``recording:`` line, printed once it listens and handles SIGTERM
    (its socket file exists a moment earlier, between bind and listen)."""
    ready, _, _ = select.select([proxy.stdout], [], [], timeout)
    return proxy.stdout.readline() if ready else ""


# ------------------------------------------------------------------ -T trace

def test_oxsd_trace_is_a_scenario_that_replays_identically(start, ocaml_ref, tmp_path):
    scn = load(SCENARIOS / "watches.scn")
    trace = tmp_path / "trace.scn"
    daemon = start("oxsd", DaemonSettings(extra_conf=list(scn.config),
                                          extra_args=["-T", str(trace)]))
    rec = run_scenario(daemon, scn)
    assert not rec.errors
    text = trace.read_text()
    # requests as scenario lines, replies and events as comments, open/close
    assert 'A3: WATCH tx=0 rid=1 "/w\\0t1\\0"' in text
    assert '#   A3 <- WATCH_EVENT rid=0 tx=0 len=6 "/w\\0t1\\0"' in text
    assert "conn A2" in text and "A2: close" in text
    replay = load(trace)
    requests = [s for s in replay.steps if s.action in ("request", "send")]
    assert len(requests) >= sum(1 for s in scn.steps if s.action in ("request", "send"))
    cmp = diff_scenario(replay, ("ocaml", "oxsd"), keep_different=False)
    assert cmp.identical, cmp.report()
    # the replay gets, per connection, the replies the trace recorded
    got = [describe(e.data, 400) for e in cmp.b.transcripts["A3"] if e.kind == "packet"]
    traced = [line.split(" <- ", 1)[1] for line in text.splitlines()
              if line.startswith("#   A3 <- ")]
    assert got == traced


# ------------------------------------------------------------- broken oxsd

_BREAK_ERROR = """
    from oxsd.connection import Connection
    _orig = Connection.send_error
    def send_error(self, tid, rid, err):
        _orig(self, tid, rid, "EACCES" if err == "ENOENT" else err)
    Connection.send_error = send_error
"""

_REORDER_EVENTS = """
    import oxsd.connections as C
    _orig = C.Connections.fire_watches
    def fire_watches(self, source, roots, path, recurse):
        calls = []
        saved = C.fire_watch_with_path, C.fire_single_watch
        C.fire_watch_with_path = lambda *a: calls.append((saved[0], a))
        C.fire_single_watch = lambda *a: calls.append((saved[1], a))
        try:
            _orig(self, source, roots, path, recurse)
        finally:
            C.fire_watch_with_path, C.fire_single_watch = saved
        for fn, args in reversed(calls):
            fn(*args)
    C.Connections.fire_watches = fire_watches
"""




def test_broken_error_code_is_caught_and_points_at_the_packet(monkeypatch, tmp_path,
                                                              ocaml_ref):
    patch_oxsd_daemons(monkeypatch, tmp_path, _BREAK_ERROR)
    scn = parse('title probe\nconn a\na: WRITE "/x\\0v"\na: READ "/nope\\0"\n', "err.scn")
    cmp = diff_scenario(scn, ("ocaml", "oxsd"), keep_different=False)
    assert not cmp.identical
    report = cmp.report()
    assert "--- connection a" in report
    assert "first difference at item #2 (received during line 4: a: READ" in report
    assert 'ocaml : ERROR rid=2 tx=0 len=7 "ENOENT\\0"' in report
    assert 'oxsd  : ERROR rid=2 tx=0 len=7 "EACCES\\0"' in report


def test_reordered_watch_events_are_caught_and_point_at_the_packet(monkeypatch, tmp_path,
                                                                    ocaml_ref):
    patch_oxsd_daemons(monkeypatch, tmp_path, _REORDER_EVENTS)
    scn = parse("conn a b\n"
                'b: WATCH "/r\\0outer\\0"\nb: WATCH "/r/x\\0inner\\0"\nquiet\n'
                'a: WRITE "/r/x\\0v"\nquiet\n', "order.scn")
    cmp = diff_scenario(scn, ("ocaml", "oxsd"), keep_different=False)
    assert not cmp.identical
    report = cmp.report()
    assert "--- connection b" in report
    # the events come while a waits for its WRITE reply, or in the quiet after
    assert re.search(r"first difference at item #6 \(received during line [56]: ", report)
    assert 'ocaml : WATCH_EVENT rid=0 tx=0 len=11 "/r/x\\0outer\\0"' in report
    assert 'oxsd  : WATCH_EVENT rid=0 tx=0 len=11 "/r/x\\0inner\\0"' in report


_KEEP_EVENT_CHANNEL = """
    from oxsd.domain import Domain
    Domain.close = lambda self: None   # forget to unbind the domain's port
"""


def test_missing_domain_cleanup_is_caught(monkeypatch, tmp_path, ocaml_ref):
    patch_oxsd_daemons(monkeypatch, tmp_path, _KEEP_EVENT_CHANNEL)
    scn = parse('conn a\nguest g 5\na: INTRODUCE "5\\0" ${g.mfn} "\\0" ${g.port} "\\0"\n'
                "quiet\nsim destroy 5\nquiet 0.3\n", "cleanup.scn")
    cmp = diff_scenario(scn, ("ocaml", "oxsd"), guests=SimGuests(), keep_different=False)
    assert [d.where for d in cmp.differences] == [
        "domain clean-up (event channels before the guests close, then IS_DOMAIN_INTRODUCED)"]
    text = cmp.differences[0].text
    assert "+evtchn 0/4: daemon peer=5:1" in text
    assert "-evtchn 5/1: guest peer=unbound" in text and "+evtchn 5/1: guest peer=0:4" in text


def test_unbroken_oxsd_passes_the_same_probes(ocaml_ref):
    scn = parse('conn a b\na: READ "/nope\\0"\n'
                'b: WATCH "/r\\0outer\\0"\nb: WATCH "/r/x\\0inner\\0"\nquiet\n'
                'a: WRITE "/r/x\\0v"\nquiet\n', "ok.scn")
    cmp = diff_scenario(scn, ("ocaml", "oxsd"), keep_different=False)
    assert cmp.identical, cmp.report()


# ------------------------------------------------------------- config test

def _config_test(kind: str, daemon_args: list[str], tmp_path: Path) -> tuple:
    """Run `--config-test` the way the harness starts that kind of daemon."""
    from oxsd.diff.daemons import REPO_ROOT, find_ocaml_ref
    scratch = tmp_path / kind
    scratch.mkdir()
    if kind == "ocaml":
        cmd = [str(find_ocaml_ref() / "run-oxenstored.sh"), str(scratch / "sim"), str(scratch)]
    else:
        cmd = [sys.executable, "-m", "oxsd", "--no-fork"]
    res = subprocess.run(cmd + daemon_args, capture_output=True, text=True, timeout=60,
                         cwd=str(REPO_ROOT))
    err = "\n".join(line for line in res.stderr.splitlines()
                    if not line.startswith("socket: "))  # the launcher's own line
    return res.returncode, res.stdout, err


def test_config_test_of_a_missing_file_exits_0_like_the_reference(ocaml_ref, tmp_path):
    """xenstored.ml: main (config-test) [quirk]: the read error is printed, then 'valid', exit 0."""
    args = ["--config-test", "--config-file", str(tmp_path / "missing.conf")]
    ocaml = _config_test("ocaml", args, tmp_path)
    assert ocaml == (0, f"Configuration valid at {tmp_path / 'missing.conf'}\n",
                     f"error: config: {tmp_path / 'missing.conf'}: No such file or directory")
    assert _config_test("oxsd", args, tmp_path) == ocaml


_BACKTRACE_FRAME = re.compile(r"^(Raised |Called from |  File |    )")


@pytest.mark.parametrize("text", ["quota-maxwatch\n", "quota-maxwatch = abc\n",
                                  "foo = 1\n", "quota-maxwatch = abc\nquota-maxent = x\n"],
                         ids=["no-equals", "bad-int", "unknown-key", "two-errors"])
def test_config_test_of_a_bad_file_matches_the_reference(text, ocaml_ref, tmp_path):
    """Messages and exit status as the original's; only the backtrace's frames
    (OCaml's source lines there, Python's here) differ."""
    conf = tmp_path / "test.conf"
    conf.write_text(text)
    args = ["--config-test", "--config-file", str(conf)]
    results = {}
    for kind in ("ocaml", "oxsd"):
        status, out, err = _config_test(kind, args, tmp_path)
        lines = [line for line in err.splitlines() if line and not _BACKTRACE_FRAME.match(line)]
        results[kind] = (status, out, lines)
    assert results["oxsd"] == results["ocaml"]


# ------------------------------------------------------- access-log import

def test_imported_access_log_replays_identically(start, ocaml_ref, tmp_path):
    """Read and special ops logged, transaction ops not: the aborted
    transaction 1 is invisible, transaction 2's start and commit are inferred
    and its id is mapped (newtx=2) to the 1 the replaying daemon gives."""
    from oxsd.diff.accesslog import import_access_log
    config = "config access-log-read-ops = true\nconfig access-log-special-ops = true\n"
    scn = parse(config + textwrap.dedent("""\
        conn a b
        a: WRITE "/i/x\\0" "1"
        b: WATCH "/i\\0" "t\\0"
        quiet
        a: TRANSACTION_START "\\0"
        a: TRANSACTION_END tx=1 "F\\0"
        a: TRANSACTION_START "\\0"
        a: WRITE tx=2 "/i/y\\0" "2"
        a: READ tx=2 "/i/x\\0"
        a: TRANSACTION_END tx=2 "T\\0"
        quiet
        a: GET_PERMS "/i/y\\0"
        a: IS_DOMAIN_INTRODUCED "0\\0"
        a: READ "/nope\\0"
        a: close
        """), "src.scn")
    daemon = start("ocaml", DaemonSettings(extra_conf=list(scn.config)))
    assert not run_scenario(daemon, scn).errors
    replay = parse(config + import_access_log(daemon.access_log(), "src"), "imported.scn")
    ops = [(s.op, s.tx_id, s.new_tx) for s in replay.steps
           if s.action == "request" and s.conn == "A2"]
    assert ops == [(11, 0, None), (6, 0, 2), (11, 2, None), (2, 2, None), (7, 2, None),
                   (3, 0, None), (17, 0, None), (2, 0, None)]
    cmp = diff_scenario(replay, ("ocaml", "oxsd"), keep_different=False)
    assert cmp.identical, cmp.report()
    replies = [e.data for e in cmp.a.transcripts["A2"] if e.kind == "packet"]
    assert [(p.op, p.tx_id, p.payload) for p in replies[1:5]] == [
        (6, 0, b"1\0"), (11, 1, b"OK\0"), (2, 1, b"1"), (7, 1, b"OK\0")]


# ------------------------------------------------------- recording proxy

def test_proxy_records_test_xenstore_on_reference_and_replay_matches_oxsd(
        start, clients, ocaml_ref, tmp_path):
    daemon = start("ocaml")
    listen = str(tmp_path / "p.sock")
    trace = tmp_path / "test-xenstore.scn"
    proxy = subprocess.Popen([sys.executable, "-m", "oxsd.diff", "record", "--listen", listen,
                              "--upstream", daemon.socket_path, "-o", str(trace)],
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert _proxy_ready(proxy).startswith("recording: "), "proxy did not start"
        res = subprocess.run([str(clients.test_xenstore)], env=clients.env(listen),
                             capture_output=True, text=True, timeout=120)
        assert res.returncode == 0, res.stdout + res.stderr
    finally:
        proxy.send_signal(signal.SIGTERM)
        out, _ = proxy.communicate(timeout=10)
    assert proxy.returncode == 0, out
    replay = load(trace)
    sent = [s for s in replay.steps if s.action in ("request", "send")]
    assert len(sent) > 50  # test-xenstore's 12 tests went through the proxy
    assert {"TRANSACTION_START", "TRANSACTION_END", "DIRECTORY", "RM"} <= {
        line.split()[1] for line in trace.read_text().splitlines()
        if line.startswith("c") and ": " in line and not line.startswith("conn")}
    cmp = diff_scenario(replay, ("ocaml", "oxsd"), keep_different=False)
    assert cmp.identical, cmp.report()


def test_proxy_records_raw_leftover_and_daemon_close(start, tmp_path):
    """An incomplete packet is recorded as raw; a close by the client as close."""
    from oxsd.diff.wire import SocketConn, encode_request
    daemon = start("oxsd")
    listen = str(tmp_path / "p.sock")
    trace = tmp_path / "t.scn"
    proxy = subprocess.Popen([sys.executable, "-m", "oxsd.diff", "record", "--listen", listen,
                              "--upstream", daemon.socket_path, "-o", str(trace)],
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert _proxy_ready(proxy).startswith("recording: "), "proxy did not start"
        with SocketConn(listen) as c:
            reply = c.request(11, b"/p\0v", req_id=7)
            assert reply.payload == b"OK\0"
            c.send_bytes(encode_request(2, b"/p\0")[:10])
            assert _wait_for(lambda: 'c1: WRITE tx=0 rid=7 "/p\\0v"' in trace.read_text())
        # the proxy reads the partial packet, then our close: only then stop it
        assert _wait_for(lambda: "c1: close" in trace.read_text().splitlines())
    finally:
        proxy.send_signal(signal.SIGTERM)
        proxy.communicate(timeout=10)
    lines = trace.read_text().splitlines()
    assert "conn c1" in lines
    assert '#   c1 <- WRITE rid=7 tx=0 len=3 "OK\\0"' in lines
    assert any(line.startswith('c1: raw "\\x02\\0\\0\\0') for line in lines)
    assert "c1: close" in lines
    load(trace)  # and it parses


def test_record_refuses_a_missing_upstream(tmp_path, capsys):
    status = diff_main(["record", "--listen", str(tmp_path / "l"), "--upstream",
                        str(tmp_path / "missing"), "-o", str(tmp_path / "o.scn")])
    assert status == 2
    assert "does not exist" in capsys.readouterr().out


# ----------------------------------------------------------------- the CLI

def test_cli_runs_guest_scenarios_on_oxsd_sim_and_prints_summary(ocaml_ref, capsys):
    # ring_page pokes the interface page through oxsd.sim's Ring
    status = diff_main([str(SCENARIOS / "guests_intro.scn"), str(SCENARIOS / "ring_page.scn"),
                        str(SCENARIOS / "quota_off.scn")])
    out = capsys.readouterr().out
    assert status == 0, out
    assert out.splitlines()[-1] == "3 scenarios, 3 identical, 0 differ"


def test_cli_list_prints_the_corpus_by_spec_area(capsys):
    assert diff_main(["--list", str(SCENARIOS)]) == 0
    out = capsys.readouterr().out
    assert re.search(r"^transaction\.ml +\d+ +\d+$", out, re.M)
    assert re.search(r"^\d+ scenarios \(\d+ with ring guests\), \d+ requests$", out, re.M)


def test_cli_runs_a_given_oxenstored_binary(ocaml_ref, capsys):
    from oxsd.diff.daemons import ocaml_ref_work
    binary = ocaml_ref_work() / "_deps" / "root" / "usr" / "lib" / "xen-4.17" / "bin" / "oxenstored"
    status = diff_main(["--ocaml-binary", str(binary), str(SCENARIOS / "quota_off.scn")])
    assert status == 0
    assert capsys.readouterr().out.splitlines()[-1] == "1 scenarios, 1 identical, 0 differ"


def test_cli_rejects_a_missing_binary(tmp_path, capsys):
    status = diff_main(["--ocaml-binary", str(tmp_path / "nope"), str(SCENARIOS)])
    assert status == 2
    assert "not an executable file" in capsys.readouterr().err


def test_guest_scenario_records_on_oxsd_sim_guests(request):
    try:
        debian_conf()
    except DaemonError:
        request.getfixturevalue("clients")  # fetches Debian's oxenstored.conf
    rec = record("oxsd", load(SCENARIOS / "guests_intro.scn"), guests=SimGuests())
    assert not rec.errors
    replies = [e for entries in rec.transcripts.values() for e in entries if e.kind == "packet"]
    assert any(e.data.payload == b"OK\0" and e.data.op == 8 for e in replies)  # INTRODUCE OK
