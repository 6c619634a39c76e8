"""Faults on real daemons, oxsd against Debian's oxenstored: a log directory on a full
filesystem, the DB dump into a full or read-only directory, SIGKILL in the middle of a
dump and of a live update.

A full filesystem is a 64 KiB tmpfs mounted in the daemon's own private mount namespace
(`unshare -m --propagation private`, then `mount -t tmpfs`), or mounted later into that
namespace with `nsenter -m`: nothing on the host is mounted.  The test reaches the files
through `/proc/<pid>/root`, which resolves paths in the namespace of that process; a
`holder` process (`nsenter -m cat`, waiting on its stdin) keeps the namespace and its
tmpfs alive after the daemon exited, to read what it left.

What the original does, measured here (xenstored.ml, logging.ml at stable-4.17), and
what oxsd does instead where it deliberately differs (docs/deviations.md):

* xenstored log on a full filesystem: it dies (exit 2, `Fatal exception:
  Sys_error("No space left on device")`) at the first line it cannot write;
  oxsd keeps serving and says so once on stderr, then how many lines it dropped;
* access log on a full filesystem: both keep serving; the original says nothing,
  oxsd says so once in its xenstored log;
* a log file that cannot be opened at start-up: fatal on both (exit 2, Sys_error);
* the dump: the original truncates and rewrites `db` in place (`DB.to_file`), so a
  dump into a full directory leaves no readable dump; oxsd writes a temporary file,
  fsyncs it and renames it over `db`: the previous dump stays and `--restart` restores
  it, also when SIGKILL cuts the dump (a test hook stops the daemon half-way, at
  SIGTERM and at a live update) or hits the new process of a live update;
* a read-only run dir: the previous dump stays on both; a live update then stays
  pending on the original, which retries the dump and logs a backtrace on every loop
  iteration, and an access-log rotation makes every later line rotate; oxsd gives the
  update up once with the reason, and rotates as usual, logging the failed dump.

Needs root and the reference kit (skipped with the reason otherwise, failing under
CI=true).
"""
from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
from pathlib import Path

import pytest

from oxsd.diff.daemons import DaemonSettings, make_scratch
from oxsd.diff.wire import HEADER, op_code
from support.patching import patch_oxsd_daemons
from support.rundir import leave_dump
from support.waiting import wait_for

KINDS = ("ocaml", "oxsd")
WAIT = 15.0
TMPFS_SIZE = "64k"
WRITE = op_code("WRITE")
READ = op_code("READ")
ENOSPC_FATAL = 'Fatal exception: Sys_error("No space left on device")'


def _wait_for(predicate, what: str, timeout: float = WAIT):
    return wait_for(predicate, what, timeout)


def private_tmpfs_prefix(mountpoint: Path, options: str = f"size={TMPFS_SIZE}") -> list[str]:
    """argv that runs the rest in a private mount namespace with a tmpfs at `mountpoint`
    (exec all the way: the daemon keeps the pid, so /proc/<pid>/root sees the tmpfs)."""
    return ["unshare", "-m", "--propagation", "private", "sh", "-c",
            f'mount -t tmpfs -o {options} tmpfs "$0" && exec "$@"', str(mountpoint)]


def in_namespace(pid: int, path: Path | str) -> Path:
    """`path` as the process `pid` sees it (its mount namespace)."""
    return Path(f"/proc/{pid}/root{path}")


def fill(directory: Path) -> int:
    """Fill the filesystem of `directory` with a `filler` file until ENOSPC; its size."""
    filler = directory / "filler"
    with open(filler, "wb", buffering=0) as f:
        try:
            while True:
                f.write(bytes(4096))
        except OSError as e:
            assert e.errno == 28, e  # ENOSPC
    return filler.stat().st_size


def socket_write(daemon, i: int) -> bool | str:
    """One connection: WRITE /data/k<i>, close.  True on OK, else what happened."""
    try:
        with daemon.connect() as conn:
            reply = conn.request(WRITE, b"/data/k%d\0value-%d" % (i, i), timeout=5)
        return True if reply.payload == b"OK\0" else repr(reply)
    except (OSError, ConnectionError, TimeoutError) as e:
        return repr(e)


def read_node(daemon, path: bytes) -> bytes | None:
    with daemon.connect() as conn:
        reply = conn.request(READ, path + b"\0", timeout=5)
    return None if reply.op == op_code("ERROR") else reply.payload


# -- the logs on a full filesystem ---------------------------------------------------------

@pytest.fixture
def logdir():
    """An empty host directory: the mount point of the daemon's private tmpfs."""
    path = Path(make_scratch("oxf-log-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.mark.parametrize("kind", KINDS)
def test_full_xenstored_log_filesystem(start, logdir, kind):
    """The xenstored log's filesystem is full: the original dies at its first lost line,
    oxsd serves on, says so once on stderr, and once the log takes lines again says in
    it (and on stderr) how many were dropped."""
    daemon = start(kind, DaemonSettings(
        log_level="debug", prefix=private_tmpfs_prefix(logdir),
        extra_conf=[f"xenstored-log-file = {logdir}/xenstored.log"]))
    tmpfs = in_namespace(daemon.pid, logdir)
    assert (tmpfs / "xenstored.log").read_text().startswith("Xen Storage Daemon")
    fill(tmpfs)
    # Each connection logs at debug ("new connection", "closing socket connection"):
    # 200 of them overflow what the log's last page still holds.
    outcomes = []
    for i in range(200):
        outcomes.append(socket_write(daemon, i))
        if not daemon.alive():
            break
    if kind == "ocaml":
        assert daemon.proc.wait(WAIT) == 2
        assert ENOSPC_FATAL in daemon.output_tail(40)
        return
    assert outcomes == [True] * 200 and daemon.alive()
    said = re.findall(r"cannot write the xenstored log .*", daemon.output_tail(40))
    assert said == [f"cannot write the xenstored log {logdir}/xenstored.log: No space left "
                    "on device; its lines are dropped until it can be written again"]
    (tmpfs / "filler").unlink()
    assert socket_write(daemon, 200) is True
    again = re.compile(r"the xenstored log \S+ is written again; (\d+) lines were dropped")
    log = _wait_for(lambda: (text := (tmpfs / "xenstored.log").read_text()).rstrip(
        "\n").endswith("closing socket connection") and text, "the log to take lines again")
    dropped = again.findall(log)
    assert len(dropped) == 1 and int(dropped[0]) > 0
    assert again.findall(daemon.output_tail(40)) == dropped
    assert read_node(daemon, b"/data/k199") == b"value-199"


@pytest.mark.parametrize("kind", KINDS)
def test_full_access_log_filesystem(start, logdir, kind):
    """The access log's filesystem is full: both daemons serve on; the original is
    silent, oxsd says so once in its xenstored log, then that the log is back."""
    daemon = start(kind, DaemonSettings(
        prefix=private_tmpfs_prefix(logdir),
        extra_conf=[f"access-log-file = {logdir}/xenstored-access.log"]))
    tmpfs = in_namespace(daemon.pid, logdir)
    assert (tmpfs / "xenstored-access.log").exists()
    fill(tmpfs)
    assert [socket_write(daemon, i) for i in range(200)] == [True] * 200
    assert daemon.alive()
    assert read_node(daemon, b"/data/k199") == b"value-199"
    (tmpfs / "filler").unlink()
    assert socket_write(daemon, 200) is True
    _wait_for(lambda: "k200" in (tmpfs / "xenstored-access.log").read_text(), "the access log")
    log = daemon.xenstored_log()
    said = re.findall(r"\|xenstored\] (cannot write the access log .*)", log)
    back = re.findall(r"\|xenstored\] the access log \S+ is written again; (\d+) lines", log)
    if kind == "ocaml":
        assert said == [] and back == [] and "access log" not in log
        return
    assert said == [f"cannot write the access log {logdir}/xenstored-access.log: No space "
                    "left on device; its lines are dropped until it can be written again"]
    assert len(back) == 1 and int(back[0]) > 0


@pytest.mark.parametrize("log", ["xenstored-log-file", "access-log-file"])
@pytest.mark.parametrize("kind", KINDS)
def test_a_log_that_cannot_be_opened_at_start_up_is_fatal(ocaml_ref, clients, start_fatal,
                                                         logdir, kind, log):
    """A log file that cannot even be opened (read-only filesystem) is a start-up error
    on both daemons: `Fatal exception: Sys_error("<file>: <reason>")`, exit 2 (oxsd
    printed a Python traceback and exited 1)."""
    msg = start_fatal(kind, DaemonSettings(
        prefix=private_tmpfs_prefix(logdir, options="size=64k,ro"),
        extra_conf=[f"{log} = {logdir}/x.log"]), timeout=WAIT)
    assert "exited with status 2" in msg, msg
    assert f'Fatal exception: Sys_error("{logdir}/x.log: Read-only file system")' in msg


# -- the DB dump: full or read-only directory, SIGKILL in the middle ----------------------

@pytest.fixture
def launch(start):
    """Factory: launch(kind, settings=None, db=None) -> a running Daemon in its own mount
    namespace (for Holder's mounts) whose run dir holds `db` (bytes) as its dump before it
    starts.  Stopped and removed at teardown (the start fixture)."""
    def _launch(kind, settings=None, db=None):
        settings = settings or DaemonSettings()
        if not settings.prefix:  # its own mount namespace, for Holder's mounts (the
            settings.prefix = PRIVATE_NAMESPACE  # reference's launcher makes its own)
        return start(kind, settings, None if db is None else leave_dump(db))

    return _launch


class Holder:
    """A process in `pid`'s mount namespace that ran `script` there (mounts), then waits on
    its stdin: the namespace and its mounts outlive the daemon until `close()`."""

    def __init__(self, pid: int, script: str, directory: str) -> None:
        # Never mount in the host's namespace (a daemon started without a private one).
        assert os.readlink(f"/proc/{pid}/ns/mnt") != os.readlink("/proc/self/ns/mnt")
        self.proc = subprocess.Popen(
            ["nsenter", "-t", str(pid), "-m", "sh", "-c", f"{script} && echo ready && exec cat",
             directory], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        ready = self.proc.stdout.readline()  # bounded: sh exits if a mount fails
        assert ready == "ready\n", f"cannot prepare {directory} in the daemon's namespace"
        self.view = in_namespace(self.proc.pid, directory)

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(WAIT)


PRIVATE_NAMESPACE = ["unshare", "-m", "--propagation", "private"]
FULL = 'mount -t tmpfs -o size=64k tmpfs "$0"'
READ_ONLY = 'mount --bind "$0" "$0" && mount -o remount,bind,ro "$0"'


def dump_dir(daemon) -> str:
    """The dump's directory as the daemon sees it (the reference has SCRATCH/run on /run)."""
    return "/run/xenstored" if daemon.kind == "ocaml" else str(daemon.db_path.parent)


def previous_dump(launch, kind: str) -> bytes:
    """The dump a first daemon leaves at SIGTERM, holding /data/first = one."""
    first = launch(kind)
    assert socket_write_value(first, b"/data/first", b"one")
    assert first.stop(WAIT) == 0
    return first.db_path.read_bytes()


def socket_write_value(daemon, path: bytes, value: bytes) -> bool:
    with daemon.connect() as conn:
        return conn.request(WRITE, path + b"\0" + value, timeout=5).payload == b"OK\0"


def grow(daemon, nodes: int = 40, size: int = 1000) -> None:
    """Nodes enough that the next dump needs more room than the previous one."""
    with daemon.connect() as conn:
        for i in range(nodes):
            reply = conn.request(WRITE, b"/data/big/%d\0" % i + b"x" * size, timeout=5)
            assert reply.payload == b"OK\0", reply


def restores_first(launch, dump: bytes) -> bool:
    """`--restart` from `dump` (a fresh oxsd) gives back /data/first."""
    restored = launch("oxsd", DaemonSettings(extra_args=["--restart"]), db=dump)
    assert "Live reload: database loaded" in restored.xenstored_log()
    return read_node(restored, b"/data/first") == b"one"


@pytest.mark.parametrize("fault", ["full", "read-only"])
@pytest.mark.parametrize("kind", KINDS)
def test_sigterm_dump_into_a_full_or_read_only_directory(launch, kind, fault):
    """The dump at SIGTERM cannot be written.  Both daemons log the error and exit 0.
    Read-only: the previous dump stays on both.  Full: the original has already
    truncated it (no dump left); oxsd's previous dump stays and restores the store."""
    prev = previous_dump(launch, kind)
    daemon = launch(kind, db=prev)
    grow(daemon)
    assert daemon.db_path.read_bytes() == prev  # a plain start does not touch it
    holder = Holder(daemon.pid, FULL if fault == "full" else READ_ONLY, dump_dir(daemon))
    try:
        if fault == "full":
            (holder.view / "db").write_bytes(prev)
            fill(holder.view)
        daemon.proc.send_signal(signal.SIGTERM)
        assert daemon.proc.wait(WAIT) == 0
        left = (holder.view / "db").read_bytes()
        leftovers = sorted(p.name for p in holder.view.iterdir())
    finally:
        holder.close()
    reason = "No space left on device" if fault == "full" else "Read-only file system"
    log = daemon.xenstored_log()
    # the same line on both: an OCaml channel error (oxsd names the dump it replaces)
    assert re.search(rf'\|error\|xenstored\] caught exception Sys_error\("(\S+/db: )?{reason}"\)',
                     log), log
    if kind == "ocaml" and fault == "full":
        assert left != prev and not left.endswith(b"\n")  # truncated, cut: unreadable
        return
    assert left == prev
    assert "db.tmp" not in leftovers
    assert restores_first(launch, left)


CUT_DUMP = """
    import os, time
    _write = os.write
    _marker = os.environ["XENSTORED_RUNDIR"] + "/../dump-cut"
    def _cut_write(fd, data):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            target = ""
        if target.endswith(("/db", "/db.tmp")) and len(data) > 65536:
            _write(fd, bytes(data[:len(data) // 2]))
            open(_marker, "w").close()
            while True:  # the test's SIGKILL ends it here, half written
                time.sleep(60)
        return _write(fd, data)
    os.write = _cut_write
"""


def _killed_mid_dump(daemon) -> None:
    marker = daemon.scratch / "run" / "dump-cut"
    _wait_for(lambda: marker.exists() or not daemon.alive(), "the dump to be half written")
    assert daemon.alive(), daemon.output_tail()
    daemon.proc.kill()
    assert daemon.proc.wait(WAIT) == -signal.SIGKILL


def test_sigkill_in_the_middle_of_the_sigterm_dump(launch, monkeypatch, tmp_path):
    """oxsd killed with half its dump written (a test hook stops it there): the previous
    dump is untouched and `--restart` from it restores the store."""
    prev = previous_dump(launch, "oxsd")
    patch_oxsd_daemons(monkeypatch, tmp_path, CUT_DUMP)
    daemon = launch("oxsd", db=prev)
    grow(daemon, nodes=100)  # a dump of more than 64 KiB (the hook cuts only those)
    daemon.proc.send_signal(signal.SIGTERM)
    _killed_mid_dump(daemon)
    left = daemon.db_path.read_bytes()
    assert left == prev
    monkeypatch.undo()  # the daemon that restores runs unpatched
    assert restores_first(launch, left)


# -- live update ------------------------------------------------------------------------

CONTROL = op_code("CONTROL")
LIVE_UPDATE_S = b"live-update\0-s\0-t\0" b"30\0"
SAVE_FAILED = "Live update aborted: the state could not be saved: "


@pytest.mark.parametrize("kind", KINDS)
def test_live_update_whose_dump_fails(launch, kind):
    """The run dir is read-only when a live update is due.  The original keeps the update
    pending and retries the dump on every loop iteration, logging the exception each time
    (one line or more per request served), `-s` answering BUSY for ever.  oxsd gives the
    update up once: one error line, `-s` answers the reason; both serve on."""
    daemon = launch(kind)
    holder = Holder(daemon.pid, READ_ONLY, dump_dir(daemon))
    try:
        with daemon.connect() as ctl:
            assert ctl.request(CONTROL, LIVE_UPDATE_S, timeout=5).payload == b"BUSY"
            assert [socket_write(daemon, i) for i in range(20)] == [True] * 20
            second = ctl.request(CONTROL, LIVE_UPDATE_S, timeout=5).payload.decode()
        log = daemon.xenstored_log()
        assert daemon.alive() and read_node(daemon, b"/data/k19") == b"value-19"
    finally:
        daemon.stop(WAIT)
        holder.close()
    caught = log.count("|error|xenstored] caught exception Sys_error(")
    if kind == "ocaml":
        assert second == "BUSY" and caught >= 20 and SAVE_FAILED not in log
        return
    assert re.fullmatch(re.escape(SAVE_FAILED) + r'Sys_error\("\S+/db: Read-only file system"\)',
                        second)
    assert caught == 0 and log.count(SAVE_FAILED) == 1
    assert "Launching" not in log


def test_sigkill_in_the_middle_of_a_live_update_dump(launch, monkeypatch, tmp_path):
    """oxsd killed with half the live update's dump written: the previous dump is untouched
    and `--restart` from it restores the store."""
    prev = previous_dump(launch, "oxsd")
    patch_oxsd_daemons(monkeypatch, tmp_path, CUT_DUMP)
    daemon = launch("oxsd", db=prev)
    grow(daemon, nodes=100)
    with daemon.connect() as ctl:
        ctl.send_bytes(HEADER.pack(CONTROL, 1, 0, len(LIVE_UPDATE_S)) + LIVE_UPDATE_S)
        _killed_mid_dump(daemon)
    left = daemon.db_path.read_bytes()
    assert left == prev
    monkeypatch.undo()  # the daemon that restores runs unpatched
    assert restores_first(launch, left)


HOLD_RESTORE = """
    import os, sys, time
    import oxsd.db
    _from_file = oxsd.db.from_file
    def _held_from_file(*args, **kwargs):
        if "--live" in sys.argv:  # the process the live update exec'd
            open(os.environ["XENSTORED_RUNDIR"] + "/../restore-held", "w").close()
            while True:  # the test's SIGKILL ends it here, before the restore
                time.sleep(60)
        return _from_file(*args, **kwargs)
    oxsd.db.from_file = _held_from_file
"""


def test_sigkill_after_the_exec_of_a_live_update(launch, monkeypatch, tmp_path):
    """oxsd killed in the new process of a live update, before it restored anything: the
    dump the old one wrote is whole and `--restart` from it has every node written
    before the update."""
    patch_oxsd_daemons(monkeypatch, tmp_path, HOLD_RESTORE)
    daemon = launch("oxsd")
    assert socket_write_value(daemon, b"/data/first", b"one")
    with daemon.connect() as ctl:
        assert ctl.request(CONTROL, LIVE_UPDATE_S, timeout=5).payload == b"BUSY"
        marker = daemon.scratch / "run" / "restore-held"
        _wait_for(lambda: marker.exists() or not daemon.alive(), "the exec'd process")
    assert daemon.alive(), daemon.output_tail()
    daemon.proc.kill()
    assert daemon.proc.wait(WAIT) == -signal.SIGKILL
    dump = daemon.db_path.read_bytes()
    assert dump.startswith(b"$xenstored-dump-format\n") and dump.endswith(b"\n")
    monkeypatch.undo()  # the daemon that restores runs unpatched
    assert restores_first(launch, dump)


# -- the dump at an access-log rotation --------------------------------------------------

ROTATION_FAILED = "access log rotated, but the state dump could not be written: "


@pytest.mark.parametrize("kind", KINDS)
def test_access_log_rotation_whose_dump_fails(launch, kind):
    """Each access-log rotation dumps the state; the run dir is read-only.  The original's
    rotation counter is reset only after the dump, so from then on every line rotates
    every file and tries a whole dump, silently: the 20 files keep the last 19 lines.
    oxsd rotates every `access-log-nb-lines` lines as before and logs each failed dump."""
    daemon = launch(kind, DaemonSettings(extra_conf=["access-log-nb-lines = 5"]))
    holder = Holder(daemon.pid, READ_ONLY, dump_dir(daemon))
    try:
        assert [socket_write(daemon, i) for i in range(30)] == [True] * 30
    finally:  # stopped first: a rotation may be under way (the file renamed, not reopened)
        daemon.stop(WAIT)
        holder.close()
    lines = [p.read_text().count("\n") for p in daemon.rotated_access_logs()]
    log = daemon.xenstored_log()
    rotated = lines[:-1]  # .N ... .1, then the current file
    if kind == "ocaml":
        assert rotated == [1] * 19 and lines[-1] == 0 and ROTATION_FAILED not in log
        return
    assert rotated and set(rotated) == {6}  # nb-lines + 1: the original's count, unchanged
    assert len(rotated) < 19  # none fell off the end: every rotation is below
    failures = re.findall(re.escape(ROTATION_FAILED) + r'Sys_error\("\S+/db: Read-only file '
                          r'system"\)', log)
    assert len(failures) == len(rotated)
