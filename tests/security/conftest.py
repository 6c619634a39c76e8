"""The XSA regression suite's world: a daemon of each kind, dom0 on its socket,
unprivileged guests on their rings (the reference kit's xensim), and the
checks every attack ends with (daemon alive, other clients served, store intact).

One module per advisory (test_xsaNNN.py); each test is the attack from an
unprivileged guest over its ring (or a socket client) and asserts the safe
outcome on oxsd and on the original (the `daemon` fixture runs both).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import pytest

from oxsd.diff.daemons import KINDS, DaemonSettings
from oxsd.diff.final_state import walk_tree

XS_ERROR = 16
XS_WATCH_EVENT = 15


def home(domid: int) -> str:
    return f"/local/domain/{domid}"


@dataclass
class World:
    """What one attack needs around one daemon."""

    daemon: object
    X: object  # the xensim module
    d0: object = None
    guests: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.d0 = self.X.SocketClient(self.daemon.socket_path)
        self.d0.mkdir("/local/domain")

    @property
    def kind(self) -> str:
        return self.daemon.kind

    def sim(self):
        return self.X.Sim(str(self.daemon.sim_dir))

    def guest(self, domid: int, introduce: bool = True):
        """An unprivileged guest with its home /local/domain/<domid> (owner domid, r0)."""
        g = self.X.Guest(self.sim(), domid)
        if introduce:
            self.d0.mkdir(home(domid))
            self.d0.set_perms(home(domid), [f"n{domid}", "r0"])
            self.d0.introduce(domid, g.mfn, g.port)
        self.guests[domid] = g
        return g

    def destroy(self, domid: int, timeout: float = 10.0) -> None:
        """Destroy the domain on the hypervisor and wait for the daemon's @releaseDomain."""
        watch(self.d0, "@releaseDomain", "rel", timeout)
        self.sim().destroy_domain(domid)
        assert self.d0.wait_watch(timeout) == ("@releaseDomain", "rel")
        self.d0.unwatch("@releaseDomain", "rel")
        self.guests.pop(domid).close()

    def quota(self, domid: int) -> str:
        """CONTROL quota: "dom5 quota: N/MAX" or "dom5 quota: not set"."""
        return self.d0.control("quota", str(domid)).rstrip(b"\0").decode()

    def node_count(self, domid: int) -> int:
        return int(self.quota(domid).split()[-1].split("/")[0])

    def fill_quota(self, g, prefix: str = "n", limit: int = 10_000) -> int:
        """Nodes `g` creates (WRITE) before its first EQUOTA."""
        for made in range(limit):
            try:
                g.write(f"{prefix}{made}", "x")
            except self.X.XsError as e:
                assert e.err == "EQUOTA", e.err
                return made
        raise AssertionError(f"no EQUOTA after {limit} nodes")

    def tree(self) -> list[str]:
        return walk_tree(self.daemon)

    def log(self) -> str:
        path = self.daemon.log_path
        return path.read_text(errors="replace") if path.exists() else ""

    def wait_log(self, text: str, timeout: float = 5.0) -> bool:
        deadline = time.monotonic() + timeout
        while text not in self.log():
            if time.monotonic() > deadline:
                return False
            time.sleep(0.02)
        return True

    def assert_alive(self) -> None:
        """The daemon runs, dom0 is served, and a brand new client too."""
        assert self.daemon.alive(), self.daemon.output_tail()
        self.d0.write("/tool/alive-check", "1")
        assert self.d0.read("/tool/alive-check") == b"1"
        fresh = self.X.SocketClient(self.daemon.socket_path)
        try:
            assert fresh.read("/tool/alive-check") == b"1"
        finally:
            fresh.close()

    def assert_guest_served(self, g, domid: int) -> None:
        g.write("served", "yes")
        assert g.read("served") == b"yes"

    def close(self) -> None:
        for g in self.guests.values():
            g.close()
        self.d0.close()


def xs_error(X, fn, *args) -> str:
    """The error name a request gets (fails if it succeeds)."""
    with pytest.raises(X.XsError) as e:
        fn(*args)
    return e.value.err


def watch(client, path: str, token: str, timeout: float = 5.0) -> None:
    """WATCH `path`, and take the event every new watch fires at once."""
    client.watch(path, token)
    assert client.wait_watch(timeout) == (path, token)


def sync(client) -> None:
    """A round trip: every packet queued for `client` before it has arrived and been parsed."""
    rid = client.send(10, b"0\0")  # GET_DOMAIN_PATH: always answered
    client.recv_reply(rid, 10.0)


@pytest.fixture
def world(daemon, xensim):
    w = World(daemon, xensim)
    yield w
    w.close()


@pytest.fixture(params=KINDS)
def configured(request, start, xensim):
    """Factory: a World on a daemon of each kind started with extra config lines."""
    worlds = []

    def make(*conf: str) -> World:
        daemon = start(request.param, DaemonSettings(extra_conf=list(conf)))
        w = World(daemon, xensim)
        worlds.append(w)
        return w

    yield make
    for w in worlds:
        w.close()
