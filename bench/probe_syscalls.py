#!/usr/bin/env python3
"""System calls, context switches and CPU per request, of each daemon and of the client (perf stat).

A development tool for the depth-1 rows, where the two processes' turn-taking
matters as much as either one's CPU: for each runtime a fresh daemon serves
one row of bench_ring.py (or bench_socket.py), warmed up, while `perf stat`
counts `raw_syscalls:sys_enter`, context switches and task-clock on the
daemon and on this process (the client), and /proc gives the daemon's user
and system time.  One run each, in turn; needs perf(1) with tracepoints.

    python3 bench/probe_syscalls.py --row READ-1
    python3 bench/probe_syscalls.py --row WRITE-1 --source /tmp/other-tree --python pypy3
"""
from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time

import bench_ring
import bench_socket
from _common import CLK_TCK, XS_READ, XS_WRITE, Runtime, pin_client, pump, requests, warm_up

EVENTS = "raw_syscalls:sys_enter,context-switches,task-clock"


def perf_stat(pid: int) -> subprocess.Popen:
    return subprocess.Popen(["perf", "stat", "-x,", "-e", EVENTS, "-p", str(pid)],
                            stderr=subprocess.PIPE, text=True)


def perf_counts(proc: subprocess.Popen) -> dict:
    proc.send_signal(signal.SIGINT)
    counts = {}
    for line in proc.communicate()[1].splitlines():
        fields = line.split(",")
        if len(fields) > 3 and fields[0].replace(".", "").isdigit():
            counts[fields[2]] = float(fields[0])
    return counts


def cpu_ticks(pid: int) -> tuple[int, int]:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]), int(fields[12])  # utime, stime


def per_request(counts: dict, n: int) -> str:
    return (f"syscalls {counts.get('raw_syscalls:sys_enter', 0) / n:5.2f}  "
            f"cs {counts.get('context-switches', 0) / n:4.2f}  "
            f"cpu {counts.get('task-clock', 0) * 1e3 / n:6.1f} us")  # task-clock is in ms


def probe(rt: Runtime, args: argparse.Namespace, op: int, depth: int) -> None:
    bench = bench_ring if args.transport == "ring" else bench_socket
    target = bench.open_target(rt, args)  # a started daemon, its nodes written
    try:
        send, recv, close = target.io()
        try:
            pid = target.daemon.pid
            warm_up(send, recv, op, args.jit_warmup if rt.jit else args.warmup, depth,
                    target.prefix)
            on_daemon, on_client = perf_stat(pid), perf_stat(os.getpid())
            time.sleep(0.5)  # perf attaches
            ticks0 = cpu_ticks(pid)
            started = time.perf_counter()
            pump(send, recv, requests(op, args.n, target.prefix), depth, time.monotonic() + 120)
            elapsed = time.perf_counter() - started
            ticks1 = cpu_ticks(pid)
            daemon_counts, client_counts = perf_counts(on_daemon), perf_counts(on_client)
        finally:
            close()
    finally:
        target.close()
    user, system = ((b - a) / CLK_TCK / args.n * 1e6 for a, b in zip(ticks0, ticks1))
    print(f"{rt.label:16} {args.n / elapsed:8,.0f} ops/s"
          f" | daemon {per_request(daemon_counts, args.n)} (user {user:.1f}, sys {system:.1f})"
          f" | client {per_request(client_counts, args.n)}", flush=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--row", default="READ-1", help="OP-DEPTH, e.g. WRITE-1, READ-8")
    ap.add_argument("--transport", choices=("ring", "socket"), default="ring")
    ap.add_argument("-n", type=int, default=20000)
    ap.add_argument("--warmup", type=int, default=3000)
    ap.add_argument("--jit-warmup", type=int, default=12000)
    ap.add_argument("--kinds", default="ocaml,oxsd")
    ap.add_argument("--python", action="append", default=[], metavar="PATH")
    ap.add_argument("--source", action="append", default=[], metavar="DIR")
    args = ap.parse_args()
    args.no_access_log = False  # the benches' default: Debian's access log on
    name, depth = args.row.split("-")
    op = XS_WRITE if name == "WRITE" else XS_READ
    pin_client()
    rts = [Runtime(kind, kind) for kind in args.kinds.split(",") if kind]
    rts += [Runtime(f"oxsd-{os.path.basename(p)}", "oxsd", p, jit="pypy" in p) for p in args.python]
    rts += [Runtime(f"oxsd@{os.path.basename(d)}", "oxsd", source=d) for d in args.source]
    for rt in rts:
        probe(rt, args, op, int(depth))
    return 0


if __name__ == "__main__":
    sys.exit(main())
