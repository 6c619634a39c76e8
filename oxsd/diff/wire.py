"""Raw XenStore wire client for the differential harness.

Deliberately independent of the daemon's own packet code (``oxsd.xb``): the
harness is the judge of that code, so it keeps its own small copy of the op
table and header layout (xs_wire.h, in oxsd/xs_wire.py, which the daemon's
trace writer shares) instead of trusting the code under test.

The client never interprets replies: it only frames what it receives, so
malformed, truncated or out-of-step streams are recorded as they are.
"""
from __future__ import annotations

import errno
import select
import socket
import time

from ..xs_wire import (HEADER, OP_CODES, OPS, RING_OFFSETS, XS_ERROR, XS_WATCH_EVENT, Packet,
                       describe, encode_request, escape, op_code, op_name)

__all__ = [
    "HEADER", "OPS", "OP_CODES", "XS_WATCH_EVENT", "XS_ERROR",
    "Packet", "PacketReader", "SocketConn", "op_name", "op_code",
    "encode_request", "escape", "describe", "RING_OFFSETS",
]


class PacketReader:
    """Sans-IO framing of a received byte stream into packets."""

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[Packet]:
        self._buf += data
        out = []
        while len(self._buf) >= HEADER.size:
            op, rid, tx, length = HEADER.unpack_from(self._buf)
            end = HEADER.size + length
            if len(self._buf) < end:
                break
            out.append(Packet(op, rid, tx, bytes(self._buf[HEADER.size:end])))
            del self._buf[:end]
        return out

    @property
    def leftover(self) -> bytes:
        """Bytes of an incomplete packet still buffered."""
        return bytes(self._buf)


class SocketConn:
    """A unix-socket connection to a daemon, speaking raw bytes."""

    def __init__(self, path: str, timeout: float = 5.0) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.setblocking(False)
        # oxenstored listens with a backlog of 1 and accepts one connection
        # per loop iteration: a non-blocking connect gets EAGAIN until then
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.sock.connect(path)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    self.sock.close()
                    raise TimeoutError(f"daemon does not accept on {path}") from None
                time.sleep(0.002)
            except OSError:
                self.sock.close()
                raise
        self.reader = PacketReader()
        self.eof = False

    def fileno(self) -> int:
        return self.sock.fileno()

    def send_bytes(self, data: bytes, timeout: float = 5.0) -> None:
        """Write all of data (the daemon may stop reading: bounded by timeout)."""
        view = memoryview(data)
        deadline = time.monotonic() + timeout
        while view:
            try:
                n = self.sock.send(view)
                view = view[n:]
            except BlockingIOError:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError("daemon does not read (send blocked)")
                select.select([], [self.sock], [], left)

    def recv_nowait(self) -> bytes | None:
        """Whatever is readable now: b'' if nothing, None at end of stream."""
        if self.eof:
            return None
        chunks = []
        while True:
            try:
                data = self.sock.recv(65536)
            except BlockingIOError:
                break
            except OSError as e:
                if e.errno in (errno.ECONNRESET, errno.EPIPE):
                    data = b""
                else:
                    raise
            if not data:
                self.eof = True
                break
            chunks.append(data)
        if not chunks and self.eof:
            return None
        return b"".join(chunks)

    def wait_readable(self, timeout: float) -> bool:
        r, _, _ = select.select([self.sock], [], [], max(timeout, 0))
        return bool(r)

    def request(self, op: int, payload: bytes, tx_id: int = 0, req_id: int = 0,
                timeout: float = 5.0) -> Packet:
        """Send one request and return its reply (events are dropped)."""
        self.send_bytes(encode_request(op, payload, tx_id, req_id))
        deadline = time.monotonic() + timeout
        while True:
            data = self.recv_nowait()
            if data is None:
                raise ConnectionError("daemon closed the connection")
            for p in self.reader.feed(data):
                if not p.is_event and p.req_id == req_id:
                    return p
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no reply to {op_name(op)} rid={req_id}")
            self.wait_readable(left)

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> "SocketConn":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
