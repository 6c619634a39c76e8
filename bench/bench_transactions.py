#!/usr/bin/env python3
"""Transaction cycles per second, oxsd against the OCaml oxenstored, in one run.

A cycle is TRANSACTION_START, a WRITE inside it, TRANSACTION_END commit.
Both daemons are fresh, with Debian's config (access log on), started by
oxsd.diff.daemons.  Rows:

* ``socket x1``: one socket client, each request waits for its reply
  (bound by the round trip as much as by the daemon);
* ``socket x1 pipelined``: one socket client keeping 16 cycles in flight
  (nothing else changes the store, so every id is the previous one + 1 and
  every commit takes the fast path): the daemon's own throughput;
* ``socket x4 disjoint``: four clients on their own keys: commits take the
  fast path or coalesce;
* ``socket x4 counter``: four clients incrementing one shared counter
  (read-modify-write, retried on EAGAIN): coalescing fails, replays,
  conflicts; only committed cycles count, retries are shown;
* ``guest x1``: one ring guest (simulated domain), waiting for each reply.

For each row: committed cycles per second, the daemon's CPU time per
committed cycle (utime + stime from /proc, 10 ms resolution: keep -n large),
and the ratio oxsd/ocaml of the cycle rates.

    python3 bench/bench_transactions.py            # 3000 cycles per row
    python3 bench/bench_transactions.py -n 10000 --rows pipelined
    python3 bench/bench_transactions.py --python "$(tools/setup-pypy.sh)"

Client and daemons pinned, --repeat runs taking turns (_common.py).
"""
from __future__ import annotations

import argparse
import socket
import statistics
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (HDR, XS_ERROR, XS_TRANSACTION_END, XS_TRANSACTION_START,  # noqa: E402
                     XS_WRITE, Runtime, add_runtime_args, alternating, compared_to_ocaml,
                     cpu_seconds, pin_client, pinning_note, print_summary, runtimes,
                     split_replies, start_runtime, stop)
from oxsd.diff.daemons import DaemonError, DaemonSettings  # noqa: E402
from oxsd.sim.client import SocketClient  # noqa: E402
from oxsd.sim.guest import Guest, Sim  # noqa: E402

PIPELINE = 16
ROWS = ("x1", "pipelined", "disjoint", "counter", "guest")
LABELS = {"x1": "socket x1", "pipelined": f"socket x1 pipelined ({PIPELINE})",
          "disjoint": "socket x4 disjoint", "counter": "socket x4 counter",
          "guest": "guest x1"}


def connect(path: str) -> SocketClient:
    """A socket client; retried while the daemon's backlog of 1 is full (EAGAIN)."""
    deadline = time.monotonic() + 10.0
    while True:
        try:
            return SocketClient(path, timeout=30.0)
        except BlockingIOError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.005)


def _is_again(e: Exception) -> bool:
    return getattr(e, "err", None) == "EAGAIN"


def _cycles(client, n: int, body) -> tuple[int, int]:
    """n committed transactions, each `body(tx, i)` then commit, retried on EAGAIN: (n, retried)."""
    done = retried = 0
    while done < n:
        tx = client.transaction_start()
        body(tx, done)
        try:
            client.transaction_end(tx, True)
            done += 1
        except Exception as e:
            if not _is_again(e):
                raise
            retried += 1
    return done, retried


def sequential_cycles(client, key: str, n: int) -> tuple[int, int]:
    """n blind-write cycles, each request waiting for its reply: (committed, retried)."""
    return _cycles(client, n, lambda tx, i: client.write(key, b"v%d" % i, tx))


def counter_cycles(client, key: str, n: int) -> tuple[int, int]:
    """n read-modify-write increments retried on EAGAIN: (committed, retried)."""
    def increment(tx, _i):
        client.write(key, str(int(client.read(key, tx)) + 1), tx)
    return _cycles(client, n, increment)


def pipelined_cycles(path: str, n: int) -> tuple[int, int]:
    """n cycles, PIPELINE in flight, on a fresh connection (ids 1, 2, ... predicted)."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(path)

    def cycle(i: int) -> bytes:
        tid = i + 1
        payload = b"/bench/p\0v%d" % i
        return (HDR.pack(XS_TRANSACTION_START, 3 * i, 0, 1) + b"\0"
                + HDR.pack(XS_WRITE, 3 * i + 1, tid, len(payload)) + payload
                + HDR.pack(XS_TRANSACTION_END, 3 * i + 2, tid, 2) + b"T\0")

    ended = 0

    def check(op: int, rid: int, payload: bytes) -> None:
        nonlocal ended
        if op == XS_ERROR:
            raise RuntimeError(f"rid {rid}: {payload!r}")
        if op == XS_TRANSACTION_START and payload != b"%d\0" % (rid // 3 + 1):
            raise RuntimeError("unexpected transaction id: ids not sequential")
        ended += op == XS_TRANSACTION_END

    try:
        sent = min(PIPELINE, n)
        sock.sendall(b"".join(cycle(i) for i in range(sent)))
        replies = 0
        buf = bytearray()
        while replies < 3 * n:
            data = sock.recv(1 << 16)
            if not data:
                raise ConnectionError("daemon closed the connection")
            buf += data
            before = ended
            pos, n_replies, _ = split_replies(buf, check)
            replies += n_replies
            got = ended - before
            del buf[:pos]
            if got and sent < n:
                more = min(got, n - sent)
                sock.sendall(b"".join(cycle(i) for i in range(sent, sent + more)))
                sent += more
    finally:
        sock.close()
    return n, 0


def timed(daemon, work: list) -> dict:
    """Run the work callables in threads; committed cycles/s and daemon CPU per cycle."""
    results: list = [None] * len(work)
    errors: list = []

    def run(i: int, fn) -> None:
        try:
            results[i] = fn()
        except Exception as e:  # reported, not lost in the thread
            errors.append(e)

    cpu0 = cpu_seconds(daemon.pid)
    t0 = time.perf_counter()
    threads = [threading.Thread(target=run, args=(i, fn)) for i, fn in enumerate(work)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    dt = time.perf_counter() - t0
    cpu = cpu_seconds(daemon.pid) - cpu0
    if errors:
        raise RuntimeError(errors[0])
    done = sum(r[0] for r in results)
    return {"rate": done / dt, "cpu": cpu / done * 1e6, "retries": sum(r[1] for r in results)}


def run_row(daemon, row: str, n: int, domid: int = 7) -> dict:
    """One row's cycles (the guest row on a new guest `domid`)."""
    path = daemon.socket_path
    if row == "pipelined":
        return timed(daemon, [lambda: pipelined_cycles(path, n)])
    if row == "guest":
        sim = Sim(str(daemon.sim_dir))
        with connect(path) as d0:
            g = Guest(sim, domid)
            d0.mkdir(f"/local/domain/{domid}")
            d0.set_perms(f"/local/domain/{domid}", [f"n{domid}"])
            d0.introduce(domid, g.mfn, g.port)
        try:
            return timed(daemon, [lambda: sequential_cycles(g, "data/t", n)])
        finally:
            g.close()
    clients = [connect(path) for _ in range(1 if row == "x1" else 4)]
    try:
        if row == "counter":
            clients[0].write("/bench/counter", "0")
            work = [lambda c=c: counter_cycles(c, "/bench/counter", n // len(clients))
                    for c in clients]
        else:
            work = [lambda c=c, i=i: sequential_cycles(c, f"/bench/k{i}", n // len(clients))
                    for i, c in enumerate(clients)]
        return timed(daemon, work)
    finally:
        for c in clients:
            c.close()


def bench_kind(rt: Runtime, n: int, rows, warmup: int) -> dict | str:
    """All rows on one fresh daemon, each after `warmup` untimed cycles of its own."""
    try:
        daemon = start_runtime(rt, DaemonSettings(log_level="warn"))
    except DaemonError as e:
        return f"n/a ({str(e).splitlines()[0]})"
    try:
        out = {}
        for row in rows:
            if warmup > 0:
                run_row(daemon, row, warmup, domid=8)  # the warm-up's own guest
            out[row] = run_row(daemon, row, n)
        return out
    except (OSError, RuntimeError, ConnectionError) as e:
        return f"failed: {e}"
    finally:
        stop(daemon)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", type=int, default=3000, help="committed cycles per row (3000)")
    ap.add_argument("--rows", default=",".join(ROWS), help=f"subset of {','.join(ROWS)}")
    ap.add_argument("--repeat", type=int, default=3,
                    help="runs per runtime (a fresh daemon each), taking turns (3)")
    ap.add_argument("--warmup", type=int, default=500,
                    help="untimed cycles before each row (500)")
    add_runtime_args(ap, repeat=False)
    args = ap.parse_args(argv)
    rows = [r for r in args.rows.split(",") if r]
    unknown = set(rows) - set(ROWS)
    if unknown:
        ap.error(f"unknown rows: {', '.join(sorted(unknown))}")
    rts = runtimes(args)
    pinned = pin_client()
    runs: dict = {rt.label: [] for rt in rts}
    failed: dict = {}
    for rep in range(args.repeat):
        for rt in alternating(rts, rep):
            if rt.label in failed:
                continue
            res = bench_kind(rt, args.n, rows, args.warmup)
            if isinstance(res, str):
                failed[rt.label] = res
            else:
                runs[rt.label].append(res)
    print(f"transaction start/write/commit cycles, {args.n} committed per row, "
          f"Debian config (access log on), median of {args.repeat} runs (turns), warm-up "
          f"{args.warmup}, "
          f"{pinning_note(pinned)}")
    for label, msg in failed.items():
        print(f"{label}: {msg}")
    labels = [rt.label for rt in rts if rt.label not in failed]
    others = compared_to_ocaml(labels)
    head = f"{'row':<26}" + "".join(f" {lb + ' cyc/s':>16} {'cpu':>7}" for lb in labels)
    print(head + "".join(f" {lb + '/ocaml':>16}" for lb in others) + "  retries")
    ratios = []
    for row in rows:
        med = {lb: statistics.median(r[row]["rate"] for r in runs[lb]) for lb in labels}
        line = f"{LABELS[row]:<26}"
        for lb in labels:
            cpu = statistics.median(r[row]["cpu"] for r in runs[lb])
            line += f" {med[lb]:>16,.0f} {cpu:>4.0f} us"
        for lb in others:
            ratios.append((f"{lb}/ocaml", med[lb] / med["ocaml"], LABELS[row]))
            line += f" {med[lb] / med['ocaml']:>16.2f}"
        line += "  " + "/".join(str(statistics.median(r[row]["retries"] for r in runs[lb]))
                                for lb in labels)
        print(line)
    print_summary("bench_transactions", ratios)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
