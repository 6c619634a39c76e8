#!/usr/bin/env python3
"""Socket throughput of oxsd against the OCaml oxenstored, in one run.

For each daemon (fresh, Debian's config, both started by oxsd.diff.daemons):
N XS_WRITE then N XS_READ requests over one unix-socket connection, keys
cycled over 500 nodes, with 1 and with 8 requests in flight.  Prints ops/s,
the daemon's CPU time per request (from /proc/<pid>/stat) and the ratio
oxsd/ocaml; pinned, repeated and warmed up as _common.py describes.
Bounded: N requests per measurement (more until 1 % CPU resolution), and at
most --max-seconds.

    python3 bench/bench_socket.py                 # N=20000
    python3 bench/bench_socket.py -n 5000 --no-access-log
    python3 bench/bench_socket.py --python "$(tools/setup-pypy.sh)"   # + oxsd on pypy3
"""
from __future__ import annotations

import socket
import sys
import time

from _common import (KEYS, XS_WRITE, DaemonSettings, Runtime, Target, pump, requests,
                     start_runtime, stop, throughput_main)


def socket_io(sock: socket.socket):
    """(send, recv) for the pump on a connected socket."""
    return sock.sendall, lambda: sock.recv(1 << 16)


def connect(daemon) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(daemon.socket_path)
    return sock


class SocketTarget(Target):
    """A daemon with its 500 nodes; each measurement on a fresh connection."""

    def __init__(self, daemon) -> None:
        super().__init__(daemon)
        with connect(daemon) as sock:  # create the nodes first
            pump(*socket_io(sock), requests(XS_WRITE, KEYS), 8, time.monotonic() + 60)

    def io(self):
        sock = connect(self.daemon)
        return (*socket_io(sock), sock.close)


def open_target(rt: Runtime, args) -> SocketTarget:
    daemon = start_runtime(rt, DaemonSettings(access_log=not args.no_access_log))
    try:
        return SocketTarget(daemon)
    except BaseException:
        stop(daemon)
        raise


def main(argv: list[str] | None = None) -> int:
    return throughput_main(__doc__, 20000, "unix socket", open_target, argv, "bench_socket")


if __name__ == "__main__":
    sys.exit(main())
