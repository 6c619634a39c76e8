#!/usr/bin/env python3
"""Ring throughput of oxsd against the OCaml oxenstored, in one run.

For each daemon (fresh, Debian's config, both started by oxsd.diff.daemons on
their own sim dir): one guest (domU 5, oxsd.sim's Guest: a ring page and an
event channel, notifying after each batch of requests and after reading
replies, as Linux's xenbus does) sends N XS_WRITE then N XS_READ requests
over its ring, keys cycled over 500 nodes of its own tree, with 1 and with 8
requests in flight.  Prints ops/s, the daemon's CPU time per request (from
/proc/<pid>/stat) and the ratio oxsd/ocaml; pinned, repeated and warmed up
as _common.py describes.  Bounded: N requests per measurement (more until
1 % CPU resolution), and at most --max-seconds.

    python3 bench/bench_ring.py                   # N=10000
    python3 bench/bench_ring.py -n 3000 --kinds oxsd
    python3 bench/bench_ring.py --python "$(tools/setup-pypy.sh)"     # + oxsd on pypy3
"""
from __future__ import annotations

import sys
import time

from _common import (KEYS, XS_WRITE, DaemonSettings, GuestFactory, Runtime, Target, pump,
                     requests, start_runtime, stop, throughput_main)
from oxsd.sim.guest import RingClient


def ring_io(client: RingClient):
    """(send, recv) for the pump on a guest's ring: each send notifies once."""
    return client._send_bytes, lambda: client._recv_bytes(5.0)


class RingTarget(Target):
    """A daemon with guest domU 5 introduced and its 500 nodes; all measurements on its ring."""

    def __init__(self, daemon) -> None:
        super().__init__(daemon, prefix=b"bench")  # relative paths: the guest's own tree
        self.guests = GuestFactory(daemon)
        try:
            self._io = ring_io(self.guests.add(5).client)
            pump(*self._io, requests(XS_WRITE, KEYS, b"bench"), 8, time.monotonic() + 60)
        except BaseException:
            self.guests.close()
            raise

    def io(self):
        return (*self._io, lambda: None)

    def close(self) -> None:
        self.guests.close()
        super().close()


def open_target(rt: Runtime, args) -> RingTarget:
    daemon = start_runtime(rt, DaemonSettings(access_log=not args.no_access_log), prefix="oxg")
    try:
        return RingTarget(daemon)
    except BaseException:
        stop(daemon)
        raise


def main(argv: list[str] | None = None) -> int:
    return throughput_main(__doc__, 10000, "ring (domU 5, notified)", open_target, argv,
                           "bench_ring")


if __name__ == "__main__":
    sys.exit(main())
