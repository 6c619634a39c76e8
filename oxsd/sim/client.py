"""XenStore clients for tests and tooling: wire protocol over any byte transport, and the unix socket.

`XsClient` matches replies to requests by req_id and queues WATCH_EVENTs in
`.events` as (path, token) strings; the op helpers (`read`, `write`,
`directory`, ..., `control`) raise `XsError(name)` on an XS_ERROR reply.
`send()` / `recv_reply()` allow pipelining.  `SocketClient` speaks it over
the daemon's unix socket; `oxsd.sim.guest.RingClient` over a ring page.

Strings given to the helpers are UTF-8 encoded, bytes pass unchanged.
Values come back as bytes (READ, CONTROL); names (DIRECTORY, GET_PERMS,
event paths and tokens) as str decoded with surrogateescape, so nothing is
lost.  This is the shape of the reference's xensim clients, so a test can
run against either.
"""
from __future__ import annotations

import itertools
import math
import select
import socket
import time
from typing import Optional, Union

from ..xb.op import Op
from ..xb.packet import HEADER

__all__ = ["XsError", "XsClient", "SocketClient", "wait_readable"]

Data = Union[str, bytes]


def wait_readable(sock: socket.socket, timeout: Optional[float]) -> bool:
    """Wait up to `timeout` s (None: for ever) for input on `sock`.

    poll(2), not select(2): a test process with hundreds of guests has fd
    numbers above FD_SETSIZE (1024), which select() rejects.
    """
    p = select.poll()
    p.register(sock, select.POLLIN)
    ms = None if timeout is None else max(0, math.ceil(timeout * 1000))
    return bool(p.poll(ms))


class XsError(Exception):
    """An XS_ERROR reply; `.err` is the error name, e.g. 'ENOENT'."""

    def __init__(self, err: str, op: Optional[int] = None) -> None:
        super().__init__(err)
        self.err = err
        self.op = op


def _b(s: Data) -> bytes:
    return s.encode("utf-8", "surrogateescape") if isinstance(s, str) else bytes(s)


def _z(s: Data) -> bytes:
    return _b(s) + b"\0"


def _s(b: bytes) -> str:
    return b.decode("utf-8", "surrogateescape")


class XsClient:
    """Request/reply matching and the op helpers over an abstract byte transport."""

    timeout = 30.0  # seconds the op helpers wait for a reply

    def __init__(self) -> None:
        self._rbuf = bytearray()
        self._req_ids = itertools.count(1)
        self.events: list[tuple[str, str]] = []
        self.replies: dict[int, tuple[int, int, bytes]] = {}

    # -- transport (subclasses)
    def _send_bytes(self, data: bytes) -> None:
        raise NotImplementedError

    def _recv_bytes(self, timeout: float) -> bytes:
        """Newly received bytes, b'' when nothing came within `timeout`."""
        raise NotImplementedError

    def close(self) -> None:
        pass

    def __enter__(self) -> "XsClient":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- framing
    def send(self, op: int, payload: Data = b"", tx: int = 0,
             req_id: Optional[int] = None) -> int:
        """Queue one request; return its req_id."""
        if req_id is None:
            req_id = next(self._req_ids) & 0xFFFFFFFF
        body = _b(payload)
        self._send_bytes(HEADER.pack(int(op), req_id, tx, len(body)) + body)
        return req_id

    def _parse(self) -> None:
        buf = self._rbuf
        while len(buf) >= HEADER.size:
            op, rid, tx, ln = HEADER.unpack_from(buf)
            if len(buf) < HEADER.size + ln:
                return
            payload = bytes(buf[HEADER.size:HEADER.size + ln])
            del buf[:HEADER.size + ln]
            if op == Op.WATCH_EVENT:
                parts = payload.split(b"\0")
                self.events.append((_s(parts[0]), _s(parts[1]) if len(parts) > 1 else ""))
            else:
                self.replies[rid] = (op, tx, payload)

    def _pump(self, timeout: float) -> None:
        data = self._recv_bytes(timeout)
        if data:
            self._rbuf += data
            self._parse()

    def recv_reply(self, req_id: int, timeout: float = 30.0) -> tuple[int, int, bytes]:
        """(type, tx_id, payload) of the reply to `req_id`; TimeoutError after `timeout`."""
        deadline = time.monotonic() + timeout
        while req_id not in self.replies:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no reply to req_id {req_id}")
            self._pump(left)
        return self.replies.pop(req_id)

    def request(self, op: int, payload: Data = b"", tx: int = 0,
                timeout: Optional[float] = None) -> bytes:
        rid = self.send(op, payload, tx)
        rop, _tx, data = self.recv_reply(rid, self.timeout if timeout is None else timeout)
        if rop == Op.ERROR:
            raise XsError(_s(data.rstrip(b"\0")), op)
        if rop != op:
            raise RuntimeError(f"reply type {rop} to request type {int(op)}")
        return data

    def wait_watch(self, timeout: float = 10.0) -> Optional[tuple[str, str]]:
        """Pop the oldest watch event, waiting up to `timeout`; None if none came."""
        deadline = time.monotonic() + timeout
        while not self.events:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            self._pump(left)
        return self.events.pop(0)

    # -- operations
    def read(self, path: Data, tx: int = 0) -> bytes:
        return self.request(Op.READ, _z(path), tx)

    def write(self, path: Data, value: Data, tx: int = 0) -> None:
        self.request(Op.WRITE, _z(path) + _b(value), tx)

    def mkdir(self, path: Data, tx: int = 0) -> None:
        self.request(Op.MKDIR, _z(path), tx)

    def rm(self, path: Data, tx: int = 0) -> None:
        self.request(Op.RM, _z(path), tx)

    def directory(self, path: Data, tx: int = 0) -> list[str]:
        data = self.request(Op.DIRECTORY, _z(path), tx)
        return [_s(x) for x in data.split(b"\0") if x]

    def get_perms(self, path: Data, tx: int = 0) -> list[str]:
        data = self.request(Op.GET_PERMS, _z(path), tx)
        return [_s(x) for x in data.split(b"\0") if x]

    def set_perms(self, path: Data, perms: list[Data], tx: int = 0) -> None:
        self.request(Op.SET_PERMS, _z(path) + b"".join(_z(p) for p in perms), tx)

    def watch(self, path: Data, token: Data) -> None:
        self.request(Op.WATCH, _z(path) + _z(token))

    def unwatch(self, path: Data, token: Data) -> None:
        self.request(Op.UNWATCH, _z(path) + _z(token))

    def transaction_start(self) -> int:
        return int(self.request(Op.TRANSACTION_START, b"\0").rstrip(b"\0"))

    def transaction_end(self, tx: int, commit: bool = True) -> None:
        self.request(Op.TRANSACTION_END, b"T\0" if commit else b"F\0", tx)

    def introduce(self, domid: int, mfn: int, port: int) -> None:
        self.request(Op.INTRODUCE, _z(str(domid)) + _z(str(mfn)) + _z(str(port)))

    def release(self, domid: int) -> None:
        self.request(Op.RELEASE, _z(str(domid)))

    def resume(self, domid: int) -> None:
        self.request(Op.RESUME, _z(str(domid)))

    def get_domain_path(self, domid: int) -> str:
        return _s(self.request(Op.GET_DOMAIN_PATH, _z(str(domid))).rstrip(b"\0"))

    def is_introduced(self, domid: int) -> bool:
        return self.request(Op.IS_INTRODUCED, _z(str(domid))).rstrip(b"\0") == b"T"

    def set_target(self, domid: int, target: int) -> None:
        self.request(Op.SET_TARGET, _z(str(domid)) + _z(str(target)))

    def reset_watches(self) -> None:
        self.request(Op.RESET_WATCHES, b"")

    def control(self, *args: Data) -> bytes:
        return self.request(Op.DEBUG, b"".join(_z(a) for a in args))


class SocketClient(XsClient):
    """A toolstack client on the daemon's unix socket (every socket client is dom0)."""

    def __init__(self, path: str, timeout: float = 10.0) -> None:
        super().__init__()
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self.sock.settimeout(timeout)
            self.sock.connect(path)
            self.sock.settimeout(None)
        except BaseException:
            self.sock.close()
            raise

    def fileno(self) -> int:
        return self.sock.fileno()

    def _send_bytes(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _recv_bytes(self, timeout: float) -> bytes:
        if not wait_readable(self.sock, timeout):
            return b""
        data = self.sock.recv(65536)
        if not data:
            raise ConnectionError("xenstored closed the connection")
        return data

    def close(self) -> None:
        self.sock.close()
