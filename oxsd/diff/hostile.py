"""Hostile-input fuzzing of a running oxsd, on both transports, with invariant checks.

A victim (a dom0 socket client and guest 5, each with nodes and watches)
shares the daemon with attackers that send random, truncated and malformed
packets: lengths up to 2^32-1, unknown ops, garbage payloads, packets cut
short, garbage written straight into a ring, and ring indexes that are torn,
equal, wrapped or 4 GiB apart, rewritten while the daemon reads them.  Each
ring attacker is a fresh guest, destroyed after its round (its ring may have
been marked bad).  Socket attackers are dom0, so their packets avoid what a
privileged client may legitimately do to others: absolute paths and the
domain-management and CONTROL ops are left out of their mix.

After every round the invariants are checked from the outside, as any client
sees them:

* the daemon is alive and answers the victim;
* the victim's nodes (values and permissions) are unchanged;
* every node that a DIRECTORY lists can be read (children have parents);
* each live domain's quota count (CONTROL quota) equals the nodes it owns in
  the tree, and a destroyed attacker owns nothing any more;
* the watch index matches the watches: writing each of the victim's watched
  nodes gives exactly one event per watch, and CONTROL watches lists just the
  watches that live connections hold.

    python3 -m oxsd.diff.hostile --packets 1000000 --seed 1   # long mode, both transports
"""
from __future__ import annotations

import argparse
import random
import select
import socket
import struct
import sys
import time
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

from ..sim.client import SocketClient, XsError
from ..sim.guest import Guest, Sim
from .daemons import Daemon, DaemonSettings, make_scratch, start_daemon

__all__ = ["Report", "HostileRun", "main"]

HDR = struct.Struct("<IIII")
VICTIM_DOMID = 5
VICTIM_NODES = {"/victim/a": b"1", "/victim/b/c": b"two", "/victim/d": b""}
GUEST_NODES = {"data/x": b"x", "data/y": b"y"}
ATTACK_DOMIDS = range(10, 60)
# dom0-only ops a socket attacker leaves out: they act on other domains by design
_SOCKET_EXCLUDED_OPS = {0, 8, 9, 18, 19}
_LENGTHS = (0, 1, 15, 16, 4095, 4096, 4097, 65536, 1 << 31, (1 << 32) - 1)
_OFF_REQ_CONS, _OFF_REQ_PROD, _OFF_RSP_CONS, _OFF_RSP_PROD = 2048, 2052, 2056, 2060


@dataclass
class Report:
    transport: str
    seed: int
    packets: int = 0
    rounds: int = 0
    violations: List[str] = field(default_factory=list)
    crashed: bool = False
    elapsed: float = 0.0

    def line(self) -> str:
        return (f"{self.transport}: seed {self.seed}, {self.packets} packets in {self.rounds} "
                f"rounds, {len(self.violations)} invariant violations, "
                f"{'CRASHED' if self.crashed else 'no crash'}, {self.elapsed:.1f} s")


def _random_packet(rng: random.Random, for_socket: bool) -> bytes:
    """One header and payload, sometimes with a lying length or cut short."""
    if rng.random() < 0.1:
        op = rng.getrandbits(32)
    else:
        op = rng.randrange(32)
        while for_socket and op in _SOCKET_EXCLUDED_OPS:
            op = rng.randrange(32)
    payload = bytes(rng.getrandbits(8) for _ in range(rng.choice((0, 1, 4, 12, 40, 64))))
    if rng.random() < 0.5:  # a NUL-separated, path-like payload
        payload = rng.choice((b"data", b"x", b"data/x", b"@releaseDomain", b"t", b"")) \
            + b"\0" + payload[:8] + rng.choice((b"\0", b""))
    if for_socket and payload[:1] == b"/":
        payload = b"r" + payload[1:]
    length = len(payload) if rng.random() < 0.6 else rng.choice(_LENGTHS)
    tx = 0 if rng.random() < 0.8 else rng.getrandbits(32)
    pkt = HDR.pack(op, rng.getrandbits(32), tx, length) + payload
    if rng.random() < 0.1:
        pkt = pkt[:rng.randrange(1, len(pkt))]
    return pkt


class HostileRun:
    """One daemon, its victim, and attack rounds on one transport."""

    def __init__(self, daemon: Daemon, seed: int) -> None:
        self.daemon = daemon
        self.rng = random.Random(seed)
        self.sim = Sim(str(daemon.sim_dir))
        self.d0 = SocketClient(str(daemon.socket_path))
        self.guest = Guest(self.sim, VICTIM_DOMID)
        self._introduce(self.guest)
        for path, value in VICTIM_NODES.items():
            self.d0.write(path, value)
        self.d0.set_perms("/victim/b/c", ["n0", f"r{VICTIM_DOMID}"])
        for path, value in GUEST_NODES.items():
            self.guest.write(path, value)
        self.d0.watch("/victim", "v")
        self.guest.watch("data", "g")
        self._drain_events(2)
        self.before = self._victim_state()

    # -- set-up ---------------------------------------------------------
    def _introduce(self, guest: Guest) -> None:
        home = f"/local/domain/{guest.domid}"
        self.d0.mkdir(home)
        self.d0.set_perms(home, [f"n{guest.domid}", "r0"])
        self.d0.introduce(guest.domid, guest.mfn, guest.port)

    def _drain_events(self, expected: int, timeout: float = 5.0) -> None:
        deadline = time.monotonic() + timeout
        got = 0
        while got < expected and time.monotonic() < deadline:
            for client in (self.d0, self.guest):
                if client.wait_watch(0.05) is not None:
                    got += 1

    # -- the victim's view ------------------------------------------------
    def _victim_state(self) -> Dict[str, Tuple[bytes, List[str]]]:
        out = {}
        for path in list(VICTIM_NODES) + [f"/local/domain/{VICTIM_DOMID}/{p}" for p in GUEST_NODES]:
            out[path] = (self.d0.read(path), self.d0.get_perms(path))
        return out

    def _walk(self) -> Tuple[Dict[int, int], List[str]]:
        """Nodes owned per domid, and the listed children that cannot be read."""
        owned: Dict[int, int] = {}
        orphans: List[str] = []
        stack = ["/"]
        while stack:
            path = stack.pop()
            try:
                perms = self.d0.get_perms(path)
                children = self.d0.directory(path)
            except XsError as e:
                orphans.append(f"{path}: {e}")
                continue
            owner = int(perms[0][1:]) if perms and perms[0][1:].lstrip("-").isdigit() else -1
            owned[owner] = owned.get(owner, 0) + 1
            base = path.rstrip("/")
            stack += [f"{base}/{c}" for c in children]
        return owned, orphans

    def check(self, live_attacker: Optional[int], dead: List[int]) -> List[str]:
        problems: List[str] = []
        if not self.daemon.alive:
            return ["the daemon died"]
        try:
            state = self._victim_state()
        except (XsError, OSError, TimeoutError) as e:
            return [f"the victim is not served: {e}"]
        if state != self.before:
            problems.append(f"victim nodes changed: {state} != {self.before}")
        owned, orphans = self._walk()
        problems += [f"listed but unreadable: {o}" for o in orphans]
        for domid in [VICTIM_DOMID] + ([live_attacker] if live_attacker is not None else []):
            line = self.d0.control("quota", str(domid)).rstrip(b"\0").decode()
            count = int(line.split()[-1].split("/")[0]) if "/" in line else 0
            if count != owned.get(domid, 0):
                problems.append(f"domain {domid}: quota count {count}, owns {owned.get(domid, 0)}")
        for domid in dead:
            if owned.get(domid):
                problems.append(f"destroyed domain {domid} still owns {owned[domid]} nodes")
        self.d0.write("/victim/a", VICTIM_NODES["/victim/a"])
        self.guest.write("data/x", GUEST_NODES["data/x"])
        events = []
        deadline = time.monotonic() + 2.0
        while len(events) < 2 and time.monotonic() < deadline:
            for client in (self.d0, self.guest):
                ev = client.wait_watch(0.05)
                if ev is not None:
                    events.append(ev)
        for client in (self.d0, self.guest):
            ev = client.wait_watch(0.1)
            while ev is not None:
                events.append(ev)
                ev = client.wait_watch(0.05)
        if sorted(events) != sorted([("/victim/a", "v"), ("data/x", "g")]):
            problems.append(f"watch events after writing the watched nodes: {events}")
        listed = [line for line in self.d0.control("watches").decode().splitlines()
                  if line.startswith("watch ")]
        extra = [line for line in listed if line not in
                 (f"watch D{VICTIM_DOMID}: data g",) and not line.endswith(": /victim v")]
        if live_attacker is None and extra:
            problems.append(f"watches of connections that are gone: {extra}")
        return problems

    # -- attacks --------------------------------------------------------
    def socket_round(self, packets: int) -> int:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(2.0)
        sock.connect(str(self.daemon.socket_path))
        sent = 0
        try:
            for _ in range(packets):
                sock.sendall(_random_packet(self.rng, True))
                sent += 1
                if self.rng.random() < 0.2 and select.select([sock], [], [], 0)[0]:
                    if not sock.recv(65536):
                        break  # the daemon closed it
        except OSError:
            pass  # the daemon closed a desynchronised connection
        finally:
            sock.close()
        return sent

    def ring_round(self, domid: int, packets: int) -> int:
        guest = Guest(self.sim, domid)
        self._introduce(guest)
        ring, rng = guest.ring, self.rng
        sent = 0
        index_attack = rng.random() < 0.3
        deadline = time.monotonic() + 5.0
        for i in range(packets):
            data = _random_packet(rng, False) if rng.random() < 0.8 else \
                bytes(rng.getrandbits(8) for _ in range(rng.randrange(1, 200)))
            while data and time.monotonic() < deadline:
                try:
                    n = ring.write_req(data)
                    ring.read_rsp()
                except Exception:  # our own check of indexes we broke on purpose
                    break
                data = data[n:]
                guest.client.notify()
                if n == 0:
                    time.sleep(0.001)
            sent += 1
            if index_attack and i == packets // 2:
                self._break_indexes(guest)
        self.sim.destroy_domain(domid)
        guest.close()
        self._wait_released(domid)
        return sent

    def _break_indexes(self, guest: Guest) -> None:
        ring, rng = guest.ring, self.rng
        cons = ring.req_cons
        kind = rng.randrange(5)
        if kind == 0:  # torn at a 16-bit boundary
            ring._set(_OFF_REQ_PROD, cons + 0x10000)
        elif kind == 1:  # 4 GiB apart (2^31 ahead)
            ring._set(_OFF_REQ_PROD, cons + 0x80000000)
        elif kind == 2:  # just over a ring's worth
            ring._set(_OFF_REQ_PROD, cons + 1025)
        elif kind == 3:  # the response side insane
            ring._set(_OFF_RSP_CONS, ring.rsp_prod + 0x80000000)
        else:  # rewritten while the daemon reads: flip back and forth
            for _ in range(20):
                ring._set(_OFF_REQ_PROD, rng.getrandbits(32))
                guest.client.notify()
        guest.client.notify()

    def _wait_released(self, domid: int, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while self.d0.is_introduced(domid):
            if time.monotonic() > deadline:
                raise TimeoutError(f"domain {domid} was not cleaned up after its destruction")
            time.sleep(0.02)


def run(transport: str, packets: int, seed: int, per_round: int = 200,
        settings: Optional[DaemonSettings] = None) -> Report:
    """Start an oxsd, attack it with `packets` packets on `transport`, check after each round."""
    report = Report(transport, seed)
    scratch = make_scratch("oxh-")
    started = time.monotonic()
    daemon = start_daemon("oxsd", scratch, settings=settings or DaemonSettings(access_log=False))
    try:
        host = HostileRun(daemon, seed)
        dead: List[int] = []
        while report.packets < packets:
            n = min(per_round, packets - report.packets)
            if transport == "socket":
                report.packets += host.socket_round(n)
            else:
                domid = ATTACK_DOMIDS[report.rounds % len(ATTACK_DOMIDS)]
                report.packets += host.ring_round(domid, n)
                dead = [domid]
            report.rounds += 1
            problems = host.check(None, dead)
            report.violations += [f"round {report.rounds}: {p}" for p in problems]
            if not daemon.alive:
                report.crashed = True
                break
            if report.violations:
                break
    finally:
        report.elapsed = time.monotonic() - started
        daemon.stop()
        if not report.violations and not report.crashed:
            import shutil
            shutil.rmtree(scratch, ignore_errors=True)
    return report


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(prog="python3 -m oxsd.diff.hostile",
                                 description=__doc__.split("\n\n")[0])
    ap.add_argument("--packets", type=int, default=10000, help="per transport")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--transport", choices=("socket", "ring", "both"), default="both")
    args = ap.parse_args(argv)
    status = 0
    for transport in (("socket", "ring") if args.transport == "both" else (args.transport,)):
        report = run(transport, args.packets, args.seed)
        print(report.line(), flush=True)
        for v in report.violations[:20]:
            print("  " + v)
        status |= bool(report.violations or report.crashed)
    return status


if __name__ == "__main__":
    sys.exit(main())
