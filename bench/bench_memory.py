#!/usr/bin/env python3
"""Daemon memory, oxsd against the OCaml oxenstored, in one run.

For each daemon (fresh, Debian's config, started by oxsd.diff.daemons): the
resident set size (VmRSS from /proc/<pid>/status) after start-up, after
writing N nodes (default 50000: /bench/d<i // 100>/k<i>, 32-byte values,
pipelined over one socket), after G socket connections each holding a
watch (default 200), and after the nodes are removed again.  Prints MiB per
stage and the ratio oxsd/ocaml, and the daemon's CPU for the writes (what a
smaller PyPy nursery costs).

    python3 bench/bench_memory.py                 # N=50000, G=200
    python3 bench/bench_memory.py -n 200000 --kinds oxsd
    python3 bench/bench_memory.py --python "$(tools/setup-pypy.sh)"
    PYPY_GC_NURSERY=1M PYPY_GC_MAJOR_COLLECT=1.4 python3 bench/bench_memory.py \
        --kinds ocaml --python "$(tools/setup-pypy.sh)"      # pypy's GC knobs
"""
from __future__ import annotations

import argparse
import os
import socket
import sys
import time

from _common import (HDR, DaemonError, DaemonSettings, Runtime, add_runtime_args,
                     compared_to_ocaml, cpu_seconds, pin_client, print_summary, pump, rss_kib, runtimes, start_runtime, stop)

XS_WATCH, XS_RM, XS_WRITE = 4, 13, 11
STAGES = ("started", "nodes", "watches", "removed")
# PyPy's GC settings, passed to the daemon through the environment (shown in the title)
GC_KNOBS = ("PYPY_GC_NURSERY", "PYPY_GC_MAJOR_COLLECT", "PYPY_GC_MAX", "PYPY_GC_INCREMENT_STEP")


def packet(op: int, rid: int, payload: bytes) -> bytes:
    return HDR.pack(op, rid, 0, len(payload)) + payload


def connect(path: str) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(path)
    return sock


def bench_kind(rt: Runtime, args) -> dict | str:
    try:
        daemon = start_runtime(rt, DaemonSettings(access_log=False), prefix="oxm")
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
            cpu0 = cpu_seconds(daemon.pid)
            done, errors = pump(*io, writes, 16, time.monotonic() + 600)
            out["cpu_nodes"] = cpu_seconds(daemon.pid) - cpu0
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
    add_runtime_args(ap, repeat=False)
    args = ap.parse_args(argv)
    rts = runtimes(args)
    pin_client()
    results = {rt.label: bench_kind(rt, args) for rt in rts}
    knobs = " ".join(f"{k}={os.environ[k]}" for k in GC_KNOBS if k in os.environ)
    print(f"resident memory (VmRSS), {args.n} nodes of 32-byte values, "
          f"{args.watchers} watching connections" + (f", {knobs}" if knobs else ""))
    for label, res in results.items():
        if isinstance(res, str):
            print(f"  {label}: {res}")
    labels = list(results)
    others = [lb for lb in compared_to_ocaml(labels) if isinstance(results[lb], dict)]
    if not isinstance(results.get("ocaml"), dict):
        others = []
    head = f"{'stage':<9}" + "".join(f" {label + ' MiB':>14}" for label in labels)
    print(head + "".join(f" {label + '/ocaml':>16}" for label in others))
    ratios = []
    for stage in STAGES:
        row = f"{stage:<9}"
        for label in labels:
            res = results[label]
            row += f" {res[stage] / 1024:>14.1f}" if isinstance(res, dict) else f" {'n/a':>14}"
        for label in others:
            r = results[label][stage] / results["ocaml"][stage]
            row += f" {r:>16.2f}"
            ratios.append((f"{label}/ocaml", r, f"{stage}, {results[label][stage] / 1024:.1f} MiB"))
        print(row)
    print(f"{'cpu s':<9}" + "".join(
        f" {results[lb]['cpu_nodes']:>14.2f}" if isinstance(results[lb], dict) else f" {'n/a':>14}"
        for lb in labels) + f"   (daemon CPU writing the {args.n} nodes)")
    print_summary("bench_memory", ratios, higher_is_worse=True)
    return 0 if all(isinstance(r, dict) for r in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
