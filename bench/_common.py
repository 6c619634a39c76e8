"""What the benchmarks share: daemons, request packets, the request pump, the table.

Every benchmark starts a fresh OCaml oxenstored and a fresh oxsd
(oxsd.diff.daemons, the reference kit's configuration), drives them the same
way and prints both with the ratio oxsd/ocaml.  The pump here is transport
agnostic: a unix socket and a guest's ring differ only in how bytes are sent
and received.
"""
from __future__ import annotations

import argparse
import os
import shutil
import struct
import sys
import time
from pathlib import Path
from typing import Callable, Iterable, Optional

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from oxsd.diff.daemons import (Daemon, DaemonError, DaemonSettings,  # noqa: E402,F401
                               make_scratch, start_daemon)
from oxsd.sim.client import SocketClient  # noqa: E402
from oxsd.sim.guest import Guest, Sim  # noqa: E402

HDR = struct.Struct("<IIII")
XS_READ, XS_TRANSACTION_START, XS_TRANSACTION_END, XS_WRITE, XS_ERROR = 2, 6, 7, 11, 16
KEYS = 500
CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process, in seconds (10 ms resolution)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def start(kind: str, settings: Optional[DaemonSettings] = None, prefix: str = "oxb") -> Daemon:
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


def requests(op: int, n: int, prefix: bytes = b"/bench") -> list[bytes]:
    """n XS_WRITE or XS_READ packets on PREFIX/k<i>, keys cycled over KEYS."""
    out = []
    for i in range(n):
        path = b"%s/k%d\0" % (prefix, i % KEYS)
        payload = path + b"value-%d" % i if op == XS_WRITE else path
        out.append(HDR.pack(op, i & 0xFFFFFFFF, 0, len(payload)) + payload)
    return out


def split_replies(buf: bytearray, on_reply: Optional[Callable[[int, int, bytes], None]] = None
                  ) -> tuple[int, int, int]:
    """Complete packets at the start of `buf`: (bytes used, packets, XS_ERROR packets).

    `on_reply(op, req_id, payload)` is called for each, when given.
    """
    pos = got = errors = 0
    size = len(buf)
    while size - pos >= 16:
        op, rid, _tx, length = HDR.unpack_from(buf, pos)
        if size - pos < 16 + length:
            break
        if on_reply is not None:
            on_reply(op, rid, bytes(buf[pos + 16:pos + 16 + length]))
        errors += op == XS_ERROR
        pos += 16 + length
        got += 1
    return pos, got, errors


def pump(send: Callable[[bytes], object], recv: Callable[[], bytes], reqs: list[bytes],
         depth: int, deadline: float) -> tuple[int, int]:
    """Keep `depth` requests in flight until all are answered or the deadline: (replies, errors).

    Each batch of new requests goes out in one send; `recv` returns what has
    arrived (empty: the peer is gone or silent, which ends the run with an error).
    """
    done = errors = 0
    buf = bytearray()
    sent = min(depth, len(reqs))
    send(b"".join(reqs[:sent]))
    while done < sent:
        data = recv()
        if not data:
            raise ConnectionError(f"no reply from the daemon ({done}/{sent} answered)")
        buf += data
        used, got, errs = split_replies(buf)
        del buf[:used]
        done += got
        errors += errs
        if got and sent < len(reqs) and time.monotonic() < deadline:
            more = reqs[sent:sent + got]
            send(b"".join(more))
            sent += len(more)
    return done, errors


def measure(daemon: Daemon, send, recv, op: int, n: int, depth: int, max_seconds: float,
            prefix: bytes = b"/bench") -> dict:
    """ops/s and daemon CPU per request for n requests of `op` at `depth` (after a warm-up)."""
    reqs = requests(op, n, prefix)
    pump(send, recv, reqs[:200], depth, time.monotonic() + max_seconds)
    cpu0, t0 = cpu_seconds(daemon.pid), time.perf_counter()
    done, errors = pump(send, recv, reqs, depth, time.monotonic() + max_seconds)
    elapsed, cpu = time.perf_counter() - t0, cpu_seconds(daemon.pid) - cpu0
    return {"ops": done / elapsed, "cpu_us": cpu / done * 1e6, "n": done, "errors": errors}


def print_table(title: str, kinds: list[str], results: dict,
                rows: Iterable[tuple[str, int]]) -> None:
    """One row per (op, depth): ops/s and CPU per op of each kind, and oxsd/ocaml."""
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


OPS_BY_DEPTH = [(name, depth) for name in ("WRITE", "READ") for depth in (1, 8)]


def throughput_main(doc: str, default_n: int, transport: str,
                    bench_kind: Callable[[str, argparse.Namespace], "dict | str"],
                    argv: Optional[list[str]]) -> int:
    """The command line and table of a WRITE/READ throughput bench (socket, ring)."""
    ap = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    ap.add_argument("-n", type=int, default=default_n,
                    help=f"requests per measurement ({default_n})")
    ap.add_argument("--max-seconds", type=float, default=30.0,
                    help="cut a measurement short after this long (30)")
    ap.add_argument("--no-access-log", action="store_true",
                    help="start both daemons with --no-access-log")
    ap.add_argument("--kinds", default="ocaml,oxsd")
    args = ap.parse_args(argv)
    kinds = args.kinds.split(",")
    results = {kind: bench_kind(kind, args) for kind in kinds}
    print_table(f"{transport}, {args.n} requests per row, keys cycled over {KEYS} nodes, "
                f"access log {'off' if args.no_access_log else 'on'}", kinds, results,
                OPS_BY_DEPTH)
    return 0 if all(isinstance(r, dict) for r in results.values()) else 1


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
