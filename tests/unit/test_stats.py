"""oxsd/stats.py and oxsd/top.py without a daemon: bounded counters, flags, rendering."""
from __future__ import annotations

import copy
import socket
import struct
from unittest import mock

from oxsd import stats as S
from oxsd import top as T
from oxsd.logging_ import NullAccessLog
from oxsd.xb.xb import Xb
from support.process import make_process


def test_slowest_keeps_the_ten_slowest_and_raises_its_floor():
    ds = S.DaemonStats()
    for ns in range(1000, 31000, 1000):
        if ns > ds.slow_floor:
            ds.record_slow(ns, 11, b"/p/%d\0v" % ns, "D5")
    got = ds.slowest()
    assert [e["us"] for e in got] == [float(n) for n in range(30, 20, -1)]
    assert got[0] == {"us": 30.0, "op": "WRITE", "path": "/p/30000", "conn": "D5"}
    assert ds.slow_floor == 21000  # a faster request costs one comparison


def test_hot_paths_table_stays_bounded():
    ds = S.DaemonStats()
    for i in range(S.HOT_PATHS_CAP + 10):
        ds.sample_path(b"/p/%d\0" % i)
    assert len(ds.hot) <= S.HOT_PATHS_CAP
    for _ in range(5):
        ds.sample_path(b"/hot\0value")
    assert ds.hot_paths()[0] == {"path": "/hot", "sampled": 5, "estimated": 5 * S.SAMPLE}


def test_conn_stats_count_ops_by_number():
    st = S.ConnStats()
    st.by_op[11] += 2
    st.by_op[2] += 1
    st.count_error("EQUOTA")
    st.count_error("EQUOTA")
    assert st.requests == 3 and st.ops() == {"WRITE": 2, "READ": 1}
    assert st.errors == {"EQUOTA": 2}


QUOTAS = {"activate": True, "maxent": 100, "maxwatch": 10, "transaction": 10,
          "maxrequests": 1024, "maxoutstanding": 1024}


def _row(conn="D5", **kw):
    row = {"id": conn, "kind": "domain", "domid": int(conn[1:]), "requests": 10, "by_op": {},
           "errors": {}, "watch_events_queued": 0, "watch_events_sent": 0, "bytes_in": 0,
           "bytes_out": 0, "serve_us": 0, "watches": 0, "transactions": 0, "outstanding": 0,
           "nodes": 1, "io_credit": 0, "lazy_found": 0, "conflict_credit": 5.0, "bad": False,
           "ring": {"req_pending": 0, "rsp_pending": 0}}
    row.update(kw)
    return row


def _doc(rows, t=100.0, cpu=1.0):
    return {"time": t, "daemon": {"pid": 1, "cpu_s": cpu, "rss_bytes": 2**20, "started": 0},
            "quotas": QUOTAS, "connections": rows, "slowest": [], "hot_paths": [],
            "totals": {"requests": sum(r["requests"] for r in rows), "errors": 0,
                       "watch_events_sent": 0, "watches": 0, "transactions": 0,
                       "domains": len(rows), "sockets": 0}}


def test_flags_mark_quota_from_80_percent_lazy_and_bad():
    assert T.flags(_row(nodes=79), QUOTAS) == []
    assert T.flags(_row(nodes=80), QUOTAS) == ["QUOTA"]
    assert T.flags(_row(watches=8), QUOTAS) == ["QUOTA"]
    assert T.flags(_row(lazy_found=1, bad=True), QUOTAS) == ["BAD", "LAZY"]
    assert T.flags(_row("D0", nodes=10**6), QUOTAS) == []  # dom0 has no quota
    assert T.flags(_row(nodes=100), dict(QUOTAS, activate=False)) == []


def test_render_rates_sorting_and_width():
    before = _doc([_row("D5", requests=10), _row("D6", requests=10, nodes=90)], t=100.0)
    after = _doc([_row("D5", requests=110), _row("D6", requests=20, nodes=90)], t=101.0, cpu=1.5)
    lines = T.render(before, after, "r", 79, 24)
    assert "requests 130 (110/s)" in lines[1] and "cpu 50.0%" in lines[0]
    table = [line.split() for line in lines if line[:2] in ("D5", "D6")]
    assert [c[0] for c in table] == ["D5", "D6"] and table[0][1] == "100"
    assert table[1][-1] == "QUOTA" and table[1][-2] == "90%"
    assert [c[0] for c in (line.split() for line in T.render(before, after, "u", 79, 24))
            if c and c[0] in ("D5", "D6")] == ["D6", "D5"]
    assert all(len(line) <= 79 for line in lines)


def test_prometheus_text_is_well_formed():
    doc = _doc([_row("D5", by_op={"WRITE": 3}, errors={"EQUOTA": 2}, nodes=7)])
    text = T.prometheus(copy.deepcopy(doc))
    assert 'oxsd_requests_total{conn="D5",kind="domain",domid="5",op="WRITE"} 3' in text
    assert 'oxsd_errors_total{conn="D5",kind="domain",domid="5",error="EQUOTA"} 2' in text
    assert 'oxsd_nodes{conn="D5",kind="domain",domid="5"} 7' in text
    names = [line.split()[2] for line in text.splitlines() if line.startswith("# TYPE")]
    assert len(names) == len(set(names))


def test_find_socket_as_libxenstore():
    assert T.find_socket({"XENSTORED_PATH": "/a", "XENSTORED_RUNDIR": "/b"}) == "/a"
    assert T.find_socket({"XENSTORED_RUNDIR": "/b"}) == "/b/socket"
    assert T.find_socket({}) == "/var/run/xenstored/socket"


def _process_with_socket():
    """A Process with one socket connection, and the client's end of it."""
    process = make_process(NullAccessLog())
    ours, peer = socket.socketpair()
    return process, process.cons.add_anonymous(ours), peer


def _serve(process, con, peer, op: int, payloads) -> None:
    """Send the requests, then one do_input per request (each reply is drained)."""
    for i, p in enumerate(payloads):
        peer.sendall(struct.pack("<IIII", op, i, 0, len(p)) + p)
        process.do_input(con)
        con.xb.output(True)
        peer.recv(8192)


def test_stat_nb_ops_is_the_sum_of_by_op_since_the_last_reconnect():
    process, con, peer = _process_with_socket()
    _serve(process, con, peer, 11, [b"/a\0v"] * 5)   # WRITE
    _serve(process, con, peer, 2, [b"/a\0"] * 3)     # READ
    assert con.stat_nb_ops == 8 and con.counters.ops() == {"WRITE": 5, "READ": 3}
    with mock.patch.object(Xb, "reconnect"):  # a ring's reset; a socket has none
        con.do_reconnect()
    assert con.stat_nb_ops == 0 and con.counters.requests == 8  # oxsd-top keeps its total
    _serve(process, con, peer, 2, [b"/a\0"])
    assert con.stat_nb_ops == 1 and con.counters.requests == 9


def test_each_ops_sample_th_request_of_a_connection_is_sampled():
    """The choice is each op's own count on the connection, not a count of all requests."""
    process, con, peer = _process_with_socket()
    half = S.SAMPLE // 2
    _serve(process, con, peer, 11, [b"/w\0v"] * half)   # WRITE
    _serve(process, con, peer, 2, [b"/r\0"] * half)     # READ: SAMPLE requests, none sampled
    assert process.stats.hot == {} and con.counters.serve_ns == 0
    _serve(process, con, peer, 2, [b"/r\0"] * (half + S.SAMPLE))
    assert process.stats.hot == {b"/r": 2}  # the 32nd and 64th READ
    _serve(process, con, peer, 11, [b"/w\0v"] * half)
    assert process.stats.hot == {b"/r": 2, b"/w": 1}
    assert con.counters.serve_ns > 0
