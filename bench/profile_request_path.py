#!/usr/bin/env python3
"""Deterministic cost per request of oxsd's request path: Python calls (cProfile), instructions (callgrind).

One fresh oxsd (Debian's config, access log on, as bench_socket.py /
bench_ring.py start it) serves the rows of those benches: N XS_WRITE and N
XS_READ over one unix socket and over a guest's ring (domU 5), 1 and 8 in
flight, keys cycled over 500 nodes that exist.  Around each row a
measurement window is opened and closed in the daemon, and the figure is
(window with the N requests - an empty window) / N, so start-up, warm-up
and the toggling itself do not count.  Timing plays no part: the figures
move only when the code does (the batching at depth 8 depends a little on
how the client's sends interleave with the daemon's reads).

* `--tool cprofile` (default): the daemon runs under
  `bench/_profiled_oxsd.py`, SIGUSR2 toggles a cProfile window.  Prints the
  function calls per request (Python functions; and with C builtins and
  methods), the system calls among them (socket I/O, epoll, the log's
  writes: the C methods that are one system call each), and with `--top K` the K functions with most calls per request
  of each row.
* `--tool callgrind`: the daemon runs under `valgrind --tool=callgrind`;
  `callgrind_control -z` / `-d` open and close the window.  Prints
  instructions (Ir) per request.  Slow (about 50x): keep N small (-n 2000).
  The daemon only answers callgrind_control while it runs, so the driver
  wakes it with READ requests on a second socket until the command is
  taken: one or two of those fall into the window (< 0.1 % at N=2000).

    python3 bench/profile_request_path.py                   # N=5000, cProfile
    python3 bench/profile_request_path.py --top 15 --rows socket-WRITE-8
    python3 bench/profile_request_path.py --tool callgrind -n 2000
"""
from __future__ import annotations

import argparse
import glob
import os
import pstats
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Optional

from _common import (KEYS, XS_READ, XS_WRITE, Daemon, DaemonSettings, GuestFactory, make_scratch,
                     pump, requests)
from oxsd.diff.daemons import _wait_ready, prepare_oxsd, REPO_ROOT
from oxsd.sim.client import SocketClient
from oxsd.sim.guest import RingClient

BENCH = Path(__file__).resolve().parent
ROWS = [f"{transport}-{op}-{depth}" for transport in ("socket", "ring")
        for op in ("WRITE", "READ") for depth in (1, 8)]
WINDOW_TIMEOUT = 60.0
# The C methods that are one system call each (socket I/O, epoll, the log's write, events).
SYSCALL_METHODS = re.compile(r"'(recv|recv_into|send|sendall|sendto|poll)' of '(_socket\.socket|select\.poll|"
                             r"select\.epoll)'|posix\.(write|read)>")


def start_oxsd(scratch: Path, tool: str, access_log: bool = True) -> Daemon:
    """oxsd as bench/_common.start starts it, under the profiler wrapper or callgrind."""
    settings = DaemonSettings(access_log=access_log)
    sim_dir = scratch / "sim"
    conf, rundir = prepare_oxsd(scratch, sim_dir, settings)
    args = ["--no-fork", "--config-file", str(conf), "--sim", str(sim_dir)]
    if not access_log:
        args.append("--no-access-log")
    if tool == "cprofile":
        cmd = [sys.executable, str(BENCH / "_profiled_oxsd.py"), str(scratch / "window"), "--"]
    else:
        cmd = ["valgrind", "--tool=callgrind", "--dump-instr=no", "--compress-strings=no",
               f"--callgrind-out-file={scratch}/callgrind.out.%p", sys.executable, "-m", "oxsd"]
    pythonpath = os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))
    env = dict(os.environ, XENSTORED_RUNDIR=str(rundir / "xenstored"), PYTHONPATH=pythonpath)
    with open(scratch / "daemon.out", "ab") as out:
        proc = subprocess.Popen(cmd + args, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, env=env, cwd=str(scratch))
    return _wait_ready(Daemon("oxsd", proc, scratch, sim_dir, settings),
                       30.0 if tool == "cprofile" else 300.0)


def wait_for(path: Path, daemon: Daemon) -> None:
    deadline = time.monotonic() + WINDOW_TIMEOUT
    while not path.exists():
        if not daemon.alive() or time.monotonic() > deadline:
            raise RuntimeError(f"no {path.name} from the daemon:\n{daemon.output_tail()}")
        time.sleep(0.01)


class CProfileWindow:
    """SIGUSR2 to the wrapper: a window's calls, Python functions and all."""

    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon
        self.stem = daemon.scratch / "window"

    def _toggle(self, done: str) -> None:
        for suffix in (".on", ".off"):  # the driver's, so a stale one is never taken
            Path(f"{self.stem}{suffix}").unlink(missing_ok=True)
        self.daemon.proc.send_signal(signal.SIGUSR2)
        wait_for(Path(f"{self.stem}{done}"), self.daemon)

    def open(self) -> None:
        self._toggle(".on")

    def close(self) -> dict:
        self._toggle(".off")
        stats = pstats.Stats(f"{self.stem}.prof")
        py = total = syscalls = 0
        per_func = {}
        for (filename, line, name), (_cc, nc, _tt, _ct, _callers) in stats.stats.items():
            total += nc
            if filename == "~" and SYSCALL_METHODS.search(name):
                syscalls += nc
            if filename != "~":
                py += nc
                per_func[f"{os.path.relpath(filename, REPO_ROOT)}:{line}({name})"] = nc
            else:
                per_func[name] = nc
        return {"py": py, "all": total, "sys": syscalls, "funcs": per_func}


class CallgrindWindow:
    """callgrind_control -z / -d: a window's instructions."""

    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon
        self.waker = SocketClient(daemon.socket_path)

    def _command(self, flag: str) -> None:
        ctl = subprocess.Popen(["callgrind_control", flag, str(self.daemon.pid)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + WINDOW_TIMEOUT
        while ctl.poll() is None:
            if time.monotonic() > deadline:
                ctl.kill()
                raise RuntimeError(f"callgrind_control {flag} did not finish")
            self.waker.read("/tool/xenstored")  # the daemon takes commands only while it runs
            time.sleep(0.05)

    def open(self) -> None:
        self._command("-z")

    def close(self) -> dict:
        before = set(glob.glob(f"{self.daemon.scratch}/callgrind.out.*"))
        self._command("-d")
        dumps = sorted(set(glob.glob(f"{self.daemon.scratch}/callgrind.out.*")) - before,
                       key=os.path.getmtime)
        if not dumps:
            raise RuntimeError("callgrind wrote no dump")
        with open(dumps[-1]) as f:
            for line in f:
                if line.startswith(("summary:", "totals:")):
                    return {"ir": int(line.split()[1])}
        raise RuntimeError(f"no totals in {dumps[-1]}")


def measure_row(window, send: Callable, recv: Callable, op: int, n: int, depth: int,
                prefix: bytes) -> dict:
    """(window with n requests) - (empty window), per request."""
    window.open()
    empty = window.close()
    reqs = requests(op, n, prefix)
    window.open()
    done, errors = pump(send, recv, reqs, depth, time.monotonic() + 3600)
    full = window.close()
    if done != n or errors:
        raise RuntimeError(f"{done}/{n} answered, {errors} errors")
    out = {k: (full[k] - empty[k]) / n for k in full if k != "funcs"}
    if "funcs" in full:
        out["funcs"] = {f: (c - empty["funcs"].get(f, 0)) / n for f, c in full["funcs"].items()}
    return out


def run(args: argparse.Namespace) -> dict:
    scratch = make_scratch("oxp-")
    daemon = start_oxsd(scratch, args.tool, not args.no_access_log)
    results = {}
    guests = None
    try:
        window = CProfileWindow(daemon) if args.tool == "cprofile" else CallgrindWindow(daemon)
        import socket as _socket
        sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
        sock.connect(daemon.socket_path)
        sock_io = (sock.sendall, lambda: sock.recv(1 << 16))
        pump(*sock_io, requests(XS_WRITE, KEYS), 8, time.monotonic() + 600)  # the nodes
        ring_io = None
        if any(r.startswith("ring") for r in args.rows):
            guests = GuestFactory(daemon)
            client: RingClient = guests.add(5).client
            ring_io = (client._send_bytes, lambda: client._recv_bytes(60.0))
            pump(*ring_io, requests(XS_WRITE, KEYS, b"bench"), 8, time.monotonic() + 600)
        for row in args.rows:
            transport, name, depth = row.split("-")
            op = XS_WRITE if name == "WRITE" else XS_READ
            io, prefix = (sock_io, b"/bench") if transport == "socket" else (ring_io, b"bench")
            pump(*io, requests(op, args.warmup, prefix), int(depth), time.monotonic() + 600)
            results[row] = measure_row(window, *io, op, args.n, int(depth), prefix)
        sock.close()
    finally:
        if guests is not None:
            guests.close()
        daemon.stop(timeout=60.0)
        if not args.keep:
            import shutil
            shutil.rmtree(scratch, ignore_errors=True)
        else:
            print(f"scratch kept: {scratch}", file=sys.stderr)
    return results


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tool", choices=("cprofile", "callgrind"), default="cprofile")
    ap.add_argument("-n", type=int, default=None, help="requests per row (5000; callgrind 2000)")
    ap.add_argument("--warmup", type=int, default=200, help="untimed requests before each row")
    ap.add_argument("--rows", default=",".join(ROWS), help="comma-separated, of " + ",".join(ROWS))
    ap.add_argument("--top", type=int, default=0, help="show the K most called functions per row")
    ap.add_argument("--keep", action="store_true", help="keep the scratch dir")
    ap.add_argument("--no-access-log", action="store_true", help="start oxsd with --no-access-log")
    args = ap.parse_args(argv)
    args.n = args.n or (5000 if args.tool == "cprofile" else 2000)
    args.rows = args.rows.split(",")
    unknown = set(args.rows) - set(ROWS)
    if unknown:
        ap.error(f"unknown rows: {', '.join(sorted(unknown))}")
    results = run(args)
    print(f"oxsd request path, {args.n} requests per row, access log "
          f"{'off' if args.no_access_log else 'on'}, tool {args.tool}")
    if args.tool == "cprofile":
        print(f"{'row':<16} {'py calls/req':>12} {'all calls/req':>13} {'syscalls/req':>12}")
    else:
        print(f"{'row':<16} {'Ir/req':>10}")
    for row, r in results.items():
        if args.tool == "cprofile":
            print(f"{row:<16} {r['py']:>12.1f} {r['all']:>13.1f} {r['sys']:>12.2f}")
        else:
            print(f"{row:<16} {r['ir']:>10,.0f}")
    if args.top:
        for row, r in results.items():
            print(f"\n{row}: most calls per request")
            for f, c in sorted(r["funcs"].items(), key=lambda kv: -kv[1])[:args.top]:
                print(f"  {c:7.2f}  {f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
