#!/usr/bin/env python3
"""Ring throughput of oxsd against the OCaml oxenstored, in one run.

For each daemon (fresh, Debian's config, both started by oxsd.diff.daemons on
their own sim dir): one guest (domU 5, oxsd.sim's Guest: a ring page and an
event channel, notifying after each batch of requests and after reading
replies, as Linux's xenbus does) sends N XS_WRITE then N XS_READ requests
over its ring, keys cycled over 500 nodes of its own tree, with 1 and with 8
requests in flight.  Prints ops/s, the daemon's CPU time per request (from
/proc/<pid>/stat) and the ratio oxsd/ocaml.  Bounded: N requests per
measurement, and at most --max-seconds.

    python3 bench/bench_ring.py                   # N=10000
    python3 bench/bench_ring.py -n 3000 --kinds oxsd

The guest helpers here (`GuestFactory`) are shared by the other guest
benchmarks (bench_idle_guests.py, bench_lazy_latency.py).
"""
from __future__ import annotations

import argparse
import os
import shutil
import struct
import sys
import time
from pathlib import Path
from typing import Optional

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from oxsd.diff.daemons import (Daemon, DaemonError, DaemonSettings,  # noqa: E402
                               make_scratch, start_daemon)
from oxsd.sim.client import SocketClient  # noqa: E402
from oxsd.sim.guest import Guest, RingClient, Sim  # noqa: E402

HDR = struct.Struct("<IIII")
XS_READ, XS_WRITE, XS_ERROR = 2, 11, 16
KEYS = 500
CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process, in seconds (10 ms resolution)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def start(kind: str, settings: Optional[DaemonSettings] = None,
          prefix: str = "oxg") -> Daemon:
    """A fresh daemon of `kind` in a short scratch dir (its sim dir is SCRATCH/sim)."""
    scratch = make_scratch(f"{prefix}-{kind[:2]}-")
    try:
        return start_daemon(kind, scratch, settings=settings)
    except DaemonError:
        shutil.rmtree(scratch, ignore_errors=True)
        raise


def stop(daemon: Daemon) -> None:
    daemon.stop()
    shutil.rmtree(daemon.scratch, ignore_errors=True)


class GuestFactory:
    """Creates guests on a daemon's sim dir and introduces them through dom0's socket."""

    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon
        self.sim = Sim(str(daemon.sim_dir))
        self.d0 = SocketClient(daemon.socket_path)
        self.guests: list[Guest] = []

    def add(self, domid: int, lazy: bool = False, introduce: bool = True) -> Guest:
        """Domain `domid` with /local/domain/<domid> owned by it, introduced."""
        g = Guest(self.sim, domid, lazy=lazy)
        self.guests.append(g)
        if introduce:
            self.introduce(g)
        return g

    def introduce(self, g: Guest) -> None:
        home = f"/local/domain/{g.domid}"
        self.d0.mkdir(home)
        self.d0.set_perms(home, [f"n{g.domid}", "r0"])
        self.d0.introduce(g.domid, g.mfn, g.port)

    def close(self) -> None:
        for g in self.guests:
            g.close()
        self.guests.clear()
        self.d0.close()
        self.sim.close()


def requests(op: int, n: int, prefix: bytes = b"bench") -> list[bytes]:
    """n packets; paths are relative (the guest's own tree), keys cycled over KEYS."""
    out = []
    for i in range(n):
        path = b"%s/k%d\0" % (prefix, i % KEYS)
        payload = path + b"value-%d" % i if op == XS_WRITE else path
        out.append(HDR.pack(op, i & 0xFFFFFFFF, 0, len(payload)) + payload)
    return out


def drive(client: RingClient, reqs: list[bytes], depth: int,
          deadline: float) -> tuple[int, int]:
    """Keep `depth` requests in flight on a ring; return (replies, errors).

    Each batch of new requests is written with one notification; replies
    are read as they come (the client notifies after consuming them).
    """
    sent = done = errors = 0
    buf = bytearray()
    sent = min(depth, len(reqs))
    client._send_bytes(b"".join(reqs[:sent]))
    while done < sent:
        data = client._recv_bytes(5.0)
        if not data:
            raise TimeoutError(f"no reply from the daemon ({done}/{sent} answered)")
        buf += data
        pos = got = 0
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
            client._send_bytes(b"".join(more))
            sent += len(more)
    return done, errors


def measure(daemon: Daemon, client: RingClient, op: int, n: int, depth: int,
            max_seconds: float) -> dict:
    reqs = requests(op, n)
    drive(client, reqs[:200], depth, time.monotonic() + max_seconds)  # warm-up
    cpu0, t0 = cpu_seconds(daemon.pid), time.perf_counter()
    done, errors = drive(client, reqs, depth, time.monotonic() + max_seconds)
    elapsed, cpu = time.perf_counter() - t0, cpu_seconds(daemon.pid) - cpu0
    return {"ops": done / elapsed, "cpu_us": cpu / done * 1e6, "n": done, "errors": errors}


def bench_kind(kind: str, args) -> dict | str:
    try:
        daemon = start(kind, DaemonSettings(access_log=not args.no_access_log))
    except DaemonError as e:
        return f"cannot start: {str(e).splitlines()[0]}"
    results: dict = {}
    guests = GuestFactory(daemon)
    try:
        g = guests.add(5)
        drive(g.client, requests(XS_WRITE, KEYS), 8, time.monotonic() + 60)  # the nodes
        for op, name in ((XS_WRITE, "WRITE"), (XS_READ, "READ")):
            for depth in (1, 8):
                results[(name, depth)] = measure(daemon, g.client, op, args.n, depth,
                                                 args.max_seconds)
    except (OSError, TimeoutError, ConnectionError) as e:
        results = f"failed: {e!r}"
    finally:
        guests.close()
        stop(daemon)
    return results


def print_table(title: str, kinds: list[str], results: dict, rows) -> None:
    print(title)
    for kind, res in results.items():
        if isinstance(res, str):
            print(f"  {kind}: {res}")
    head = f"{'op':<6} {'in flight':>9}"
    for kind in kinds:
        head += f" {kind + ' ops/s':>12} {kind + ' cpu/op':>13}"
    both = kinds == ["ocaml", "oxsd"]
    if both:
        head += f" {'oxsd/ocaml':>10}"
    print(head)
    for name, depth in rows:
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
        if both:
            row += (f" {ops['oxsd'] / ops['ocaml']:>10.2f}" if len(ops) == 2
                    else f" {'-':>10}")
        print(row)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-n", type=int, default=10000, help="requests per measurement (10000)")
    ap.add_argument("--max-seconds", type=float, default=30.0,
                    help="cut a measurement short after this long (30)")
    ap.add_argument("--no-access-log", action="store_true",
                    help="start both daemons with --no-access-log")
    ap.add_argument("--kinds", default="ocaml,oxsd")
    args = ap.parse_args(argv)
    kinds = args.kinds.split(",")
    results = {kind: bench_kind(kind, args) for kind in kinds}
    print_table(f"ring (domU 5, notified), {args.n} requests per row, keys cycled over "
                f"{KEYS} nodes, access log {'off' if args.no_access_log else 'on'}",
                kinds, results, [(op, d) for op in ("WRITE", "READ") for d in (1, 8)])
    return 0 if all(isinstance(r, dict) for r in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
