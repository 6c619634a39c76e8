#!/usr/bin/env python3
"""Resident memory under attack, oxsd against the OCaml oxenstored, in one run.

Each attack runs in rounds on a fresh daemon (Debian's config, access log
off).  A round floods until the daemon stops taking input (the XSA-326 bounded
queues: `quota-maxoutstanding` replies, `quota-maxwatchevents` events per
watch and per connection), records VmRSS at that peak, then lets the attacker
read everything it is owed (checking the count) and records VmRSS again.  Peak
memory that climbs from round to round is a leak; a flat peak is the bound.

* ``guest-no-read``: a guest pipelines READs of a 2000-byte node of its own
  into its ring and never reads rsp[];
* ``socket-no-read``: the same from a dom0 socket client;
* ``watch-storm``: W socket watchers (default 1000) on /storm that do not read
  during the round while dom0 writes /storm/k as fast as it is answered; at the
  end of the round every watcher must have exactly one event per completed
  write (plus the initial one);
* ``tx-max``: a guest opens `quota-transaction` transactions and writes
  2000-byte nodes in each until the quota refuses (expected errors), then
  aborts them.

During every attack a victim dom0 socket client writes and reads back
/victim every 20 ms (its worst round trip is printed) and after each round a
victim guest is asked a request: other clients must be served.

    python3 bench/bench_attack_memory.py                       # both daemons, all attacks
    python3 bench/bench_attack_memory.py --attacks watch-storm -w 200 --kinds oxsd
"""
from __future__ import annotations

import argparse
import selectors
import socket
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (XS_ERROR, XS_READ, XS_WRITE, Daemon, DaemonError,  # noqa: E402
                     DaemonSettings, GuestFactory, split_replies, start, stop)
from bench_memory import packet, rss_kib  # noqa: E402
from oxsd.sim.client import SocketClient, XsError  # noqa: E402

XS_WATCH, XS_WATCH_EVENT, XS_TRANSACTION_START, XS_TRANSACTION_END = 4, 15, 6, 7
BIG = b"x" * 2000          # under Debian's quota-maxsize (2048)
ATTACKER, VICTIM = 7, 8    # guest domids
STALL = 1.0                # no progress for this long: the daemon stopped taking input
ROUND_DEADLINE = 120.0     # a round never runs longer than this


def mib(kib: int) -> float:
    return kib / 1024


# -- transports: non-blocking send/receive of raw bytes ------------------------------

@dataclass
class RawIO:
    """Non-blocking byte pipe to the daemon: send_some returns what was taken (0: full)."""

    send_some: Callable[[memoryview], int]
    recv_some: Callable[[], bytes]
    fileno: int


def ring_io(guest) -> RawIO:
    """A guest's ring, driven by hand: notify after writing req[] and after reading rsp[]."""
    def send_some(view: memoryview) -> int:
        n = guest.ring.write_req(view[:4096])
        if n:
            guest.client.notify()
        return n

    def recv_some() -> bytes:
        guest.evtchn.drain()
        data = guest.ring.read_rsp()
        if data:
            guest.client.notify()
        return data

    return RawIO(send_some, recv_some, guest.evtchn.fd())


def socket_io(sock: socket.socket) -> RawIO:
    sock.setblocking(False)

    def send_some(view: memoryview) -> int:
        try:
            return sock.send(view[:65536])
        except BlockingIOError:
            return 0

    def recv_some() -> bytes:
        try:
            data = sock.recv(1 << 16)
        except BlockingIOError:
            return b""
        if not data:
            raise ConnectionError("the daemon closed the connection")
        return data

    return RawIO(send_some, recv_some, sock.fileno())


def flood(io: RawIO, data: bytes, deadline: float, stall: Optional[float] = None) -> int:
    """Send `data` without reading until all is sent or nothing is taken for `stall` s: bytes sent."""
    stall = STALL if stall is None else stall
    view = memoryview(data)
    pos, last = 0, time.monotonic()
    wait = threading.Event()
    while pos < len(view):
        now = time.monotonic()
        n = io.send_some(view[pos:])
        if n:
            pos, last = pos + n, now
        elif now - last > stall or now > deadline:
            break
        else:
            wait.wait(0.005)  # back-off while the daemon's input is blocked
    return pos


class Receiver:
    """Reads replies (and watch events) from several RawIOs until told how many are owed."""

    def __init__(self, ios: list[RawIO]) -> None:
        self.ios = ios
        self.bufs = [bytearray() for _ in ios]
        self.replies = [0] * len(ios)
        self.events = [0] * len(ios)
        self.errors = [0] * len(ios)
        self.bad_payloads = [0] * len(ios)

    def drain(self, owed: Callable[[int], bool], deadline: float,
              check: Optional[Callable[[int, bytes], bool]] = None) -> bool:
        """Read until owed(i) holds for every io, or the deadline: True when all complete."""
        sel = selectors.DefaultSelector()
        pending = set()
        for i, io in enumerate(self.ios):
            if not owed(i):
                sel.register(io.fileno, selectors.EVENT_READ, i)
                pending.add(i)
        try:
            while pending and time.monotonic() < deadline:
                ready = sel.select(0.05)
                # a ring's data may be there without an event (coalesced): poll all rings
                for i in list(pending) if not ready else [key.data for key, _ in ready]:
                    self._read(i, check)
                    if owed(i):
                        sel.unregister(self.ios[i].fileno)
                        pending.discard(i)
        finally:
            sel.close()
        return not pending

    def _read(self, i: int, check) -> None:
        data = self.ios[i].recv_some()
        if not data:
            return
        buf = self.bufs[i]
        buf += data

        def on_reply(op: int, _rid: int, payload: bytes) -> None:
            if op == XS_WATCH_EVENT:
                self.events[i] += 1
                return
            self.replies[i] += 1
            if check is not None and not check(op, payload):
                self.bad_payloads[i] += 1

        used, _got, errors = split_replies(buf, on_reply)
        del buf[:used]
        self.errors[i] += errors


# -- the victims -----------------------------------------------------------------

class VictimSocket:
    """A dom0 client writing and reading back /victim every 20 ms; records round trips."""

    def __init__(self, daemon: Daemon) -> None:
        self.client = SocketClient(daemon.socket_path)
        self.client.timeout = 30.0
        self.stop = threading.Event()
        self.worst = 0.0
        self.rounds = 0
        self.error: Optional[BaseException] = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            while not self.stop.wait(0.02):
                t0 = time.monotonic()
                value = str(self.rounds)
                self.client.write("/victim/v", value)
                if self.client.read("/victim/v") != value.encode():
                    raise AssertionError("victim read back another value")
                self.worst = max(self.worst, time.monotonic() - t0)
                self.rounds += 1
        except BaseException as exc:  # reported by the caller
            self.error = exc

    def close(self) -> None:
        self.stop.set()
        self.thread.join(60)
        self.client.close()


def guest_served(guest, n: int) -> bool:
    """The victim guest's write and read-back (bounded by its client's timeout)."""
    guest.client.write("served", str(n))
    return guest.client.read("served") == str(n).encode()


# -- attacks: each round returns what it did, with the peak sampled before draining ----

@dataclass
class Round:
    peak_kib: int = 0
    after_kib: int = 0
    note: str = ""
    complete: bool = False


@dataclass
class AttackResult:
    base_kib: int = 0
    rounds: list[Round] = field(default_factory=list)
    victim_worst_ms: float = 0.0
    victim_rounds: int = 0
    victim_error: str = ""
    guest_served: bool = True
    alive: bool = True


def read_requests(path: bytes, n: int) -> bytes:
    return b"".join(packet(XS_READ, i, path + b"\0") for i in range(n))


def _no_read_round(daemon: Daemon, io: RawIO, path: bytes, n: int) -> Round:
    """Flood n READs of `path` without reading, sample, then read every reply owed."""
    data = read_requests(path, n)
    deadline = time.monotonic() + ROUND_DEADLINE
    sent = flood(io, data, deadline)
    r = Round(peak_kib=rss_kib(daemon.pid))
    owed = sent // (16 + len(path) + 1)  # complete packets only (the rest stays partial)
    rx = Receiver([io])
    r.complete = rx.drain(lambda i: rx.replies[i] >= owed, deadline,
                          check=lambda op, payload: op == XS_READ and payload == BIG)
    # the partial request finishes with the rest of the data: send it and its reply too
    if sent < len(data):
        sent += flood(io, data[sent:sent + (16 + len(path) + 1)
                               - sent % (16 + len(path) + 1)], deadline)
        owed = sent // (16 + len(path) + 1)
        r.complete &= rx.drain(lambda i: rx.replies[i] >= owed, deadline,
                               check=lambda op, payload: op == XS_READ and payload == BIG)
    r.complete &= rx.errors[0] == 0 and rx.bad_payloads[0] == 0 and rx.replies[0] == owed
    r.after_kib = rss_kib(daemon.pid)
    r.note = f"{owed} READs taken of {n}, {rx.replies[0]} answered"
    return r


def attack_guest_no_read(daemon: Daemon, guests: GuestFactory, scale: int):
    g = guests.add(ATTACKER)
    g.client.write("data/big", BIG)
    io = ring_io(g)
    home = b"/local/domain/%d/data/big" % ATTACKER
    return lambda: _no_read_round(daemon, io, home, scale)


def attack_socket_no_read(daemon: Daemon, guests: GuestFactory, scale: int):
    guests.d0.write("/attack/big", BIG)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(daemon.socket_path)
    io = socket_io(sock)
    return lambda: _no_read_round(daemon, io, b"/attack/big", scale)


def attack_watch_storm(daemon: Daemon, guests: GuestFactory, scale: int, watchers: int):
    """`watchers` sockets watch /storm; each round dom0 writes `scale` times under it."""
    guests.d0.write("/storm/k", "0")
    socks, ios = [], []
    for i in range(watchers):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect(daemon.socket_path)
        s.sendall(packet(XS_WATCH, 1, b"/storm\0w%d\0" % i))
        socks.append(s)
        ios.append(socket_io(s))
    rx = Receiver(ios)  # watch replies + initial events, read now
    rx.drain(lambda i: rx.replies[i] >= 1 and rx.events[i] >= 1, time.monotonic() + 60)
    wsock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    wsock.connect(daemon.socket_path)
    wio = socket_io(wsock)
    writer = Receiver([wio])
    total = {"writes": 0}

    def one_round() -> Round:
        data = b"".join(packet(XS_WRITE, i, b"/storm/k\0%06d" % i) for i in range(scale))
        deadline = time.monotonic() + ROUND_DEADLINE
        sent = flood(wio, data, deadline)
        r = Round(peak_kib=rss_kib(daemon.pid))
        # finish the partial packet, then everyone reads what it is owed
        size = len(data) // scale if scale else 0
        while sent % size and time.monotonic() < deadline:
            sent += wio.send_some(memoryview(data)[sent:sent + size - sent % size])
        owed = total["writes"] + sent // size
        everyone = Receiver(ios + [wio])
        everyone.replies[-1] = writer.replies[0]
        for i in range(len(ios)):
            everyone.events[i] = rx.events[i]
        done = everyone.drain(
            lambda i: (everyone.replies[i] >= owed if i == len(ios)
                       else everyone.events[i] >= owed + 1),
            deadline)
        writer.replies[0] = everyone.replies[-1]
        rx.events[:] = everyone.events[:len(ios)]
        exact = sum(e == owed + 1 for e in rx.events)
        r.complete = (done and exact == watchers and everyone.errors[-1] == 0
                      and writer.replies[0] == owed)
        total["writes"] = owed
        r.after_kib = rss_kib(daemon.pid)
        r.note = (f"{sent // size} writes taken of {scale}, "
                  f"{exact}/{watchers} watchers with exactly one event per write"
                  f" (events {min(rx.events)}..{max(rx.events)}, owed {owed + 1})")
        return r

    one_round.keep = socks + [wsock]  # keep the sockets open for the attack's lifetime
    return one_round


def attack_tx_max(daemon: Daemon, guests: GuestFactory, scale: int):
    """`scale` writes in each of quota-transaction (10) transactions of one guest."""
    g = guests.add(ATTACKER)
    c = g.client
    c.timeout = 60.0

    def one_round() -> Round:
        tids = []
        try:
            while len(tids) < 10:
                tids.append(c.transaction_start())
        except Exception as exc:  # noqa: BLE001 - the quota answer is the point
            note_start = f"start refused after {len(tids)}: {exc}"
        else:
            note_start = "10 transactions"
        ok = errs = 0
        err_kinds: set[str] = set()
        for t, tid in enumerate(tids):
            for base in range(0, scale, 32):
                rids = [c.send(XS_WRITE, b"data/t%d/k%d\0" % (t, i) + BIG, tx=tid)
                        for i in range(base, min(scale, base + 32))]
                for rid in rids:
                    op, _tx, payload = c.recv_reply(rid, 60)
                    if op == XS_ERROR:
                        errs += 1
                        err_kinds.add(payload.rstrip(b"\0").decode())
                    else:
                        ok += 1
        r = Round(peak_kib=rss_kib(daemon.pid))
        end_errors = []
        for tid in tids:
            try:
                c.transaction_end(tid, commit=False)
            except XsError as exc:  # counted: a refused abort leaves the transaction open
                end_errors.append(exc.err)
        r.after_kib = rss_kib(daemon.pid)
        r.complete = ok > 0 and not end_errors
        r.note = (f"{note_start}, {ok} writes in them, {errs} refused "
                  f"({','.join(sorted(err_kinds)) or '-'}), aborted"
                  + (f" (abort refused: {','.join(sorted(set(end_errors)))})" if end_errors else ""))
        return r

    return one_round


ATTACKS = ("guest-no-read", "socket-no-read", "watch-storm", "tx-max")
DEFAULT_SCALE = {"guest-no-read": 4000, "socket-no-read": 20000, "watch-storm": 1000,
                 "tx-max": 1000}


def run_attack(kind: str, attack: str, scale: int, rounds: int, watchers: int = 1000,
               daemon: Optional[Daemon] = None) -> AttackResult:
    """One attack on `daemon` (or a fresh one of `kind`), `rounds` rounds, with the victims."""
    own = daemon is None
    if own:
        daemon = start(kind, DaemonSettings(access_log=False), prefix="oxa")
    guests = GuestFactory(daemon)
    res = AttackResult()
    victim = None
    try:
        victim_guest = guests.add(VICTIM)
        victim_guest.client.timeout = 30.0
        if attack == "watch-storm":
            one_round = attack_watch_storm(daemon, guests, scale, watchers)
        else:
            one_round = {"guest-no-read": attack_guest_no_read,
                         "socket-no-read": attack_socket_no_read,
                         "tx-max": attack_tx_max}[attack](daemon, guests, scale)
        res.base_kib = rss_kib(daemon.pid)
        victim = VictimSocket(daemon)
        for n in range(rounds):
            res.rounds.append(one_round())
            res.guest_served &= guest_served(victim_guest, n)
        victim.close()
        res.victim_worst_ms = victim.worst * 1000
        res.victim_rounds = victim.rounds
        res.victim_error = repr(victim.error) if victim.error else ""
        victim = None
        res.alive = daemon.alive()
    finally:
        if victim is not None:
            victim.close()
        for s in getattr(locals().get("one_round"), "keep", []):
            s.close()
        guests.close()
        if own:
            stop(daemon)
    return res


def print_results(results: dict, kinds: list[str]) -> None:
    print(f"{'attack':<15} {'round':>5}" + "".join(
        f" {k + ' base':>11} {k + ' peak':>11} {k + ' after':>11}" for k in kinds)
        + "  (MiB VmRSS)")
    for attack, by_kind in results.items():
        n_rounds = max(len(r.rounds) for r in by_kind.values() if isinstance(r, AttackResult))
        for i in range(n_rounds):
            row = f"{attack:<15} {i + 1:>5}"
            for kind in kinds:
                r = by_kind[kind]
                if isinstance(r, AttackResult) and i < len(r.rounds):
                    rd = r.rounds[i]
                    row += (f" {mib(r.base_kib):>11.1f} {mib(rd.peak_kib):>11.1f}"
                            f" {mib(rd.after_kib):>11.1f}")
                else:
                    row += f" {'n/a':>11} {'n/a':>11} {'n/a':>11}"
            print(row)
        for kind in kinds:
            r = by_kind[kind]
            if not isinstance(r, AttackResult):
                print(f"    {kind}: {r}")
                continue
            notes = "; ".join(f"r{i + 1}: {rd.note}{'' if rd.complete else ' INCOMPLETE'}"
                              for i, rd in enumerate(r.rounds))
            print(f"    {kind}: victim socket {r.victim_rounds} round trips, worst "
                  f"{r.victim_worst_ms:.0f} ms{' ERROR ' + r.victim_error if r.victim_error else ''}"
                  f"; victim guest served: {r.guest_served}; alive: {r.alive}; {notes}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--attacks", default=",".join(ATTACKS))
    ap.add_argument("--kinds", default="ocaml,oxsd")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("-w", "--watchers", type=int, default=1000)
    ap.add_argument("--scale", type=int, default=0,
                    help="requests per round (default per attack: "
                    + ", ".join(f"{k} {v}" for k, v in DEFAULT_SCALE.items()) + ")")
    ap.add_argument("--stall", type=float, default=1.0,
                    help="a flood ends after this long without progress (1.0 s)")
    args = ap.parse_args(argv)
    global STALL
    STALL = args.stall
    kinds = args.kinds.split(",")
    results: dict = {}
    ok = True
    for attack in args.attacks.split(","):
        results[attack] = {}
        for kind in kinds:
            try:
                r = run_attack(kind, attack, args.scale or DEFAULT_SCALE[attack], args.rounds,
                               args.watchers)
                ok &= r.alive and r.guest_served and not r.victim_error and all(
                    rd.complete for rd in r.rounds)
            except (DaemonError, OSError, RuntimeError, ConnectionError, TimeoutError) as e:
                r, ok = f"failed: {e!r}", False
            results[attack][kind] = r
    print(f"resident memory under attack, {args.rounds} rounds each, "
          f"{args.watchers} watchers in watch-storm")
    print_results(results, kinds)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
