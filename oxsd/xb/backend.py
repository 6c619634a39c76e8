"""The two transports under Xb: a Unix socket and a guest's ring page (xb.ml's backends).

Port of libs/xb/xb.ml's `backend_fd` / `backend_mmap` and their read and
write functions.  Each backend feeds bytes to the same sans-IO parser
(`partial.PartialIn`) and takes serialised packets to write; `Xb`
(xb.py) owns the queues and never knows which backend it has.

Goals and costs (guests are untrusted): a read takes at most what the
parser asks for, or one bounded chunk (RECV_SIZE) into a buffer that is
only refilled when empty; a ring call copies at most 1024 bytes; the byte
counters (oxsd-top) cost one addition per read or write call.
"""
from __future__ import annotations

import select
import socket
from typing import Callable, List, Optional, Union

from ..ring import Ring
from .op import BY_CVAL, N_CVALS, Op
from .packet import HEADER_SIZE, Packet
from .partial import XENSTORE_PAYLOAD_MAX, PartialIn, whole_packet

__all__ = ["EndOfFile", "FdBackend", "MmapBackend", "Backend", "RECV_SIZE",
           "PEEK_NOTHING", "PEEK_DATA", "PEEK_EOF"]


class EndOfFile(Exception):
    """The socket peer closed (read returned 0), or `reconnect()` on a socket (Xb.End_of_file)."""


PEEK_NOTHING, PEEK_DATA, PEEK_EOF = range(3)


# Bytes one socket read takes: a whole request of the largest size, or several small ones.
RECV_SIZE = HEADER_SIZE + XENSTORE_PAYLOAD_MAX


class FdBackend:
    """A connected, blocking Unix stream socket (dom0 tools).

    Input is buffered: a read that finds the buffer empty takes what the
    socket holds, up to RECV_SIZE bytes, in one recv, and later reads (and
    `peek`) are served from the buffer until it is used up.  The parser
    (`PartialIn`) still asks for at most one header or body per step, so
    packets come out exactly as from the socket itself; a client sending
    several requests at once costs one recv for all of them instead of
    three per request (header, body, the look for more).  The buffer is
    bounded (RECV_SIZE) and only refilled when empty; the main loop serves
    a socket with buffered input as if it were readable (`has_buffered_input`).

    While `held` (the main loop serving a socket's batch of requests,
    `Xb.hold_output`), non-blocking writes are gathered in `pending` and
    go out in one send from `Xb.release_output`: the same bytes in the same
    order, one system call (and one wake-up of the client) per batch.
    """

    __slots__ = ("sock", "fd", "_recv", "_send", "_sendall", "_poll", "held", "pending",
                 "_rbuf", "_roff", "_eof", "bytes_in", "bytes_out")

    def __init__(self, sock: Union[socket.socket, int]) -> None:
        if isinstance(sock, int):
            sock = socket.socket(fileno=sock)
        self.sock = sock
        self.fd = sock.fileno()  # kept: fileno() turns -1 after close
        self._recv = sock.recv
        self._send = sock.send
        self._sendall = sock.sendall
        poller = select.poll()
        poller.register(self.fd, select.POLLIN)
        self._poll = poller.poll  # what peek asks: any data or EOF there
        self.held = False
        self.pending: List[bytes] = []
        self._rbuf = b""  # bytes read from the socket, not yet taken from _roff on
        self._roff = 0
        self._eof = False  # a recv returned 0 while filling the buffer
        # oxsd-top's byte counters: one addition per system call, not per packet
        self.bytes_in = 0
        self.bytes_out = 0

    def has_buffered_input(self) -> bool:
        return self._roff < len(self._rbuf)

    def _take(self, n: int) -> bytes:
        """Up to n buffered bytes (the buffer is not empty)."""
        buf = self._rbuf
        off = self._roff
        end = off + n
        if off == 0 and end >= len(buf):
            data = buf
        else:
            data = buf[off:end]
        if end >= len(buf):
            self._rbuf = b""
            self._roff = 0
        else:
            self._roff = end
        return data

    def read(self, n: int) -> bytes:
        """At most n bytes: buffered ones, else one recv; EndOfFile on EOF, OSError on a read error."""
        if self._roff >= len(self._rbuf):
            self._fill()
        return self._take(n)

    def _fill(self) -> None:
        """One (blocking) recv into the empty buffer; EndOfFile on EOF."""
        if self._eof:
            raise EndOfFile()
        data = self._recv(RECV_SIZE)
        if not data:
            raise EndOfFile()
        self.bytes_in += len(data)
        self._rbuf = data
        self._roff = 0

    def input_step(self, partial: PartialIn) -> Optional[Packet]:
        """One input step (Xb.input): a whole packet from the buffer in one go when it is
        there; else what `partial` wants, and when a header completes, its body if it is
        already there (never waiting for it).  EndOfFile / OSError as `read`."""
        if not partial.has_partial_input():
            if self._roff >= len(self._rbuf):
                self._fill()
            got = whole_packet(self._rbuf, self._roff)
            if got is not None:
                pkt, end = got
                if end >= len(self._rbuf):
                    self._rbuf = b""
                    self._roff = 0
                else:
                    self._roff = end
                return pkt
        # A packet in pieces, a zero-length or oversized body: the parser's steps.
        n = partial.to_read()
        pkt = partial.feed(self.read(n) if n > 0 else b"")
        if pkt is None and partial.in_body():
            # The header just completed: take the body now if it is already
            # there, never wait for it.  A zero-length body still waits (4.17).
            n = partial.to_read()
            if n > 0:
                data = self.read_if_ready(n)
                if data:
                    pkt = partial.feed(data)
        return pkt

    def read_if_ready(self, n: int) -> bytes:
        """At most n bytes if they are already there (never blocks); b"" if none yet."""
        if self._roff < len(self._rbuf):
            return self._take(n)
        if self._eof:
            raise EndOfFile()
        try:
            data = self._recv(RECV_SIZE, socket.MSG_DONTWAIT)
        except (BlockingIOError, InterruptedError):
            return b""
        if not data:
            raise EndOfFile()
        self.bytes_in += len(data)
        self._rbuf = data
        return self._take(n)

    def peek(self) -> int:
        """What reading now would give: PEEK_DATA, PEEK_EOF or PEEK_NOTHING (never blocks).

        Data found is kept in the buffer for the next read; EOF is
        remembered, and the next read raises EndOfFile.
        """
        if self._roff < len(self._rbuf):
            return PEEK_DATA
        if self._eof:
            return PEEK_EOF
        if not self._poll(0):  # a third of a failing recv's cost (no exception)
            return PEEK_NOTHING
        try:
            data = self._recv(RECV_SIZE, socket.MSG_DONTWAIT)
        except (BlockingIOError, InterruptedError):
            return PEEK_NOTHING
        except OSError:
            return PEEK_EOF  # the error comes again on the next read
        if not data:
            self._eof = True
            return PEEK_EOF
        self.bytes_in += len(data)
        self._rbuf = data
        self._roff = 0
        return PEEK_DATA

    def write_nowait(self, data: bytes, off: int) -> int:
        """Write what the socket takes now of data[off:]; 0 when it would block.

        While held, all of it is taken into `pending`.
        """
        if self.held:
            self.pending.append(data[off:] if off else data)
            return len(data) - off
        try:
            n = self._send(memoryview(data)[off:] if off else data, socket.MSG_DONTWAIT)
        except (BlockingIOError, InterruptedError):
            return 0
        self.bytes_out += n
        return n

    def write(self, data: bytes, off: int) -> int:
        """Blocking full write of data[off:] (OCaml Unix.write loops until done)."""
        if self.pending:  # what was gathered goes first
            self.flush_pending()
        self._sendall(memoryview(data)[off:] if off else data)
        self.bytes_out += len(data) - off
        return len(data) - off

    def take_pending(self) -> bytes:
        """Stop holding; what was gathered since, joined."""
        self.held = False
        pending = self.pending
        if not pending:
            return b""
        data = pending[0] if len(pending) == 1 else b"".join(pending)
        pending.clear()
        return data

    def flush_pending(self) -> None:
        """Blocking write of what was gathered (a blocking write must not overtake it)."""
        data = self.take_pending()
        if data:
            self._sendall(data)
            self.bytes_out += len(data)

    def close(self) -> None:
        self.pending.clear()
        self._rbuf = b""
        self._roff = 0
        self.sock.close()


class MmapBackend:
    """A guest's shared ring page and the event channel to notify it.

    Every step that moves ring data is followed by a notification, as in
    xb.ml, so the guest never misses a wake-up.  While `held` (the main loop
    serving a domain's batch of rounds, `Xb.hold_notify`), the notification
    is owed instead and sent once by `release_notify`, before the loop can
    sleep: the guest sees the same index updates and is woken after all of
    them, with one event instead of one per step (events coalesce in Xen
    anyway).
    """

    __slots__ = ("ring", "eventchn_notify", "work_again", "held", "owed", "bytes_in", "bytes_out")

    def __init__(self, ring: Ring, eventchn_notify: Callable[[], None]) -> None:
        self.ring = ring
        self.eventchn_notify = eventchn_notify
        self.work_again = False  # the last read moved >= 1 byte
        self.held = False  # notifications are deferred to release_notify
        self.owed = False  # data moved since the last notification (while held)
        self.bytes_in = 0  # oxsd-top's byte counters
        self.bytes_out = 0

    def _moved(self) -> None:
        if self.held:
            self.owed = True
        else:
            self.eventchn_notify()

    def read(self, n: int) -> bytes:
        """One ring read (xb.ml read_mmap); notifies when bytes moved."""
        data = self.ring.read(n)  # Reconnect / BadConnection leave work_again as it was
        self.work_again = bool(data)
        if data:
            self.bytes_in += len(data)
            self._moved()  # space freed in req[]
        return data

    def input_step(self, partial: PartialIn) -> Optional[Packet]:
        """One input step: read what `partial` wants; when a header completes, its body too.

        xb.ml reads the body on the next step; taking what the guest has
        already put in the ring now saves a loop iteration and changes
        nothing the guest can see but timing.  A body not there yet, and a
        zero-length one (the 4.17 quirk), wait for the next step, as in
        xb.ml.  One notification covers both reads.
        """
        ring = self.ring
        if not partial.has_partial_input():
            # Between packets: take a whole one in one go when it is there.
            got = ring.read_packet()  # Reconnect / BadConnection: work_again as it was
            if type(got) is tuple:
                self.work_again = True
                self._moved()
                ty, rid, tid, body = got
                self.bytes_in += 16 + len(body)
                op = BY_CVAL[ty] if ty < N_CVALS else Op.INVALID  # of_cval (ty is unsigned)
                return Packet(tid, rid, op, body)
            if got == 0:
                self.work_again = False
                return None
        n = partial.to_read()
        if n <= 0:
            return partial.feed(b"")  # no read: work_again stays (xb.ml)
        data = ring.read(n)  # Reconnect / BadConnection leave work_again as it was
        if not data:
            self.work_again = False
            return partial.feed(data)
        self.work_again = True
        self.bytes_in += len(data)
        try:
            pkt = partial.feed(data)
            if pkt is None and partial.in_body():
                n = partial.to_read()
                if n > 0:
                    data = ring.read(n)
                    if data:
                        self.bytes_in += len(data)
                        pkt = partial.feed(data)
        finally:
            self._moved()  # even if the body read raised: the header moved
        return pkt

    def write(self, data: bytes, off: int) -> int:
        n = self.ring.write(memoryview(data)[off:] if off else data)
        if n > 0:
            self.bytes_out += n
            self._moved()  # rsp[] has new bytes
        return n

    def release_notify(self) -> None:
        """Stop deferring; send the notification owed, if any."""
        self.held = False
        if self.owed:
            self.owed = False
            self.eventchn_notify()

    def close(self) -> None:
        self.ring.close()


Backend = Union[FdBackend, MmapBackend]
