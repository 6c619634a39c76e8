#!/usr/bin/env python3
"""Boot storm: N guests start at once, each with a vif and a vbd handshake; oxsd against the original.

Per guest d (the traffic of a real device set-up, as libxl, netback/blkback
and the guest's xenbus make it):

* the toolstack (its own dom0 socket connection, as `xl create` run N times
  at once) creates /local/domain/d and the frontend and backend nodes of a
  vif and a vbd in one transaction, with their permissions (frontend owned
  by d, readable by dom0; backend owned by dom0, readable by d), commits it
  (retried on EAGAIN), then INTRODUCEs d;
* a backend client per device type (vif, vbd: dom0 socket) watches its
  backend directory; for a new device it reads `frontend`, watches the
  frontend's `state`, writes a feature node and state 2 (InitWait); when the
  frontend reaches 3 it reads the ring references and writes state 4;
* the guest (its ring and event channel), once introduced, lists and reads
  its frontend, watches each backend's `state`, and walks its own state
  1 -> 3 -> 4 as the backend answers (ring-ref / event-channel written
  before 3).

Handshake time: from the toolstack's TRANSACTION_START to the guest's
reply for its last `state = 4`.  Reported per runtime: the storm's wall time
(first request to last handshake) and p50/p99 of the handshake times, best
and median over --repeat storms taking turns, with commit retries and the
daemon's CPU.  Each storm is on a fresh daemon, after --warmup-storms
untimed storms on it (other domids, released again: a JIT runtime compiles
there; 0 gives cold figures).

Both daemons run with `quota-maxwatchevents` raised to --watch-quota (by
default 32 per guest, at least Debian's 1024).  The bench's backends are one
Python loop that falls thousands of watch events behind a fast daemon; past
2 x quota-maxwatchevents queued for one watch, 4.17 parks the rest in the
source connection's pipe, and a toolstack connection whose events are
parked there is never read again once its replies are written (nothing
flushes a watch's pipe when its watcher drains: Connections.
has_pending_watchevents is never filled in).  oxsd, a faithful port, does
the same.  A real dom0 backend (the kernel's xenbus) drains its events
promptly, so the storm is kept off that path, on both daemons alike
(bench/README.md).  All clients are driven by one event loop, so
the client side is one process pinned to one CPU, the daemon on the other.

    python3 bench/bench_bootstorm.py                      # 50 and 200 guests
    python3 bench/bench_bootstorm.py -g 20 --repeat 1
    python3 bench/bench_bootstorm.py --python "$(tools/setup-pypy.sh)"
"""
from __future__ import annotations

import argparse
import math
import selectors
import statistics
import sys
import time
from pathlib import Path
from typing import Callable, Optional

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (DaemonError, DaemonSettings, GuestFactory, Runtime,  # noqa: E402
                     add_runtime_args, alternating, cpu_seconds, pin_client, pinning_note,
                     print_summary, runtimes, start_runtime, stop)
from oxsd.sim.client import SocketClient, XsClient, XsError  # noqa: E402
from oxsd.xb.op import Op  # noqa: E402

FIRST_DOMID = 100
DEVICES = (("vif", 0), ("vbd", 51712))
# Watch events one backend watch gets per guest (about 16 for the vbd: the
# transaction's nodes and the backend's own writes), doubled: --watch-quota's default
WATCH_EVENTS_PER_GUEST = 32
Reply = Callable[[int, bytes], None]  # (reply type, payload)


def _z(s: str) -> bytes:
    return s.encode() + b"\0"


class Peer:
    """One client of the storm, driven without blocking: requests carry callbacks."""

    def __init__(self, client: XsClient, on_event: Callable[[str, str], None] = lambda p, t: None,
                 drain: Optional[Callable[[], object]] = None) -> None:
        self.client = client
        self.on_event = on_event
        self.drain = drain
        self.pending: dict[int, Reply] = {}
        self.ops: dict[int, Op] = {}  # req_id -> op of each unanswered request

    def call(self, op: Op, payload: bytes, then: Reply = lambda ty, data: None,
             tx: int = 0) -> None:
        rid = self.client.send(op, payload, tx)
        self.pending[rid] = then
        self.ops[rid] = op

    def waiting_for(self) -> Optional[str]:
        """The op of the oldest unanswered request, if any."""
        return Op(self.ops[min(self.ops)]).name if self.ops else None

    def service(self) -> None:
        """Take whatever has arrived and run its callbacks (which may send more)."""
        if self.drain is not None:
            self.drain()
        c = self.client
        while True:
            data = c._recv_bytes(0)
            if not data:
                break
            c._rbuf += data
            c._parse()
            for rid in [r for r in c.replies if r in self.pending]:
                ty, _tx, payload = c.replies.pop(rid)
                self.ops.pop(rid)
                self.pending.pop(rid)(ty, payload)
            while c.events:
                self.on_event(*c.events.pop(0))


def _ok(ty: int, data: bytes, what: str) -> bytes:
    if ty == Op.ERROR:
        raise XsError(data.rstrip(b"\0").decode(), None)
    return data


class Storm:
    """N guests booting at once on one daemon; `run()` returns the timings."""

    def __init__(self, daemon, factory: GuestFactory, backends: dict[str, Peer],
                 domids: list[int]) -> None:
        self.daemon = daemon
        self.factory = factory
        self.backends = backends
        self.domids = domids
        self.sel = selectors.DefaultSelector()
        self.t0: dict[int, float] = {}
        self.done: dict[int, float] = {}
        self.retries = 0
        self.stalls = 0  # 50 ms selects that found nothing to read while guests were unfinished
        self.guests = {}
        self.tools: dict[int, Peer] = {}
        self.guest_peers: dict[int, Peer] = {}
        self.fe_state: dict[tuple[int, str], str] = {}
        self.be_seen: set[tuple[str, int]] = set()
        self.be_connected: set[tuple[str, int]] = set()
        for peer in backends.values():
            self.sel.register(peer.client.fileno(), selectors.EVENT_READ, peer)

    # -- paths
    @staticmethod
    def fe(d: int, kind: str, devid: int) -> str:
        return f"/local/domain/{d}/device/{kind}/{devid}"

    @staticmethod
    def be(d: int, kind: str, devid: int) -> str:
        return f"/local/domain/0/backend/{kind}/{d}/{devid}"

    # -- toolstack
    def _nodes(self, d: int) -> list[tuple[Op, bytes]]:
        """The transaction's requests: domain dir, then each device's frontend and backend."""
        reqs = [(Op.MKDIR, _z(f"/local/domain/{d}")),
                (Op.SET_PERMS, _z(f"/local/domain/{d}") + _z(f"n{d}") + _z("r0")),
                (Op.WRITE, _z(f"/local/domain/{d}/name") + f"guest-{d}".encode()),
                (Op.WRITE, _z(f"/local/domain/{d}/domid") + str(d).encode()),
                (Op.WRITE, _z(f"/local/domain/{d}/memory/target") + b"524288")]
        for kind, devid in DEVICES:
            fe, be = self.fe(d, kind, devid), self.be(d, kind, devid)
            mac = f"00:16:3e:00:{d >> 8 & 0xff:02x}:{d & 0xff:02x}"
            fe_nodes = {"backend": be, "backend-id": "0", "state": "1"}
            be_nodes = {"frontend": fe, "frontend-id": str(d), "online": "1", "state": "1"}
            if kind == "vif":
                fe_nodes.update({"handle": "0", "mac": mac})
                be_nodes.update({"script": "/etc/xen/scripts/vif-bridge", "mac": mac,
                                 "bridge": "xenbr0", "handle": "0", "type": "vif"})
            else:
                fe_nodes.update({"virtual-device": str(devid), "device-type": "disk"})
                be_nodes.update({"params": f"/dev/vg/guest-{d}", "type": "phy", "mode": "w",
                                 "dev": "xvda", "removable": "0", "bootable": "1",
                                 "device-type": "disk"})
            for path, perms, nodes in ((fe, [f"n{d}", "r0"], fe_nodes),
                                       (be, ["n0", f"r{d}"], be_nodes)):
                reqs.append((Op.MKDIR, _z(path)))
                reqs.append((Op.SET_PERMS, _z(path) + b"".join(_z(p) for p in perms)))
                reqs += [(Op.WRITE, _z(f"{path}/{k}") + v.encode()) for k, v in nodes.items()]
        return reqs

    def _create(self, d: int) -> None:
        tool = self.tools[d]

        def started(ty: int, data: bytes) -> None:
            tid = int(_ok(ty, data, "TRANSACTION_START").rstrip(b"\0"))
            for op, payload in self._nodes(d):
                tool.call(op, payload, lambda ty, data: _ok(ty, data, "tx request"), tx=tid)
            tool.call(Op.TRANSACTION_END, b"T\0", ended, tx=tid)

        def ended(ty: int, data: bytes) -> None:
            if ty == Op.ERROR and data.rstrip(b"\0") == b"EAGAIN":
                self.retries += 1
                self._create(d)
                return
            _ok(ty, data, "TRANSACTION_END")
            g = self.guests[d]
            tool.call(Op.INTRODUCE, _z(str(d)) + _z(str(g.mfn)) + _z(str(g.port)),
                      lambda ty, data: (_ok(ty, data, "INTRODUCE"), self._boot(d)))

        tool.call(Op.TRANSACTION_START, b"\0", started)

    # -- backends (dom0)
    def backend_event(self, kind: str, path: str, token: str) -> None:
        peer = self.backends[kind]
        if token.startswith("fe:"):  # a frontend's state changed
            _, d_s, devid_s = token.split(":")
            d, devid = int(d_s), int(devid_s)
            if d not in self.tools:  # an earlier storm's guest, removed since
                return
            fe, be = self.fe(d, kind, devid), self.be(d, kind, devid)

            def state(ty: int, data: bytes) -> None:
                if ty == Op.ERROR or data != b"3" or (kind, d) in self.be_connected:
                    return
                self.be_connected.add((kind, d))
                ref = "tx-ring-ref" if kind == "vif" else "ring-ref"
                peer.call(Op.READ, _z(f"{fe}/{ref}"))
                peer.call(Op.READ, _z(f"{fe}/event-channel"))
                peer.call(Op.WRITE, _z(f"{be}/state") + b"4")
            peer.call(Op.READ, _z(f"{fe}/state"), state)
            return
        parts = path.split("/")  # /local/domain/0/backend/KIND/D/DEVID[/...]
        if len(parts) < 8 or not parts[6].isdigit():
            return
        d, devid = int(parts[6]), int(parts[7])
        if d not in self.tools or (kind, d) in self.be_seen:
            return
        self.be_seen.add((kind, d))
        be = self.be(d, kind, devid)

        def frontend(ty: int, data: bytes) -> None:
            fe = _ok(ty, data, "READ frontend").decode()
            peer.call(Op.WATCH, _z(f"{fe}/state") + _z(f"fe:{d}:{devid}"))
            feature = "feature-rx-copy" if kind == "vif" else "feature-flush-cache"
            peer.call(Op.WRITE, _z(f"{be}/{feature}") + b"1")
            peer.call(Op.WRITE, _z(f"{be}/state") + b"2")
        peer.call(Op.READ, _z(f"{be}/frontend"), frontend)

    # -- guests
    def _boot(self, d: int) -> None:
        g = self.guests[d]
        peer = Peer(g.client, lambda p, t: self.guest_event(d, p, t), drain=g.evtchn.drain)
        self.guest_peers[d] = peer
        self.sel.register(g.evtchn.fd(), selectors.EVENT_READ, peer)
        for kind, _devid in DEVICES:
            def listed(ty: int, data: bytes, kind=kind) -> None:
                for devid in [x for x in _ok(ty, data, "DIRECTORY").split(b"\0") if x]:
                    self._frontend(d, kind, int(devid))
            peer.call(Op.DIRECTORY, _z(f"device/{kind}"), listed)

    def _frontend(self, d: int, kind: str, devid: int) -> None:
        peer = self.guest_peers[d]
        fe = f"device/{kind}/{devid}"
        self.fe_state[(d, kind)] = "1"

        def backend(ty: int, data: bytes) -> None:
            be = _ok(ty, data, "READ backend").decode()
            peer.call(Op.READ, _z(f"{fe}/backend-id"))
            peer.call(Op.WATCH, _z(f"{be}/state") + _z(f"be:{kind}:{devid}"))
            peer.call(Op.WRITE, _z(f"{fe}/state") + b"1")
        peer.call(Op.READ, _z(f"{fe}/backend"), backend)

    def guest_event(self, d: int, path: str, token: str) -> None:
        if not token.startswith("be:"):
            return
        _, kind, devid = token.split(":")
        peer = self.guest_peers[d]
        fe = f"device/{kind}/{devid}"

        def state(ty: int, data: bytes) -> None:
            if ty == Op.ERROR:
                return
            mine = self.fe_state[(d, kind)]
            if data == b"2" and mine == "1":
                self.fe_state[(d, kind)] = "3"
                refs = ("tx-ring-ref", "rx-ring-ref") if kind == "vif" else ("ring-ref",)
                for i, ref in enumerate(refs):
                    peer.call(Op.WRITE, _z(f"{fe}/{ref}") + str(8 + i).encode())
                peer.call(Op.WRITE, _z(f"{fe}/event-channel") + b"7")
                peer.call(Op.WRITE, _z(f"{fe}/state") + b"3")
            elif data == b"4" and mine == "3":
                self.fe_state[(d, kind)] = "4"
                peer.call(Op.WRITE, _z(f"{fe}/state") + b"4", lambda ty, data: connected())

        def connected() -> None:
            if all(self.fe_state.get((d, k)) == "4" for k, _ in DEVICES):
                self.done[d] = time.perf_counter()
        peer.call(Op.READ, _z(path), state)

    # -- the storm
    def run(self, max_seconds: float) -> dict:
        sock_path = self.daemon.socket_path
        for d in self.domids:  # domain building: pages, event channels, xl's connections
            self.guests[d] = self.factory.add(d, introduce=False)
            self.tools[d] = Peer(connect(sock_path))
            self.sel.register(self.tools[d].client.fileno(), selectors.EVENT_READ,
                              self.tools[d])
        cpu0 = cpu_seconds(self.daemon.pid)
        start = time.perf_counter()
        for d in self.domids:
            self.t0[d] = time.perf_counter()
            self._create(d)
        deadline = time.monotonic() + max_seconds
        while len(self.done) < len(self.domids) and time.monotonic() < deadline:
            ready = self.sel.select(timeout=0.05)
            for key, _ in ready:
                key.data.service()
            if not ready:  # an event may have been coalesced: look at every ring (a stall)
                self.stalls += 1
                for peer in self.guest_peers.values():
                    peer.service()
        end = max(self.done.values(), default=time.perf_counter())
        self._settle(deadline)
        cpu = cpu_seconds(self.daemon.pid) - cpu0
        times = sorted(self.done[d] - self.t0[d] for d in self.done)
        return {"wall": end - start, "times": times, "complete": len(self.done),
                "retries": self.retries, "cpu": cpu, "stalls": self.stalls}

    def _settle(self, deadline: float) -> None:
        """Serve the backends until every request they sent is answered.

        Their last reads and writes are the storm's work too, and replies left
        unread would reach the next storm (on the same backends) after this
        storm's nodes are removed.
        """
        while any(p.pending for p in self.backends.values()) and time.monotonic() < deadline:
            for key, _ in self.sel.select(timeout=0.05):
                key.data.service()

    def stalled(self) -> str:
        """Where the unfinished guests stand: how many wait for which unanswered request."""
        where: dict[str, int] = {}
        for d in self.domids:
            if d in self.done:
                continue
            peer = self.guest_peers.get(d)
            step = (f"guest waits for {peer.waiting_for()}" if peer and peer.waiting_for()
                    else f"toolstack waits for {self.tools[d].waiting_for()}"
                    if self.tools[d].waiting_for() else "no request unanswered")
            where[step] = where.get(step, 0) + 1
        return ", ".join(f"{n} {step}" for step, n in sorted(where.items(), key=lambda x: -x[1]))

    def close(self, release: bool) -> None:
        """Close the storm's clients; with `release`, RELEASE its domains and remove their nodes."""
        for d, tool in self.tools.items():
            if release:
                c = tool.client
                for path in (f"/local/domain/{d}",
                             *(f"/local/domain/0/backend/{k}/{d}" for k, _ in DEVICES)):
                    try:
                        c.rm(path)
                    except XsError:
                        pass
                try:
                    c.release(d)
                except XsError:
                    pass
            tool.client.close()
        self.sel.close()


def percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile of sorted values (q in 0..100)."""
    if not sorted_values:
        return float("nan")
    k = max(0, math.ceil(q / 100 * len(sorted_values)) - 1)
    return sorted_values[k]


def connect(path: str) -> SocketClient:
    """A socket client; retried while the daemon's listen backlog is full (EAGAIN)."""
    deadline = time.monotonic() + 10.0
    while True:
        try:
            return SocketClient(path)
        except BlockingIOError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.005)  # the daemon accepts on its next iteration


def check_connected(d0: SocketClient, done: dict[int, float]) -> None:
    """Every device of every finished guest is Connected (4) on both ends, as the daemon says."""
    for d in done:
        for kind, devid in DEVICES:
            for path in (Storm.fe(d, kind, devid), Storm.be(d, kind, devid)):
                if d0.read(f"{path}/state") != b"4":
                    raise RuntimeError(f"{path}/state is not 4 after the handshake")


def one_storm(rt: Runtime, n: int, args) -> dict:
    """A fresh daemon, --warmup-storms untimed storms, then the timed one."""
    quota = args.watch_quota or max(1024, WATCH_EVENTS_PER_GUEST * n)
    settings = DaemonSettings(access_log=not args.no_access_log,
                              extra_conf=[f"quota-maxwatchevents = {quota}"])
    daemon = start_runtime(rt, settings, prefix="oxs")
    factory = GuestFactory(daemon)
    backends: dict[str, Peer] = {}
    try:
        for kind, _ in DEVICES:
            client = connect(daemon.socket_path)
            backends[kind] = Peer(client)
            client.watch(f"/local/domain/0/backend/{kind}", "be")
            client.wait_watch(5.0)  # the watch's own first event
        storm = None
        for w in range(args.warmup_storms + 1):
            domids = list(range(FIRST_DOMID + w * n, FIRST_DOMID + (w + 1) * n))
            storm = Storm(daemon, factory, backends, domids)
            for kind, peer in backends.items():
                peer.on_event = lambda p, t, kind=kind, s=storm: s.backend_event(kind, p, t)
            res = storm.run(args.max_seconds)
            if res["complete"] < n:
                storm.close(release=False)
                raise RuntimeError(f"{n - res['complete']} of {n} guests unfinished after "
                                   f"{args.max_seconds:g} s: {storm.stalled()}")
            check_connected(backends["vif"].client, storm.done)
            last = w == args.warmup_storms
            storm.close(release=not last)
            if not last:
                for d in domids:  # the guests of an untimed storm go away again
                    factory.guests.remove(storm.guests[d])
                    storm.guests[d].close()
        return res
    finally:
        for peer in backends.values():
            peer.client.close()
        factory.close()
        stop(daemon)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-g", "--guests", default="50,200", help="storm sizes (50,200)")
    ap.add_argument("--repeat", type=int, default=3, help="storms per size and runtime (3)")
    ap.add_argument("--warmup-storms", type=int, default=1,
                    help="untimed storms on each daemon before the timed one (1)")
    ap.add_argument("--max-seconds", type=float, default=60.0,
                    help="give up on a storm after this long (60)")
    ap.add_argument("--no-access-log", action="store_true")
    ap.add_argument("--watch-quota", type=int, default=0,
                    help="quota-maxwatchevents of both daemons (0: 32 per guest, at least 1024)")
    add_runtime_args(ap, repeat=False)
    args = ap.parse_args(argv)
    rts = runtimes(args)
    sizes = [int(x) for x in args.guests.split(",") if x]
    pinned = pin_client()
    results: dict = {}
    for n in sizes:
        for rep in range(args.repeat):
            for rt in alternating(rts, rep):
                key = (rt.label, n)
                if isinstance(results.get(key), str):
                    continue
                try:
                    results.setdefault(key, []).append(one_storm(rt, n, args))
                except (DaemonError, OSError, TimeoutError, ConnectionError, XsError,
                        RuntimeError) as e:
                    results[key] = f"failed: {e!r}"
    quota = (str(args.watch_quota) if args.watch_quota
             else f"max(1024, {WATCH_EVENTS_PER_GUEST} x guests)")
    print(f"boot storm: guests at once, each a vif + vbd handshake; best/median of "
          f"{args.repeat} storms (turns), {args.warmup_storms} untimed warm-up storm(s) per "
          f"daemon, access log {'off' if args.no_access_log else 'on'}, "
          f"quota-maxwatchevents {quota}, {pinning_note(pinned)}")
    print(f"{'guests':>6} {'runtime':<12} {'wall best':>10} {'median':>8} {'p50 hs':>8} "
          f"{'p99 hs':>8} {'retries':>8} {'stalls':>6} {'cpu s':>6} {'wall/ocaml':>10}")
    ratios = []
    ok = True
    for n in sizes:
        ocaml_med = None
        for rt in rts:
            res = results.get((rt.label, n))
            if isinstance(res, str) or not res:
                print(f"{n:>6} {rt.label:<12} {res}")
                ok = False
                continue
            incomplete = [r for r in res if r["complete"] < n]
            walls = [r["wall"] for r in res]
            med = statistics.median(walls)
            p50 = statistics.median(percentile(r["times"], 50) for r in res)
            p99 = statistics.median(percentile(r["times"], 99) for r in res)
            if rt.label == "ocaml":
                ocaml_med = med
            ratio = f"{med / ocaml_med:>10.2f}" if ocaml_med and rt.label != "ocaml" else ""
            if ratio:
                ratios.append((f"{rt.label} wall/ocaml", med / ocaml_med, f"{n} guests"))
            flag = f"  ({len(incomplete)} storm(s) incomplete)" if incomplete else ""
            ok = ok and not incomplete
            print(f"{n:>6} {rt.label:<12} {min(walls):>9.3f}s {med:>7.3f}s {p50:>7.3f}s "
                  f"{p99:>7.3f}s {statistics.median(r['retries'] for r in res):>8.0f} "
                  f"{sum(r['stalls'] for r in res):>6} "
                  f"{statistics.median(r['cpu'] for r in res):>6.2f}{ratio}{flag}")
    print_summary("bench_bootstorm", ratios, higher_is_worse=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
