#!/usr/bin/env python3
"""Daemon memory, oxsd against the OCaml oxenstored, in one run.

For each daemon (fresh, Debian's config, started by oxsd.diff.daemons): the
resident set size (VmRSS from /proc/<pid>/status) after start-up, after
writing N nodes (default 50000: /bench/d<i // 100>/k<i>, 32-byte values,
pipelined over one socket), after G socket connections each holding a
watch (default 200), and after the nodes are removed again.  Prints MiB per
stage and the ratio oxsd/ocaml.

    python3 bench/bench_memory.py                 # N=50000, G=200
    python3 bench/bench_memory.py -n 200000 --kinds oxsd
"""
from __future__ import annotations

import argparse
import socket
import sys
import time

from _common import HDR, DaemonError, DaemonSettings, pump, start, stop

XS_WATCH, XS_RM, XS_WRITE = 4, 13, 11
STAGES = ("started", "nodes", "watches", "removed")


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for {pid}")


def packet(op: int, rid: int, payload: bytes) -> bytes:
    return HDR.pack(op, rid, 0, len(payload)) + payload


def connect(path: str) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(path)
    return sock


def bench_kind(kind: str, args) -> dict | str:
    try:
        daemon = start(kind, DaemonSettings(access_log=False), prefix="oxm")
    except DaemonError as e:
        return f"cannot start: {str(e).splitlines()[0]}"
    out: dict = {}
    watchers: list[socket.socket] = []
    try:
        out["started"] = rss_kib(daemon.pid)
        value = b"v" * 32
        writes = [packet(XS_WRITE, i, b"/bench/d%d/k%d\0" % (i // 100, i) + value)
                  for i in range(args.n)]
        with connect(daemon.socket_path) as sock:
            io = (sock.sendall, lambda: sock.recv(1 << 16))
            done, errors = pump(*io, writes, 16, time.monotonic() + 600)
            if done != args.n or errors:
                raise RuntimeError(f"{done}/{args.n} writes answered, {errors} errors")
            out["nodes"] = rss_kib(daemon.pid)
            for i in range(args.watchers):
                w = connect(daemon.socket_path)
                watchers.append(w)
                pump(w.sendall, lambda w=w: w.recv(1 << 16),
                     [packet(XS_WATCH, 1, b"/bench/d%d\0tok%d\0" % (i % 100, i))], 1,
                     time.monotonic() + 30)
            out["watches"] = rss_kib(daemon.pid)
            pump(*io, [packet(XS_RM, 0, b"/bench\0")], 1, time.monotonic() + 120)
            out["removed"] = rss_kib(daemon.pid)
    except (OSError, RuntimeError, ConnectionError) as e:
        out = f"failed: {e!r}"
    finally:
        for w in watchers:
            w.close()
        stop(daemon)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-n", type=int, default=50000, help="nodes written (50000)")
    ap.add_argument("-g", "--watchers", type=int, default=200,
                    help="socket connections holding a watch (200)")
    ap.add_argument("--kinds", default="ocaml,oxsd")
    args = ap.parse_args(argv)
    kinds = args.kinds.split(",")
    results = {kind: bench_kind(kind, args) for kind in kinds}
    print(f"resident memory (VmRSS), {args.n} nodes of 32-byte values, "
          f"{args.watchers} watching connections")
    for kind, res in results.items():
        if isinstance(res, str):
            print(f"  {kind}: {res}")
    both = kinds == ["ocaml", "oxsd"] and all(isinstance(r, dict) for r in results.values())
    head = f"{'stage':<9}" + "".join(f" {kind + ' MiB':>10}" for kind in kinds)
    print(head + (f" {'oxsd/ocaml':>10}" if both else ""))
    for stage in STAGES:
        row = f"{stage:<9}"
        for kind in kinds:
            res = results[kind]
            row += f" {res[stage] / 1024:>10.1f}" if isinstance(res, dict) else f" {'n/a':>10}"
        if both:
            row += f" {results['oxsd'][stage] / results['ocaml'][stage]:>10.2f}"
        print(row)
    return 0 if all(isinstance(r, dict) for r in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
