"""Raw XenStore wire client for the differential harness.

Deliberately independent of the daemon's own packet code (``oxsd.xb``): the
harness is the judge of that code, so it keeps its own small copy of the op
table and header layout (xs_wire.h) instead of trusting the code under test.

The client never interprets replies: it only frames what it receives, so
malformed, truncated or out-of-step streams are recorded as they are.
"""
from __future__ import annotations

import errno
import select
import socket
import struct
import time
from dataclasses import dataclass

__all__ = [
    "HEADER", "OPS", "OP_CODES", "XS_WATCH_EVENT", "XS_ERROR",
    "Packet", "PacketReader", "SocketConn", "op_name", "op_code",
    "encode_request", "escape", "describe", "RING_OFFSETS",
]

HEADER = struct.Struct("<IIII")  # type, req_id, tx_id, len

# enum xsd_sockmsg_type (xen/include/public/io/xs_wire.h)
OPS: dict[int, str] = {
    0: "CONTROL", 1: "DIRECTORY", 2: "READ", 3: "GET_PERMS", 4: "WATCH",
    5: "UNWATCH", 6: "TRANSACTION_START", 7: "TRANSACTION_END",
    8: "INTRODUCE", 9: "RELEASE", 10: "GET_DOMAIN_PATH", 11: "WRITE",
    12: "MKDIR", 13: "RM", 14: "SET_PERMS", 15: "WATCH_EVENT", 16: "ERROR",
    17: "IS_DOMAIN_INTRODUCED", 18: "RESUME", 19: "SET_TARGET",
    20: "RESTRICT", 21: "RESET_WATCHES", 22: "DIRECTORY_PART",
    23: "GET_FEATURE", 24: "SET_FEATURE", 25: "GET_QUOTA", 26: "SET_QUOTA",
}
OP_CODES: dict[str, int] = {name: code for code, name in OPS.items()}
OP_CODES.update(DEBUG=0, IS_INTRODUCED=17)
XS_WATCH_EVENT = 15
XS_ERROR = 16

# struct xenstore_domain_interface: byte offsets of the 32-bit fields after
# req[1024] and rsp[1024] (xs_wire.h)
RING_OFFSETS: dict[str, int] = {
    "req_cons": 2048, "req_prod": 2052, "rsp_cons": 2056, "rsp_prod": 2060,
    "server_features": 2064, "connection": 2068, "error": 2072,
}


def op_name(code: int) -> str:
    """Readable name of a wire type (numeric when unknown)."""
    return OPS.get(code, str(code))


def op_code(word: str) -> int:
    """Wire type from an op name (``READ``, ``XS_READ``) or a number."""
    name = word.upper()
    if name.startswith("XS_"):
        name = name[3:]
    if name in OP_CODES:
        return OP_CODES[name]
    try:
        value = int(word, 0)
    except ValueError:
        raise ValueError(f"unknown op {word!r}") from None
    if not 0 <= value <= 0xFFFFFFFF:
        raise ValueError(f"op {word!r} does not fit in 32 bits")
    return value


def encode_request(op: int, payload: bytes, tx_id: int = 0, req_id: int = 0,
                   length: int | None = None) -> bytes:
    """Header + payload; ``length`` overrides the declared length."""
    declared = len(payload) if length is None else length
    return HEADER.pack(op, req_id, tx_id, declared) + payload


def escape(data: bytes) -> str:
    """Bytes as a scenario-style literal: printable ASCII, ``\\0``, ``\\xNN``."""
    out = []
    for b in data:
        if b == 0:
            out.append("\\0")
        elif b == 0x5C:
            out.append("\\\\")
        elif b == 0x22:
            out.append('\\"')
        elif 0x20 <= b < 0x7F:
            out.append(chr(b))
        else:
            out.append(f"\\x{b:02x}")
    return "".join(out)


@dataclass(frozen=True)
class Packet:
    """One framed message as received (header fields + payload)."""

    op: int
    req_id: int
    tx_id: int
    payload: bytes

    @property
    def is_event(self) -> bool:
        return self.op == XS_WATCH_EVENT

    def raw(self) -> bytes:
        return encode_request(self.op, self.payload, self.tx_id, self.req_id)

    def __str__(self) -> str:
        return describe(self)


def describe(p: Packet, limit: int = 160) -> str:
    """One readable line for a report."""
    text = escape(p.payload)
    if len(text) > limit:
        text = f"{text[:limit]}...(+{len(p.payload)} bytes in all)"
    return f'{op_name(p.op)} rid={p.req_id} tx={p.tx_id} len={len(p.payload)} "{text}"'


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
