"""Per-connection transport: bounded output queue, partial input/output (port of libs/xb/xb.ml).

A connection does not know whether its bytes come from a Unix socket
(`FdBackend`) or a shared ring page (`MmapBackend`, both in backend.py);
both feed the same sans-IO parser (`partial.PartialIn`).

Goals and costs (guests are untrusted):

* Input: one read of at most `to_read` bytes per `input()` call, so a
  connection holds at most one partial packet (16 + 4096 bytes), and input is
  only read while a reply is sure to fit in the output queue (back-pressure,
  xb.ml: queue).
* Output: a bounded FIFO of packets with two classes, watch events
  (`maxwatchevents`) and everything else (`maxoutstanding`), total capacity
  the sum.  A push into a full class or a full queue is refused: `queue()`
  returns False (xb.ml returns None).  `output()` writes at most one packet
  per call; the packet is serialised once when it leaves the queue and the
  unsent rest is kept as (bytes, offset), never re-sliced.
* The socket path is the hot path: input is read in bounded chunks (one
  `recv` of at most RECV_SIZE bytes when the buffer is empty, see
  `FdBackend`), which the parser takes a header or a body at a time, and
  the replies of a batch of requests go out in one send.
"""
from __future__ import annotations

import enum
import mmap
import socket
from collections import deque
from dataclasses import dataclass
from typing import Callable, Deque, Optional, Union

from ..ring import BadConnection, Reconnect, Ring, XENSTORE_SERVER_FEATURE_RECONNECTION
from .backend import (PEEK_DATA, PEEK_EOF, PEEK_NOTHING, RECV_SIZE, Backend, EndOfFile,
                      FdBackend, MmapBackend)
from .op import OP_WATCH_EVENT
from .packet import HEADER, Packet
from .partial import PartialIn

__all__ = [
    "EndOfFile",
    "PEEK_NOTHING",
    "PEEK_DATA",
    "PEEK_EOF",
    "RECV_SIZE",
    "Backend",
    "Reconnect",
    "BadConnection",
    "PacketClass",
    "BoundedQueue",
    "Capacity",
    "FdBackend",
    "MmapBackend",
    "Xb",
    "open_fd",
    "open_mmap",
]


class PacketClass(enum.IntEnum):
    """Output queue classes: watch events have their own reservation."""

    COMMAND_REPLY = 0
    WATCHEVENT = 1


_CLASS_NAMES = ("command_reply", "watch_event")
_CR = 0  # PacketClass.COMMAND_REPLY as a plain int (hot-path indexing)
_WE = 1  # PacketClass.WATCHEVENT
# OCaml's Hashtbl (16 buckets, seed 0) puts CommandReply in bucket 10 and
# Watchevent in bucket 11, so `debug` always lists them in this order.
_DEBUG_ORDER = (PacketClass.COMMAND_REPLY, PacketClass.WATCHEVENT)


def string_of_packet_class(cls: PacketClass) -> str:
    return _CLASS_NAMES[cls]


def classify(pkt: Packet) -> PacketClass:
    return PacketClass.WATCHEVENT if pkt.ty == OP_WATCH_EVENT else PacketClass.COMMAND_REPLY


class BoundedQueue:
    """FIFO of packets with an overall capacity and a limit per class (xb.ml BoundedQueue).

    A class limit may be below the number already queued of that class
    (those then use burst capacity); pushes of that class are refused until
    it drops below the limit again.
    """

    __slots__ = ("q", "capacity", "limits", "counts")

    def __init__(self, capacity: int, limits: tuple[int, int]) -> None:
        self.q: Deque[Packet] = deque()
        self.capacity = capacity
        self.limits = limits  # indexed by PacketClass
        self.counts = [0, 0]  # packets queued per PacketClass (never rebound)

    def can_push(self, cls: PacketClass) -> bool:
        return len(self.q) < self.capacity and self.counts[cls] < self.limits[cls]

    def push(self, pkt: Packet) -> bool:
        """Append pkt if its class and the queue have room; False when refused."""
        cls = _WE if pkt.ty == OP_WATCH_EVENT else _CR
        counts = self.counts
        if len(self.q) < self.capacity and counts[cls] < self.limits[cls]:
            self.q.append(pkt)
            counts[cls] += 1
            return True
        return False

    def pop(self) -> Packet:
        """Remove and return the head; IndexError when empty (OCaml: Queue.Empty)."""
        pkt = self.q.popleft()
        self.counts[_WE if pkt.ty == OP_WATCH_EVENT else _CR] -= 1
        return pkt

    def peek(self) -> Packet:
        """The head packet; IndexError when empty (OCaml: Queue.Empty)."""
        return self.q[0]

    def clear(self) -> None:
        self.q.clear()
        self.counts[_CR] = self.counts[_WE] = 0  # in place: Xb keeps a reference

    def __len__(self) -> int:
        return len(self.q)

    def debug(self) -> str:
        """`BoundedQueue capacity: N, used: {<TAB>class: n...}`; only non-zero classes."""
        used = "".join(f"\t{_CLASS_NAMES[c]}: {self.counts[c]}"
                       for c in _DEBUG_ORDER if self.counts[c])
        return f"BoundedQueue capacity: {self.capacity}, used: {{{used}}}"


@dataclass(frozen=True)
class Capacity:
    """Output queue limits, read from the config when the connection is created."""

    maxoutstanding: int
    maxwatchevents: int


class Xb:
    """One connection's transport (Xb.t)."""

    __slots__ = ("backend", "pkt_out", "partial_in", "_out", "_out_off", "capacity",
                 "_write", "_q", "_counts", "_qcap", "_maxout",
                 "_ring", "on_activity")

    def __init__(self, backend: Backend, maxoutstanding: int, maxwatchevents: int) -> None:
        self.backend = backend
        self.capacity = Capacity(maxoutstanding, maxwatchevents)
        self.pkt_out = BoundedQueue(maxoutstanding + maxwatchevents, (maxoutstanding, maxwatchevents))
        self.partial_in = PartialIn()
        self._out = b""  # the packet being written (serialised) ...
        self._out_off = 0  # ... and how much of it is already written
        self._write = backend.write
        self._ring = backend if type(backend) is MmapBackend else None
        # Shortcuts for can_input on the hot path.
        self._q = self.pkt_out.q
        self._counts = self.pkt_out.counts
        self._qcap = self.pkt_out.capacity
        self._maxout = maxoutstanding
        # Called when the connection may have gained "more work" (a ring read
        # moved data, or a packet was queued): lets the registry follow the
        # few busy rings instead of polling all of them (rings only).
        self.on_activity: Optional[Callable[[], None]] = None

    @classmethod
    def open_fd(cls, sock: Union[socket.socket, int], maxoutstanding: int,
                maxwatchevents: int) -> "Xb":
        """A transport over a connected socket (Xb.open_fd)."""
        return cls(FdBackend(sock), maxoutstanding, maxwatchevents)

    @classmethod
    def open_mmap(cls, interface: Union[Ring, bytearray, memoryview, mmap.mmap],
                  eventchn_notify: Callable[[], None], maxoutstanding: int,
                  maxwatchevents: int) -> "Xb":
        """A transport over a guest's ring page (a Ring, or the mapped page itself).

        Advertises RECONNECTION in server_features and touches nothing else
        (Xb.open_mmap).
        """
        ring = interface if isinstance(interface, Ring) else Ring(interface)
        ring.set_server_features(XENSTORE_SERVER_FEATURE_RECONNECTION)
        return cls(MmapBackend(ring, eventchn_notify), maxoutstanding, maxwatchevents)

    # -- queue --------------------------------------------------------
    def queue(self, pkt: Packet) -> bool:
        """Queue pkt for output; False when the queue refuses it (xb.ml: None)."""
        if self.pkt_out.push(pkt):
            if self.on_activity is not None:
                self.on_activity()
            return True
        return False

    def can_input(self) -> bool:
        """A request may be read only when its reply is sure to fit."""
        return len(self._q) < self._qcap and self._counts[_CR] < self._maxout

    # -- input --------------------------------------------------------
    def input(self) -> Optional[Packet]:
        """One read step (a completed header's body may come with it); a packet when complete.

        None when input is blocked (`can_input` false), when more bytes are
        needed, and (4.17) on the step that completes a header unless its
        body is already waiting (then it is read in the same step:
        `FdBackend.input_step`, `MmapBackend.input_step`).  Raises EndOfFile /
        OSError (socket), Reconnect / BadConnection (ring).
        """
        if not (len(self._q) < self._qcap and self._counts[_CR] < self._maxout):
            return None
        partial = self.partial_in
        ring = self._ring
        if ring is not None:
            # Rings: the body comes with its header when it is already there.
            pkt = ring.input_step(partial)
            if ring.work_again and self.on_activity is not None:
                self.on_activity()
            return pkt
        return self.backend.input_step(partial)  # sockets: no on_activity (rings only)

    def to_read(self) -> int:
        return self.partial_in.to_read()

    def has_partial_input(self) -> bool:
        """Part of a packet received, or (socket) bytes read and not parsed yet."""
        return self.partial_in.has_partial_input() or (
            self._ring is None and self.backend.has_buffered_input())

    def has_buffered_input(self) -> bool:
        """Socket: bytes read from the socket and not parsed yet (the loop serves them
        as if the socket were readable).  Rings: False."""
        return self._ring is None and self.backend.has_buffered_input()

    def has_more_work(self, input_allowed: bool = True) -> bool:
        """Xb's part of Connection.has_more_work, in one call (the main loop asks it per round).

        The last ring read moved data and input may be read (`can_input`,
        and `input_allowed`: no watch events of the connection still to
        deliver), or a whole packet waits and none is half written.
        """
        ring = self._ring
        if (ring is not None and ring.work_again and input_allowed
                and len(self._q) < self._qcap and self._counts[_CR] < self._maxout):
            return True
        return self._out_off >= len(self._out) and len(self._q) > 0

    def hold_output(self) -> None:
        """Socket: gather non-blocking writes until `release_output` (one send per batch)."""
        if self._ring is None:
            self.backend.held = True

    def release_output(self) -> None:
        """Socket: send what was gathered since `hold_output`; what the socket does not
        take now stays as a partly written packet, waiting for POLLOUT.  OSError as a write."""
        backend = self.backend
        if self._ring is not None:
            return
        data = backend.take_pending()
        if not data:
            return
        n = backend.write_nowait(data, 0)
        if n < len(data):
            # Nothing else can be partly written: output() completes every
            # packet while held.
            self._out = data
            self._out_off = n

    def hold_notify(self) -> None:
        """Ring: defer notifications until `release_notify` (one event for many steps)."""
        ring = self._ring
        if ring is not None:
            ring.held = True

    def release_notify(self) -> None:
        """Ring: send the notification deferred since `hold_notify`, if data moved."""
        ring = self._ring
        if ring is not None:
            ring.release_notify()

    def has_more_input(self) -> bool:
        """Ring only: the last ring read moved data (sockets: always False)."""
        backend = self.backend
        return type(backend) is MmapBackend and backend.work_again

    # -- output -------------------------------------------------------
    def output(self, nowait: bool = False) -> bool:
        """Write at most one packet (the rest of a partly written one first).

        True when no partly written packet remains.  Raises Reconnect /
        BadConnection (ring) or OSError (socket).  As in xb.ml, a packet
        popped from the queue is lost if the write raises.  `nowait`
        (sockets): write only what the socket takes now and keep the rest,
        for writes the loop makes without having polled for POLLOUT.
        """
        out = self._out
        off = self._out_off
        if off >= len(out):
            q = self._q
            if not q:
                return True
            pkt = q.popleft()  # BoundedQueue.pop, inline (every reply)
            self._counts[_WE if pkt.ty == OP_WATCH_EVENT else _CR] -= 1
            data = pkt.data
            out = HEADER.pack(pkt.ty, pkt.rid, pkt.tid, len(data)) + data  # Packet.to_bytes
            off = 0
        if nowait:
            off += self.backend.write_nowait(out, off)
        else:
            off += self._write(out, off)
        if off >= len(out):
            self._out = b""
            self._out_off = 0
            return True
        self._out = out
        self._out_off = off
        return False

    def output_len(self) -> int:
        """Packets in the queue (not counting a partly written one)."""
        return len(self.pkt_out.q)

    def has_new_output(self) -> bool:
        return len(self.pkt_out.q) > 0

    def has_old_output(self) -> bool:
        """A packet is partly written."""
        return self._out_off < len(self._out)

    def has_output(self) -> bool:
        return len(self.pkt_out.q) > 0 or self._out_off < len(self._out)

    def peek_output(self) -> Packet:
        """The head of the queue; IndexError when empty."""
        return self.pkt_out.q[0]

    def partial_out_len(self) -> int:
        """Bytes of the partly written packet still to send."""
        return len(self._out) - self._out_off

    # -- lifecycle ----------------------------------------------------
    def reconnect(self) -> None:
        """Ring: reset the page, notify, drop queued and partial data.  Socket: EndOfFile."""
        backend = self.backend
        if type(backend) is not MmapBackend:
            raise EndOfFile()  # cannot happen on a socket; close it
        backend.ring.reconnect()
        backend.eventchn_notify()
        self.pkt_out.clear()
        self.partial_in.reset()
        self._out = b""
        self._out_off = 0

    def close(self) -> None:
        """Close the socket or unmap the ring page."""
        self.backend.close()

    def is_fd(self) -> bool:
        return type(self.backend) is FdBackend

    def is_mmap(self) -> bool:
        return type(self.backend) is MmapBackend

    def is_selectable(self) -> bool:
        return type(self.backend) is FdBackend

    def get_fd(self) -> int:
        """The socket's fd number; ValueError for a ring (OCaml: Failure "get_fd")."""
        backend = self.backend
        if type(backend) is not FdBackend:
            raise ValueError("get_fd")
        return backend.fd

    def debug(self) -> str:
        """The Xb part of CONTROL `xenbus` (connection.ml: debug), no trailing NUL."""
        return (f"XenBus state: partial_in: {self.partial_in.to_read()} needed, "
                f"partial_out: {len(self._out) - self._out_off} bytes, "
                f"pkt_out: {len(self.pkt_out.q)} packets, {self.pkt_out.debug()}")


def open_fd(sock: Union[socket.socket, int], maxoutstanding: int, maxwatchevents: int) -> Xb:
    """Module-level alias of `Xb.open_fd`."""
    return Xb.open_fd(sock, maxoutstanding, maxwatchevents)


def open_mmap(interface: Union[Ring, bytearray, memoryview, mmap.mmap],
              eventchn_notify: Callable[[], None],
              maxoutstanding: int, maxwatchevents: int) -> Xb:
    """Module-level alias of `Xb.open_mmap`."""
    return Xb.open_mmap(interface, eventchn_notify, maxoutstanding, maxwatchevents)
