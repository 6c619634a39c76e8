"""A recording unix-socket proxy in front of any xenstored.

    oxsd-diff record --listen /tmp/p.sock --upstream /var/run/xenstored/socket -o t.scn

Clients connect to ``--listen``; each gets its own connection to
``--upstream`` and every byte is forwarded unchanged both ways.  The traffic
is written as a scenario (``oxsd.trace.TraceWriter``: the ``-T`` format), so
``oxsd-diff t.scn`` replays it on oxsd and the reference.  Connections are
named ``c1``, ``c2``, ... in accept order.  Bytes left over when a side
closes (an incomplete packet) are recorded as ``raw``.

Single-threaded: one selector loop, non-blocking sockets, per-direction
output buffers (a side that stops reading never blocks the other clients).
SIGTERM/SIGINT end it; the trace is completed on exit.
"""
from __future__ import annotations

import errno
import os
import selectors
import signal
import socket
import time
from dataclasses import dataclass, field
from typing import IO, Optional

from ..trace import TraceWriter
from .wire import PacketReader

__all__ = ["RecordingProxy", "serve"]


@dataclass
class _Side:
    sock: socket.socket
    reader: PacketReader = field(default_factory=PacketReader)
    outbuf: bytearray = field(default_factory=bytearray)  # bytes to write to this side
    eof: bool = False


@dataclass
class _Pair:
    name: str
    client: _Side
    upstream: _Side
    closing: bool = False


class RecordingProxy:
    """Forward unix-socket connections to `upstream`, recording them."""

    def __init__(self, listen: str, upstream: str, out: IO[str],
                 header: list[str] | None = None) -> None:
        self.upstream = upstream
        self.writer = TraceWriter(out, header or [
            "# recorded by oxsd-diff record (a scenario: replay with oxsd-diff)",
            f"# upstream: {upstream}",
            "# replies and watch events are the '<-' comments"])
        if os.path.exists(listen):
            os.unlink(listen)
        self.lsock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.lsock.bind(listen)
        self.lsock.listen(16)
        self.lsock.setblocking(False)
        self.listen_path = listen
        self.sel = selectors.DefaultSelector()
        self.sel.register(self.lsock, selectors.EVENT_READ, None)
        self.pairs: list[_Pair] = []
        self.count = 0
        self.stopping = False

    # ------------------------------------------------------------ plumbing
    def _connect_upstream(self) -> socket.socket:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        deadline = time.monotonic() + 5.0
        while True:  # oxenstored's backlog is 1: retry while it is busy
            try:
                s.connect(self.upstream)
                break
            except (BlockingIOError, InterruptedError):
                if time.monotonic() > deadline:
                    s.close()
                    raise
                time.sleep(0.002)
        s.setblocking(False)
        return s

    def _accept(self) -> None:
        try:
            csock, _ = self.lsock.accept()
        except BlockingIOError:
            return
        csock.setblocking(False)
        try:
            usock = self._connect_upstream()
        except OSError as e:
            self.writer.comment(f"cannot connect to upstream: {e}")
            csock.close()
            return
        self.count += 1
        pair = _Pair(f"c{self.count}", _Side(csock), _Side(usock))
        self.pairs.append(pair)
        self.writer.open_conn(pair.name)
        self._update(pair)

    def _update(self, pair: _Pair) -> None:
        for side in (pair.client, pair.upstream):
            events = 0 if side.eof else selectors.EVENT_READ
            if side.outbuf:
                events |= selectors.EVENT_WRITE
            key = self.sel.get_map().get(side.sock.fileno()) if side.sock.fileno() >= 0 else None
            if events and key is None:
                self.sel.register(side.sock, events, pair)
            elif events and key is not None:
                self.sel.modify(side.sock, events, pair)
            elif not events and key is not None:
                self.sel.unregister(side.sock)

    def _recv(self, sock: socket.socket) -> Optional[bytes]:
        try:
            data = sock.recv(65536)
        except BlockingIOError:
            return b""
        except OSError as e:
            if e.errno in (errno.ECONNRESET, errno.EPIPE):
                return None
            raise
        return data or None

    def _flush(self, side: _Side) -> None:
        while side.outbuf:
            try:
                n = side.sock.send(side.outbuf)
            except BlockingIOError:
                return
            except OSError:
                side.outbuf.clear()  # the peer is gone; its EOF ends the pair
                return
            del side.outbuf[:n]

    def _on_readable(self, pair: _Pair, from_client: bool) -> None:
        src, dst = (pair.client, pair.upstream) if from_client else (pair.upstream, pair.client)
        data = self._recv(src.sock)
        if data == b"":
            return
        if data is None:
            src.eof = True
            self._end(pair, by="client" if from_client else "daemon")
            return
        dst.outbuf += data
        for p in src.reader.feed(data):
            if from_client:
                self.writer.request(pair.name, p.op, p.tx_id, p.req_id, p.payload)
            else:
                self.writer.reply(pair.name, p.op, p.tx_id, p.req_id, p.payload)
        self._flush(dst)

    def _end(self, pair: _Pair, by: str) -> None:
        """One side closed: record leftovers, deliver what is buffered, close both."""
        if pair.closing:
            return
        pair.closing = True
        if pair.client.reader.leftover:
            self.writer.raw(pair.name, pair.client.reader.leftover, "incomplete packet")
        if pair.upstream.reader.leftover:
            self.writer.comment(f"{pair.name} <- incomplete packet: "
                                f"{pair.upstream.reader.leftover!r}")
        self.writer.close(pair.name, by)
        for side in (pair.client, pair.upstream):
            # best effort: hand over what is still buffered before closing
            side.sock.setblocking(True)
            side.sock.settimeout(1.0)
            try:
                side.sock.sendall(side.outbuf)
            except OSError:
                pass
            try:
                self.sel.unregister(side.sock)
            except (KeyError, ValueError):
                pass
            side.sock.close()
        self.pairs.remove(pair)

    # ------------------------------------------------------------ loop
    def serve(self, until: float | None = None) -> None:
        """Run until stop() (or a signal handler sets `stopping`)."""
        while not self.stopping:
            if until is not None and time.monotonic() > until:
                break
            for key, mask in self.sel.select(0.2):
                if key.data is None:
                    self._accept()
                    continue
                pair: _Pair = key.data
                if pair.closing:
                    continue
                from_client = key.fileobj is pair.client.sock
                side = pair.client if from_client else pair.upstream
                if mask & selectors.EVENT_WRITE:
                    self._flush(side)
                if mask & selectors.EVENT_READ and not pair.closing:
                    self._on_readable(pair, from_client)
                if not pair.closing:
                    self._update(pair)
        self.close()

    def stop(self) -> None:
        self.stopping = True

    def close(self) -> None:
        for pair in list(self.pairs):
            self._end(pair, by="client")
        self.writer.finish()
        try:
            self.sel.unregister(self.lsock)
        except (KeyError, ValueError):
            pass
        self.lsock.close()
        try:
            os.unlink(self.listen_path)
        except OSError:
            pass
        self.sel.close()


def serve(listen: str, upstream: str, output: str) -> int:
    """The ``record`` subcommand: proxy until SIGTERM/SIGINT."""
    if not os.path.exists(upstream):
        print(f"upstream socket {upstream} does not exist")
        return 2
    with open(output, "w", buffering=1, encoding="ascii", errors="backslashreplace") as out:
        proxy = RecordingProxy(listen, upstream, out)

        def stop(*_):
            proxy.stop()
        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        print(f"recording: {listen} -> {upstream} into {output}", flush=True)
        proxy.serve()
    return 0
