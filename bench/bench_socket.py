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
import os
import shutil
import socket
import struct
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from oxsd.diff.daemons import (DaemonError, DaemonSettings, make_scratch,  # noqa: E402
                               start_daemon)

HDR = struct.Struct("<IIII")
XS_READ, XS_WRITE, XS_ERROR = 2, 11, 16
KEYS = 500
CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def requests(op: int, n: int) -> list[bytes]:
    out = []
    for i in range(n):
        path = b"/bench/k%d\0" % (i % KEYS)
        payload = path + b"value-%d" % i if op == XS_WRITE else path
        out.append(HDR.pack(op, i & 0xFFFFFFFF, 0, len(payload)) + payload)
    return out


def drive(sock: socket.socket, reqs: list[bytes], depth: int, deadline: float) -> tuple[int, int]:
    """Keep `depth` requests in flight; return (replies, errors)."""
    sent = done = errors = 0
    buf = bytearray()
    first = b"".join(reqs[:depth])
    sock.sendall(first)
    sent = min(depth, len(reqs))
    while done < sent:
        data = sock.recv(1 << 16)
        if not data:
            raise ConnectionError("daemon closed the connection")
        buf += data
        pos, got = 0, 0
        while len(buf) - pos >= 16:
            op, _rid, _tx, length = HDR.unpack_from(buf, pos)
            if len(buf) - pos < 16 + length:
                break
            errors += op == XS_ERROR
            pos += 16 + length
            got += 1
        del buf[:pos]
        done += got
        if got and sent < len(reqs) and time.monotonic() < deadline:
            more = reqs[sent:sent + got]
            sock.sendall(b"".join(more))
            sent += len(more)
    return done, errors


def measure(daemon, op: int, n: int, depth: int, max_seconds: float) -> dict:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(daemon.socket_path)
    try:
        reqs = requests(op, n)
        drive(sock, reqs[:200], depth, time.monotonic() + max_seconds)  # warm-up
        cpu0, t0 = cpu_seconds(daemon.pid), time.perf_counter()
        done, errors = drive(sock, reqs, depth, time.monotonic() + max_seconds)
        elapsed, cpu = time.perf_counter() - t0, cpu_seconds(daemon.pid) - cpu0
    finally:
        sock.close()
    return {"ops": done / elapsed, "cpu_us": cpu / done * 1e6, "n": done, "errors": errors}


def bench_kind(kind: str, args) -> dict | str:
    scratch = make_scratch(f"oxb-{kind[:2]}-")
    settings = DaemonSettings(access_log=not args.no_access_log)
    try:
        daemon = start_daemon(kind, scratch, settings=settings)
    except DaemonError as e:
        shutil.rmtree(scratch, ignore_errors=True)
        return f"cannot start: {str(e).splitlines()[0]}"
    results = {}
    try:
        drive_setup = requests(XS_WRITE, KEYS)  # create the nodes first
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.connect(daemon.socket_path)
        drive(sock, drive_setup, 8, time.monotonic() + 60)
        sock.close()
        for op, name in ((XS_WRITE, "WRITE"), (XS_READ, "READ")):
            for depth in (1, 8):
                results[(name, depth)] = measure(daemon, op, args.n, depth, args.max_seconds)
    except (OSError, ConnectionError) as e:
        results = f"failed: {e}"
    finally:
        daemon.stop()
        shutil.rmtree(scratch, ignore_errors=True)
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

    print(f"unix socket, {args.n} requests per row, keys cycled over {KEYS} nodes, "
          f"access log {'off' if args.no_access_log else 'on'}")
    for kind, res in results.items():
        if isinstance(res, str):
            print(f"  {kind}: {res}")
    head = f"{'op':<6} {'in flight':>9}"
    for kind in kinds:
        head += f" {kind + ' ops/s':>12} {kind + ' cpu/op':>13}"
    if kinds == ["ocaml", "oxsd"]:
        head += f" {'oxsd/ocaml':>10}"
    print(head)
    for name in ("WRITE", "READ"):
        for depth in (1, 8):
            row = f"{name:<6} {depth:>9}"
            ops = {}
            for kind in kinds:
                res = results[kind]
                r = res.get((name, depth)) if isinstance(res, dict) else None
                if r is None:
                    row += f" {'n/a':>12} {'n/a':>13}"
                    continue
                ops[kind] = r["ops"]
                flag = f" ({r['errors']} errors)" if r["errors"] else ""
                row += f" {r['ops']:>12,.0f} {r['cpu_us']:>10.1f} us{flag}"
            if kinds == ["ocaml", "oxsd"]:
                ratio = ops["oxsd"] / ops["ocaml"] if len(ops) == 2 else None
                row += f" {ratio:>10.2f}" if ratio else f" {'-':>10}"
            print(row)
    return 0 if all(isinstance(r, dict) for r in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
