"""oxsd.trace: -T traces are scenarios (requests as lines, replies as comments)."""
from __future__ import annotations

import io
import os
import stat
from types import SimpleNamespace

import pytest

from oxsd.diff.scenario import parse
from oxsd.trace import TraceWriter, Tracer, format_request, open_tracer
from oxsd.xb.op import Op
from oxsd.xb.packet import Packet


def _writer():
    out = io.StringIO()
    return TraceWriter(out, ["# head"]), out


def test_answered_request_waits_unanswered_is_send():
    w, out = _writer()
    w.open_conn("A2")
    w.request("A2", 11, 0, 1, b"/a\0v")
    w.request("A2", 2, 0, 2, b"/a\0")
    w.reply("A2", 11, 0, 1, b"OK\0")
    w.close("A2")
    assert out.getvalue().splitlines() == [
        "# head", "conn A2", 'A2: WRITE tx=0 rid=1 "/a\\0v"',
        'A2: send READ tx=0 rid=2 "/a\\0"', '#   A2 <- WRITE rid=1 tx=0 len=3 "OK\\0"',
        "A2: close"]


def test_request_line_is_held_until_its_fate_is_known():
    w, out = _writer()
    w.open_conn("A2")
    w.request("A2", 4, 0, 1, b"/w\0t\0")
    w.open_conn("A3")  # queued behind the pending request: order is kept
    assert out.getvalue().splitlines() == ["# head", "conn A2"]
    w.reply("A2", 4, 0, 1, b"OK\0")
    assert out.getvalue().splitlines()[2:] == [
        'A2: WATCH tx=0 rid=1 "/w\\0t\\0"', "conn A3",
        '#   A2 <- WATCH rid=1 tx=0 len=3 "OK\\0"']


def test_watch_event_does_not_answer_a_request():
    w, out = _writer()
    w.open_conn("A2")
    w.request("A2", 6, 0, 1, b"\0")
    w.reply("A2", 15, 0, 0, b"/w\0t\0")
    w.finish()
    assert 'A2: send TRANSACTION_START tx=0 rid=1 "\\0"' in out.getvalue().splitlines()


def test_daemon_close_becomes_eof_and_rings_are_comments():
    w, out = _writer()
    w.open_conn("A2")
    w.raw("A2", b"\x02\0", "incomplete packet")
    w.close("A2", by="daemon")
    w.open_conn("D5", replayable=False)
    w.request("D5", 2, 0, 1, b"x\0")
    w.close("D5", by="daemon")
    lines = out.getvalue().splitlines()
    assert lines[2:4] == ['A2: raw "\\x02\\0"  # incomplete packet', "A2: eof"]
    assert all(line.startswith("#") for line in lines[4:])


def test_trace_parses_as_a_scenario_with_the_same_requests():
    w, out = _writer()
    w.open_conn("A2")
    w.request("A2", 11, 3, 9, b"/a\0\xff\"\\")
    w.reply("A2", 16, 3, 9, b"EINVAL\0")
    w.close("A2")
    scn = parse(out.getvalue())
    step = scn.steps[1]
    assert (step.action, step.op, step.tx_id, step.req_id) == ("request", 11, 3, 9)
    assert b"".join(step.payload) == b"/a\0\xff\"\\"


def test_format_request_of_unknown_op_is_numeric():
    assert format_request("a", 99, 0, 1, b"", wait=False) == 'a: send 99 tx=0 rid=1 ""'


class _Cons:
    """Enough of oxsd.connections.Connections for Tracer.install."""

    def __init__(self):
        self.domains = {}
        self.live = []

    def iter(self):
        return list(self.live)

    def add_anonymous(self, sock, anonid=None):
        con = SimpleNamespace(domstr=f"A{sock}", is_bad=lambda: False)
        self.live.append(con)
        return con

    def del_anonymous(self, con):
        self.live.remove(con)

    def add_domain(self, dom):
        con = SimpleNamespace(domstr=f"D{dom}", is_bad=lambda: False)
        self.domains[dom] = con
        return con

    def del_domain(self, domid):
        self.domains.pop(domid)


def test_tracer_hooks_connections_and_packets():
    out = io.StringIO()
    cons = _Cons()
    daemon = SimpleNamespace(process=SimpleNamespace(trace=None), cons=cons)
    tracer = Tracer(out).install(daemon)
    assert daemon.process.trace is tracer
    con = cons.add_anonymous(2)
    dom = cons.add_domain(5)
    tracer.packet_in(con, Packet(0, 1, Op.MKDIR, b"/m\0"))
    tracer.packet_out(con, Packet(0, 1, Op.MKDIR, b"OK\0"))
    tracer.packet_in(dom, Packet(0, 1, Op.READ, b"x\0"))
    cons.del_anonymous(con)
    cons.del_domain(5)
    assert out.getvalue().splitlines() == [
        "conn A2", "# D5 opened (not replayable over a socket)",
        'A2: MKDIR tx=0 rid=1 "/m\\0"', '#   A2 <- MKDIR rid=1 tx=0 len=3 "OK\\0"',
        '# D5: READ tx=0 rid=1 "x\\0"', "A2: close", "# D5 closed"]


def test_transaction_start_line_carries_the_id_it_got():
    w, out = _writer()
    w.open_conn("A2")
    w.request("A2", 6, 0, 1, b"\0")
    w.reply("A2", 6, 0, 1, b"4\0")
    w.request("A2", 6, 0, 2, b"\0")
    w.reply("A2", 16, 0, 2, b"EQUOTA\0")  # an error gives no id
    w.close("A2")
    lines = out.getvalue().splitlines()
    assert 'A2: TRANSACTION_START tx=0 rid=1 newtx=4 "\\0"' in lines
    assert 'A2: TRANSACTION_START tx=0 rid=2 "\\0"' in lines
    assert parse(out.getvalue()).steps[1].new_tx == 4


@pytest.mark.parametrize("existing", [False, True])
def test_trace_file_is_owner_only_whatever_the_umask(tmp_path, existing):
    """It holds every payload (keys, tokens): 0600 even under umask 0 or over an old 0644 file."""
    path = tmp_path / "trace.scn"
    if existing:
        path.write_text("old")
        path.chmod(0o644)
    old_umask = os.umask(0)
    try:
        tracer = open_tracer(str(path))
    finally:
        os.umask(old_umask)
    tracer.writer.finish()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert "old" not in path.read_text()
