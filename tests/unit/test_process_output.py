"""Process.do_output_held: a held socket's queued packets, taken whole, as do_output would.

The socket batch (scheduler.serve_socket) and the POLLOUT flush take every
queued packet in one loop; what goes out, what the access log says and what
the counters count must be what packet-by-packet `do_output(con, True)`
calls give (process.ml: do_output, once per packet).
"""
from __future__ import annotations

import socket

from oxsd.xb.op import Op
from oxsd.xb.packet import Packet
from support.process import make_process


class RecordingAccessLog:
    """The access-log calls Process and Connection make, in order."""

    enabled = True

    def __init__(self) -> None:
        self.lines = []

    def new_connection(self, tid, con):
        pass

    def end_connection(self, tid, con):
        pass

    def xb_answer(self, tid, con, ty, data):
        self.lines.append((tid, con, ty, data))


PACKETS = [
    Packet(0, 1, Op.WRITE, b"OK\0"),
    Packet(0, 2, Op.ERROR, b"ENOENT\0"),
    Packet(0, 0, Op.WATCH_EVENT, b"/a\0tok\0"),
    Packet(3, 4, Op.READ, b"value"),
    Packet(0, 0, Op.WATCH_EVENT, b"/b\0tok\0"),
]


def world():
    access_log = RecordingAccessLog()
    process = make_process(access_log)
    ours, peer = socket.socketpair()
    con = process.cons.add_anonymous(ours)
    for pkt in PACKETS:
        assert con.xb.queue(pkt)
    return process, con, access_log, peer


def outcome(process, con, access_log):
    data = con.xb.backend.take_pending()
    return (data, access_log.lines, con.counters.events_sent, len(con.xb.pkt_out),
            list(con.xb.pkt_out.counts))


def test_do_output_held_gives_what_packet_by_packet_do_output_gives():
    process, con, log, peer = world()
    con.xb.hold_output()
    while con.xb.has_output() and not con.xb.has_old_output():
        process.do_output(con, True)
    expected = outcome(process, con, log)

    process, con, log, peer2 = world()
    con.xb.hold_output()
    process.do_output_held(con)
    assert outcome(process, con, log) == expected
    data, lines, events, queued, counts = expected
    assert data == b"".join(p.to_bytes() for p in PACKETS)
    assert [ty for _, _, ty, _ in lines] == [Op.ERROR, Op.WATCH_EVENT, Op.WATCH_EVENT]
    assert (events, queued, counts) == (2, 0, [0, 0])
    peer.close()
    peer2.close()


def test_do_output_held_leaves_the_queue_behind_a_partly_written_packet():
    process, con, log, peer = world()
    con.xb._out, con.xb._out_off = b"x" * 10, 4  # bytes the socket did not take
    con.xb.hold_output()
    process.do_output_held(con)
    assert con.xb.backend.take_pending() == b""
    assert len(con.xb.pkt_out) == len(PACKETS) and log.lines == []
    peer.close()


def test_a_pollout_flush_sends_the_rest_then_every_packet_logging_the_head_twice():
    """flush_socket is do_output(con, True) until nothing is left: the original logs the
    head packet at each call, so a head behind a partly written packet is logged twice."""
    from oxsd.scheduler import Scheduler
    packets = [PACKETS[1]] + PACKETS[2:]  # an error at the head

    def flushed(reference: bool):
        process, con, log, peer = world()
        con.xb.pkt_out.clear()
        for pkt in packets:
            con.xb.queue(pkt)
        con.xb._out, con.xb._out_off = b"0123456789", 4  # the socket took 4 bytes before
        if reference:
            con.xb.hold_output()
            while con.xb.has_output():
                process.do_output(con, True)
            con.xb.release_output()
        else:
            Scheduler(store=process.store, cons=process.cons, doms=None, process=process,
                      settings=process.settings, history=process.history, listen_sock=None,
                      event=None, poll_evtchn=False).flush_socket(con)
        peer.settimeout(5)
        want = 6 + sum(len(p.to_bytes()) for p in packets)
        got = b""
        while len(got) < want:
            got += peer.recv(1 << 16)
        peer.close()
        return got, log.lines, con.counters.events_sent

    got, lines, events = flushed(reference=False)
    assert (got, lines, events) == flushed(reference=True)
    assert got == b"456789" + b"".join(p.to_bytes() for p in packets)
    assert [ty for _, _, ty, _ in lines] == [Op.ERROR, Op.ERROR, Op.WATCH_EVENT, Op.WATCH_EVENT]
