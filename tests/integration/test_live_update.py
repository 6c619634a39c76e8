"""Live update end to end, on oxsd and on Debian's oxenstored (process.ml: LiveUpdate).

The daemon dumps its state, execs itself with `--live --restart` (same pid)
and the new process restores it from the descriptors it inherited: the
listening socket, every client socket, the event-channel handle (the guest
rings are mapped again).  Checked here, on both daemons where the test
says so:

* a socket client and two guests keep their connections and watches, the
  store is identical, and the client that asked gets `OK` from the new
  process on the same socket;
* an open transaction holds the update back (the original refuses to drop
  it): the update happens once it ends; without `-F` it is given up after
  the timeout with the list of what blocked it, on both daemons;
* with `-F`, once the timeout passed, the original does *not* drop the
  transaction either: it keeps waiting (its loop only ends once nothing
  blocks).  oxsd carries open transactions instead (its own `transaction`
  lines in the dump, db.py): same warnings, then the update, and each
  transaction goes on in the new process with the same id, reads its own
  writes, commits with its watch events, or gets EAGAIN if what it read
  was changed before the update.  The original loads such a dump and drops
  the transactions (their ids are then unknown to it: EIO);
* Debian's real `xenstore-control live-update` drives the whole exchange;
* the dump crosses between the implementations: the original updates
  itself into oxsd and back, and oxsd into the original and back.

Needs root and the reference kit (skipped with the reason otherwise,
failing under CI=true).
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time

import pytest

from oxsd.diff.daemons import REPO_ROOT, DaemonSettings, ocaml_ref_work
from support.env import unavailable
from support.guests import watching_guest

KINDS = ("ocaml", "oxsd")
WAIT = 20.0
POLL = 0.1  # pacing of our own `-s` polls (xenstore-control polls every second)


# -- helpers ------------------------------------------------------------------------------

def _tree(xensim, c, path="/"):
    """Every node under `path` with its value and perms (but /tool/xenstored)."""
    out = {}
    try:
        kids = c.directory(path)
    except xensim.XsError:
        return out
    for k in kids:
        q = path.rstrip("/") + "/" + k
        if q == "/tool/xenstored":  # each binary writes its own path
            continue
        out[q] = (c.read(q), tuple(c.get_perms(q)))
        out.update(_tree(xensim, c, q))
    return out



class Setup:
    """A socket client and two guests, each with a watch."""

    def __init__(self, xensim, daemon):
        self.xensim = xensim
        self.daemon = daemon
        self.d0 = xensim.SocketClient(daemon.socket_path)
        self.ctl = xensim.SocketClient(daemon.socket_path)
        self.guests = {d: watching_guest(xensim, daemon, self.d0, d) for d in (5, 6)}
        self.d0.watch("/local", "d0w")
        assert self.d0.wait_watch(5) == ("/local", "d0w")
        self.d0.watch("@releaseDomain", "rel")
        assert self.d0.wait_watch(5) == ("@releaseDomain", "rel")

    def tree(self):
        return _tree(self.xensim, self.d0)

    def check_everyone_still_served(self, tag):
        """Writes fire every kept watch; guests and the socket client get answers."""
        d0 = self.d0
        for domid, g in self.guests.items():
            d0.write(f"/local/domain/{domid}/data/{tag}", "1")
            assert g.wait_watch(5) == (f"data/{tag}", f"tok{domid}")
            assert d0.wait_watch(5) == (f"/local/domain/{domid}/data/{tag}", "d0w")
            g.write(f"data/{tag}g", "2")
            assert g.read(f"data/{tag}g") == b"2"
            assert g.wait_watch(5) == (f"data/{tag}g", f"tok{domid}")
            assert d0.wait_watch(5) == (f"/local/domain/{domid}/data/{tag}g", "d0w")
            tx = g.transaction_start()
            g.write(f"data/{tag}t", "3", tx)
            g.transaction_end(tx)
            assert g.wait_watch(5) == (f"data/{tag}t", f"tok{domid}")
            assert d0.wait_watch(5) == (f"/local/domain/{domid}/data/{tag}t", "d0w")
        assert d0.is_introduced(5) and d0.is_introduced(6)
        assert self.ctl.read(f"/local/domain/5/data/{tag}") == b"1"

    def close(self):
        for c in [self.d0, self.ctl, *self.guests.values()]:
            c.close()


def _poll_start(ctl, *opts, until=lambda r: r != b"BUSY"):
    """`live-update -s <opts>` every POLL seconds until `until(reply)`; the last reply."""
    deadline = time.monotonic() + WAIT
    while True:
        reply = ctl.control("live-update", "-s", *opts)
        if until(reply):
            return reply
        assert reply == b"BUSY", reply
        assert time.monotonic() < deadline, "live update never finished"
        time.sleep(POLL)


def _log(daemon) -> str:
    return daemon.log_path.read_text(errors="replace")


@pytest.fixture(scope="module")
def wrappers(tmp_path_factory):
    """Launch scripts for `live-update -f`.

    * `oxsd`: oxsd on the sim dir the environment names (XENSIM_DIR, set by
      the reference launcher for the original);
    * `oxsd-plain`: oxsd with the arguments as given (it gets `--sim` from
      the command line it inherits);
    * `ocaml`: Debian's oxenstored without oxsd's own `--sim DIR`, which
      the original does not know and would reject.
    """
    d = tmp_path_factory.mktemp("lu-wrappers")
    py = sys.executable
    scripts = {
        "oxsd": f'#!/bin/sh\nPYTHONPATH={REPO_ROOT} exec {py} -m oxsd --sim "$XENSIM_DIR" "$@"\n',
        "oxsd-plain": f'#!/bin/sh\nPYTHONPATH={REPO_ROOT} exec {py} -m oxsd "$@"\n',
        "ocaml": ("#!/bin/sh\nskip=0\nfor a; do\n  shift\n"
                  '  if [ "$skip" = 1 ]; then skip=0; continue; fi\n'
                  '  if [ "$a" = --sim ]; then skip=1; continue; fi\n'
                  '  set -- "$@" "$a"\ndone\n'
                  f'exec {ocaml_ref_work()}/_deps/root/usr/lib/xen-4.17/bin/oxenstored "$@"\n'),
    }
    paths = {}
    for name, text in scripts.items():
        p = d / f"{name}.sh"
        p.write_text(text)
        p.chmod(0o755)
        paths[name] = str(p)
    return paths


_STUB_C = r"""
/* The three libxenguest calls xenstore-control links for stubdom updates;
   the daemon path never calls them. */
void *xc_dom_allocate(void *xch, const char *cmdline, const char *features)
{ (void)xch; (void)cmdline; (void)features; return 0; }
int xc_dom_kernel_file(void *dom, const char *filename) { (void)dom; (void)filename; return -1; }
void xc_dom_release(void *dom) { (void)dom; }
"""


@pytest.fixture(scope="module")
def xenstore_control(ocaml_ref, tmp_path_factory):
    """run(socket_path, *args) -> CompletedProcess of Debian's xenstore-control.

    Its libxenctrl comes from the reference's fake libs; its libxenguest
    (the reference's is empty) is a stub with the three symbols it links.
    """
    work = ocaml_ref_work()
    exe = work / "_deps" / "root" / "usr" / "lib" / "xen-4.17" / "bin" / "xenstore-control"
    if not exe.exists():
        unavailable(f"{exe} missing from the reference kit")
    cc = shutil.which("gcc") or shutil.which("cc")
    if cc is None:
        unavailable("no C compiler for the libxenguest stub of xenstore-control")
    d = tmp_path_factory.mktemp("xsctl")
    (d / "stub.c").write_text(_STUB_C)
    (d / "stub.map").write_text("VERS_4.17.0 { global: *; };\n")
    subprocess.run([cc, "-shared", "-fPIC", "-o", str(d / "libxenguest.so.4.17"),
                    "-Wl,-soname,libxenguest.so.4.17",
                    f"-Wl,--version-script,{d / 'stub.map'}", str(d / "stub.c")],
                   check=True, capture_output=True, timeout=120)
    libpath = f"{d}:{work / '_build' / 'lib'}"

    def run(socket_path, *args, timeout=60.0):
        env = dict(os.environ, XENSTORED_PATH=socket_path, LD_LIBRARY_PATH=libpath)
        return subprocess.run([str(exe), *args], env=env, capture_output=True, text=True,
                              timeout=timeout, stdin=subprocess.DEVNULL)

    return run


# -- one daemon updating itself ----------------------------------------------------------

@pytest.mark.parametrize("kind", KINDS)
def test_live_update_keeps_clients_rings_watches_and_store(start, xensim, kind):
    daemon = start(kind)
    s = Setup(xensim, daemon)
    try:
        # Guest 5 holds a transaction: the update waits for it (the original
        # never drops a transaction it cannot dump).
        tx = s.guests[5].transaction_start()
        s.guests[5].write("data/intx", "v", tx)
        before = s.tree()
        pid = daemon.pid
        assert s.ctl.control("live-update", "-s", "-t", "30") == b"BUSY"
        for _ in range(3):
            time.sleep(POLL)
            assert s.ctl.control("live-update", "-s", "-t", "30") == b"BUSY"
        assert "Launching" not in _log(daemon)
        s.guests[5].transaction_end(tx)  # commits: nothing blocks any more
        assert s.guests[5].wait_watch(5) == ("data/intx", "tok5")
        assert s.d0.wait_watch(5) == ("/local/domain/5/data/intx", "d0w")
        before["/local/domain/5/data/intx"] = (b"v", ("n5", "r0"))

        assert _poll_start(s.ctl, "-t", "30") == b"OK"  # from the new process, same socket
        assert daemon.pid == pid and daemon.alive()  # exec, not a new process
        log = _log(daemon)
        assert "Launching " in log and "Live reload: database loaded" in log
        assert s.tree() == before
        s.check_everyone_still_served("after")
    finally:
        s.close()
    assert daemon.stop(WAIT) == 0


@pytest.mark.parametrize("kind", KINDS)
def test_xenstore_control_drives_the_update(start, xensim, xenstore_control, wrappers, kind):
    """Debian's xenstore-control: -f <binary>, then -s -t every second until OK."""
    daemon = start(kind)
    s = Setup(xensim, daemon)
    try:
        before = s.tree()
        binary = (f"{ocaml_ref_work()}/_deps/root/usr/lib/xen-4.17/bin/oxenstored"
                  if kind == "ocaml" else wrappers["oxsd-plain"])
        res = xenstore_control(daemon.socket_path, "live-update", "-t", "20", binary)
        assert res.returncode == 0, (res.stdout, res.stderr, daemon.output_tail())
        assert "Live reload: database loaded" in _log(daemon)
        assert s.ctl.read("/tool/xenstored").decode().endswith(
            "oxenstored" if kind == "ocaml" else "python3")
        assert s.tree() == before
        s.check_everyone_still_served("ctl")
    finally:
        s.close()
    assert daemon.stop(WAIT) == 0


@pytest.mark.parametrize("kind", KINDS)
def test_c_arguments_reach_the_new_process(start, xensim, kind, tmp_path):
    """`-c` appends to the command line: here a second pid file the new process writes."""
    daemon = start(kind)
    ctl = xensim.SocketClient(daemon.socket_path)
    extra = daemon.scratch / "extra.pid"
    try:
        assert ctl.control("live-update", "-c", "--pid-file", str(extra)) == b"OK\x00"
        assert not extra.exists()  # validated with --help, not run
        assert _poll_start(ctl, "-t", "10") == b"OK"
        assert extra.read_text() == f"{daemon.pid}\n"
    finally:
        ctl.close()
    assert daemon.stop(WAIT) == 0


# -- what blocks an update, the same way on both daemons ---------------------------------------

def _blocked_by_transactions(start, xensim, kind, force):
    daemon = start(kind)
    d0 = xensim.SocketClient(daemon.socket_path)
    ctl = xensim.SocketClient(daemon.socket_path)
    g = watching_guest(xensim, daemon, d0, 5)
    gtx = g.transaction_start()
    stx = d0.transaction_start()
    opts = ("-t", "1") + (("-F",) if force else ())
    assert ctl.control("live-update", "-s", *opts) == b"BUSY"
    return daemon, d0, ctl, g, gtx, stx, opts


@pytest.mark.parametrize("kind", KINDS)
def test_open_transactions_abort_the_update_after_the_timeout(start, xensim, kind):
    daemon, d0, ctl, g, gtx, stx, opts = _blocked_by_transactions(start, xensim, kind, False)
    try:
        reply = _poll_start(ctl, *opts)
        # process.ml: LiveUpdate.should_run: one line per blocking connection, sockets first
        lines = reply.decode().split("\n")
        blocking = {'A2: 1 tx, out: false, perm: 0"rw"', 'D5: 1 tx, out: false, perm: 5"rw"'}
        assert blocking <= set(lines) and lines[-1] == 'D5: 1 tx, out: false, perm: 5"rw"'
        # The original also lists the asking connection itself: it reads a
        # request's header and body in two loop iterations, and the deadline
        # check after the first sees it half-read.  oxsd reads both at once.
        assert set(lines) - blocking <= {'A3: 0 tx, out: false, perm: 0"rw"'}
        log = _log(daemon)
        assert "Live update aborted (see above for domains preventing it)" in log
        assert "Launching" not in log
        # nothing was lost: the transactions go on and commit
        g.write("data/a", "1", gtx)
        g.transaction_end(gtx)
        d0.write("/b", "2", stx)
        d0.transaction_end(stx)
        assert g.read("data/a") == b"1" and d0.read("/b") == b"2"
        # the result was given once; a new -s queues a new update, which now runs
        assert _poll_start(ctl, "-t", "5") == b"OK"
        assert "Live reload: database loaded" in _log(daemon)
    finally:
        for c in (d0, ctl, g):
            c.close()


@pytest.mark.parametrize("kind", KINDS)
def test_force_waits_on_the_original_and_carries_the_transactions_on_oxsd(start, xensim, kind):
    """-F after the timeout: the original's loop still only ends once nothing blocks;
    oxsd updates with the transactions open, and they go on."""
    queued = time.monotonic()
    daemon, d0, ctl, g, gtx, stx, opts = _blocked_by_transactions(start, xensim, kind, True)
    try:
        if kind == "ocaml":
            deadline = time.monotonic() + 2.5  # well past the 1 s timeout
            while time.monotonic() < deadline:
                assert ctl.control("live-update", "-s", *opts) == b"BUSY"
                time.sleep(POLL)
            log = _log(daemon)
            assert "Live update forced, some domain connections may break!" in log
            assert "Launching" not in log
            g.write("data/a", "1", gtx)
            g.transaction_end(gtx)
            d0.transaction_end(stx)
            assert _poll_start(ctl, *opts) == b"OK"
        else:
            assert _poll_start(ctl, *opts) == b"OK"  # both transactions still open
            assert time.monotonic() - queued >= 1.0  # not before the timeout
            log = _log(daemon)
            assert log.index("Live update forced, some domain connections may break!") \
                < log.index("Launching ") < log.index("Live reload: database loaded")
            g.write("data/a", "1", gtx)
            g.transaction_end(gtx)
            d0.transaction_end(stx)
        assert g.read("data/a") == b"1"
        assert "Live reload: database loaded" in _log(daemon)
    finally:
        for c in (d0, ctl, g):
            c.close()


def test_forced_update_carries_every_clients_transactions(start, xensim):
    """oxsd, -F: a socket client and two guests each hold a watch and an open transaction
    with writes; after the update every transaction reads its own writes and commits
    with its watch events, one that read a node changed before the update gets EAGAIN,
    nothing is lost and everyone is still served."""
    daemon = start("oxsd")
    s = Setup(xensim, daemon)
    d0, g6 = s.d0, s.guests[6]
    try:
        d0tx = d0.transaction_start()
        d0.write("/local/domain/5/data/fromd0", "d0", d0tx)
        txs = {}
        for domid, g in s.guests.items():
            txs[domid] = g.transaction_start()
            g.write("data/intx", f"v{domid}", txs[domid])
        # guest 6 also reads a node in a second transaction; dom0 then changes it
        stale = g6.transaction_start()
        assert g6.read("data/x", stale) == b"6"
        g6.write("data/stale", "s", stale)
        d0.write("/local/domain/6/data/x", "changed")
        assert g6.wait_watch(5) == ("data/x", "tok6")
        assert d0.wait_watch(5) == ("/local/domain/6/data/x", "d0w")
        before = s.tree()
        pid = daemon.pid

        assert _poll_start(s.ctl, "-F", "-t", "1") == b"OK"
        assert daemon.pid == pid and daemon.alive()
        log = _log(daemon)
        assert "Live update forced, some domain connections may break!" in log
        assert "Live reload: database loaded" in log
        assert f"transaction {stale} of D6 differs on the restored store" in log
        assert "ignoring unknown line" not in log  # every transaction line was taken
        assert s.tree() == before  # nothing of the transactions is visible yet

        assert d0.read("/local/domain/5/data/fromd0", d0tx) == b"d0"
        for domid, g in s.guests.items():
            assert g.read("data/intx", txs[domid]) == f"v{domid}".encode()
            with pytest.raises(xensim.XsError, match="ENOENT"):
                g.read("data/intx")
            g.write("data/after", "a", txs[domid])  # the transaction goes on ...
            g.transaction_end(txs[domid])           # ... and commits
            assert {g.wait_watch(5), g.wait_watch(5)} == {
                ("data/intx", f"tok{domid}"), ("data/after", f"tok{domid}")}
            assert {d0.wait_watch(5), d0.wait_watch(5)} == {
                (f"/local/domain/{domid}/data/intx", "d0w"),
                (f"/local/domain/{domid}/data/after", "d0w")}
        d0.transaction_end(d0tx)
        assert d0.wait_watch(5) == ("/local/domain/5/data/fromd0", "d0w")
        assert s.guests[5].wait_watch(5) == ("data/fromd0", "tok5")
        with pytest.raises(xensim.XsError, match="EAGAIN"):
            g6.transaction_end(stale)

        expected = dict(before)
        for domid in (5, 6):
            for name, value in (("intx", f"v{domid}"), ("after", "a")):
                expected[f"/local/domain/{domid}/data/{name}"] = (
                    value.encode(), (f"n{domid}", "r0"))
        expected["/local/domain/5/data/fromd0"] = (b"d0", ("n5", "r0"))
        assert s.tree() == expected  # and no data/stale
        assert s.d0.wait_watch(0.2) is None and g6.wait_watch(0.2) is None  # nothing else
        # new transactions get ids after the carried ones
        tx = s.guests[5].transaction_start()
        assert tx > txs[5]
        s.guests[5].transaction_end(tx, commit=False)  # an open one would hold SIGTERM back
        s.check_everyone_still_served("carried")
    finally:
        s.close()
    assert daemon.stop(WAIT) == 0


def test_two_blocking_domains_are_listed_in_the_originals_order(start, xensim):
    """The original folds its Hashtbls (domains in bucket order after the reversal)."""
    replies = {}
    for kind in KINDS:
        daemon = start(kind)
        d0 = xensim.SocketClient(daemon.socket_path)
        ctl = xensim.SocketClient(daemon.socket_path)
        gs = [watching_guest(xensim, daemon, d0, d) for d in (5, 6)]
        for g in gs:
            g.transaction_start()
        assert ctl.control("live-update", "-s", "-t", "1") == b"BUSY"
        replies[kind] = _poll_start(ctl, "-t", "1")
        for c in (d0, ctl, *gs):
            c.close()

    def domain_lines(reply):
        return [ln for ln in reply.decode().split("\n") if ln.startswith("D")]

    assert domain_lines(replies["oxsd"]) == domain_lines(replies["ocaml"])


# -- across implementations ---------------------------------------------------------------

@pytest.mark.parametrize("first", KINDS)
def test_live_update_crosses_between_the_original_and_oxsd(start, xensim, wrappers, first):
    """original -> oxsd -> original, and oxsd -> original -> oxsd, with clients throughout.

    Both run in the reference launcher's namespace (its /var/run, fake
    libraries and XENSIM_DIR), so that either can exec the other.  What
    crosses is the dump and the inherited descriptors; oxsd's own `--sim`
    flag does not (the original's wrapper drops it).
    """
    settings = DaemonSettings(binary=wrappers["oxsd"]) if first == "oxsd" else None
    daemon = start("ocaml", settings)  # the reference launcher, running `first`
    hops = ["oxsd", "ocaml"] if first == "ocaml" else ["ocaml", "oxsd"]
    s = Setup(xensim, daemon)
    try:
        before = s.tree()
        pid = daemon.pid
        for n, target in enumerate(hops):
            assert s.ctl.control("live-update", "-f", wrappers[target]) == b"OK\x00"
            assert _poll_start(s.ctl, "-t", "10") == b"OK"
            assert daemon.pid == pid and daemon.alive()
            tool = s.ctl.read("/tool/xenstored").decode()
            assert tool.endswith("oxenstored" if target == "ocaml" else "python3"), tool
            assert _log(daemon).count("Live reload: database loaded") == n + 1
            after = s.tree()
            assert after == before
            s.check_everyone_still_served(f"hop{n}")
            before = s.tree()
    finally:
        s.close()
    assert daemon.stop(WAIT) == 0
    dump = daemon.db_path.read_text(encoding="latin-1")
    assert "dom,5,4096,1,4" in dump and "dom,6," in dump  # both rings, same ports all along


def test_the_original_loads_carried_transactions_and_drops_them(start, xensim, wrappers):
    """oxsd -> original with -F and open transactions: the original skips oxsd's
    `transaction` lines (unknown lines), the rest of the dump crosses, the
    clients keep working, and the ids they still hold are unknown (EIO)."""
    daemon = start("ocaml", DaemonSettings(binary=wrappers["oxsd"]))
    s = Setup(xensim, daemon)
    d0, g5 = s.d0, s.guests[5]
    try:
        gtx = g5.transaction_start()
        g5.write("data/intx", "v", gtx)
        stx = d0.transaction_start()
        d0.write("/dropped", "d", stx)
        before = s.tree()
        assert s.ctl.control("live-update", "-f", wrappers["ocaml"]) == b"OK\x00"
        assert _poll_start(s.ctl, "-F", "-t", "1") == b"OK"
        assert s.ctl.read("/tool/xenstored").decode().endswith("oxenstored")
        log = _log(daemon)
        assert "Live reload: database loaded" in log
        assert f"restoring: ignoring unknown line: transaction,5,{gtx},{gtx + 1}," in log
        socket_line = log.split("restoring: ignoring unknown line: transaction,-")[1]
        assert socket_line.split(",")[1:3] == [str(stx), str(stx + 1)]
        assert s.tree() == before  # the transactions' writes are gone with them
        for c, tx in ((g5, gtx), (d0, stx)):
            with pytest.raises(xensim.XsError, match="EIO"):
                c.read("/local/domain/5/data/x", tx)
            with pytest.raises(xensim.XsError, match="EIO"):
                c.transaction_end(tx)
        assert "process packet: Not_found" in _log(daemon)
        # its own numbering starts again at 1
        tx = g5.transaction_start()
        assert tx == 1
        g5.write("data/again", "1", tx)
        g5.transaction_end(tx)
        assert g5.wait_watch(5) == ("data/again", "tok5")
        assert d0.wait_watch(5) == ("/local/domain/5/data/again", "d0w")
        s.check_everyone_still_served("dropped")
    finally:
        s.close()
    assert daemon.stop(WAIT) == 0
