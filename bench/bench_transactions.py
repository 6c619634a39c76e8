#!/usr/bin/env python3
"""Transaction cycles per second, oxsd against the OCaml oxenstored, in one run.

A cycle is TRANSACTION_START, WRITE inside it, TRANSACTION_END commit, each
waiting for its reply, on one socket connection (fresh daemons, Debian's
config, started by oxsd.diff.daemons).  With --clients K, K connections run
cycles on K shared keys at once (conflicts retried on EAGAIN), which
exercises coalescing and replay.  Prints cycles/s, daemon CPU per cycle and
the ratio oxsd/ocaml.

    python3 bench/bench_transactions.py            # 3000 cycles, 1 and 4 clients
"""
from __future__ import annotations

import argparse
import shutil
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench_socket import cpu_seconds  # noqa: E402
from oxsd.diff.daemons import DaemonError, DaemonSettings, make_scratch, start_daemon  # noqa: E402
from oxsd.sim.client import SocketClient, XsError  # noqa: E402


def cycles(path: str, key: str, n: int, counts: list, index: int) -> None:
    done = retried = 0
    with SocketClient(path, timeout=30.0) as c:
        while done < n:
            tx = c.transaction_start()
            c.write(key, b"v%d" % done, tx)
            try:
                c.transaction_end(tx, True)
                done += 1
            except XsError as e:
                if e.err != "EAGAIN":
                    raise
                retried += 1
    counts[index] = (done, retried)


def measure(daemon, n: int, clients: int) -> dict:
    per = n // clients
    counts = [None] * clients
    cpu0 = cpu_seconds(daemon.pid)
    t0 = time.perf_counter()
    threads = [threading.Thread(target=cycles, args=(daemon.socket_path, f"/bench/t{i % 2}",
                                                     per, counts, i)) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    dt = time.perf_counter() - t0
    cpu = cpu_seconds(daemon.pid) - cpu0
    total = sum(c[0] for c in counts)
    return {"rate": total / dt, "cpu": cpu / total * 1e6, "retries": sum(c[1] for c in counts)}


def bench_kind(kind: str, n: int) -> dict | str:
    scratch = make_scratch(f"oxb-{kind[:2]}-")
    try:
        daemon = start_daemon(kind, scratch, settings=DaemonSettings(log_level="warn"))
    except DaemonError as e:
        shutil.rmtree(scratch, ignore_errors=True)
        return f"n/a ({e})"
    try:
        return {k: measure(daemon, n, k) for k in (1, 4)}
    finally:
        daemon.stop()
        shutil.rmtree(scratch, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", type=int, default=3000, help="cycles per measurement (3000)")
    args = ap.parse_args(argv)
    results = {kind: bench_kind(kind, args.n) for kind in ("ocaml", "oxsd")}
    print(f"transaction start/write/commit cycles, {args.n} per row")
    print(f"{'clients':>7} {'ocaml cyc/s':>12} {'ocaml cpu':>10} {'oxsd cyc/s':>11} "
          f"{'oxsd cpu':>9} {'oxsd/ocaml':>10}  retries ocaml/oxsd")
    failed = [k for k, r in results.items() if isinstance(r, str)]
    for k in failed:
        print(f"{k}: {results[k]}")
    if failed:
        return 1
    for clients in (1, 4):
        o, x = results["ocaml"][clients], results["oxsd"][clients]
        print(f"{clients:>7} {o['rate']:>12,.0f} {o['cpu']:>7.0f} us {x['rate']:>11,.0f} "
              f"{x['cpu']:>6.0f} us {x['rate'] / o['rate']:>10.2f}  {o['retries']}/{x['retries']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
