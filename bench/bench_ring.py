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
"""
from __future__ import annotations

import sys
import time

from _common import (KEYS, XS_READ, XS_WRITE, DaemonError, DaemonSettings,
                     GuestFactory, measure, pump, requests, start, stop, throughput_main)
from oxsd.sim.guest import RingClient


def ring_io(client: RingClient):
    """(send, recv) for the pump on a guest's ring: each send notifies once."""
    return client._send_bytes, lambda: client._recv_bytes(5.0)


def bench_kind(kind: str, args) -> dict | str:
    try:
        daemon = start(kind, DaemonSettings(access_log=not args.no_access_log), prefix="oxg")
    except DaemonError as e:
        return f"cannot start: {str(e).splitlines()[0]}"
    results: dict = {}
    guests = GuestFactory(daemon)
    try:
        io = ring_io(guests.add(5).client)
        # relative paths: the guest's own tree
        pump(*io, requests(XS_WRITE, KEYS, b"bench"), 8, time.monotonic() + 60)  # the nodes
        for op, name in ((XS_WRITE, "WRITE"), (XS_READ, "READ")):
            for depth in (1, 8):
                results[(name, depth)] = measure(daemon, *io, op, args.n, depth,
                                                 args.max_seconds, prefix=b"bench")
    except (OSError, TimeoutError, ConnectionError) as e:
        results = f"failed: {e!r}"
    finally:
        guests.close()
        stop(daemon)
    return results


def main(argv: list[str] | None = None) -> int:
    return throughput_main(__doc__, 10000, "ring (domU 5, notified)", bench_kind, argv)


if __name__ == "__main__":
    sys.exit(main())
