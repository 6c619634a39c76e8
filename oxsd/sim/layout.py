"""The sim dir contract (the one the reference kit's xensim also speaks): paths, port files, atomic rewrites, exclusive allocation.

Shared by the daemon-side backend (`hv.py`) and the guest/toolstack side
(`guest.py`).  Port file parsing is lenient like the reference C helpers
(strtoul on numbers, unknown words ignored): the files are shared with
other processes and a malformed one must not crash the daemon.
"""
from __future__ import annotations

import errno
import itertools
import os
import re
import time
from dataclasses import dataclass
from typing import Iterator, Optional, Union

__all__ = [
    "PAGE_SIZE", "GNTTAB_RESERVED_XENSTORE", "VIRQ_DOM_EXC", "MAX_DOMID",
    "PortInfo", "SimDir", "parse_port", "format_port", "write_atomic", "read_text", "strtoul",
]

PAGE_SIZE = 4096
GNTTAB_RESERVED_XENSTORE = 1
VIRQ_DOM_EXC = 3
MAX_DOMID = 0x7FEF  # the highest id xc_domain_getinfolist reports
MAX_PORT = 1 << 17

_tmp_counter = itertools.count()
_STRTOUL = re.compile(r"\s*\+?([0-9]+)")


def strtoul(s: str) -> int:
    """C strtoul(s, NULL, 10) for the values the sim writes: leading digits, else 0."""
    m = _STRTOUL.match(s)
    return int(m.group(1)) if m else 0


def read_text(path: str) -> str:
    with open(path, "rb") as f:
        return f.read().decode("utf-8", "surrogateescape")


def write_atomic(path: str, content: Union[str, bytes]) -> None:
    """Replace `path` so that readers see the old or the new content, never a mix."""
    data = content.encode("utf-8", "surrogateescape") if isinstance(content, str) else content
    tmp = f"{path}.tmp.{os.getpid()}.{next(_tmp_counter)}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
    try:
        try:
            os.write(fd, data)
        finally:
            os.close(fd)
        os.rename(tmp, path)
    except BaseException:
        _unlink_quiet(tmp)
        raise


def _unlink_quiet(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


@dataclass(frozen=True)
class PortInfo:
    """One parsed port file: `owner=<socket> peer=<d>:<p>|unbound|virq:<n>`."""
    owner: Optional[str] = None
    kind: Optional[str] = None  # "unbound" | "interdomain" | "virq" | None
    peer_dom: int = 0
    peer_port: int = 0
    virq: int = 0


def parse_port(text: str) -> PortInfo:
    owner: Optional[str] = None
    kind: Optional[str] = None
    peer_dom = peer_port = virq = 0
    for tok in text.split():
        if tok.startswith("owner=") and len(tok) > 6:
            owner = tok[6:]
        elif tok.startswith("peer="):
            v = tok[5:]
            if v == "unbound":
                kind = "unbound"
            elif v.startswith("virq:"):
                kind, virq = "virq", strtoul(v[5:])
            elif ":" in v:
                a, b = v.split(":", 1)
                kind, peer_dom, peer_port = "interdomain", strtoul(a), strtoul(b)
    return PortInfo(owner, kind, peer_dom, peer_port, virq)


def format_port(owner: Optional[str], peer: str) -> str:
    return f"owner={owner} peer={peer}\n" if owner else f"peer={peer}\n"


class SimDir:
    """Paths and primitive operations of one sim dir."""

    def __init__(self, root: str) -> None:
        self.root = os.path.abspath(root)

    def path(self, *parts: object) -> str:
        return os.path.join(self.root, *(str(p) for p in parts))

    # -- well-known files
    def domain_file(self, domid: int) -> str:
        return self.path("domains", domid)

    def mem_file(self, domid: int, mfn: int) -> str:
        return self.path("mem", domid, mfn)

    def grant_file(self, domid: int, ref: int) -> str:
        return self.path("grant", domid, ref)

    def ports_dir(self, domid: int) -> str:
        return self.path("evtchn", "ports", domid)

    def port_file(self, domid: int, port: int) -> str:
        return self.path("evtchn", "ports", domid, port)

    def virq_file(self, virq: int) -> str:
        return self.path("evtchn", "virq", virq)

    @property
    def xsd_kva(self) -> str:
        return self.path("xsd_kva")

    @property
    def xsd_port_file(self) -> str:
        return self.path("xsd_port")

    def dom0_ring_owner(self) -> str:
        return self.path("evtchn", "xsd-0")

    def handle_path(self, pid: int, n: int) -> str:
        return self.path("evtchn", f"h-{pid}-{n}")

    # -- numeric directories
    @staticmethod
    def numeric_entries(directory: str) -> list[int]:
        """Sorted numeric names in `directory`; temp files and other names are ignored."""
        try:
            names = os.listdir(directory)
        except FileNotFoundError:
            return []
        return sorted(int(n) for n in names if n.isdigit() and n.isascii())

    def ports(self, domid: int) -> list[int]:
        return self.numeric_entries(self.ports_dir(domid))

    def port_domains(self) -> list[int]:
        return self.numeric_entries(self.path("evtchn", "ports"))

    def iter_ports(self) -> Iterator[tuple[int, int]]:
        for d in self.port_domains():
            for p in self.ports(d):
                yield d, p

    # -- port files
    def read_port(self, domid: int, port: int) -> PortInfo:
        """Parse a port file; FileNotFoundError if the port is free.

        A port file is never empty with link(2) allocation, but other
        writers may create it with O_EXCL then fill it, so retry briefly.
        """
        path = self.port_file(domid, port)
        for _ in range(200):
            text = read_text(path)
            if text:
                return parse_port(text)
            time.sleep(0.0005)
        raise OSError(errno.EIO, "empty port file", path)

    def write_port(self, domid: int, port: int, content: str) -> None:
        write_atomic(self.port_file(domid, port), content)

    def alloc_port(self, domid: int, content: str) -> int:
        """Give `content` to the lowest free port >= 1 of `domid`; return the port.

        The content goes to a private temp file which is link(2)ed to the
        port name: EEXIST means taken (exclusive like O_CREAT|O_EXCL), and
        the port file never appears empty.
        """
        d = self.ports_dir(domid)
        os.makedirs(d, exist_ok=True)
        tmp = os.path.join(d, f".new.{os.getpid()}.{next(_tmp_counter)}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
        try:
            os.write(fd, content.encode("utf-8", "surrogateescape"))
        finally:
            os.close(fd)
        try:
            for port in range(1, MAX_PORT):
                try:
                    os.link(tmp, os.path.join(d, str(port)))
                    return port
                except FileExistsError:
                    continue
            raise OSError(errno.ENOSPC, "no free event-channel port", d)
        finally:
            _unlink_quiet(tmp)

    def free_port(self, domid: int, port: int) -> None:
        _unlink_quiet(self.port_file(domid, port))

    def read_virq(self, virq: int) -> Optional[tuple[int, int]]:
        """(domid, port) bound to `virq`, or None."""
        try:
            text = read_text(self.virq_file(virq)).strip()
        except FileNotFoundError:
            return None
        d, sep, p = text.partition(":")
        if not sep:
            return None
        return strtoul(d), strtoul(p)
