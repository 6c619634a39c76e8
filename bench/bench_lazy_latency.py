#!/usr/bin/env python3
"""Lazy guests: how long their requests wait, oxsd against the OCaml oxenstored, side by side.

A lazy guest writes requests into its ring and never signals its event
channel; it is served through the ring scan (every 15 s at most, see
xenstored.ml: periodic_ops) and then while it holds the io credit the scan gave it.
Both daemons run at once (fresh, Debian's config, `ring-scan-interval` as
given), each with one lazy guest (oxsd.sim Guest, domU 6) and nothing else
to do.  Measured per daemon:

* the first request (sent right after INTRODUCE);
* three follow-ups sent back to back;
* follow-ups sent after a pause of 0.5 s and of 2 s;
* the daemon's CPU (utime + stime from /proc) over --idle-seconds before
  the guest exists, and over the same time right after the scan found it
  (the domain then holds io credit).

Every wait is bounded by --max-wait (a request not answered by then is
reported as `>max`).

    python3 bench/bench_lazy_latency.py                   # ring-scan-interval 1
    python3 bench/bench_lazy_latency.py --ring-scan-interval 20 --idle-seconds 10
"""
from __future__ import annotations

import argparse
import re
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import GuestFactory, cpu_seconds, start, stop  # noqa: E402

from oxsd.diff.daemons import DaemonError, DaemonSettings  # noqa: E402
from oxsd.sim.client import XsError  # noqa: E402

XS_READ, XS_WRITE = 2, 11
LAZY_DOMID = 6
PAUSES = (0.5, 2.0)


def timed(client, op: int, payload: bytes, max_wait: float) -> float | None:
    """Seconds until the reply, or None when none came within max_wait."""
    t0 = time.monotonic()
    rid = client.send(op, payload)
    try:
        client.recv_reply(rid, max_wait)
    except TimeoutError:
        return None
    return time.monotonic() - t0


def found_line(daemon) -> str | None:
    text = daemon.log_path.read_text(errors="replace") if daemon.log_path.exists() else ""
    m = re.search(rf"found lazy domain {LAZY_DOMID}, credit \d+", text)
    return m.group(0) if m else None


def cpu_percent(daemon, seconds: float) -> float:
    c0 = cpu_seconds(daemon.pid)
    time.sleep(seconds)  # the interval being measured, not a synchronisation
    return (cpu_seconds(daemon.pid) - c0) / seconds * 100


def run_kind(kind: str, args, out: dict) -> None:
    try:
        daemon = start(kind, DaemonSettings(ring_scan_interval=args.ring_scan_interval),
                       prefix="oxl")
    except DaemonError as e:
        out[kind] = f"cannot start: {str(e).splitlines()[0]}"
        return
    guests = GuestFactory(daemon)
    res: dict = {}
    try:
        res["cpu_idle"] = cpu_percent(daemon, args.idle_seconds)
        g = guests.add(LAZY_DOMID, lazy=True)
        res["first"] = timed(g.client, XS_WRITE, b"lazy\0" b"1", args.max_wait)
        res["found"] = found_line(daemon)
        res["cpu_credit"] = cpu_percent(daemon, args.idle_seconds)
        res["back_to_back"] = [timed(g.client, XS_READ, b"lazy\0", args.max_wait)
                               for _ in range(3)]
        for pause in PAUSES:
            time.sleep(pause)  # the pause between two requests is what is measured
            res[f"after {pause:g} s"] = timed(g.client, XS_READ, b"lazy\0", args.max_wait)
        res["scans"] = len(re.findall(r"found lazy domain", daemon.log_path.read_text(
            errors="replace")))
    except (OSError, XsError, TimeoutError) as e:
        res = f"failed: {e!r}"
    finally:
        guests.close()
        stop(daemon)
    out[kind] = res


def fmt(v) -> str:
    if v is None:
        return ">max"
    if isinstance(v, list):
        return ", ".join(fmt(x) for x in v)
    if isinstance(v, float):
        return f"{v * 1000:,.0f} ms" if v < 10 else f"{v:.1f} s"
    return str(v)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--ring-scan-interval", type=int, default=1,
                    help="the config key for both daemons (1: scan at every periodic run)")
    ap.add_argument("--idle-seconds", type=float, default=10.0,
                    help="interval of each idle-CPU measurement (10)")
    ap.add_argument("--max-wait", type=float, default=45.0,
                    help="longest wait for one reply (45)")
    ap.add_argument("--kinds", default="ocaml,oxsd")
    args = ap.parse_args(argv)
    kinds = args.kinds.split(",")
    results: dict = {}
    threads = [threading.Thread(target=run_kind, args=(k, args, results)) for k in kinds]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    print(f"lazy guest (domU {LAZY_DOMID}, never notifies), ring-scan-interval = "
          f"{args.ring_scan_interval}; each daemon otherwise idle")
    rows = [("first request", "first"), ("scan log line", "found"),
            ("3 follow-ups back to back", "back_to_back")]
    rows += [(f"follow-up after {p:g} s pause", f"after {p:g} s") for p in PAUSES]
    rows += [("'found lazy' lines in the log", "scans"),
             (f"daemon CPU, idle, no guest ({args.idle_seconds:g} s)", "cpu_idle"),
             (f"daemon CPU, {args.idle_seconds:g} s after the scan found it", "cpu_credit")]
    width = max(len(r[0]) for r in rows) + 2
    print(f"{'':<{width}}" + "".join(f"{k:<30}" for k in kinds))
    for label, key in rows:
        line = f"{label:<{width}}"
        for k in kinds:
            r = results.get(k)
            if isinstance(r, str) or r is None:
                line += f"{str(r):<30}"
            elif key.startswith("cpu"):
                line += f"{r[key]:<.2f} %".ljust(30)
            else:
                line += f"{fmt(r[key]):<30}"
        print(line)
    return 0 if all(isinstance(results.get(k), dict) for k in kinds) else 1


if __name__ == "__main__":
    sys.exit(main())
