#!/usr/bin/env python3
"""Socket throughput of oxsd against the OCaml oxenstored, in one run.

For each daemon (fresh, Debian's config, both started by oxsd.diff.daemons):
N XS_WRITE then N XS_READ requests over one unix-socket connection, keys
cycled over 500 nodes, with 1 and with 8 requests in flight.  Prints ops/s,
the daemon's CPU time per request (from /proc/<pid>/stat) and the ratio
oxsd/ocaml.  Bounded: N requests per measurement, and at most --max-seconds.

    python3 bench/bench_socket.py                 # N=20000
    python3 bench/bench_socket.py -n 5000 --no-access-log
"""
from __future__ import annotations

import socket
import sys
import time

from _common import (KEYS, XS_READ, XS_WRITE, DaemonError, DaemonSettings,
                     measure, pump, requests, start, stop, throughput_main)


def socket_io(sock: socket.socket):
    """(send, recv) for the pump on a connected socket."""
    return sock.sendall, lambda: sock.recv(1 << 16)


def connect(daemon) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(daemon.socket_path)
    return sock


def bench_kind(kind: str, args) -> dict | str:
    try:
        daemon = start(kind, DaemonSettings(access_log=not args.no_access_log))
    except DaemonError as e:
        return f"cannot start: {str(e).splitlines()[0]}"
    results = {}
    try:
        with connect(daemon) as sock:  # create the nodes first
            pump(*socket_io(sock), requests(XS_WRITE, KEYS), 8, time.monotonic() + 60)
        for op, name in ((XS_WRITE, "WRITE"), (XS_READ, "READ")):
            for depth in (1, 8):
                with connect(daemon) as sock:
                    results[(name, depth)] = measure(daemon, *socket_io(sock), op, args.n,
                                                     depth, args.max_seconds)
    except (OSError, ConnectionError) as e:
        results = f"failed: {e}"
    finally:
        stop(daemon)
    return results


def main(argv: list[str] | None = None) -> int:
    return throughput_main(__doc__, 20000, "unix socket", bench_kind, argv)


if __name__ == "__main__":
    sys.exit(main())
