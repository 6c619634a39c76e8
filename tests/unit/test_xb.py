"""Xb transport (xb.py) over socketpairs and bytearray-backed ring pages."""
from __future__ import annotations

import select
import socket
import struct

import pytest

from oxsd.ring import Ring
from oxsd.xb.op import Op
from oxsd.xb.packet import Packet
from oxsd.xb.xb import (PEEK_DATA, PEEK_EOF, PEEK_NOTHING, RECV_SIZE, BadConnection,
                        BoundedQueue, EndOfFile, PacketClass, Reconnect, Xb, open_fd, open_mmap)

M32 = 0xFFFFFFFF
OFFS = dict(req_cons=2048, req_prod=2052, rsp_cons=2056, rsp_prod=2060,
            server_features=2064, connection=2068, error=2072)


def hdr(ty: int, rid: int, tid: int, length: int) -> bytes:
    return struct.pack("<IIII", ty, rid, tid, length)


def req(ty: Op, rid: int, data: bytes, tid: int = 0) -> bytes:
    return hdr(ty, rid, tid, len(data)) + data


def reply(rid: int, data: bytes = b"OK\0", ty: Op = Op.WRITE) -> Packet:
    return Packet(0, rid, ty, data)


def event(data: bytes = b"/a\0tok\0") -> Packet:
    return Packet(0, 0, Op.WATCH_EVENT, data)


# -- helpers: socket ------------------------------------------------------

@pytest.fixture
def sockpair():
    a, b = socket.socketpair()
    yield a, b
    a.close()
    b.close()


def pending_bytes(sock: socket.socket) -> int:
    """Bytes waiting on sock without consuming them."""
    try:
        return len(sock.recv(65536, socket.MSG_PEEK | socket.MSG_DONTWAIT))
    except BlockingIOError:
        return 0


def wait_readable(sock: socket.socket, timeout: float = 5.0) -> None:
    r, _, _ = select.select([sock], [], [], timeout)
    assert r, "timed out waiting for data"


def recv_exact(sock: socket.socket, n: int, timeout: float = 5.0) -> bytes:
    out = b""
    while len(out) < n:
        wait_readable(sock, timeout)
        chunk = sock.recv(n - len(out))
        assert chunk
        out += chunk
    return out


# -- helpers: ring ----------------------------------------------------------

class Guest:
    """The guest side of a bytearray page."""

    def __init__(self) -> None:
        self.buf = bytearray(4096)

    def get(self, name: str) -> int:
        return struct.unpack_from("<I", self.buf, OFFS[name])[0]

    def set(self, name: str, value: int) -> None:
        struct.pack_into("<I", self.buf, OFFS[name], value & M32)

    def send(self, data: bytes) -> int:
        """Write as much as fits into req[]."""
        cons, prod = self.get("req_cons"), self.get("req_prod")
        n = min(len(data), 1024 - ((prod - cons) & M32))
        for i in range(n):
            self.buf[(prod + i) % 1024] = data[i]
        self.set("req_prod", prod + n)
        return n

    def take(self) -> bytes:
        """Consume everything in rsp[]."""
        cons, prod = self.get("rsp_cons"), self.get("rsp_prod")
        n = (prod - cons) & M32
        out = bytes(self.buf[1024 + (cons + i) % 1024] for i in range(n))
        self.set("rsp_cons", prod)
        return out


class Notify:
    def __init__(self) -> None:
        self.count = 0

    def __call__(self) -> None:
        self.count += 1


@pytest.fixture
def guest() -> Guest:
    return Guest()


@pytest.fixture
def notify() -> Notify:
    return Notify()


def ring_xb(guest: Guest, notify: Notify, maxout: int = 1024, maxwatch: int = 1024) -> Xb:
    return open_mmap(Ring(guest.buf), notify, maxout, maxwatch)


# -- socket input -----------------------------------------------------------

def test_socket_body_already_there_is_taken_with_its_header(sockpair):
    a, b = sockpair
    xb = open_fd(a, 1024, 1024)
    b.sendall(req(Op.READ, 7, b"/a\0"))
    wait_readable(a)
    assert xb.input() == Packet(0, 7, Op.READ, b"/a\0")
    assert not xb.has_partial_input()


def test_socket_body_not_yet_sent_is_waited_for_without_blocking(sockpair):
    a, b = sockpair
    xb = open_fd(a, 1024, 1024)
    b.sendall(req(Op.READ, 7, b"/a\0")[:16])
    wait_readable(a)
    assert xb.input() is None
    assert xb.has_partial_input()
    b.sendall(b"/a\0")
    wait_readable(a)
    assert xb.input() == Packet(0, 7, Op.READ, b"/a\0")


def test_socket_input_reads_what_is_there_once_and_yields_one_packet_per_step(sockpair):
    a, b = sockpair
    xb = open_fd(a, 1024, 1024)
    stream = req(Op.READ, 1, b"/x\0") + req(Op.READ, 2, b"/y\0")
    b.sendall(stream)
    wait_readable(a)
    assert xb.input() == Packet(0, 1, Op.READ, b"/x\0")
    assert pending_bytes(a) == 0  # one recv took both requests
    assert xb.has_buffered_input() and xb.has_partial_input()
    assert xb.input() == Packet(0, 2, Op.READ, b"/y\0")
    assert not xb.has_buffered_input() and not xb.has_partial_input()


def test_socket_read_ahead_is_bounded_by_recv_size(sockpair):
    a, b = sockpair
    xb = open_fd(a, 1024, 1024)
    one = req(Op.WRITE, 1, b"/k\0" + b"v" * 1000)
    stream = one * 5  # more than RECV_SIZE
    b.sendall(stream)
    wait_readable(a)
    assert xb.input() == Packet(0, 1, Op.WRITE, b"/k\0" + b"v" * 1000)
    assert pending_bytes(a) == len(stream) - RECV_SIZE
    for _ in range(3):
        assert xb.input() == Packet(0, 1, Op.WRITE, b"/k\0" + b"v" * 1000)
    assert pending_bytes(a) == len(stream) - RECV_SIZE  # the buffer is refilled only when empty
    assert xb.input() is None  # the 5th: its header and the start of its body were read
    assert xb.input() == Packet(0, 1, Op.WRITE, b"/k\0" + b"v" * 1000)  # its end: one recv
    assert pending_bytes(a) == 0 and not xb.has_partial_input()


def test_socket_peek_keeps_what_it_finds_for_the_next_read(sockpair):
    a, b = sockpair
    xb = open_fd(a, 1024, 1024)
    assert xb.backend.peek() == PEEK_NOTHING
    b.sendall(req(Op.READ, 4, b"/p\0"))
    wait_readable(a)
    assert xb.backend.peek() == PEEK_DATA and xb.has_buffered_input()
    assert xb.input() == Packet(0, 4, Op.READ, b"/p\0")
    b.close()
    assert xb.backend.peek() == PEEK_EOF
    with pytest.raises(EndOfFile):
        xb.input()


def test_socket_zero_length_request_waits_for_the_next_input_without_consuming(sockpair):
    a, b = sockpair
    xb = open_fd(a, 1024, 1024)
    b.sendall(hdr(Op.TRANSACTION_START, 3, 0, 0))
    wait_readable(a)
    assert xb.input() is None
    b.sendall(b"more")
    wait_readable(a)
    assert xb.input() == Packet(0, 3, Op.TRANSACTION_START, b"")
    assert pending_bytes(a) == 4  # the new bytes are read on the next readiness


def test_socket_eof_raises_end_of_file(sockpair):
    a, b = sockpair
    xb = open_fd(a, 1024, 1024)
    b.close()
    with pytest.raises(EndOfFile):
        xb.input()


def test_socket_has_more_input_is_always_false(sockpair):
    a, b = sockpair
    xb = open_fd(a, 1024, 1024)
    b.sendall(req(Op.READ, 1, b"/\0"))
    wait_readable(a)
    xb.input()
    assert not xb.has_more_input()


def test_input_is_not_read_while_replies_are_at_maxoutstanding(sockpair):
    a, b = sockpair
    xb = open_fd(a, 2, 5)
    assert xb.queue(reply(1)) and xb.queue(reply(2))
    assert not xb.can_input()
    b.sendall(req(Op.READ, 3, b"/\0"))
    wait_readable(a)
    assert xb.input() is None
    assert pending_bytes(a) == 18  # nothing consumed: back-pressure
    xb.output()
    assert xb.can_input()
    assert xb.input() == Packet(0, 3, Op.READ, b"/\0") and pending_bytes(a) == 0


def test_watch_events_do_not_block_input(sockpair):
    a, _ = sockpair
    xb = open_fd(a, 2, 3)
    for _ in range(3):
        assert xb.queue(event())
    assert xb.can_input()


# -- queue ------------------------------------------------------------------

def test_queue_refuses_past_each_class_limit(sockpair):
    xb = open_fd(sockpair[0], 2, 1)
    assert xb.queue(reply(1)) is True
    assert xb.queue(reply(2)) is True
    assert xb.queue(reply(3)) is False
    assert xb.queue(event()) is True
    assert xb.queue(event()) is False
    assert xb.output_len() == 3


def test_error_replies_count_as_command_replies():
    q = BoundedQueue(3, (1, 2))
    assert q.push(Packet(0, 1, Op.ERROR, b"EINVAL\0"))
    assert not q.push(reply(2))
    assert q.can_push(PacketClass.WATCHEVENT) and not q.can_push(PacketClass.COMMAND_REPLY)


def test_bounded_queue_overall_capacity_applies_to_every_class():
    q = BoundedQueue(2, (5, 5))
    assert q.push(reply(1)) and q.push(event())
    assert not q.push(event()) and not q.push(reply(2))
    assert q.pop() == reply(1)
    assert q.push(event())


def test_peek_output_of_empty_queue_raises(sockpair):
    xb = open_fd(sockpair[0], 1, 1)
    with pytest.raises(IndexError):
        xb.peek_output()
    xb.queue(reply(9))
    assert xb.peek_output() == reply(9)


# -- socket output ----------------------------------------------------------

def test_socket_output_writes_one_whole_packet_per_call(sockpair):
    a, b = sockpair
    xb = open_fd(a, 10, 10)
    p1, p2 = reply(1, b"x" * 100), event()
    xb.queue(p1)
    xb.queue(p2)
    assert xb.output() is True
    assert recv_exact(b, 116) == p1.to_bytes()
    assert pending_bytes(b) == 0
    assert xb.has_new_output() and not xb.has_old_output()
    assert xb.output() is True
    assert recv_exact(b, len(p2.to_bytes())) == p2.to_bytes()
    assert not xb.has_output()
    assert xb.output() is True  # nothing to do


def test_socket_sends_payloads_over_4096_whole(sockpair):
    a, b = sockpair
    xb = open_fd(a, 10, 10)
    big = reply(1, b"d" * 10000, Op.DIRECTORY)
    xb.queue(big)
    # The blocking sendall completes: a socketpair buffers far more than 10 KiB.
    assert xb.output() is True
    assert recv_exact(b, 10016) == big.to_bytes()


def test_socket_held_output_goes_out_in_one_send_at_release(sockpair):
    a, b = sockpair
    xb = open_fd(a, 10, 10)
    p1, p2 = reply(1, b"x" * 100), event()
    xb.queue(p1)
    xb.queue(p2)
    xb.hold_output()
    assert xb.output(nowait=True) is True and xb.output(nowait=True) is True
    assert pending_bytes(b) == 0  # gathered, not sent
    assert not xb.has_output()
    xb.release_output()
    expected = p1.to_bytes() + p2.to_bytes()
    assert recv_exact(b, len(expected)) == expected
    xb.release_output()  # nothing more
    assert pending_bytes(b) == 0


def test_socket_held_output_the_socket_refuses_waits_as_a_partly_written_packet(sockpair):
    a, b = sockpair
    a.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    xb = open_fd(a, 100, 100)
    packets = [reply(i, b"y" * 4000, Op.READ) for i in range(60)]  # more than the socket takes
    for pkt in packets:
        xb.queue(pkt)
    xb.hold_output()
    while xb.has_output():
        assert xb.output(nowait=True) is True
    xb.release_output()
    assert xb.has_old_output()  # the rest waits for POLLOUT
    expected = b"".join(pkt.to_bytes() for pkt in packets)
    got = bytearray()
    while len(got) < len(expected):
        wait_readable(b)
        got += b.recv(1 << 16)
        while xb.has_old_output() and select.select([], [a], [], 0)[1]:
            xb.output(nowait=True)
    assert bytes(got) == expected and not xb.has_output()


def test_socket_blocking_write_never_overtakes_held_output(sockpair):
    a, b = sockpair
    xb = open_fd(a, 10, 10)
    p1, p2 = reply(1, b"first"), reply(2, b"second")
    xb.queue(p1)
    xb.hold_output()
    xb.output(nowait=True)
    xb.queue(p2)
    xb.output()  # a blocking write (POLLOUT path) flushes what was gathered first
    expected = p1.to_bytes() + p2.to_bytes()
    assert recv_exact(b, len(expected)) == expected


def test_socket_get_fd_is_close_and_reconnect(sockpair):
    a, _ = sockpair
    xb = open_fd(a, 1, 1)
    fd = a.fileno()
    assert xb.get_fd() == fd and xb.is_fd() and not xb.is_mmap() and xb.is_selectable()
    with pytest.raises(EndOfFile):
        xb.reconnect()
    xb.close()
    assert a.fileno() == -1
    assert xb.get_fd() == fd


def test_socket_backend_accepts_a_raw_fd():
    a, b = socket.socketpair()
    try:
        xb = open_fd(a.detach(), 1, 1)
        b.sendall(req(Op.READ, 1, b"/\0"))
        r, _, _ = select.select([xb.get_fd()], [], [], 5)
        assert r
        assert xb.input() == Packet(0, 1, Op.READ, b"/\0")
        xb.close()
    finally:
        b.close()


# -- ring input -------------------------------------------------------------

def test_open_mmap_sets_reconnection_feature_only(guest, notify):
    guest.set("server_features", 6)
    guest.set("req_prod", 5)
    ring_xb(guest, notify)
    assert guest.get("server_features") == 1
    assert guest.get("req_prod") == 5 and guest.get("req_cons") == 0
    assert notify.count == 0


def test_ring_read_notifies_only_when_bytes_moved(guest, notify):
    xb = ring_xb(guest, notify)
    assert xb.input() is None
    assert notify.count == 0 and not xb.has_more_input()
    guest.send(req(Op.READ, 4, b"/k\0")[:16])
    assert xb.input() is None
    assert notify.count == 1 and xb.has_more_input()
    guest.send(req(Op.READ, 4, b"/k\0")[16:])
    assert xb.input() == Packet(0, 4, Op.READ, b"/k\0")
    assert notify.count == 2
    assert xb.input() is None
    assert notify.count == 2 and not xb.has_more_input()


def test_ring_header_and_waiting_body_are_read_in_one_step_with_one_notification(guest, notify):
    xb = ring_xb(guest, notify)
    guest.send(req(Op.READ, 4, b"/k\0") + req(Op.READ, 5, b"/j\0"))
    assert xb.input() == Packet(0, 4, Op.READ, b"/k\0")
    assert notify.count == 1 and xb.has_more_input()
    assert guest.get("req_cons") == 19  # never past the packet
    assert xb.input() == Packet(0, 5, Op.READ, b"/j\0")
    assert notify.count == 2


def test_ring_partial_body_is_taken_and_the_rest_waits(guest, notify):
    xb = ring_xb(guest, notify)
    stream = req(Op.WRITE, 3, b"/key\0value")
    guest.send(stream[:20])
    assert xb.input() is None
    assert notify.count == 1 and xb.to_read() == len(stream) - 20
    assert xb.input() is None and not xb.has_more_input()  # nothing new: no read moved data
    assert notify.count == 1
    guest.send(stream[20:])
    assert xb.input() == Packet(0, 3, Op.WRITE, b"/key\0value")
    assert notify.count == 2


def test_ring_header_and_body_in_one_step_across_the_wrap(guest, notify):
    xb = ring_xb(guest, notify)
    guest.set("req_cons", 1010)
    guest.set("req_prod", 1010)
    guest.send(req(Op.WRITE, 6, b"/w\0" + b"x" * 30))  # header wraps at 1024
    assert xb.input() == Packet(0, 6, Op.WRITE, b"/w\0" + b"x" * 30)
    assert guest.get("req_cons") == 1010 + 16 + 33 and notify.count == 1


def test_ring_held_notifications_are_sent_once_on_release(guest, notify):
    xb = ring_xb(guest, notify)
    guest.send(req(Op.READ, 1, b"/a\0") + req(Op.READ, 2, b"/b\0"))
    xb.hold_notify()
    assert xb.input() == Packet(0, 1, Op.READ, b"/a\0")
    xb.queue(reply(1))
    xb.output()
    assert xb.input() == Packet(0, 2, Op.READ, b"/b\0")
    assert notify.count == 0  # owed, not sent
    xb.release_notify()
    assert notify.count == 1
    xb.release_notify()  # nothing owed any more
    assert notify.count == 1
    assert xb.input() is None  # not held: steps notify again, when data moves
    assert notify.count == 1


def test_ring_release_without_movement_sends_nothing(guest, notify):
    xb = ring_xb(guest, notify)
    xb.hold_notify()
    assert xb.input() is None
    xb.release_notify()
    assert notify.count == 0


def test_ring_body_read_failure_still_notifies_for_the_header(guest, notify):
    xb = ring_xb(guest, notify)
    guest.send(req(Op.READ, 1, b"/a\0"))
    real = xb.backend.ring

    class HeaderThenBad:
        calls = 0

        def read_packet(self):
            return 19  # as if the packet were not whole yet: the byte-wise path

        def read(self, n):
            HeaderThenBad.calls += 1
            if HeaderThenBad.calls == 2:
                raise BadConnection()
            return real.read(n)
    xb.backend.ring = HeaderThenBad()
    with pytest.raises(BadConnection):
        xb.input()
    assert notify.count == 1 and guest.get("req_cons") == 16  # the header was consumed


def test_ring_has_more_work_follows_connection_has_more_work(guest, notify):
    xb = ring_xb(guest, notify, 1, 1)
    assert not xb.has_more_work()
    guest.send(req(Op.READ, 1, b"/a\0"))
    assert xb.input() is not None
    assert xb.has_more_work()  # the last read moved data: read again
    assert not xb.has_more_work(input_allowed=False)  # watch events still to deliver
    xb.queue(reply(1))  # the output queue is full (maxoutstanding 1): no input ...
    assert xb.has_more_work()  # ... but a whole packet to write
    guest.set("rsp_prod", 1020)  # 4 bytes of room
    xb.output()
    assert xb.has_old_output() and xb.has_more_work()  # the queue has room again: input
    xb.queue(reply(2))
    assert not xb.has_more_work()  # queue full, and half written: wait for room


def test_socket_has_more_work_is_only_output(sockpair):
    a, b = sockpair
    xb = open_fd(a, 2, 1)
    assert not xb.has_more_work()
    xb.queue(reply(1))
    assert xb.has_more_work()


def test_socket_hold_and_release_are_no_ops(sockpair):
    a, b = sockpair
    xb = open_fd(a, 1, 1)
    xb.hold_notify()
    xb.release_notify()
    b.sendall(req(Op.READ, 1, b"/\0"))
    wait_readable(a)
    assert xb.input() == Packet(0, 1, Op.READ, b"/\0")


def test_ring_zero_length_packet_comes_on_the_next_step(guest, notify):
    xb = ring_xb(guest, notify)
    guest.send(hdr(Op.RESET_WATCHES, 8, 0, 0))
    assert xb.input() is None and xb.has_more_input()
    assert xb.input() == Packet(0, 8, Op.RESET_WATCHES, b"")
    assert notify.count == 1  # the second step read nothing


def test_ring_long_request_arrives_in_several_steps_with_wraparound(guest, notify):
    xb = ring_xb(guest, notify)
    guest.set("req_cons", 1000)
    guest.set("req_prod", 1000)
    data = bytes(range(256)) * 10 + b"\0"
    stream = req(Op.WRITE, 2, data)
    sent, got, steps = 0, None, 0
    while got is None:
        sent += guest.send(stream[sent:])
        got = xb.input()
        steps += 1
        assert steps < 50
    assert got == Packet(0, 2, Op.WRITE, data)
    assert sent == len(stream)


def test_ring_request_over_4096_is_clamped(guest, notify):
    xb = ring_xb(guest, notify)
    stream = hdr(Op.WRITE, 1, 0, 5000) + b"z" * 5000
    sent, got = 0, None
    for _ in range(50):
        sent += guest.send(stream[sent:])
        got = xb.input()
        if got is not None:
            break
    assert got is not None and got.data == b"z" * 4096


def test_ring_bad_request_indexes_raise_bad_connection(guest, notify):
    xb = ring_xb(guest, notify)
    guest.set("req_prod", 2000)
    with pytest.raises(BadConnection, match="bad connection"):
        xb.input()
    assert notify.count == 0


def test_ring_reconnect_request_raises_reconnect_on_input_and_output(guest, notify):
    xb = ring_xb(guest, notify)
    xb.queue(reply(1))
    guest.set("connection", 1)
    with pytest.raises(Reconnect):
        xb.input()
    with pytest.raises(Reconnect):
        xb.output()


def test_xb_reconnect_resets_page_notifies_and_drops_state(guest, notify):
    xb = ring_xb(guest, notify)
    guest.send(req(Op.READ, 1, b"/abc\0")[:10])
    xb.input()  # 10 header bytes
    guest.set("rsp_prod", 1020)  # 4 bytes of room
    xb.queue(reply(1))
    xb.output()
    assert xb.has_old_output()
    xb.queue(reply(2))
    xb.queue(event())
    guest.set("connection", 1)
    before = notify.count
    xb.reconnect()
    assert notify.count == before + 1
    assert guest.get("connection") == 0 and guest.get("req_prod") == 0
    assert bytes(guest.buf[:2048]) == b"\xff" * 2048
    assert not xb.has_output() and not xb.has_partial_input()
    assert xb.debug().endswith("pkt_out: 0 packets, BoundedQueue capacity: 2048, used: {}")
    assert xb.can_input()


# -- ring output ------------------------------------------------------------

def test_ring_partial_output_is_finished_before_the_next_packet(guest, notify):
    xb = ring_xb(guest, notify)
    p1, p2 = reply(1, b"v" * 40), reply(2)
    xb.queue(p1)
    xb.queue(p2)
    guest.set("rsp_prod", 1024 - 20)  # rsp_cons 0: 20 bytes of room
    guest.set("rsp_cons", 0)
    assert xb.output() is False
    assert xb.has_old_output() and xb.output_len() == 1
    assert notify.count == 1
    first = bytes(guest.buf[1024 + 1004:2048])
    assert xb.output() is False  # ring still full: nothing moved, no notify
    assert notify.count == 1
    guest.set("rsp_cons", 1024)  # guest consumed everything
    assert xb.output() is True
    rest = guest.take()
    assert first + rest == p1.to_bytes()
    assert xb.output() is True
    assert guest.take() == p2.to_bytes()
    assert not xb.has_output()


def test_ring_output_wraps_around(guest, notify):
    xb = ring_xb(guest, notify)
    guest.set("rsp_cons", M32 - 5)
    guest.set("rsp_prod", M32 - 5)
    p = reply(3, b"wrap\0")
    xb.queue(p)
    assert xb.output() is True
    assert guest.take() == p.to_bytes()
    assert guest.get("rsp_prod") == (M32 - 5 + 21) & M32


def test_ring_bad_reply_indexes_raise_and_lose_the_popped_packet(guest, notify):
    xb = ring_xb(guest, notify)
    xb.queue(reply(1))
    guest.set("rsp_prod", 3000)
    with pytest.raises(BadConnection):
        xb.output()
    # As in xb.ml: the packet left the queue before the failed write.
    assert xb.output_len() == 0 and not xb.has_old_output()
    assert notify.count == 0


def test_ring_get_fd_fails_and_close_unmaps(guest, notify):
    xb = ring_xb(guest, notify)
    assert xb.is_mmap() and not xb.is_fd() and not xb.is_selectable()
    with pytest.raises(ValueError):
        xb.get_fd()
    xb.close()
    guest.buf.extend(b"x")  # no view left on the page


# -- debug ------------------------------------------------------------------

def test_debug_string_of_an_idle_connection(sockpair):
    xb = open_fd(sockpair[0], 1024, 1024)
    assert xb.debug() == ("XenBus state: partial_in: 16 needed, partial_out: 0 bytes, "
                          "pkt_out: 0 packets, BoundedQueue capacity: 2048, used: {}")


def test_debug_lists_command_reply_before_watch_event_with_tabs(guest, notify):
    xb = ring_xb(guest, notify, 4, 3)
    xb.queue(event())
    xb.queue(reply(1))
    xb.queue(reply(2))
    guest.send(req(Op.READ, 1, b"/abc\0")[:16])  # the header; the body is not there yet
    xb.input()
    assert xb.debug() == ("XenBus state: partial_in: 5 needed, partial_out: 0 bytes, "
                          "pkt_out: 3 packets, BoundedQueue capacity: 7, "
                          "used: {\tcommand_reply: 2\twatch_event: 1}")


def test_debug_shows_only_nonzero_classes_and_partial_out(guest, notify):
    xb = ring_xb(guest, notify, 4, 3)
    xb.queue(event())
    xb.queue(event())
    guest.set("rsp_prod", 1024 - 10)
    xb.output()
    assert xb.debug() == ("XenBus state: partial_in: 16 needed, partial_out: 13 bytes, "
                          "pkt_out: 1 packets, BoundedQueue capacity: 7, "
                          "used: {\twatch_event: 1}")


def test_open_mmap_accepts_the_mapped_page_itself(guest, notify):
    xb = Xb.open_mmap(guest.buf, notify, maxoutstanding=1, maxwatchevents=1)
    assert guest.get("server_features") == 1
    guest.send(req(Op.READ, 1, b"/\0"))
    assert xb.input() == Packet(0, 1, Op.READ, b"/\0")


def test_ring_page_unmapped_by_its_owner_before_xb_close(notify):
    import mmap
    mm = mmap.mmap(-1, 4096)
    xb = Xb.open_mmap(mm, notify, maxoutstanding=1, maxwatchevents=1)
    xb.input()
    mm.close()  # Domain.close runs before Connection.close
    xb.close()
    assert mm.closed


def test_open_fd_classmethod_with_keywords(sockpair):
    xb = Xb.open_fd(sockpair[0], maxoutstanding=3, maxwatchevents=4)
    assert xb.capacity.maxoutstanding == 3 and xb.pkt_out.capacity == 7
