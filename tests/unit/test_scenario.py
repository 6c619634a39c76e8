"""oxsd.diff without daemons: scenario format details, the access-log
importer, the runner's transaction-id mapping (over a socketpair), DB-dump
masking, the sim's event-channel snapshot, the unified report view."""
from __future__ import annotations

import pytest

from oxsd.diff.accesslog import import_access_log, unescape_ocaml
from oxsd.diff.scenario import ScenarioError, parse

LOG = """\
[20261125T06:40:32.515Z]  A1           newconn   
[20261125T06:40:32.516Z]  A2           newconn   
[20261125T06:40:32.516Z]  A1           endconn   
[20261125T06:40:32.516Z]  A2           write     /a/b hello world
[20261125T06:40:32.516Z]  A2           mkdir     /m 
[20261125T06:40:32.516Z]  A2           watch     /a t 
[20261125T06:40:32.517Z]  A2           w event   /a t 
[20261125T06:40:32.517Z]  A2.3         write     /x \\255\\n
[20261125T06:40:32.517Z]  A2.3         commit    
[20261125T06:40:32.517Z]  A2           error     EINVAL 
[20261125T06:40:32.518Z]  D5           write     data/x 1
[20261125T06:40:32.518Z]  r(3):A2      write     /x 1
[20261125T06:40:32.519Z]  A2           endconn   
"""


def test_import_access_log_rebuilds_requests_and_connections():
    text = import_access_log(LOG, "x.log")
    lines = [line.split("  #")[0] for line in text.splitlines() if not line.startswith("#")]
    assert lines == [
        "conn A1", "conn A2", "A1: close",
        'A2: WRITE tx=0 "/a/b\\0hello world"', 'A2: MKDIR tx=0 "/m\\0"',
        'A2: WATCH tx=0 "/a\\0t\\0"',
        'A2: TRANSACTION_START tx=0 newtx=3 "\\0"', 'A2: WRITE tx=3 "/x\\0\\xff\\x0a"',
        'A2: TRANSACTION_END tx=3 "T\\0"', "A2: close"]
    assert "#   A2 <- WATCH_EVENT /a t " in text
    assert "# [20261125T06:40:32.518Z]  D5           write     data/x 1" in text
    scn = parse(text)  # a valid scenario
    assert sum(1 for s in scn.steps if s.action == "request") == 6


def test_unescape_ocaml_string_escaped():
    assert unescape_ocaml(r"a\\b\"c\n\t\255") == b'a\\b"c\n\t\xff'


def test_scenario_close_then_eof_forms():
    scn = parse("conn a\na: eof\na: close\n")
    assert [s.action for s in scn.steps] == ["conn", "eof", "close"]
    with pytest.raises(ScenarioError):
        parse("conn a\na: close now\n")


# ------------------------------------------------------------ ring guest steps

def test_ring_steps_parse_fields_and_values():
    scn = parse("guest g 5\n"
                "g: poke rsp_cons=0x80000000 connection=1\n"
                "g: peek connection server_features\n"
                "g: notify\n"
                "g: await connection=0\n")
    poke, peek, notify, wait = scn.steps[1:]
    assert (poke.action, poke.args, poke.values) == ("poke", ["rsp_cons", "connection"],
                                                     [0x80000000, 1])
    assert (peek.action, peek.args, peek.values) == ("peek", ["connection", "server_features"], [])
    assert notify.action == "notify"
    assert (wait.action, wait.args, wait.values) == ("await", ["connection"], [0])
    assert scn.needs_guests


@pytest.mark.parametrize("text", [
    "conn a\na: peek connection",          # a socket has no ring page
    "guest g 5\ng: poke bogus=1",          # unknown field
    "guest g 5\ng: poke connection",       # poke needs a value
    "guest g 5\ng: peek connection=1",     # peek takes none
    "guest g 5\ng: poke rsp_cons=0x100000000",  # 32 bits
    "guest g 5\ng: notify now",
])
def test_ring_steps_reject_bad_lines(text):
    with pytest.raises(ScenarioError):
        parse(text)


def test_dump_step_and_option():
    scn = parse("option dump=on\nconn a\ndump\n")
    assert scn.dump and scn.steps[-1].action == "dump"
    with pytest.raises(ScenarioError):
        parse("dump now\n")


def test_newtx_only_on_transaction_start():
    scn = parse('conn a\na: TRANSACTION_START newtx=7 "\\0"\n')
    assert scn.steps[1].new_tx == 7
    with pytest.raises(ScenarioError):
        parse('conn a\na: WRITE newtx=7 "/a\\0"\n')


def test_scenario_domids_come_from_guest_and_sim_lines():
    from oxsd.diff.runner import scenario_domids
    scn = parse("guest g 5\nguest h 0x7\nsim destroy 9\nsim virq 3\nsim shutdown 5 1\n")
    assert scenario_domids(scn) == [5, 7, 9]


# ------------------------------------------------------------ runner pieces

class _FakeDaemon:
    """Enough of oxsd.diff.daemons.Daemon for the runner, over a socketpair."""

    def __init__(self, tmp_path, endpoint):
        from oxsd.diff.daemons import DaemonSettings
        self.kind = "fake"
        self.scratch = tmp_path
        self.sim_dir = tmp_path / "sim"
        self.settings = DaemonSettings(access_log=False)
        self.db_path = tmp_path / "db"
        self._endpoint = endpoint

    def connect(self):
        return self._endpoint

    def alive(self):
        return True

    def stop(self, timeout=0):
        return 0

    def access_log(self):
        return ""

    def rotated_access_logs(self):
        return []

    def output_tail(self):
        return ""


class _PairEndpoint:
    def __init__(self, sock):
        self.sock = sock
        sock.setblocking(False)

    def fileno(self):
        return self.sock.fileno()

    def send_bytes(self, data):
        self.sock.sendall(data)

    def recv_nowait(self):
        try:
            return self.sock.recv(65536) or None
        except BlockingIOError:
            return b""

    def close(self):
        self.sock.close()


def test_runner_maps_recorded_transaction_ids_to_the_daemons(tmp_path):
    """newtx=5: later tx=5 requests carry the id the daemon gave (7)."""
    import socket
    from oxsd.diff.runner import run_scenario
    from oxsd.diff.wire import PacketReader, encode_request
    ours, theirs = socket.socketpair()
    # the "daemon" answers in advance: START -> 7, then the WRITE
    theirs.sendall(encode_request(6, b"7\0", 0, 1) + encode_request(11, b"OK\0", 7, 2))
    scn = parse('option tree=off\nconn a\na: TRANSACTION_START newtx=5 "\\0"\n'
                'a: send WRITE tx=5 "/x\\0" "v"\n', "map.scn")
    rec = run_scenario(_FakeDaemon(tmp_path, _PairEndpoint(ours)), scn)
    assert not rec.errors
    sent = PacketReader().feed(theirs.recv(65536))
    assert [(p.op, p.tx_id, p.req_id) for p in sent] == [(6, 0, 1), (11, 7, 2)]
    theirs.close()


def test_mask_dump_hides_fds_and_sorts_socket_blocks():
    from oxsd.diff.masks import mask_dump
    dump = ("$xenstored-dump-format\nglobal,3\nevtchn-dev,5,2\ndom,0,0,1,3\n"
            "watch,0,2f61,74\nsocket,9\nwatch,-9,2f62,74\nsocket,7\n"
            "store,2f,6e30,\n")
    assert mask_dump(dump) == [
        "$xenstored-dump-format", "global,FD", "evtchn-dev,FD,2", "dom,0,0,1,3",
        "watch,0,2f61,74", "socket,FD", "socket,FD", "watch,-FD,2f62,74", "store,2f,6e30,"]
    assert mask_dump("global,-1\n") == ["global,-1"]
    # the daemon's own path, in both formats
    assert mask_dump("store," + b"/tool/xenstored".hex() + ",6e30,2f61\n"
                     "tool/xenstored{n0} = /usr/x\n") == [
        "tool/xenstored{n0} = <masked>", "store,2f746f6f6c2f78656e73746f726564,6e30,<masked>"]


def test_sim_ports_names_owners_by_role(tmp_path):
    from oxsd.diff.final_state import sim_ports
    ports = tmp_path / "evtchn" / "ports"
    (ports / "0").mkdir(parents=True)
    (ports / "5").mkdir()
    (tmp_path / "evtchn" / "virq").mkdir()
    ev = tmp_path / "evtchn"
    (ports / "0" / "1").write_text(f"owner={ev}/xsd-0 peer=0:3\n")
    (ports / "0" / "3").write_text(f"owner={ev}/h-4242-0 peer=0:1\n")
    (ports / "0" / "4").write_text(f"owner={ev}/h-4242-0 peer=5:1\n")
    (ports / "0" / "3.tmp.1.2").write_text("ignored")
    (ports / "5" / "1").write_text(f"owner={ev}/h-99-1000 peer=0:4\n")
    (ev / "virq" / "3").write_text("0:2")
    assert sim_ports(tmp_path) == [
        "0/1: xsd-0 (dom0 ring) peer=0:3", "0/3: daemon peer=0:1", "0/4: daemon peer=5:1",
        "5/1: guest peer=0:4", "virq 3 -> 0:2"]


def test_unified_view_shows_every_difference_with_its_step_line():
    from oxsd.diff.compare import compare
    from oxsd.diff.runner import Entry, Recording
    from oxsd.diff.wire import Packet
    scn = parse('conn a\na: READ "/x\\0"\na: READ "/y\\0"\n', "u.scn")

    def rec(kind, errs):
        return Recording(kind, transcripts={"a": [
            Entry("packet", Packet(2, 1, 0, b"1"), 2),
            Entry("packet", Packet(16, 2, 0, errs[0]), 3),
            Entry("mark", "quiet@4", 4),
            Entry("packet", Packet(16, 3, 0, errs[1]), 5)]})
    cmp = compare(scn, rec("ocaml", [b"ENOENT\0", b"EINVAL\0"]),
                  rec("oxsd", [b"EACCES\0", b"EINVAL\0"]))
    report = cmp.report()
    assert "first difference: connection a, during line 3: a: READ \"/y\\0\"" in report
    assert '- [line   3] ERROR rid=2 tx=0 len=7 "ENOENT\\0"' in report
    assert '+ [line   3] ERROR rid=2 tx=0 len=7 "EACCES\\0"' in report
    assert '  [line   2] READ rid=1 tx=0 len=1 "1"' in report


def test_domain_cleanup_and_dump_differences_are_reported():
    from oxsd.diff.compare import compare
    from oxsd.diff.runner import Recording
    scn = parse("conn a\n")
    a = Recording("ocaml", domains=["evtchn 0/4: daemon peer=5:1"], dumps=[("exit", ["x"])])
    b = Recording("oxsd", domains=[], dumps=[("exit", ["y"])])
    wheres = [d.where for d in compare(scn, a, b).differences]
    assert wheres[0].startswith("domain clean-up")
    assert wheres[1] == "DB dump at exit (fds masked)"


def test_corpus_table_counts_by_spec_area():
    from oxsd.diff.cli import corpus_table
    one = parse('spec process.ml: function_of_type, store.ml: Path\nconn a\na: READ "/\\0"\na: raw "x"\n',
                "one.scn")
    two = parse('spec store.ml: reset_permissions\nguest g 5\ng: READ "x\\0"\n', "two.scn")
    table = corpus_table([one, two])
    assert "store.ml                           2         3" in table
    assert "process.ml                         1         2" in table
    assert table.splitlines()[-1] == "2 scenarios (1 with ring guests), 3 requests"


def test_import_access_log_subcommand_writes_a_parsable_scenario(tmp_path, capsys):
    from oxsd.diff.cli import main
    log = tmp_path / "access.log"
    log.write_text(LOG)
    out = tmp_path / "imported.scn"
    assert main(["import-access-log", str(log), "-o", str(out)]) == 0
    assert f"wrote {out}" in capsys.readouterr().out
    assert parse(out.read_text()).steps  # replayable with oxsd-diff


def test_import_access_log_tells_commit_from_abort():
    log = ("[D]  A2           newconn   \n"
           "[D]  A2.1         t start   \n"
           "[D]  A2.2         t start   \n"
           "[D]  A2.1         t end     \n"
           "[D]  A2.2         write     /x 1\n"
           "[D]  A2.2         t end     \n"
           "[D]  A2.2         commit    \n")
    lines = [line.split("  #")[0] for line in import_access_log(log).splitlines()
             if line.startswith("A2:")]
    assert lines == ['A2: TRANSACTION_START tx=0 newtx=1 "\\0"',
                     'A2: TRANSACTION_START tx=0 newtx=2 "\\0"',
                     'A2: TRANSACTION_END tx=1 "F\\0"', 'A2: WRITE tx=2 "/x\\01"',
                     'A2: TRANSACTION_END tx=2 "T\\0"']
