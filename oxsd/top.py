"""oxsd-top: a live per-domain view of what the daemon is doing.

It asks the daemon for its counters (`XS_CONTROL oxsd-stats`, dom0 only, see
oxsd/stats.py) once per refresh over the unix socket, found as libxenstore's
clients find it: `$XENSTORED_PATH`, else `$XENSTORED_RUNDIR/socket`, else
`/var/run/xenstored/socket`.  Rates are the difference of two snapshots.

    oxsd-top                      full-screen view (curses), refreshed every second
    oxsd-top --once --json        one snapshot for scripts (flags included)
    oxsd-top --once --prometheus  the Prometheus text format (node_exporter's
                                  textfile collector)

Columns: REQ/S and REQS requests, ERRS error replies, EVTS watch events sent,
NODES/WATCH/TX/OUTQ what the connection holds against the node, watch,
transaction and outstanding-reply quotas, RING bytes waiting in the ring,
CRED io_credit, USE% the highest share of any of those quotas.  FLAGS: QUOTA
(USE% >= 80), LAZY (the ring scan found work the guest never signalled), BAD
(marked as a bad client).  Keys: r e f u sort by requests/s, errors, ring
fill, quota use; q quits.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence

from .sim.client import SocketClient, XsError
from .stats import STATS_COMMAND

__all__ = ["find_socket", "fetch", "flags", "quota_use", "render", "prometheus", "main",
           "NEAR_QUOTA"]

NEAR_QUOTA = 0.8
SORT_KEYS = {"r": "requests/s", "e": "errors", "f": "ring fill", "u": "quota use"}


class NotOxsd(RuntimeError):
    """The daemon answered the command as an unknown one (not oxsd, or not dom0)."""


def find_socket(env: Optional[Dict[str, str]] = None) -> str:
    env = os.environ if env is None else env
    if env.get("XENSTORED_PATH"):
        return env["XENSTORED_PATH"]
    if env.get("XENSTORED_RUNDIR"):
        return env["XENSTORED_RUNDIR"] + "/socket"
    return "/var/run/xenstored/socket"


def fetch(client: SocketClient) -> Dict[str, Any]:
    data = client.control(STATS_COMMAND.decode())
    if data.rstrip(b"\0") == b"OK":
        raise NotOxsd("the daemon answered oxsd-stats as an unknown command: "
                      "not oxsd, or this connection is not dom0's")
    return json.loads(data)


def quota_use(row: Dict[str, Any], quotas: Dict[str, Any]) -> float:
    """The highest fraction of a quota that the connection uses (0 for dom0/sockets)."""
    if row["kind"] != "domain" or row["domid"] == 0 or not quotas.get("activate", True):
        return 0.0
    pairs = [(row.get("nodes", 0), quotas["maxent"]), (row["watches"], quotas["maxwatch"]),
             (row["transactions"], quotas["transaction"]),
             (row["outstanding"], quotas["maxoutstanding"])]
    return max((used / limit for used, limit in pairs if limit > 0), default=0.0)


def flags(row: Dict[str, Any], quotas: Dict[str, Any]) -> List[str]:
    out = []
    if row.get("bad"):
        out.append("BAD")
    if row.get("lazy_found", 0) > 0:
        out.append("LAZY")
    if quota_use(row, quotas) >= NEAR_QUOTA:
        out.append("QUOTA")
    return out


def _ring_fill(row: Dict[str, Any]) -> int:
    ring = row.get("ring") or {}
    return ring.get("req_pending", 0) + ring.get("rsp_pending", 0)


@dataclass
class Rates:
    per_conn: Dict[str, float]
    requests: float
    events: float
    cpu: float


def rates(prev: Optional[Dict[str, Any]], cur: Dict[str, Any]) -> Rates:
    if prev is None or cur["time"] <= prev["time"]:
        return Rates({}, 0.0, 0.0, 0.0)
    dt = cur["time"] - prev["time"]
    before = {r["id"]: r["requests"] for r in prev["connections"]}
    per = {r["id"]: (r["requests"] - before.get(r["id"], 0)) / dt for r in cur["connections"]}
    return Rates(per,
                 (cur["totals"]["requests"] - prev["totals"]["requests"]) / dt,
                 (cur["totals"]["watch_events_sent"] - prev["totals"]["watch_events_sent"]) / dt,
                 100.0 * (cur["daemon"]["cpu_s"] - prev["daemon"]["cpu_s"]) / dt)


def _sorted_rows(cur: Dict[str, Any], r: Rates, sort: str) -> List[Dict[str, Any]]:
    quotas = cur["quotas"]
    key = {"r": lambda row: r.per_conn.get(row["id"], 0.0),
           "e": lambda row: sum(row["errors"].values()),
           "f": _ring_fill,
           "u": lambda row: quota_use(row, quotas)}[sort]
    return sorted(cur["connections"], key=lambda row: (-key(row), row["id"]))


def render(prev: Optional[Dict[str, Any]], cur: Dict[str, Any], sort: str = "r",
           width: int = 100, height: int = 40) -> List[str]:
    """The screen as lines of text (what the curses loop draws)."""
    r = rates(prev, cur)
    t, d, q = cur["totals"], cur["daemon"], cur["quotas"]
    lines = [
        f"oxsd-top  pid {d['pid']}  cpu {r.cpu:.1f}%  rss {d['rss_bytes'] / 2**20:.1f} MiB  "
        f"sorted by {SORT_KEYS[sort]}",
        f"domains {t['domains']}  sockets {t['sockets']}  requests {t['requests']} "
        f"({r.requests:.0f}/s)  errors {t['errors']}",
        f"watch events {t['watch_events_sent']} ({r.events:.0f}/s)  watches {t['watches']}  "
        f"transactions {t['transactions']}",
        f"{'CONN':<5}{'REQ/S':>6}{'REQS':>7}{'ERRS':>5}{'EVTS':>6}{'NODES':>6}{'WATCH':>6}"
        f"{'TX':>3}{'OUTQ':>5}{'RING':>5}{'CRED':>5}{'USE%':>5} FLAGS",
    ]
    rows = _sorted_rows(cur, r, sort)
    slowest = cur.get("slowest", [])[:5]
    room = max(1, height - len(lines) - 3 - len(slowest))
    for row in rows[:room]:  # 64 columns of figures and the flags: fits 80 columns
        lines.append(
            f"{row['id']:<5}{r.per_conn.get(row['id'], 0.0):>6.0f}{row['requests']:>7}"
            f"{sum(row['errors'].values()):>5}{row['watch_events_sent']:>6}"
            f"{row.get('nodes', '-'):>6}{row['watches']:>6}{row['transactions']:>3}"
            f"{row['outstanding']:>5}{_ring_fill(row) if row.get('ring') else '-':>5}"
            f"{row.get('io_credit', '-'):>5}{100 * quota_use(row, q):>4.0f}% "
            f"{','.join(flags(row, q))}".rstrip())
    if len(rows) > room:
        lines.append(f"... {len(rows) - room} more")
    lines.append("")
    lines.append("slowest requests: " + ("none yet" if not slowest else ""))
    for s in slowest:
        lines.append(f"  {s['us']:>10.1f} us  {s['conn']:<8} {s['op']:<18} {s['path']}")
    return [line[:width] for line in lines[:height]]


def _label(value: Any) -> str:
    return str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def prometheus(cur: Dict[str, Any]) -> str:
    """The snapshot in the Prometheus text exposition format."""
    out: List[str] = []

    def metric(name: str, kind: str, help_: str, samples: Sequence[tuple]) -> None:
        out.append(f"# HELP oxsd_{name} {help_}")
        out.append(f"# TYPE oxsd_{name} {kind}")
        for labels, value in samples:
            text = ",".join(f'{k}="{_label(v)}"' for k, v in labels.items())
            out.append(f"oxsd_{name}{{{text}}} {value}" if text else f"oxsd_{name} {value}")

    rows = cur["connections"]
    base = [({"conn": r["id"], "kind": r["kind"], "domid": r["domid"]}, r) for r in rows]
    metric("requests_total", "counter", "Requests received, by connection and op.",
           [({**lab, "op": op}, n) for lab, r in base for op, n in sorted(r["by_op"].items())])
    metric("errors_total", "counter", "Error replies, by connection and error.",
           [({**lab, "error": e}, n) for lab, r in base for e, n in sorted(r["errors"].items())])
    for key, help_ in (("watch_events_queued", "Watch events queued."),
                       ("watch_events_sent", "Watch events sent."),
                       ("bytes_in", "Bytes received."), ("bytes_out", "Bytes sent.")):
        metric(f"{key}_total", "counter", help_, [(lab, r[key]) for lab, r in base])
    metric("serve_seconds_total", "counter", "Time spent serving the connection's requests.",
           [(lab, r["serve_us"] / 1e6) for lab, r in base])
    for key, help_ in (("watches", "Watches held."), ("transactions", "Open transactions."),
                       ("outstanding", "Replies and events queued, not yet sent.")):
        metric(key, "gauge", help_, [(lab, r[key]) for lab, r in base])
    doms = [(lab, r) for lab, r in base if r["kind"] == "domain"]
    metric("nodes", "gauge", "Nodes owned by the domain (its node quota count).",
           [(lab, r["nodes"]) for lab, r in doms])
    metric("io_credit", "gauge", "Ring rounds credited to the domain.",
           [(lab, r["io_credit"]) for lab, r in doms])
    metric("lazy_found_total", "counter", "Times the ring scan found the domain lazy.",
           [(lab, r["lazy_found"]) for lab, r in doms])
    metric("conflict_credit", "gauge", "Transaction conflict credit.",
           [(lab, r["conflict_credit"]) for lab, r in doms])
    metric("bad", "gauge", "1 when the domain was marked as a bad client.",
           [(lab, int(r["bad"])) for lab, r in doms])
    metric("ring_pending_bytes", "gauge", "Bytes waiting in the domain's ring, by direction.",
           [({**lab, "dir": d}, (r["ring"] or {}).get(f"{d}_pending", 0))
            for lab, r in doms if r["ring"] for d in ("req", "rsp")])
    metric("quota_use_ratio", "gauge", "Highest fraction of a quota the domain uses.",
           [(lab, round(quota_use(r, cur["quotas"]), 4)) for lab, r in doms])
    d = cur["daemon"]
    metric("cpu_seconds_total", "counter", "Daemon CPU time.", [({}, d["cpu_s"])])
    metric("resident_bytes", "gauge", "Daemon resident memory.", [({}, d["rss_bytes"])])
    return "\n".join(out) + "\n"


def _with_flags(cur: Dict[str, Any]) -> Dict[str, Any]:
    for row in cur["connections"]:
        row["flags"] = flags(row, cur["quotas"])
        row["quota_use"] = round(quota_use(row, cur["quotas"]), 4)
    return cur


def _loop(stdscr, client: SocketClient, interval: float, sort: str) -> None:
    import curses
    curses.curs_set(0)
    stdscr.timeout(int(interval * 1000))
    prev = None
    while True:
        cur = fetch(client)
        height, width = stdscr.getmaxyx()
        stdscr.erase()
        for y, line in enumerate(render(prev, cur, sort, width - 1, height)):
            try:
                stdscr.addstr(y, 0, line)
            except curses.error:  # the last cell of a small terminal
                pass
        stdscr.refresh()
        prev = cur
        key = stdscr.getch()
        if key in (ord("q"), 27):
            return
        if key >= 0 and chr(key) in SORT_KEYS:
            sort = chr(key)


def main(argv: Optional[Sequence[str]] = None) -> int:
    ap = argparse.ArgumentParser(prog="oxsd-top", description=__doc__.split("\n\n")[0])
    ap.add_argument("--once", action="store_true", help="print one snapshot and exit")
    ap.add_argument("--json", action="store_true", help="with --once: JSON")
    ap.add_argument("--prometheus", action="store_true", help="with --once: Prometheus text")
    ap.add_argument("--interval", type=float, default=1.0, help="refresh period (s)")
    ap.add_argument("--sort", choices=sorted(SORT_KEYS), default="r",
                    help="r: requests/s, e: errors, f: ring fill, u: quota use")
    ap.add_argument("--socket", help="the daemon's socket (default: as libxenstore finds it)")
    args = ap.parse_args(argv)
    path = args.socket or find_socket()
    try:
        client = SocketClient(path)
    except OSError as e:
        print(f"oxsd-top: cannot connect to {path}: {e.strerror or e}", file=sys.stderr)
        return 1
    try:
        if args.once or args.json or args.prometheus:
            cur = fetch(client)
            if args.prometheus:
                sys.stdout.write(prometheus(cur))
            elif args.json:
                json.dump(_with_flags(cur), sys.stdout, indent=1, sort_keys=True)
                sys.stdout.write("\n")
            else:
                prev, cur = cur, (time.sleep(args.interval), fetch(client))[1]
                print("\n".join(render(prev, cur, args.sort, 200, 10_000)))
            return 0
        import curses
        curses.wrapper(_loop, client, args.interval, args.sort)
        return 0
    except (NotOxsd, XsError, OSError, ValueError) as e:
        print(f"oxsd-top: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        client.close()


if __name__ == "__main__":
    sys.exit(main())
