#!/usr/bin/env python3
"""Do introduced but idle guests slow a socket client?  oxsd against the OCaml oxenstored.

For each daemon (fresh, Debian's config, started by oxsd.diff.daemons): a
dom0 socket client sends N XS_WRITE then N XS_READ requests (keys cycled
over 500 nodes, 1 and 8 in flight) with no guest, then again after
introducing G guests (default 1000; oxsd.sim Guests, each with its own ring
page and event channel) that stay idle.  Prints ops/s for both, the ratio
with/without guests per daemon, and oxsd/ocaml with guests.  A few of the
idle guests are asked one request at the end, to show they are served.

    python3 bench/bench_idle_guests.py                # G=1000, N=5000
    python3 bench/bench_idle_guests.py -g 200 --kinds oxsd
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (KEYS, OPS_BY_DEPTH, XS_READ, XS_WRITE, DaemonError,  # noqa: E402
                     DaemonSettings, GuestFactory, cpu_seconds, measure, pump, requests, start,
                     stop)
from bench_socket import connect, socket_io  # noqa: E402

FIRST_DOMID = 10
ROWS = OPS_BY_DEPTH


def socket_round(daemon, n: int, max_seconds: float) -> dict:
    """ops/s and daemon CPU per op for every (op, depth) row, on one fresh connection."""
    out = {}
    with connect(daemon) as sock:
        for op, name in ((XS_WRITE, "WRITE"), (XS_READ, "READ")):
            for depth in (1, 8):
                out[(name, depth)] = measure(daemon, *socket_io(sock), op, n, depth, max_seconds)
    return out


def idle_cpu(daemon, seconds: float) -> float:
    """Daemon CPU time (s) used over `seconds` of wall time with no client activity."""
    c0 = cpu_seconds(daemon.pid)
    time.sleep(seconds)  # measuring an idle interval, not waiting for an event
    return cpu_seconds(daemon.pid) - c0


def bench_kind(kind: str, args) -> dict | str:
    try:
        daemon = start(kind, DaemonSettings(access_log=not args.no_access_log), prefix="oxi")
    except DaemonError as e:
        return f"cannot start: {str(e).splitlines()[0]}"
    guests = GuestFactory(daemon)
    res: dict = {}
    try:
        socket_drive_setup(daemon)
        res["without"] = socket_round(daemon, args.n, args.max_seconds)
        t0 = time.perf_counter()
        for i in range(args.guests):
            guests.add(FIRST_DOMID + i)
        res["introduce_s"] = time.perf_counter() - t0
        res["idle_cpu"] = idle_cpu(daemon, args.idle_seconds)
        res["with"] = socket_round(daemon, args.n, args.max_seconds)
        # the idle guests are still served
        sample = guests.guests[:: max(1, len(guests.guests) // 5)]
        for g in sample:
            g.client.write("alive", "1")
            assert g.client.read("alive") == b"1"
        res["sampled"] = len(sample)
    except (OSError, TimeoutError, ConnectionError, AssertionError) as e:
        res = f"failed: {e!r}"
    finally:
        guests.close()
        stop(daemon)
    return res


def socket_drive_setup(daemon) -> None:
    with connect(daemon) as sock:
        pump(*socket_io(sock), requests(XS_WRITE, KEYS), 8, time.monotonic() + 60)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-g", "--guests", type=int, default=1000, help="idle guests (1000)")
    ap.add_argument("-n", type=int, default=5000, help="socket requests per row (5000)")
    ap.add_argument("--max-seconds", type=float, default=20.0,
                    help="cut a measurement short after this long (20)")
    ap.add_argument("--idle-seconds", type=float, default=5.0,
                    help="idle interval for the daemon CPU figure (5)")
    ap.add_argument("--no-access-log", action="store_true")
    ap.add_argument("--kinds", default="ocaml,oxsd")
    args = ap.parse_args(argv)
    kinds = args.kinds.split(",")
    results = {kind: bench_kind(kind, args) for kind in kinds}

    print(f"unix socket client, {args.n} requests per row, with 0 and with {args.guests} "
          f"introduced idle guests, access log {'off' if args.no_access_log else 'on'}")
    for kind, res in results.items():
        if isinstance(res, str):
            print(f"  {kind}: {res}")
        else:
            print(f"  {kind}: introducing {args.guests} guests took {res['introduce_s']:.1f} s; "
                  f"idle CPU with them {res['idle_cpu'] / args.idle_seconds * 100:.1f}%; "
                  f"{res['sampled']} sampled guests answered")
    head = f"{'op':<6} {'in flight':>9}"
    for kind in kinds:
        head += f" {kind + ' 0 g':>11} {kind + f' {args.guests} g':>13} {'ratio':>6}"
    both = kinds == ["ocaml", "oxsd"]
    if both:
        head += f" {'oxsd/ocaml':>10}"
    print(head + "   (ops/s; ratio = with/without guests)")
    for row in ROWS:
        line = f"{row[0]:<6} {row[1]:>9}"
        with_ops = {}
        for kind in kinds:
            res = results[kind]
            if isinstance(res, str):
                line += f" {'n/a':>11} {'n/a':>13} {'-':>6}"
                continue
            a, b = res["without"][row]["ops"], res["with"][row]["ops"]
            with_ops[kind] = b
            line += f" {a:>11,.0f} {b:>13,.0f} {b / a:>6.2f}"
        if both:
            line += (f" {with_ops['oxsd'] / with_ops['ocaml']:>10.2f}" if len(with_ops) == 2
                     else f" {'-':>10}")
        print(line)
    return 0 if all(isinstance(r, dict) for r in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
