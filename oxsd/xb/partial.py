"""Packet reassembly, sans-IO (port of libs/xb/partial.ml and xb.ml's partial_buf).

The same parser serves the Unix socket and the shared ring: the caller asks
`to_read()` how many bytes are still missing, reads *at most* that many with
one read call, and hands them to `feed()`, which returns a complete `Packet`
or None.  The parser never does I/O and never asks for more than the current
header or body needs, so one read never spans two packets.

Goals and costs (guests are untrusted):

* A declared length is clamped to 0..4096 (XENSTORE_PAYLOAD_MAX) without any
  error, exactly as oxenstored does (partial.ml: of_string).  So a connection holds
  at most 16 + 4096 bytes of partial input, whatever the peer sends.
* Work is O(bytes fed).  A body that arrives in one read is used as the
  payload as is (no copy); a body in several pieces is copied once into a
  preallocated buffer of the clamped length and once more into the final
  `bytes`.
* 4.17 quirk kept on purpose (xb.ml: input): when the header is
  complete the step returns None *even if the body length is 0*; the packet
  comes out of the next `feed()` (which the caller makes with no bytes,
  since `to_read()` is then 0).
"""
from __future__ import annotations

from typing import Optional

from .op import BY_CVAL, N_CVALS, Op, of_cval
from .packet import HEADER, HEADER_SIZE, Packet

__all__ = [
    "whole_packet",
    "XENSTORE_PAYLOAD_MAX",
    "XENSTORE_REL_PATH_MAX",
    "HEADER_SIZE",
    "PartialPkt",
    "PartialIn",
    "header_of_bytes",
]

XENSTORE_PAYLOAD_MAX = 4096  # xs_wire.h
XENSTORE_REL_PATH_MAX = 2048  # xs_wire.h

_unpack_header = HEADER.unpack
_unpack_header_from = HEADER.unpack_from


def header_of_bytes(header: bytes) -> tuple[int, int, int, int]:
    """Decode a 16-byte header into (tid, rid, op code, len), like header_of_string."""
    if len(header) != HEADER_SIZE:
        raise ValueError("xb header incomplete")
    ty, rid, tid, dlen = _unpack_header(header)
    return tid, rid, ty, dlen


def whole_packet(buf: bytes, off: int) -> Optional[tuple[Packet, int]]:
    """The packet at buf[off:] when all of it is there, and the offset after it; else None.

    What `PartialIn` would give for those bytes in its two steps (header,
    body), in one: only for a body of 1..4096 bytes.  None when the packet
    is not all there, and for the cases `PartialIn` alone handles: a
    zero-length body (the 4.17 quirk: it comes out a step later) and a
    declared length over 4096 (clamped).
    """
    end = off + HEADER_SIZE
    if len(buf) < end:
        return None
    ty, rid, tid, dlen = _unpack_header_from(buf, off)
    if dlen <= 0 or dlen > XENSTORE_PAYLOAD_MAX or len(buf) < end + dlen:
        return None
    op = BY_CVAL[ty] if ty < N_CVALS else Op.INVALID  # of_cval (ty is unsigned)
    return Packet(tid, rid, op, buf[end:end + dlen]), end + dlen


class PartialPkt:
    """A packet whose header is known and whose body is being received (Partial.pkt)."""

    __slots__ = ("tid", "rid", "ty", "len", "_buf", "_have", "_whole")

    def __init__(self, tid: int, rid: int, ty: Op, length: int) -> None:
        self.tid = tid
        self.rid = rid
        self.ty = ty
        self.len = length
        self._buf: Optional[bytearray] = None  # allocated only for a body in pieces
        self._have = 0
        self._whole: bytes = b""  # body received in one piece

    @classmethod
    def of_bytes(cls, header: bytes) -> "PartialPkt":
        """Start a packet from its header; the length is clamped to 0..4096 (no error)."""
        tid, rid, opint, dlen = header_of_bytes(header)
        # An oversized length is illegal but only clamped: the stream is then
        # out of step, which is the guest's problem, not the daemon's.
        dlen = max(0, min(XENSTORE_PAYLOAD_MAX, dlen))
        return cls(tid, rid, of_cval(opint), dlen)

    def append(self, data: bytes) -> None:
        """Add body bytes; more than the declared length is refused."""
        sz = len(data)
        if self._have + sz > self.len:
            # Unreachable through PartialIn, which never reads past to_complete.
            raise ValueError("Buffer.add: cannot grow buffer")
        if self._have == 0 and sz == self.len:
            self._whole = bytes(data)  # a no-op for `bytes`, the usual case
        else:
            buf = self._buf
            if buf is None:
                buf = self._buf = bytearray(self.len)
            buf[self._have:self._have + sz] = data
        self._have += sz

    def to_complete(self) -> int:
        """Body bytes still missing."""
        return self.len - self._have

    def contents(self) -> bytes:
        """The body received so far."""
        if self._buf is None:
            return self._whole
        return bytes(self._buf[:self._have])

    def to_packet(self) -> Packet:
        """The finished packet (Packet.of_partialpkt)."""
        return Packet(self.tid, self.rid, self.ty, self.contents())


class PartialIn:
    """Input state of one connection: reading the header, or reading the body.

    Port of xb.ml's `partial_buf` (NoHdr / HaveHdr) and the parsing half of
    `Xb.input`.  Use: `n = p.to_read()`; read at most n bytes (none when n is
    0); `pkt = p.feed(data)`.
    """

    __slots__ = ("_need", "_hdr", "_pkt")

    def __init__(self) -> None:
        self._need = HEADER_SIZE  # header bytes still missing (header state)
        self._hdr = bytearray(HEADER_SIZE)
        self._pkt: Optional[PartialPkt] = None  # set in body state

    def reset(self) -> None:
        """Drop any partial input (init_partial_in)."""
        self._need = HEADER_SIZE
        self._pkt = None

    def to_read(self) -> int:
        """How many bytes the next read may take: never more than this."""
        pkt = self._pkt
        if pkt is not None:
            return pkt.len - pkt._have
        return self._need

    def has_partial_input(self) -> bool:
        """In body state, or some header bytes already received."""
        return self._pkt is not None or self._need < HEADER_SIZE

    def in_body(self) -> bool:
        return self._pkt is not None

    def feed(self, data: bytes) -> Optional[Packet]:
        """One input step with the bytes just read (possibly none); a packet when complete."""
        sz = len(data)
        pkt = self._pkt
        if pkt is not None:
            if sz:
                pkt.append(data)
            if pkt.len == pkt._have:
                self._pkt = None
                return pkt.to_packet()
            return None
        need = self._need
        if sz > need:
            raise ValueError(f"fed {sz} bytes, only {need} wanted")
        if sz == HEADER_SIZE:
            # The whole header in one read: decode it from the read buffer.
            self._pkt = PartialPkt.of_bytes(data)
            return None
        if sz:
            start = HEADER_SIZE - need
            self._hdr[start:start + sz] = data
        if sz == need:
            self._pkt = PartialPkt.of_bytes(bytes(self._hdr))
            self._need = HEADER_SIZE  # ready for the next header
        else:
            self._need = need - sz
        # 4.17: the header step never yields a packet, even for len = 0.
        return None
