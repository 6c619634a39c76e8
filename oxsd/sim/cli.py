"""`oxsd-sim`: hypervisor and guest actions on a sim dir from a shell (mirrors xensim.py's CLI).

    oxsd-sim SIMDIR init
    oxsd-sim SIMDIR create-domain D
    oxsd-sim SIMDIR guest D [--lazy] [--mfn M] [--introduce SOCKET] [--timeout SECS] [-c CMD]...
    oxsd-sim SIMDIR shutdown D [CODE]
    oxsd-sim SIMDIR destroy D [--dying-first]
    oxsd-sim SIMDIR raise-virq N
    oxsd-sim SIMDIR ports
    oxsd-sim SIMDIR close-dead-handles

`guest` creates domain D's ring page and unbound port, prints
`domid=D mfn=M port=P`, optionally introduces it through a daemon's unix
socket, then runs guest commands over the ring: those given with `-c`, or
else one per line from stdin until EOF (the guest lives as long as the
process).  Commands: read P | write P V | mkdir P | rm P | ls P |
getperms P | setperms P PERM... | watch P TOKEN | unwatch P TOKEN |
wait-watch [SECS] | get-domain-path D | quit.  A failed request prints
`error: <NAME>` (`error: timeout` without a reply) and makes the exit status 1.
"""
from __future__ import annotations

import argparse
import shlex
import sys
from typing import Callable, Optional, Sequence, TextIO

from .client import SocketClient, XsClient, XsError
from .guest import Guest, Sim

__all__ = ["main", "run_command"]


def _s(b: bytes) -> str:
    return b.decode("utf-8", "surrogateescape")


def _cmd_table(c: XsClient) -> dict[str, Callable[..., Optional[str]]]:
    def wait_watch(secs: str = "10") -> str:
        ev = c.wait_watch(float(secs))
        return "timeout" if ev is None else f"{ev[0]} {ev[1]}"

    return {
        "read": lambda p: _s(c.read(p)),
        "write": lambda p, v: c.write(p, v),
        "mkdir": lambda p: c.mkdir(p),
        "rm": lambda p: c.rm(p),
        "ls": lambda p: "\n".join(c.directory(p)),
        "getperms": lambda p: " ".join(c.get_perms(p)),
        "setperms": lambda p, *perms: c.set_perms(p, list(perms)),
        "watch": lambda p, t: c.watch(p, t),
        "unwatch": lambda p, t: c.unwatch(p, t),
        "wait-watch": wait_watch,
        "get-domain-path": lambda d: c.get_domain_path(int(d)),
    }


def run_command(client: XsClient, line: str, out: TextIO) -> Optional[bool]:
    """Run one guest command line; True on success, False on failure, None for quit."""
    words = shlex.split(line)
    if not words:
        return True
    if words[0] in ("quit", "exit"):
        return None
    fn = _cmd_table(client).get(words[0])
    if fn is None:
        print(f"error: unknown command {words[0]!r}", file=out)
        return False
    try:
        result = fn(*words[1:])
    except XsError as e:
        print(f"error: {e.err}", file=out)
        return False
    except TimeoutError:
        print("error: timeout", file=out)
        return False
    except (TypeError, ValueError) as e:
        print(f"error: bad arguments: {e}", file=out)
        return False
    if result is not None and result != "":
        print(result, file=out)
    out.flush()
    return True


def _guest(sim: Sim, a: argparse.Namespace) -> int:
    g = Guest(sim, a.domid, mfn=a.mfn, lazy=a.lazy)
    g.client.timeout = a.timeout
    try:
        print(f"domid={g.domid} mfn={g.mfn} port={g.port}", flush=True)
        if a.introduce:
            with SocketClient(a.introduce) as d0:
                d0.introduce(g.domid, g.mfn, g.port)
        lines = a.command if a.command else sys.stdin
        ok = True
        for line in lines:
            r = run_command(g.client, line, sys.stdout)
            if r is None:
                break
            ok = ok and r
        return 0 if ok else 1
    finally:
        g.close()


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="oxsd-sim",
                                 description="simulated hypervisor actions on a sim dir")
    ap.add_argument("simdir")
    sub = ap.add_subparsers(dest="cmd", required=True)
    sub.add_parser("init", help="create/initialise the sim dir")
    p = sub.add_parser("create-domain")
    p.add_argument("domid", type=int)
    p = sub.add_parser("guest", help="a guest with a ring; runs commands over it")
    p.add_argument("domid", type=int)
    p.add_argument("--lazy", action="store_true", help="never notify the daemon")
    p.add_argument("--mfn", type=int, default=None)
    p.add_argument("--introduce", metavar="SOCKET", help="introduce through this xenstored socket")
    p.add_argument("--timeout", type=float, default=30.0, metavar="SECS",
                   help="how long each command waits for its reply")
    p.add_argument("-c", dest="command", action="append", default=[], metavar="CMD")
    p = sub.add_parser("shutdown")
    p.add_argument("domid", type=int)
    p.add_argument("code", type=int, nargs="?", default=0)
    p = sub.add_parser("destroy")
    p.add_argument("domid", type=int)
    p.add_argument("--dying-first", action="store_true")
    p = sub.add_parser("raise-virq")
    p.add_argument("virq", type=int)
    sub.add_parser("ports", help="list all event-channel ports")
    sub.add_parser("close-dead-handles")
    return ap


def main(argv: Optional[Sequence[str]] = None) -> int:
    a = _parser().parse_args(argv)
    try:
        sim = Sim(a.simdir)
    except ValueError as e:
        print(f"oxsd-sim: {e}", file=sys.stderr)
        return 2
    try:
        if a.cmd == "create-domain":
            sim.create_domain(a.domid)
        elif a.cmd == "guest":
            return _guest(sim, a)
        elif a.cmd == "shutdown":
            sim.shutdown_domain(a.domid, a.code)
        elif a.cmd == "destroy":
            sim.destroy_domain(a.domid, dying_first=a.dying_first)
        elif a.cmd == "raise-virq":
            print(sim.raise_virq(a.virq))
        elif a.cmd == "close-dead-handles":
            print(sim.close_dead_handles())
        elif a.cmd == "ports":
            for d, p, text in sim.list_ports():
                print(f"{d}/{p}: {text}")
        return 0
    finally:
        sim.close()


if __name__ == "__main__":
    sys.exit(main())
