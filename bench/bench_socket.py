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

import argparse
import socket
import sys
import time

from _common import (KEYS, OPS_BY_DEPTH, XS_READ, XS_WRITE, DaemonError, DaemonSettings,
                     measure, print_table, pump, requests, start, stop)


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
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-n", type=int, default=20000, help="requests per measurement (20000)")
    ap.add_argument("--max-seconds", type=float, default=30.0,
                    help="cut a measurement short after this long (30)")
    ap.add_argument("--no-access-log", action="store_true",
                    help="start both daemons with --no-access-log")
    ap.add_argument("--kinds", default="ocaml,oxsd")
    args = ap.parse_args(argv)
    kinds = args.kinds.split(",")
    results = {kind: bench_kind(kind, args) for kind in kinds}
    print_table(f"unix socket, {args.n} requests per row, keys cycled over {KEYS} nodes, "
                f"access log {'off' if args.no_access_log else 'on'}", kinds, results, OPS_BY_DEPTH)
    return 0 if all(isinstance(r, dict) for r in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
