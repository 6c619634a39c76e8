#!/usr/bin/env python3
"""Mixed load from many guests and socket clients, oxsd against the OCaml oxenstored.

For each daemon (fresh, Debian's config, access log off): G guests (default
200, notifying rings, oxsd.sim) and S dom0 socket clients (default 20), one
thread each, issue mixed traffic for T seconds (default 60): writes to a
watched node of their own, read-backs, directory listings, unwatched writes
and small transactions; a dom0 broadcaster writes /load/bcast, which every
guest watches, every 50 ms.  Bounded: T seconds, then every client collects
what it is owed.  Checked: zero unexpected errors (a transaction's EAGAIN is
expected and counted), every write to a watched path gave exactly one event
at each watcher, the last values readable.  Printed: requests, ops/s, p50 /
p99 / max round trip, the daemon's and the client process's CPU over the T
seconds (100 %: that side is the bottleneck), and the same by
client kind (guests, sockets): each client sends its next request when the
last is answered, so a daemon that answers one kind faster gets more of that
kind's requests, and the p50 over all requests mostly shows which kind that
is.

    python3 bench/bench_load.py                          # G=200, S=20, 60 s
    python3 bench/bench_load.py -g 20 -s 4 -t 5 --kinds oxsd
"""
from __future__ import annotations

import argparse
import random
import resource
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (Daemon, DaemonError, DaemonSettings, GuestFactory,  # noqa: E402
                     add_runtime_args, cpu_seconds, pin_client, pinning_note, runtimes, start,
                     stop)
from oxsd.sim.client import SocketClient, XsClient, XsError  # noqa: E402

FIRST_DOMID = 10
BCAST_EVERY = 0.05
TIMEOUT = 60.0  # a reply later than this is an error (a stall)


@dataclass
class Worker:
    """One client's traffic and what it is owed."""

    name: str
    client: XsClient
    watched: str          # a watched directory of its own (absolute or relative)
    unwatched: str
    seed: int
    latencies: list[float] = field(default_factory=list)
    watched_writes: int = 0
    eagain: int = 0
    errors: list[str] = field(default_factory=list)
    last: dict[str, str] = field(default_factory=dict)

    def timed(self, fn, *args):
        t0 = time.perf_counter()
        out = fn(*args)
        self.latencies.append(time.perf_counter() - t0)
        return out

    def run(self, seconds: float, barrier: threading.Barrier) -> None:
        rng = random.Random(self.seed)
        c = self.client
        try:
            barrier.wait(60)
            deadline = time.monotonic() + seconds
            n = 0
            while time.monotonic() < deadline:
                n += 1
                roll = rng.random()
                key = f"k{rng.randrange(8)}"
                if roll < 0.35:
                    path, value = f"{self.watched}/{key}", f"{self.name}-{n}"
                    self.timed(c.write, path, value)
                    self.watched_writes += 1
                    self.last[path] = value
                    if self.timed(c.read, path) != value.encode():
                        self.errors.append(f"read back of {path} differs")
                elif roll < 0.55:
                    self.timed(c.write, f"{self.unwatched}/{key}", str(n))
                elif roll < 0.75:
                    self.timed(c.read, f"{self.unwatched}")
                elif roll < 0.9:
                    self.timed(c.directory, self.watched)
                else:
                    self.transaction(n)
        except (XsError, TimeoutError, OSError, ConnectionError, RuntimeError) as exc:
            self.errors.append(repr(exc))

    def transaction(self, n: int) -> None:
        c = self.client
        tid = self.timed(c.transaction_start)
        self.timed(c.write, f"{self.unwatched}/tx", str(n), tid)
        try:
            self.timed(c.transaction_end, tid, True)
        except XsError as exc:
            if exc.err != "EAGAIN":
                raise
            self.eagain += 1


@dataclass
class Latency:
    """Round trips of some clients: count and percentiles."""

    requests: int = 0
    p50_ms: float = 0.0
    p99_ms: float = 0.0
    max_ms: float = 0.0

    @classmethod
    def of(cls, latencies: list[float]) -> "Latency":
        lat = sorted(latencies)
        if not lat:
            return cls()
        return cls(len(lat), lat[len(lat) // 2] * 1000,
                   lat[min(len(lat) - 1, int(len(lat) * 0.99))] * 1000, lat[-1] * 1000)


@dataclass
class LoadResult(Latency):
    """A load run: the round trips of every client (Latency's fields), and the rest."""

    seconds: float = 0.0
    cpu: float = 0.0  # daemon CPU seconds over the load
    client_cpu: float = 0.0  # this process's (every client thread's) CPU seconds over the load
    by_kind: dict[str, Latency] = field(default_factory=dict)  # "guests", "sockets"
    errors: list[str] = field(default_factory=list)
    event_mismatches: list[str] = field(default_factory=list)
    eagain: int = 0
    watched_writes: int = 0
    bcasts: int = 0
    events: int = 0


def _own_cpu() -> float:
    """CPU seconds of this process, every thread."""
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def _count_events(client: XsClient, flush_path: str, want: Counter, deadline: float) -> Counter:
    """Tokens of every event the client got, waiting (bounded) until `want` is reached."""
    got = Counter(tok for _path, tok in client.events)
    client.events.clear()
    while any(got[t] < n for t, n in want.items()) and time.monotonic() < deadline:
        ev = client.wait_watch(min(1.0, max(0.0, deadline - time.monotonic())))
        if ev is not None:
            got[ev[1]] += 1
    # one more round trip: an extra event sent before its reply would be here now
    client.read(flush_path)
    got.update(tok for _path, tok in client.events)
    client.events.clear()
    return got


def run_load(daemon: Daemon, n_guests: int, n_sockets: int, seconds: float,
             seed: int = 1) -> LoadResult:
    guests = GuestFactory(daemon)
    d0 = guests.d0
    d0.timeout = TIMEOUT
    sockets: list[SocketClient] = []
    workers: list[Worker] = []
    res = LoadResult()
    try:
        d0.write("/load/bcast", "0")
        d0.set_perms("/load", ["r0"])  # owner dom0, others read
        d0.set_perms("/load/bcast", ["r0"])
        for i in range(n_guests):
            g = guests.add(FIRST_DOMID + i)
            g.client.timeout = TIMEOUT
            g.client.write("data/w/k0", "0")
            g.client.write("data/u", "")
            g.client.watch("data/w", "own")
            g.client.watch("/load/bcast", "bcast")
            workers.append(Worker(f"g{g.domid}", g.client, "data/w", "data/u", seed * 1000 + i))
        for i in range(n_sockets):
            s = SocketClient(daemon.socket_path)
            s.timeout = TIMEOUT
            sockets.append(s)
            s.write(f"/load/s{i}/w/k0", "0")
            s.write(f"/load/s{i}/u", "")
            s.watch(f"/load/s{i}/w", "own")
            workers.append(Worker(f"s{i}", s, f"/load/s{i}/w", f"/load/s{i}/u",
                                  seed * 1000 + 500 + i))
        barrier = threading.Barrier(len(workers) + 1)
        threads = [threading.Thread(target=w.run, args=(seconds, barrier), daemon=True)
                   for w in workers]
        for t in threads:
            t.start()
        barrier.wait(60)
        cpu0, client0 = cpu_seconds(daemon.pid), _own_cpu()
        t0 = time.monotonic()
        deadline = t0 + seconds
        stop_at = threading.Event()
        bcasts = 0
        while not stop_at.wait(BCAST_EVERY) and time.monotonic() < deadline:
            bcasts += 1
            d0.write("/load/bcast", str(bcasts))
        for t in threads:
            t.join(TIMEOUT + 30 + seconds)
        res.seconds = time.monotonic() - t0
        res.cpu = cpu_seconds(daemon.pid) - cpu0
        res.client_cpu = _own_cpu() - client0
        res.bcasts = bcasts
        every = Latency.of([x for w in workers for x in w.latencies])
        res.requests, res.p50_ms, res.p99_ms, res.max_ms = (
            every.requests, every.p50_ms, every.p99_ms, every.max_ms)
        for kind, prefix in (("guests", "g"), ("sockets", "s")):
            res.by_kind[kind] = Latency.of([x for w in workers if w.name.startswith(prefix)
                                            for x in w.latencies])
        collect_by = time.monotonic() + 60
        for w in workers:
            res.errors += [f"{w.name}: {e}" for e in w.errors]
            res.eagain += w.eagain
            res.watched_writes += w.watched_writes
            want = Counter({"own": 1 + w.watched_writes})
            if w.name.startswith("g"):
                want["bcast"] = 1 + bcasts
            try:
                got = _count_events(w.client, w.unwatched, want, collect_by)
            except (XsError, TimeoutError, OSError, ConnectionError) as exc:
                res.errors.append(f"{w.name}: collecting events: {exc!r}")
                continue
            res.events += sum(got.values())
            if got != want:
                res.event_mismatches.append(f"{w.name}: got {dict(got)}, want {dict(want)}")
            for path, value in w.last.items():
                if w.client.read(path) != value.encode():
                    res.errors.append(f"{w.name}: {path} lost its last value")
        if not daemon.alive():
            res.errors.append("daemon died")
    finally:
        for s in sockets:
            s.close()
        guests.close()
    return res


def print_table(results: dict, args, pinned: Optional[int]) -> None:
    print(f"mixed load: {args.guests} guests + {args.sockets} socket clients, "
          f"{args.seconds:.0f} s, access log off, {pinning_note(pinned)}")
    print(f"{'daemon':<12} {'requests':>9} {'ops/s':>8} {'p50 ms':>7} {'p99 ms':>7} "
          f"{'max ms':>7} {'cpu %':>5} {'client %':>8} {'errors':>6} {'event diffs':>11} "
          f"{'EAGAIN':>6} {'events':>8}")
    for kind, r in results.items():
        if isinstance(r, str):
            print(f"{kind:<12} {r}")
            continue
        print(f"{kind:<12} {r.requests:>9} {r.requests / r.seconds:>8.0f} {r.p50_ms:>7.1f} "
              f"{r.p99_ms:>7.1f} {r.max_ms:>7.0f} {100 * r.cpu / r.seconds:>5.0f} "
              f"{100 * r.client_cpu / r.seconds:>8.0f} {len(r.errors):>6} "
              f"{len(r.event_mismatches):>11} {r.eagain:>6} {r.events:>8}")
        for line in (r.errors + r.event_mismatches)[:10]:
            print(f"    {kind}: {line}")
    print("by client kind:")
    print(f"{'daemon':<12} {'clients':<8} {'requests':>9} {'ops/s':>8} {'p50 ms':>7} "
          f"{'p99 ms':>7} {'max ms':>7}")
    for kind, r in results.items():
        if isinstance(r, str):
            continue
        for clients, lat in r.by_kind.items():
            print(f"{kind:<12} {clients:<8} {lat.requests:>9} {lat.requests / r.seconds:>8.0f} "
                  f"{lat.p50_ms:>7.1f} {lat.p99_ms:>7.1f} {lat.max_ms:>7.0f}")


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-g", "--guests", type=int, default=200)
    ap.add_argument("-s", "--sockets", type=int, default=20)
    ap.add_argument("-t", "--seconds", type=float, default=60.0)
    ap.add_argument("--seed", type=int, default=1)
    add_runtime_args(ap, repeat=False)
    args = ap.parse_args(argv)
    pinned = pin_client()
    results: dict = {}
    for rt in runtimes(args):
        try:
            daemon = start(rt.kind, DaemonSettings(access_log=False), prefix="oxl",
                           python=rt.python, source=rt.source)
        except DaemonError as e:
            results[rt.label] = f"cannot start: {str(e).splitlines()[0]}"
            continue
        try:
            results[rt.label] = run_load(daemon, args.guests, args.sockets, args.seconds,
                                         args.seed)
        finally:
            stop(daemon)
    print_table(results, args, pinned)
    ok = all(not isinstance(r, str) and not r.errors and not r.event_mismatches
             for r in results.values())
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
