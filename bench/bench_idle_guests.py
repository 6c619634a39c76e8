#!/usr/bin/env python3
"""Do introduced but idle guests slow a socket client?  oxsd against the OCaml oxenstored.

Every runtime's daemon (fresh, Debian's config, started by oxsd.diff.daemons)
is started first.  A dom0 socket client sends N XS_WRITE then N XS_READ
requests (keys cycled over 500 nodes, 1 and 8 in flight) with no guest; then
G guests (default 4000; oxsd.sim Guests, each with its own ring page and
event channel) are introduced to each daemon and stay idle; the daemon's CPU
over --idle-seconds with them, and its resident memory before and after,
are taken; then the socket rows again.  Rows are measured --repeat times,
the runtimes taking turns, after an untimed warm-up, client and daemons
pinned (_common.py).  Prints the median ops/s without and with guests, the
ratio with/without per runtime, and the ratio to ocaml with guests.  A few
of the idle guests are asked one request at the end, to show they are
served.

    python3 bench/bench_idle_guests.py                # G=4000, N=5000
    python3 bench/bench_idle_guests.py -g 200 --kinds oxsd --repeat 1
    python3 bench/bench_idle_guests.py --python "$(tools/setup-pypy.sh)"
"""
from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (OP_CODES, OPS_BY_DEPTH, DaemonError, DaemonSettings,  # noqa: E402
                     GuestFactory, add_runtime_args, alternating, compared_to_ocaml,
                     cpu_seconds, pin_client, pinning_note, print_summary, rss_kib, runtimes,
                     start_runtime, stop, summarize)
from bench_socket import SocketTarget  # noqa: E402

FIRST_DOMID = 10
ROWS = OPS_BY_DEPTH


def idle_cpu(daemon, seconds: float) -> float:
    """Daemon CPU time (s) used over `seconds` of wall time with no client activity."""
    c0 = cpu_seconds(daemon.pid)
    time.sleep(seconds)  # measuring an idle interval, not waiting for an event
    return cpu_seconds(daemon.pid) - c0


def measure_rows(targets: dict, args, failed: dict) -> dict:
    """{label: {row: summary}}: each row warmed up, then --repeat turns over the runtimes."""
    samples: dict = {label: {} for label in targets}
    for name, depth in ROWS:
        op = OP_CODES[name]
        for label, target in targets.items():
            if label not in failed:
                target.warm_up(op, args.warmup, depth)
        for rep in range(args.repeat):
            for label in alternating(list(targets), rep):
                if label in failed:
                    continue
                try:
                    samples[label].setdefault((name, depth), []).append(
                        targets[label].measure(op, args.n, depth, args.max_seconds))
                except (OSError, TimeoutError, ConnectionError) as e:
                    failed[label] = f"failed: {e!r}"
    return {label: {row: summarize(s) for row, s in rows.items()}
            for label, rows in samples.items() if label not in failed}


def add_guests(factory: GuestFactory, count: int) -> dict:
    daemon = factory.daemon
    rss0 = rss_kib(daemon.pid)
    t0 = time.perf_counter()
    for i in range(count):
        factory.add(FIRST_DOMID + i)
    return {"introduce_s": time.perf_counter() - t0, "rss0": rss0, "rss1": rss_kib(daemon.pid)}


def sample_guests(factory: GuestFactory) -> int:
    """One request on a few of the idle guests: they are still served."""
    sample = factory.guests[:: max(1, len(factory.guests) // 5)]
    for g in sample:
        g.client.write("alive", "1")
        if g.client.read("alive") != b"1":
            raise RuntimeError(f"domain {g.domid} read back something else")
    return len(sample)


FDS_PER_GUEST = 2  # its event-channel socket and the ring mmap's own copy of the page's fd


def guest_groups(labels: list[str], guests: int) -> list[list[str]]:
    """The runtimes in groups whose guests this process can hold open at once (RLIMIT_NOFILE).

    All in one group when they fit (the with-guests rows then take turns
    over all runtimes); else each group gets its guests, is measured, and
    closes them before the next.
    """
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    room = (soft - 500) if soft != resource.RLIM_INFINITY else 1 << 30
    per_group = max(1, room // (FDS_PER_GUEST * guests + 10))
    return [labels[i:i + per_group] for i in range(0, len(labels), per_group)]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-g", "--guests", type=int, default=4000, help="idle guests (4000)")
    ap.add_argument("-n", type=int, default=5000,
                    help="socket requests per measurement, at least (5000)")
    ap.add_argument("--max-seconds", type=float, default=20.0,
                    help="cut a measurement short after this long (20)")
    ap.add_argument("--idle-seconds", type=float, default=5.0,
                    help="idle interval for the daemon CPU figure (5)")
    ap.add_argument("--no-access-log", action="store_true")
    add_runtime_args(ap)
    args = ap.parse_args(argv)
    rts = runtimes(args)
    labels = [rt.label for rt in rts]
    pinned = pin_client()
    failed: dict = {}
    targets: dict = {}
    factories: dict = {}
    info: dict = {label: {} for label in labels}
    try:
        for rt in rts:
            try:
                daemon = start_runtime(rt, DaemonSettings(access_log=not args.no_access_log),
                                       prefix="oxi")
            except DaemonError as e:
                failed[rt.label] = f"cannot start: {str(e).splitlines()[0]}"
                continue
            targets[rt.label] = SocketTarget(daemon)
            factories[rt.label] = GuestFactory(daemon)
        without = measure_rows(targets, args, failed)
        with_guests: dict = {}
        groups = guest_groups(list(factories), args.guests)
        for group in groups:  # the runtimes whose guests fit in this process's fds at once
            for label in group:
                try:
                    info[label].update(add_guests(factories[label], args.guests))
                except (OSError, TimeoutError, ConnectionError) as e:
                    failed[label] = f"failed introducing guests: {e!r}"
            for label in group:
                if label not in failed:
                    info[label]["idle_cpu"] = idle_cpu(targets[label].daemon, args.idle_seconds)
            with_guests.update(measure_rows(
                {lb: targets[lb] for lb in group if lb not in failed}, args, failed))
            for label in group:
                if label not in failed:
                    try:
                        info[label]["sampled"] = sample_guests(factories[label])
                    except (OSError, TimeoutError, ConnectionError, RuntimeError) as e:
                        failed[label] = f"failed: {e!r}"
                if len(groups) > 1:
                    factories[label].close()  # frees its fds for the next group
    finally:
        for factory in factories.values():
            factory.close()
        for target in targets.values():
            stop(target.daemon)

    print(f"unix socket client, >= {args.n} requests per measurement, with 0 and with "
          f"{args.guests} introduced idle guests, access log "
          f"{'off' if args.no_access_log else 'on'}, median of {args.repeat} (turns), "
          f"{pinning_note(pinned)}")
    groups = guest_groups(labels, args.guests)
    if len(groups) > 1:
        print("  with guests, measured group by group (not enough fds for all guests at once): "
              + " | ".join(",".join(g) for g in groups))
    for label in labels:
        if label in failed:
            print(f"  {label}: {failed[label]}")
            continue
        i = info[label]
        print(f"  {label}: introducing {args.guests} guests took {i['introduce_s']:.1f} s; "
              f"idle CPU with them {i['idle_cpu'] / args.idle_seconds * 100:.1f}% "
              f"over {args.idle_seconds:g} s; RSS {i['rss0'] / 1024:.1f} -> "
              f"{i['rss1'] / 1024:.1f} MiB; {i['sampled']} sampled guests answered")
    ok = [lb for lb in labels if lb not in failed]
    others = compared_to_ocaml(ok)
    head = f"{'op':<6} {'depth':>5}"
    for label in ok:
        head += f" | {label + ' 0 g':>14} {f'{args.guests} g':>9} {'ratio':>6}"
    for label in others:
        head += f" | {label + '/ocaml':>14}"
    print(head + "   (median ops/s; ratio = with/without guests)")
    ratios = []
    for row in ROWS:
        line = f"{row[0]:<6} {row[1]:>5}"
        where = f"{row[0]} x{row[1]}"
        for label in ok:
            a, b = without[label][row]["median"], with_guests[label][row]["median"]
            line += f" | {a:>14,.0f} {b:>9,.0f} {b / a:>6.2f}"
            ratios.append((f"{label} with/without", b / a, where))
        for label in others:
            r = with_guests[label][row]["median"] / with_guests["ocaml"][row]["median"]
            line += f" | {r:>14.2f}"
            ratios.append((f"{label}/ocaml with guests", r, where))
        print(line)
    print_summary("bench_idle_guests", ratios)
    return 0 if not failed else 1


if __name__ == "__main__":
    sys.exit(main())
