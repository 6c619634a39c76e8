"""oxsd-top against a running oxsd: a busy guest, a lazy guest and a guest at its node quota.

The full-screen view runs under tmux (installed on first use); the test
reads the screen with capture-pane until each guest shows its mark, within a
bounded time.  `--once --json` is checked against the daemon's own state as
its ordinary clients see it, and `--prometheus` against the same set-up.
"""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
import threading
import time

import pytest

from oxsd.diff.daemons import DaemonSettings, make_scratch, start_daemon
from support.env import unavailable

BUSY, LAZY, FULL = 5, 6, 7
MAXENT = 20
SCREEN_TIMEOUT = 45.0  # the lazy mark needs a ring scan: periodic_ops runs every 15 s


@pytest.fixture(scope="session")
def tmux() -> str:
    path = shutil.which("tmux")
    if path is None:
        res = subprocess.run("apt-get install -y -qq tmux || "
                             "(apt-get update -qq && apt-get install -y -qq tmux)",
                             shell=True, capture_output=True, text=True, timeout=600)
        path = shutil.which("tmux")
        if path is None:
            unavailable(f"tmux could not be installed: {res.stderr[-500:]}")
    return path


def _home(d0, domid: int, guest) -> None:
    d0.mkdir(f"/local/domain/{domid}")
    d0.set_perms(f"/local/domain/{domid}", [f"n{domid}", "r0"])
    d0.introduce(domid, guest.mfn, guest.port)


def _stats(d0) -> dict:
    return {r["id"]: r for r in json.loads(d0.control("oxsd-stats"))["connections"]}


@pytest.fixture(scope="module")
def busy_host(clients, xensim):
    """oxsd with the three guests: the lazy one found by the ring scan first (busy
    traffic would keep the loop from the periodic scan), then the busy one writing
    until the module's tests are done."""
    scratch = make_scratch("oxt-top-")
    daemon = start_daemon("oxsd", scratch, settings=DaemonSettings(
        ring_scan_interval=1, extra_conf=[f"quota-maxentity = {MAXENT}"]))
    stop = threading.Event()
    worker = None
    try:
        sim = xensim.Sim(str(daemon.sim_dir))
        d0 = xensim.SocketClient(daemon.socket_path)
        guests = {domid: xensim.Guest(sim, domid, lazy=(domid == LAZY))
                  for domid in (BUSY, LAZY, FULL)}
        for domid, g in guests.items():
            _home(d0, domid, g)
        full = guests[FULL]
        equota = 0
        for i in range(MAXENT + 5):  # its home counts too: EQUOTA from the 20th node on
            try:
                full.write(f"n{i}", "x")
            except xensim.XsError as e:
                assert str(e) == "EQUOTA"
                equota += 1
        guests[LAZY].send(2, b"data\0")  # a READ it never notifies: only the ring scan sees it
        deadline = time.monotonic() + SCREEN_TIMEOUT
        while _stats(d0)[f"D{LAZY}"]["lazy_found"] == 0:
            assert time.monotonic() < deadline, "the ring scan never found the lazy guest"
            time.sleep(0.5)  # periodic_ops runs every 15 s
        sent = [0]

        def keep_busy() -> None:
            g = guests[BUSY]
            g.watch("w", "tok")
            while not stop.is_set() and sent[0] < 200_000:
                g.write("w/x", str(sent[0]))
                sent[0] += 1

        worker = threading.Thread(target=keep_busy, daemon=True)
        worker.start()
        yield daemon, d0, guests, equota, sent
    finally:
        stop.set()
        if worker is not None:
            worker.join(10)
        daemon.stop()
        shutil.rmtree(scratch, ignore_errors=True)


def _oxsd_top(daemon, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "oxsd.top", "--socket", str(daemon.socket_path),
                           *args], capture_output=True, text=True, timeout=30)


def _cells(screen: str, conn: str) -> list:
    """The cells of a connection's row, FLAGS last ('-' when it has none)."""
    line = next((line for line in screen.splitlines() if line.startswith(conn + " ")), "")
    cells = line.split()
    return cells + ["-"] if len(cells) == 12 else cells


def test_oxsd_top_marks_busy_lazy_and_full_guests_on_screen(busy_host, tmux, capsys):
    daemon, _d0, _guests, _equota, _sent = busy_host
    session = f"oxsd-top-{daemon.pid}"
    subprocess.run([tmux, "new-session", "-d", "-s", session, "-x", "80", "-y", "24",
                    f"{sys.executable} -m oxsd.top --socket {daemon.socket_path} --sort u"],
                   check=True, timeout=10)
    screen = ""
    try:
        deadline = time.monotonic() + SCREEN_TIMEOUT
        while time.monotonic() < deadline:
            screen = subprocess.run([tmux, "capture-pane", "-p", "-t", session],
                                    capture_output=True, text=True, timeout=10).stdout
            busy, lazy, full = (_cells(screen, f"D{d}") for d in (BUSY, LAZY, FULL))
            if busy and busy[1] != "0" and lazy[-1:] == ["LAZY"] and full[-1:] == ["QUOTA"]:
                break
            time.sleep(0.5)  # the view refreshes every second
    finally:
        subprocess.run([tmux, "kill-session", "-t", session], timeout=10)
    with capsys.disabled():
        print("\n--- oxsd-top screen ---\n" + screen.rstrip() + "\n---")
    busy, lazy, full = (_cells(screen, f"D{d}") for d in (BUSY, LAZY, FULL))
    assert busy[-1] == "-" and int(busy[1]) > 0, screen  # no flag; requests/s
    assert lazy[-1] == "LAZY", screen
    assert full[-1] == "QUOTA" and full[-2] == "100%", screen
    assert screen.splitlines()[0].startswith("oxsd-top  pid "), screen
    assert "sorted by quota use" in screen.splitlines()[0]
    # sorted by quota use: the full guest comes first
    rows = [line.split()[0] for line in screen.splitlines() if line[:1] in "DA" and line[1:2].isdigit()]
    assert rows[0] == f"D{FULL}", screen


def test_once_json_matches_the_daemons_state(busy_host, capsys):
    daemon, d0, guests, equota, _sent = busy_host
    guests[FULL].watch("n1", "a")
    guests[FULL].watch("n2", "b")
    res = _oxsd_top(daemon, "--once", "--json")
    assert res.returncode == 0, res.stderr
    doc = json.loads(res.stdout)
    rows = {r["id"]: r for r in doc["connections"]}
    full = rows[f"D{FULL}"]
    with capsys.disabled():  # what an operator's script gets (pytest -s shows it)
        print(f"\n--- oxsd-top --once --json: totals and D{FULL} ---\n"
              + json.dumps({"totals": doc["totals"], f"D{FULL}": full}, sort_keys=True)
              + "\n---")
    # nodes: the domain's quota count, as CONTROL quota reports it
    quota_line = d0.control("quota", str(FULL)).rstrip(b"\0").decode()
    assert quota_line == f"dom{FULL} quota: {full['nodes']}/{MAXENT}"
    assert full["nodes"] == MAXENT
    assert full["errors"] == {"EQUOTA": equota} and equota > 0
    assert full["by_op"]["WRITE"] == MAXENT + 5
    assert full["watches"] == 2 and "QUOTA" in full["flags"]
    listed = d0.control("watches").decode().splitlines()
    assert full["watches"] == sum(1 for line in listed if line.startswith(f"watch D{FULL}:"))
    assert doc["quotas"]["maxent"] == MAXENT
    assert doc["totals"]["domains"] == 4  # dom0's ring and the three guests
    assert rows[f"D{BUSY}"]["requests"] > 0
    assert doc["daemon"]["pid"] == daemon.pid and doc["daemon"]["rss_bytes"] > 0


def test_once_prometheus_exposes_the_same_counts(busy_host, capsys):
    daemon, _d0, _guests, equota, _sent = busy_host
    res = _oxsd_top(daemon, "--once", "--prometheus")
    assert res.returncode == 0, res.stderr
    text = res.stdout
    with capsys.disabled():
        print(f"\n--- oxsd-top --once --prometheus: the D{FULL} and D{LAZY} samples ---\n"
              + "\n".join(line for line in text.splitlines()
                          if f'conn="D{FULL}"' in line or f'conn="D{LAZY}"' in line) + "\n---")
    assert "# TYPE oxsd_requests_total counter" in text
    assert f'oxsd_nodes{{conn="D{FULL}",kind="domain",domid="{FULL}"}} {MAXENT}' in text
    assert (f'oxsd_errors_total{{conn="D{FULL}",kind="domain",domid="{FULL}",error="EQUOTA"}} '
            f'{equota}') in text
    for line in text.splitlines():  # every sample line is NAME{LABELS} VALUE or NAME VALUE
        if not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            float(value)
            assert name.startswith("oxsd_")


def test_a_guest_asking_for_stats_gets_the_unknown_commands_answer(start, xensim):
    daemon = start("oxsd", DaemonSettings(extra_conf=["allow-debug = true"]))
    d0 = xensim.SocketClient(daemon.socket_path)
    g = xensim.Guest(xensim.Sim(str(daemon.sim_dir)), BUSY)
    _home(d0, BUSY, g)
    assert g.control("oxsd-stats") == g.control("no-such-command") == b"OK\0"
    assert d0.control("oxsd-stats").startswith(b"{")
