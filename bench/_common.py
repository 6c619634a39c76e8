"""What the benchmarks share: daemons, request packets, the request pump, the table.

Every benchmark starts a fresh OCaml oxenstored and a fresh oxsd
(oxsd.diff.daemons, the reference kit's configuration), drives them the same
way and prints both with the ratio oxsd/ocaml.  The pump here is transport
agnostic: a unix socket and a guest's ring differ only in how bytes are sent
and received.

Noise control (the machines are shared): with two or more CPUs the bench
client runs on the first and every daemon on the last (`pin_client`,
`pin_daemon`); each row is measured --repeat times, the runtimes taking
turns (ocaml, oxsd, ..., then the other way round), after an untimed
warm-up of --warmup requests per row (a JIT runtime compiles its loops
there); the table gives the best and the median ops/s, the spread
(max - min) / median, and the median daemon CPU per request.  CPU comes
from /proc/<pid>/stat in clock ticks (10 ms): a measurement goes on past
its N requests until the daemon has used 100 ticks (1 % resolution) or
--max-seconds have passed.  `--python PATH` adds a runtime: oxsd under
that interpreter (e.g. a pypy3 venv from tools/setup-pypy.sh), in the
same run.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import shutil
import statistics
import struct
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Optional

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from oxsd.diff.daemons import (Daemon, DaemonError, DaemonSettings,  # noqa: E402,F401
                               make_scratch, start_daemon)
from oxsd.sim.client import SocketClient  # noqa: E402
from oxsd.sim.guest import Guest, Sim  # noqa: E402

HDR = struct.Struct("<IIII")
XS_READ, XS_TRANSACTION_START, XS_TRANSACTION_END, XS_WRITE, XS_ERROR = 2, 6, 7, 11, 16
KEYS = 500
CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process, in seconds (10 ms resolution)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


CPU_TICKS_WANTED = 100  # daemon CPU ticks per measurement: 1 % resolution


# A daemon under PyPy gets the launchers' GC knobs (init/: PYPY_GC_NURSERY=2M,
# PYPY_GC_MAJOR_COLLECT=1.3 unless set): PyPy's own nursery, half the cache size
# /proc/cpuinfo reports, can be hundreds of MiB.
os.environ.setdefault("PYPY_GC_NURSERY", "2M")
os.environ.setdefault("PYPY_GC_MAJOR_COLLECT", "1.3")

# The CPUs this bench may use, read before pin_client narrows this process to one.
ALLOWED_CPUS = tuple(sorted(os.sched_getaffinity(0)))


def pin_client() -> Optional[int]:
    """Run this process (the bench client) on the first CPU when there are two or more."""
    cpus = ALLOWED_CPUS
    if len(cpus) < 2:
        return None
    os.sched_setaffinity(0, {cpus[0]})
    return cpus[0]


def pin_daemon(daemon: Daemon) -> None:
    """Move every thread of the daemon to the last allowed CPU (none with one CPU)."""
    cpus = ALLOWED_CPUS
    if len(cpus) < 2:
        return
    for tid in os.listdir(f"/proc/{daemon.pid}/task"):
        try:
            os.sched_setaffinity(int(tid), {cpus[-1]})
        except (ProcessLookupError, PermissionError):
            pass


@dataclass(frozen=True)
class Runtime:
    """One column of a bench: a daemon kind, and for oxsd the interpreter that runs it."""

    label: str
    kind: str
    python: Optional[str] = None
    source: Optional[str] = None  # another oxsd source tree (--source)
    jit: bool = False  # a JIT runtime (pypy): its warm-up is --jit-warmup


def interpreter_name(python: str) -> str:
    """sys.implementation.name of another interpreter ("pypy", "cpython")."""
    res = subprocess.run([python, "-c", "import sys; print(sys.implementation.name)"],
                         capture_output=True, text=True, timeout=60)
    if res.returncode != 0:
        raise SystemExit(f"--python {python}: {res.stderr.strip() or res.returncode}")
    return res.stdout.strip()


def add_runtime_args(ap: argparse.ArgumentParser, repeat: bool = True) -> None:
    """--kinds and --python (and, for throughput benches, --repeat and --warmup)."""
    ap.add_argument("--kinds", default="ocaml,oxsd", help="runtimes to compare (ocaml,oxsd)")
    ap.add_argument("--python", action="append", default=[], metavar="PATH",
                    help="also run oxsd under this interpreter (e.g. a pypy3), repeatable")
    ap.add_argument("--source", action="append", default=[], metavar="DIR",
                    help="also run the oxsd of this source tree (e.g. a worktree of an "
                         "earlier commit, for a before/after in one run), repeatable")
    if repeat:
        ap.add_argument("--repeat", type=int, default=3,
                        help="measurements per row and runtime, taking turns (3)")
        ap.add_argument("--warmup", type=int, default=2000,
                        help="untimed requests per row before the measurements (2000)")
        ap.add_argument("--jit-warmup", type=int, default=10000,
                        help="the same for a JIT runtime (pypy), whose ring path has "
                             "compiled after about 5000 requests (10000)")


def runtimes(args: argparse.Namespace) -> list[Runtime]:
    out = [Runtime(kind, kind) for kind in args.kinds.split(",") if kind]
    for python in args.python:
        name = interpreter_name(python)
        label = f"oxsd-{name}"
        while any(r.label == label for r in out):
            label += "'"
        out.append(Runtime(label, "oxsd", python, jit=name == "pypy"))
    for source in getattr(args, "source", []):
        label = f"oxsd@{Path(source).name}"
        while any(r.label == label for r in out):
            label += "'"
        out.append(Runtime(label, "oxsd", source=str(Path(source).resolve())))
    return out


def start(kind: str, settings: Optional[DaemonSettings] = None, prefix: str = "oxb",
          python: Optional[str] = None, source: Optional[str] = None) -> Daemon:
    """A fresh daemon of `kind` in a short scratch dir (its sim dir is SCRATCH/sim), pinned.

    `python`: the interpreter for oxsd (default this one); `source`: the oxsd
    source tree (default this one).
    """
    scratch = make_scratch(f"{prefix}-{kind[:2]}-")
    settings = dataclasses.replace(settings or DaemonSettings(), python=python, source=source)
    try:
        daemon = start_daemon(kind, scratch, settings=settings)
    except DaemonError:
        shutil.rmtree(scratch, ignore_errors=True)
        raise
    pin_daemon(daemon)
    return daemon


def start_runtime(rt: Runtime, settings: Optional[DaemonSettings] = None,
                  prefix: str = "oxb") -> Daemon:
    return start(rt.kind, settings, prefix, rt.python, rt.source)


def rss_kib(pid: int) -> int:
    """VmRSS of a process, KiB."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for {pid}")


def stop(daemon: Daemon) -> None:
    daemon.stop()
    shutil.rmtree(daemon.scratch, ignore_errors=True)


def requests(op: int, n: int, prefix: bytes = b"/bench") -> list[bytes]:
    """n XS_WRITE or XS_READ packets on PREFIX/k<i>, keys cycled over KEYS."""
    out = []
    for i in range(n):
        path = b"%s/k%d\0" % (prefix, i % KEYS)
        payload = path + b"value-%d" % i if op == XS_WRITE else path
        out.append(HDR.pack(op, i & 0xFFFFFFFF, 0, len(payload)) + payload)
    return out


def split_replies(buf: bytearray, on_reply: Optional[Callable[[int, int, bytes], None]] = None
                  ) -> tuple[int, int, int]:
    """Complete packets at the start of `buf`: (bytes used, packets, XS_ERROR packets).

    `on_reply(op, req_id, payload)` is called for each, when given.
    """
    pos = got = errors = 0
    size = len(buf)
    while size - pos >= 16:
        op, rid, _tx, length = HDR.unpack_from(buf, pos)
        if size - pos < 16 + length:
            break
        if on_reply is not None:
            on_reply(op, rid, bytes(buf[pos + 16:pos + 16 + length]))
        errors += op == XS_ERROR
        pos += 16 + length
        got += 1
    return pos, got, errors


def pump(send: Callable[[bytes], object], recv: Callable[[], bytes], reqs: list[bytes],
         depth: int, deadline: float) -> tuple[int, int]:
    """Keep `depth` requests in flight until all are answered or the deadline: (replies, errors).

    Each batch of new requests goes out in one send; `recv` returns what has
    arrived (empty: the peer is gone or silent, which ends the run with an error).
    """
    done = errors = 0
    buf = bytearray()
    sent = min(depth, len(reqs))
    send(b"".join(reqs[:sent]))
    while done < sent:
        data = recv()
        if not data:
            raise ConnectionError(f"no reply from the daemon ({done}/{sent} answered)")
        buf += data
        used, got, errs = split_replies(buf)
        del buf[:used]
        done += got
        errors += errs
        if got and sent < len(reqs) and time.monotonic() < deadline:
            more = reqs[sent:sent + got]
            send(b"".join(more))
            sent += len(more)
    return done, errors


def measure(daemon: Daemon, send, recv, op: int, n: int, depth: int, max_seconds: float,
            prefix: bytes = b"/bench") -> dict:
    """ops/s and daemon CPU per request for n requests of `op` at `depth` (after a warm-up).

    Goes on with further rounds of the same n requests until the daemon has
    used CPU_TICKS_WANTED clock ticks (1 % CPU resolution) or max_seconds
    have passed; `ticks` says how many it got.
    """
    reqs = requests(op, n, prefix)
    pump(send, recv, reqs[:200], depth, time.monotonic() + max_seconds)
    deadline = time.monotonic() + max_seconds
    cpu0, t0 = cpu_seconds(daemon.pid), time.perf_counter()
    done = errors = 0
    while True:
        d, e = pump(send, recv, reqs, depth, deadline)
        done, errors = done + d, errors + e
        cpu = cpu_seconds(daemon.pid) - cpu0
        if cpu * CLK_TCK >= CPU_TICKS_WANTED or time.monotonic() >= deadline:
            break
    elapsed = time.perf_counter() - t0
    return {"ops": done / elapsed, "cpu_us": cpu / done * 1e6, "n": done, "errors": errors,
            "ticks": round(cpu * CLK_TCK)}


def warm_up(send, recv, op: int, n: int, depth: int, prefix: bytes = b"/bench") -> None:
    """n untimed requests (a JIT runtime compiles its request loop here)."""
    if n > 0:
        pump(send, recv, requests(op, n, prefix), depth, time.monotonic() + 120)


def summarize(samples: list[dict]) -> dict:
    """best, median ops/s, spread (max-min)/median, median CPU/op of repeated measurements."""
    ops = [s["ops"] for s in samples]
    med = statistics.median(ops)
    return {"best": max(ops), "median": med, "spread": (max(ops) - min(ops)) / med,
            "cpu_us": statistics.median(s["cpu_us"] for s in samples),
            "ticks": min(s.get("ticks", CPU_TICKS_WANTED) for s in samples),
            "errors": sum(s["errors"] for s in samples), "n": len(samples)}


def alternating(items: list, rep: int) -> list:
    """`items` in order on even repetitions, reversed on odd ones."""
    return items if rep % 2 == 0 else items[::-1]


def pinning_note(pinned: Optional[int]) -> str:
    if pinned is None:
        return "not pinned (1 CPU)"
    return f"client on CPU {pinned}, daemons on CPU {ALLOWED_CPUS[-1]}"


def ratio_label(label: str) -> str:
    return f"{label}/ocaml"


def print_table(title: str, labels: list[str], results: dict,
                rows: Iterable[tuple[str, int]]) -> list[tuple[str, float, str]]:
    """One row per (op, depth): per runtime best/median ops/s, spread and CPU per op;
    then the median-over-median ratio of each runtime to ocaml.

    results[label] is {row: summarize(...)} or a failure message.  Returns
    (label, ratio, row name) for every ratio printed.
    """
    print(title)
    for label, res in results.items():
        if isinstance(res, str):
            print(f"  {label}: {res}")
    others = compared_to_ocaml(labels)
    head = f"{'op':<6} {'depth':>5}"
    for label in labels:
        head += f" | {label + ' best':>15} {'median':>9} {'spread':>6} {'cpu/op':>10}"
    for label in others:
        head += f" | {ratio_label(label):>14}"
    print(head)
    ratios = []
    for name, depth in rows:
        line = f"{name:<6} {depth:>5}"
        med = {}
        for label in labels:
            res = results[label]
            r = res.get((name, depth)) if isinstance(res, dict) else None
            if r is None:
                line += f" | {'n/a':>15} {'':>9} {'':>6} {'':>10}"
                continue
            med[label] = r["median"]
            res_flag = "~" if r["ticks"] < CPU_TICKS_WANTED else " "
            err = f" ({r['errors']} errors)" if r["errors"] else ""
            line += (f" | {r['best']:>15,.0f} {r['median']:>9,.0f} {r['spread']:>6.0%}"
                     f" {r['cpu_us']:>6.1f} us{res_flag}{err}")
        for label in others:
            if label in med and "ocaml" in med:
                ratio = med[label] / med["ocaml"]
                ratios.append((ratio_label(label), ratio, f"{name} x{depth}"))
                line += f" | {ratio:>14.2f}"
            else:
                line += f" | {'-':>14}"
        print(line)
    return ratios


def compared_to_ocaml(labels: list[str]) -> list[str]:
    """The runtimes that get a ratio column: all but ocaml, when ocaml is there."""
    return [lb for lb in labels if lb != "ocaml"] if "ocaml" in labels else []


def print_summary(script: str, ratios: list[tuple[str, float, str]],
                  higher_is_worse: bool = False) -> None:
    """One line: per ratio name, the worst over the rows (the lowest; the highest with
    higher_is_worse, for times and memory).  ratios: (name, ratio, row)."""
    worst: dict[str, tuple[float, str]] = {}
    for name, ratio, row in ratios:
        if (name not in worst or (ratio > worst[name][0] if higher_is_worse
                                  else ratio < worst[name][0])):
            worst[name] = (ratio, row)
    parts = [f"{name} worst {r:.2f} ({row})" for name, (r, row) in worst.items()]
    print(f"summary {script}: " + ("; ".join(parts) if parts else "no ratio (no ocaml row)"))


OPS_BY_DEPTH = [(name, depth) for name in ("WRITE", "READ") for depth in (1, 8)]
OP_CODES = {"WRITE": XS_WRITE, "READ": XS_READ}


def throughput_main(doc: str, default_n: int, transport: str,
                    open_target: Callable[[Runtime, argparse.Namespace], "Target"],
                    argv: Optional[list[str]], script: str) -> int:
    """The command line, measurement loop and table of a WRITE/READ throughput bench.

    Every runtime's daemon is started first (`open_target`); then for each
    row: an untimed warm-up on each, and --repeat measurements, the runtimes
    taking turns.
    """
    ap = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    ap.add_argument("-n", type=int, default=default_n,
                    help=f"requests per measurement, at least ({default_n})")
    ap.add_argument("--max-seconds", type=float, default=30.0,
                    help="cut a measurement short after this long (30)")
    ap.add_argument("--no-access-log", action="store_true",
                    help="start both daemons with --no-access-log")
    add_runtime_args(ap)
    args = ap.parse_args(argv)
    rts = runtimes(args)
    pinned = pin_client()
    targets: dict[str, Target] = {}
    results: dict = {}
    try:
        for rt in rts:
            try:
                targets[rt.label] = open_target(rt, args)
            except (DaemonError, OSError, TimeoutError, ConnectionError) as e:
                results[rt.label] = f"cannot start: {str(e).splitlines()[0]}"
        samples: dict = {label: {} for label in targets}
        jit = {rt.label for rt in rts if rt.jit}
        for name, depth in OPS_BY_DEPTH:
            op = OP_CODES[name]
            live = [lb for lb in targets if lb not in results]
            for label in live:
                try:
                    targets[label].warm_up(
                        op, max(args.warmup, args.jit_warmup) if label in jit else args.warmup,
                        depth)
                except (OSError, TimeoutError, ConnectionError) as e:
                    results[label] = f"failed: {e!r}"
            for rep in range(args.repeat):
                for label in alternating([lb for lb in live if lb not in results], rep):
                    try:
                        samples[label].setdefault((name, depth), []).append(
                            targets[label].measure(op, args.n, depth, args.max_seconds))
                    except (OSError, TimeoutError, ConnectionError) as e:
                        results[label] = f"failed: {e!r}"
        for label, rows in samples.items():
            if label not in results:
                results[label] = {row: summarize(s) for row, s in rows.items()}
    finally:
        for target in targets.values():
            target.close()
    labels = [rt.label for rt in rts]
    ratios = print_table(
        f"{transport}, >= {args.n} requests per measurement, keys cycled over {KEYS} nodes, "
        f"access log {'off' if args.no_access_log else 'on'}, best/median of {args.repeat} "
        f"(turns), warm-up {args.warmup} ({args.jit_warmup} for a JIT runtime), "
        f"{pinning_note(pinned)}"
        f"; '~': CPU under {CPU_TICKS_WANTED} ticks",
        labels, {lb: results[lb] for lb in labels}, OPS_BY_DEPTH)
    print_summary(script, ratios)
    return 0 if all(isinstance(results[lb], dict) for lb in labels) else 1


class Target:
    """A started daemon with its client side, for throughput_main (one per runtime)."""

    def __init__(self, daemon: Daemon, prefix: bytes = b"/bench") -> None:
        self.daemon = daemon
        self.prefix = prefix

    def io(self):
        """(send, recv, close) for one measurement."""
        raise NotImplementedError

    def warm_up(self, op: int, n: int, depth: int) -> None:
        send, recv, close = self.io()
        try:
            warm_up(send, recv, op, n, depth, self.prefix)
        finally:
            close()

    def measure(self, op: int, n: int, depth: int, max_seconds: float) -> dict:
        send, recv, close = self.io()
        try:
            return measure(self.daemon, send, recv, op, n, depth, max_seconds, self.prefix)
        finally:
            close()

    def close(self) -> None:
        stop(self.daemon)


class GuestFactory:
    """Creates guests on a daemon's sim dir and introduces them through dom0's socket."""

    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon
        self.sim = Sim(str(daemon.sim_dir))
        self.d0 = SocketClient(daemon.socket_path)
        self.guests: list[Guest] = []

    def add(self, domid: int, lazy: bool = False, introduce: bool = True) -> Guest:
        """Domain `domid` with /local/domain/<domid> owned by it, introduced."""
        g = Guest(self.sim, domid, lazy=lazy)
        self.guests.append(g)
        if introduce:
            self.introduce(g)
        return g

    def introduce(self, g: Guest) -> None:
        home = f"/local/domain/{g.domid}"
        self.d0.mkdir(home)
        self.d0.set_perms(home, [f"n{g.domid}", "r0"])
        self.d0.introduce(g.domid, g.mfn, g.port)

    def close(self) -> None:
        for g in self.guests:
            g.close()
        self.guests.clear()
        self.d0.close()
        self.sim.close()
