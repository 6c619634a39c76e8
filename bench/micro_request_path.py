#!/usr/bin/env python3
"""Daemon CPU per request without the kernel's wake-ups: the whole loop, in one thread.

A development tool, not a benchmark against the original.  oxsd is built
in this process as `oxenstored` builds it (Debian's config, access log on,
a simulated host), one client socket is added as a connection, and for
each request the client's bytes are written into the socket and one
`Scheduler.main_loop` iteration serves them; the reply is read back before
the next request (depth 1) or after 8 (depth 8).  Every system call the
daemon makes is still made (epoll, recv, send, the log's write), but nobody
sleeps, so the figure is the daemon's own cost per request, with far less
noise than a two-process bench.  Ring rows use a simulated guest of the
same process (its event channel notified as a guest would).

    python3 bench/micro_request_path.py                 # every row, best of 7
    python3 bench/micro_request_path.py --rows socket-WRITE-1 --repeat 15

Only differences between two trees measured the same way mean anything.
"""
from __future__ import annotations

import argparse
import os
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, List

# OXSD_SOURCE: measure the oxsd of another source tree (a before/after of two commits).
sys.path.insert(0, os.environ.get("OXSD_SOURCE") or str(Path(__file__).resolve().parents[1]))

from oxsd.diff.daemons import DaemonSettings, prepare_oxsd  # noqa: E402
from oxsd.parse_arg import parse  # noqa: E402
from oxsd.sim.guest import Guest, Sim  # noqa: E402
from oxsd import xenstored as X  # noqa: E402
from oxsd.logging_ import AccessLog  # noqa: E402

import struct  # noqa: E402

HDR = struct.Struct("<IIII")
XS_READ, XS_WRITE, XS_INTRODUCE, XS_MKDIR, XS_SET_PERMS = 2, 11, 8, 12, 14
KEYS = 500
ROWS = [f"{t}-{op}-{d}" for t in ("socket", "ring") for op in ("WRITE", "READ") for d in (1, 8)]


def request(op: int, rid: int, payload: bytes) -> bytes:
    return HDR.pack(op, rid, 0, len(payload)) + payload


def requests(op: int, n: int, prefix: bytes) -> List[bytes]:
    out = []
    for i in range(n):
        key = prefix + b"/k%d" % (i % KEYS)
        payload = key + b"\0" + b"v%d" % i if op == XS_WRITE else key + b"\0"
        out.append(request(op, i, payload))
    return out


class InProcessDaemon:
    def __init__(self, scratch: Path) -> None:
        sim_dir = scratch / "sim"
        conf, rundir = prepare_oxsd(scratch, sim_dir, DaemonSettings(access_log=True))
        os.environ["XENSTORED_RUNDIR"] = str(rundir / "xenstored")
        argv = ["oxenstored", "--no-fork", "--config-file", str(conf), "--sim", str(sim_dir),
                "--disable-socket"]
        cf = parse(argv)
        settings = X.load_settings(cf)
        self.daemon = X.build_daemon(cf, settings, None, argv)
        self.daemon.set_access_log(AccessLog(settings, True, post_rotate=lambda: None))
        self.sched = self.daemon.scheduler
        self.client, server = socket.socketpair()
        self.daemon.cons.add_anonymous(server)
        self.sim = Sim(str(sim_dir))

    def step(self) -> None:
        self.sched.main_loop()

    def exchange(self, send: Callable[[bytes], object], received: Callable[[], bytes],
                 batch: List[bytes]) -> None:
        """Send a batch of requests, run loop iterations until every reply is back."""
        send(b"".join(batch))
        got = 0
        buf = b""
        while got < len(batch):
            self.step()
            buf += received()
            while len(buf) >= 16:
                _, _, _, n = HDR.unpack_from(buf)
                if len(buf) < 16 + n:
                    break
                buf = buf[16 + n:]
                got += 1

    def socket_io(self) -> Callable[[List[bytes]], None]:
        c = self.client

        def received() -> bytes:
            try:
                return c.recv(1 << 20, socket.MSG_DONTWAIT)
            except BlockingIOError:
                return b""
        return lambda batch: self.exchange(c.sendall, received, batch)

    def guest(self, domid: int) -> Guest:
        g = Guest(self.sim, domid)
        exchange = self.socket_io()
        home = b"/local/domain/%d" % domid
        exchange([request(XS_MKDIR, 1, home + b"\0")])
        exchange([request(XS_SET_PERMS, 2, home + b"\0n%d\0r0\0" % domid)])
        exchange([request(XS_INTRODUCE, 3, b"%d\0%d\0%d\0" % (domid, g.mfn, g.port))])
        return g

    def ring_io(self, g: Guest) -> Callable[[List[bytes]], None]:
        client = g.client
        return lambda batch: self.exchange(client._send_bytes, client.ring.read_rsp, batch)


def measure(exchange: Callable, reqs: List[bytes], depth: int) -> float:
    t0 = time.perf_counter()
    for i in range(0, len(reqs), depth):
        exchange(reqs[i:i + depth])
    return (time.perf_counter() - t0) / len(reqs)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", type=int, default=4000)
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument("--rows", default=",".join(ROWS))
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="oxm-") as tmp:
        d = InProcessDaemon(Path(tmp))
        sock_io = d.socket_io()
        measure(sock_io, requests(XS_WRITE, KEYS, b"/bench"), 8)
        ring_io = None
        if "ring" in args.rows:
            ring_io = d.ring_io(d.guest(5))
            measure(ring_io, requests(XS_WRITE, KEYS, b"bench"), 8)
        print(f"{'row':18} {'best us':>8} {'median':>8}")
        for row in args.rows.split(","):
            transport, name, depth = row.split("-")
            op = XS_WRITE if name == "WRITE" else XS_READ
            io, prefix = (sock_io, b"/bench") if transport == "socket" else (ring_io, b"bench")
            reqs = requests(op, args.n, prefix)
            measure(io, reqs[:500], int(depth))
            runs = [measure(io, reqs, int(depth)) * 1e6 for _ in range(args.repeat)]
            print(f"{row:18} {min(runs):8.2f} {statistics.median(runs):8.2f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
