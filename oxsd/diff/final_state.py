"""What the runner records once the steps are done, besides the transcripts.

The event-channel ports left on the simulated hypervisor (`sim_ports`), the
tree and IS_DOMAIN_INTRODUCED answers asked on a fresh connection
(`final_queries`, `walk_tree`), and the line counts of the rotated access logs
(`count_lines`).
"""
from __future__ import annotations

import os
import time
from pathlib import Path

from .daemons import Daemon
from .masks import MASKED, MASKED_NODES
from .wire import Packet, escape, op_code

__all__ = ["sim_ports", "walk_tree", "final_queries", "count_lines"]

_IS_INTRODUCED = op_code("IS_DOMAIN_INTRODUCED")


def count_lines(path: Path) -> int:
    try:
        with open(path, "rb") as f:
            return sum(1 for _ in f)
    except FileNotFoundError:
        return 0


def _read_port_file(path: str) -> str:
    # port files are replaced by rename; an empty read is a writer's window
    for _ in range(50):
        try:
            with open(path) as f:
                text = f.read().strip()
        except FileNotFoundError:
            return ""
        if text:
            return text
        time.sleep(0.002)
    return ""


def sim_ports(sim_dir: str | Path) -> list[str]:
    """The event channels on a sim dir, owners by role (oxsd/sim/layout.py):
    ``0/3: daemon peer=0:1``.  The daemon's handle sockets are the ``h-*``
    owners of domain 0's ports (their names hold the pid, which differs from
    run to run); ports in a guest's directory are the guest's."""
    root = os.path.join(str(sim_dir), "evtchn")
    out: list[str] = []
    ports = os.path.join(root, "ports")
    doms = sorted((d for d in _listdir(ports) if d.isdigit()), key=int)
    for dom in doms:
        for port in sorted((p for p in _listdir(os.path.join(ports, dom)) if p.isdigit()),
                           key=int):
            fields = dict(w.split("=", 1) for w in _read_port_file(
                os.path.join(ports, dom, port)).split() if "=" in w)
            owner = os.path.basename(fields.get("owner", ""))
            if dom != "0":
                role = "guest"
            elif owner == "xsd-0":
                role = "xsd-0 (dom0 ring)"
            elif owner.startswith(f"h-{os.getpid()}-"):
                role = "harness"
            elif owner.startswith("h-"):
                role = "daemon"
            else:
                role = owner or "?"
            out.append(f"{dom}/{port}: {role} peer={fields.get('peer', '?')}")
    virq = os.path.join(root, "virq")
    for n in sorted((v for v in _listdir(virq) if v.isdigit()), key=int):
        out.append(f"virq {n} -> {_read_port_file(os.path.join(virq, n))}")
    return out


def _listdir(path: str) -> list[str]:
    try:
        return os.listdir(path)
    except FileNotFoundError:
        return []


def walk_tree(daemon: Daemon, timeout: float = 5.0) -> list[str]:
    """Every node as ``path perms=... value``, depth first, children sorted."""
    return final_queries(daemon, True, (), timeout)[0]


def final_queries(daemon: Daemon, tree: bool, domids, timeout: float = 5.0
                  ) -> tuple[list[str], list[str]]:
    """On one fresh connection: the tree walk (if `tree`), then
    IS_DOMAIN_INTRODUCED for each of `domids`."""
    ops = {name: op_code(name) for name in ("DIRECTORY", "READ", "GET_PERMS")}
    out: list[str] = []
    intro: list[str] = []
    with daemon.connect() as conn:
        rid = 0

        def ask(op: str, path: str) -> Packet:
            nonlocal rid
            rid += 1
            return conn.request(ops[op], path.encode("latin-1") + b"\0", req_id=rid,
                                timeout=timeout)

        def visit(path: str) -> None:
            value = ask("READ", path)
            perms = ask("GET_PERMS", path)
            children = ask("DIRECTORY", path)
            shown = MASKED if path in MASKED_NODES else repr(value.payload)
            out.append(f"{path} perms={perms.payload!r} value={shown}"
                       + ("" if value.op == ops["READ"] else f" (read: op {value.op})"))
            if children.op != ops["DIRECTORY"]:
                out.append(f"{path} directory failed: {children.payload!r}")
                return
            for name in sorted(n for n in children.payload.split(b"\0") if n):
                child = name.decode("latin-1")
                # '@' names are single root components: '@a/b' is not '/@a/b'
                if path == "/":
                    visit(child if child.startswith("@") else "/" + child)
                else:
                    visit(f"{path}/{child}")

        if tree:
            visit("/")
        for domid in domids:
            rid += 1
            reply = conn.request(_IS_INTRODUCED, b"%d\0" % domid, req_id=rid, timeout=timeout)
            intro.append(f"domain {domid} introduced: {escape(reply.payload)}"
                         + ("" if reply.op == _IS_INTRODUCED else f" (op {reply.op})"))
    return out, intro
