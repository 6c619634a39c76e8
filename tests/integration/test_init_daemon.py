"""init/ scripts with the real daemon: launch-xenstore and the SysV script run oxsd's
`oxenstored` the way Xen's scripts run the OCaml one (issue 6, drop-in operation).

Each test gets a short scratch directory (AF_UNIX paths stay under 108 bytes)
holding the run dir (pid file), the xenstored run dir (`XENSTORED_RUNDIR`:
socket and DB dump), the logs, the simulated hypervisor (`--sim`), the
xencommons file and the daemon's config.  Every process started for a test
carries the scratch path in its environment, and teardown SIGKILLs whatever
still has it, so a failing test never leaves a daemon behind.

Environment limits handled here: without CAP_SYS_RESOURCE (a container) the
launcher cannot lower the OOM score and the daemon cannot raise its fd limit
to nr_open; the tests probe for the capability and expect what the scripts
and the daemon then do.
"""
from __future__ import annotations

import os
import re
import select
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from oxsd.sim.client import SocketClient, XsError

REPO = Path(__file__).resolve().parents[2]
INIT = REPO / "init"
LAUNCHER = INIT / "launch-xenstore"
SYSV = INIT / "oxenstored"
MARKER = "OXSD_INIT_TEST_SCRATCH"  # in every started process's environment
REAL_NR_OPEN = Path("/proc/sys/fs/nr_open")
SCRIPT_TIMEOUT = 60.0
EXIT_TIMEOUT = 15.0


def hard_nofile() -> int:
    import resource
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    return 4096 if hard == resource.RLIM_INFINITY else hard


def real_nr_open() -> int:
    try:
        return int(REAL_NR_OPEN.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 1024 * 1024


def can_raise_nofile_to_nr_open() -> bool:
    """Whether the daemon's own raise to nr_open (poll.ml's start-up step) can succeed here."""
    r = subprocess.run(["prlimit", f"--nofile={real_nr_open()}", "true"], capture_output=True,
                       timeout=10)
    return r.returncode == 0


def can_lower_oom_score() -> bool:
    """Lowering oom_score_adj below 0 needs CAP_SYS_RESOURCE (absent in most containers)."""
    r = subprocess.run(["sh", "-c", "echo -1 >/proc/self/oom_score_adj"], capture_output=True,
                       timeout=10)
    return r.returncode == 0


def oxenstored_entry_point(scratch: Path) -> tuple[str, str]:
    """(XENSTORED for the scripts, expected /tool/xenstored): the installed console script,
    else a wrapper running `python -m oxsd` (which then names the interpreter)."""
    script = Path(sys.executable).parent / "oxenstored"  # setup.cfg's console script
    if script.is_file() and os.access(script, os.X_OK) and \
            "oxsd.xenstored" in script.read_text(errors="replace"):
        return str(script), str(script)
    wrapper = scratch / "oxenstored"
    wrapper.write_text(f'#!/bin/sh\nexec {sys.executable} -m oxsd "$@"\n')
    wrapper.chmod(0o755)
    return str(wrapper), sys.executable


def proc_stat(pid: int) -> list[str]:
    """/proc/PID/stat fields after the command name: state, ppid, pgrp, session, tty_nr, ..."""
    return Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1].split()


def proc_nofile(pid: int) -> tuple[int, int]:
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max open files"):
            soft, hard = line.split()[3:5]
            return int(soft), int(hard)
    raise AssertionError(f"no 'Max open files' in /proc/{pid}/limits")


def wait_gone(pid: int, timeout: float = EXIT_TIMEOUT) -> bool:
    """True once `pid` has exited (a zombie counts), waiting on a pidfd."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    try:
        ready, _, _ = select.select([fd], [], [], timeout)
        return bool(ready)
    finally:
        os.close(fd)


def alive(pid: int) -> bool:
    try:
        return proc_stat(pid)[0] != "Z"
    except (OSError, IndexError):
        return False


class NotifySocket:
    """The receiving end of $NOTIFY_SOCKET (what systemd binds), with sender credentials."""

    def __init__(self, address: str) -> None:
        self.address = address
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        self.sock.bind("\0" + address[1:] if address.startswith("@") else address)

    def receive(self, timeout: float = 30.0) -> tuple[bytes, int]:
        """(message, sender pid); fails the test if nothing arrives in time."""
        ready, _, _ = select.select([self.sock], [], [], timeout)
        assert ready, f"no notification on {self.address} within {timeout}s"
        msg, ancdata, _flags, _addr = self.sock.recvmsg(4096, socket.CMSG_SPACE(12))
        sender = -1
        for level, kind, data in ancdata:
            if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
                sender = struct.unpack("iII", data[:12])[0]
        return msg, sender

    def pending(self) -> bool:
        return bool(select.select([self.sock], [], [], 0)[0])

    def close(self) -> None:
        self.sock.close()


@dataclass
class Sandbox:
    root: Path
    xenstored: str
    tool_node: str
    env: dict[str, str] = field(default_factory=dict)
    notify: list[NotifySocket] = field(default_factory=list)

    @property
    def run_dir(self) -> Path:
        return self.root / "run"

    @property
    def pidfile(self) -> Path:
        return self.run_dir / "xenstored.pid"

    @property
    def stored_dir(self) -> Path:
        return self.root / "xs"

    @property
    def socket(self) -> str:
        return str(self.stored_dir / "socket")

    @property
    def db(self) -> Path:
        return self.stored_dir / "db"

    @property
    def log(self) -> Path:
        return self.root / "log" / "xenstored.log"

    @property
    def xencommons(self) -> Path:
        return self.root / "xencommons"

    @property
    def daemon_conf(self) -> Path:
        return self.root / "oxenstored.conf"

    def write_xencommons(self, extra: str = "", args: str = "") -> None:
        """XENSTORED = oxsd's entry point, its config and sim dir in XENSTORED_ARGS."""
        args = f"--config-file {self.daemon_conf} --sim {self.root / 'sim'} {args}".strip()
        self.xencommons.write_text(f"XENSTORED={self.xenstored}\nXENSTORED_ARGS='{args}'\n"
                                   + extra)

    def notify_socket(self, address: str) -> NotifySocket:
        ns = NotifySocket(address)
        self.notify.append(ns)
        self.env["NOTIFY_SOCKET"] = address
        return ns

    def run(self, *cmd: str) -> tuple[int, int, str, str]:
        """Run a script as systemd or init would (executed, not sourced): pid, status, out, err."""
        proc = subprocess.Popen(list(cmd), env=self.env, stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            out, err = proc.communicate(timeout=SCRIPT_TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
            pytest.fail(f"{cmd} still running after {SCRIPT_TIMEOUT}s:\n{out}\n{err}")
        return proc.pid, proc.returncode, out, err

    def launch(self) -> tuple[int, int, str, str]:
        return self.run(str(LAUNCHER))

    def sysv(self, action: str) -> tuple[int, str, str]:
        _pid, code, out, err = self.run(str(SYSV), action)
        return code, out, err

    def daemon_pid(self) -> int:
        return int(self.pidfile.read_text())

    def strays(self) -> list[int]:
        """Live processes started for this sandbox (scripts, daemons)."""
        tag = f"{MARKER}={self.root}\0".encode()
        found = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit() or int(entry.name) == os.getpid():
                continue
            try:
                if tag in (entry / "environ").read_bytes() and alive(int(entry.name)):
                    found.append(int(entry.name))
            except OSError:
                pass
        return found

    def client(self) -> SocketClient:
        return SocketClient(self.socket, timeout=10.0)

    def log_problems(self) -> list[str]:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return [line for line in text.splitlines()
                if re.search(r"\|\s*error\|", line) or "Traceback" in line
                or "Fatal" in line or "exception" in line.lower()]


@pytest.fixture
def box():
    """A scratch tree and environment for the scripts; SIGKILLs every leftover at teardown."""
    root = Path(tempfile.mkdtemp(prefix="oxi-", dir="/tmp" if os.path.isdir("/tmp") else None))
    xenstored, tool_node = oxenstored_entry_point(root)
    sb = Sandbox(root, xenstored, tool_node)
    (root / "nr_open").write_text(f"{hard_nofile()}\n")
    sb.daemon_conf.write_text(
        f"pid-file = {sb.pidfile}\n"
        f"xenstored-log-file = {root / 'log' / 'xenstored.log'}\n"
        "xenstored-log-level = info\n"
        f"access-log-file = {root / 'log' / 'xenstored-access.log'}\n")
    (root / "log").mkdir()
    sb.write_xencommons()
    pythonpath = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    sb.env = dict(os.environ, XEN_RUN_DIR=str(sb.run_dir), XEN_LOG_DIR=str(root / "log"),
                  XENCOMMONS_CONFIG=str(sb.xencommons), NR_OPEN_FILE=str(root / "nr_open"),
                  XENSTORED_RUNDIR=str(sb.stored_dir), XENSTORED_STOP_TIMEOUT="10",
                  PYTHONPATH=pythonpath, **{MARKER: str(root)})
    sb.env.pop("NOTIFY_SOCKET", None)
    try:
        yield sb
    finally:
        for pid in sb.strays():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        for ns in sb.notify:
            ns.close()
        shutil.rmtree(root, ignore_errors=True)


def dumped_nodes(db: Path) -> dict[bytes, bytes]:
    """path -> value of the `store,` records of a DB dump."""
    lines = db.read_text().splitlines()
    assert lines[0] == "$xenstored-dump-format"
    nodes = {}
    for line in lines[1:]:
        rec = line.split(",")
        if rec[0] == "store":
            nodes[bytes.fromhex(rec[1])] = bytes.fromhex(rec[3])
    return nodes


def sigterm_and_wait(pid: int) -> None:
    os.kill(pid, signal.SIGTERM)
    assert wait_gone(pid), f"oxenstored (pid {pid}) still running {EXIT_TIMEOUT}s after SIGTERM"


# -- launch-xenstore --------------------------------------------------------------

def pretend_systemd_booted(box: Sandbox) -> None:
    """A `systemd-notify` that says "booted": the launcher then reads the pid file at
    once, without waiting for it, as it does under systemd."""
    bindir = box.root / "bin"
    bindir.mkdir()
    shim = bindir / "systemd-notify"
    shim.write_text('#!/bin/sh\n[ "$1" = --booted ]\n')
    shim.chmod(0o755)
    box.env["PATH"] = f"{bindir}{os.pathsep}{box.env.get('PATH', '/usr/bin:/bin')}"


@pytest.mark.parametrize("notify", ["path", "abstract"])
def test_launcher_daemonises_real_oxsd_which_notifies_ready(box, notify):
    if notify == "path":
        ns = box.notify_socket(str(box.root / "notify"))
    else:
        ns = box.notify_socket(f"@oxsd-init-test-{os.getpid()}-{box.root.name}")
    pretend_systemd_booted(box)
    launcher, code, out, err = box.launch()
    assert code == 0, out + err
    assert "No such file" not in err  # the pid file existed when prlimit returned
    assert out.startswith(f"Starting {box.xenstored}...")
    # The launcher returned only once the pid file existed.
    pid = box.daemon_pid()
    assert box.pidfile.read_text() == f"{pid}\n"
    assert pid != launcher and alive(pid)
    state, ppid, _pgrp, session, tty = proc_stat(pid)[:5]
    assert int(ppid) not in (os.getpid(), launcher)  # re-parented: its parents exited
    assert int(session) not in (os.getsid(0), pid)  # setsid, then a second fork
    assert tty == "0"
    for fd in (0, 1, 2):
        assert os.readlink(f"/proc/{pid}/fd/{fd}") == "/dev/null"
    msg, sender = ns.receive()
    assert (msg, sender) == (b"READY=1", pid)
    with box.client() as c:
        assert c.read("/tool/xenstored") == box.tool_node.encode()
        c.write("/drop-in/launcher", b"yes")
        assert c.read("/drop-in/launcher") == b"yes"
    assert not ns.pending()  # READY=1 once, and nothing else
    sigterm_and_wait(pid)


def test_launcher_fails_when_oxsd_cannot_create_its_socket(box):
    blocker = box.root / "not-a-dir"
    blocker.write_text("")
    box.env["XENSTORED_RUNDIR"] = str(blocker / "xs")
    launcher, code, out, err = box.launch()
    assert code == 1 and out.endswith(f"\nCould not start {box.xenstored}\n"), out + err
    # Unix.handle_unix_error's one line, exit 2, before daemonising: nothing is left.
    assert re.fullmatch(rf'\S+: "mkdir" failed on "{blocker / "xs"}": Not a directory\n', err), err
    assert not box.pidfile.exists() and box.strays() == []


def test_launcher_started_daemon_serves_debian_clients(box, clients):
    code = box.launch()[1]
    assert code == 0
    pid = box.daemon_pid()
    r = clients.run(box.socket, "write", "/drop-in/debian", "from xenstore-write")
    assert r.returncode == 0, r.stderr
    r = clients.run(box.socket, "read", "/drop-in/debian")
    assert (r.returncode, r.stdout) == (0, "from xenstore-write\n")
    with box.client() as c:
        assert c.read("/drop-in/debian") == b"from xenstore-write"
    r = clients.run(box.socket, "read", "/tool/xenstored")
    assert r.stdout == box.tool_node + "\n"
    sigterm_and_wait(pid)


def test_sigterm_dumps_db_removes_pid_file_keeps_socket(box):
    assert box.launch()[1] == 0
    pid = box.daemon_pid()
    with box.client() as c:
        c.write("/drop-in/kept", b"in the dump")
    sigterm_and_wait(pid)
    assert not box.pidfile.exists()
    # As the original: the socket file and the DB dump stay in place.
    assert Path(box.socket).is_socket()
    nodes = dumped_nodes(box.db)
    assert nodes[b"/drop-in/kept"] == b"in the dump"
    assert nodes[b"/tool/xenstored"] == box.tool_node.encode()
    log = box.log.read_text()
    assert "Received SIGTERM" in log and "stopping xenstored" in log
    assert log.startswith("Xen Storage Daemon, version 1.0\n")
    assert box.log_problems() == []


def test_launcher_fd_limit_and_trace_option_reach_the_daemon(box):
    n = min(hard_nofile(), 2048)
    box.write_xencommons(f"XENSTORED_MAX_OPEN_FDS={n}\nXENSTORED_TRACE=yes\n")
    code, out, err = box.launch()[1:]
    assert code == 0, out + err
    pid = box.daemon_pid()
    # The daemon then raises its own limit to nr_open as poll.ml does; without
    # CAP_SYS_RESOURCE that fails and the launcher's limit stays.
    want = real_nr_open() if can_raise_nofile_to_nr_open() else n
    assert proc_nofile(pid) == (want, want)
    args = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    trace = str(box.root / "log" / "xenstored-trace.log").encode()
    assert args[-3:] == [b"-T", trace, b""]
    assert args[args.index(b"--pid-file") + 1] == str(box.pidfile).encode()
    with box.client() as c:
        c.write("/drop-in/traced", b"1")
    sigterm_and_wait(pid)
    assert box.log_problems() == []


def test_launcher_sets_oom_score_from_threshold(box):
    box.write_xencommons("XENSTORED_OOM_MEM_THRESHOLD=30\n")
    code, out, err = box.launch()[1:]
    assert code == 0, out + err  # as Xen's launcher: a failed OOM write does not fail it
    pid = box.daemon_pid()
    score = int(Path(f"/proc/{pid}/oom_score_adj").read_text())
    if can_lower_oom_score():
        assert score == -300
        assert err == ""
    else:
        # The write fails ("Permission denied"); the daemon keeps the inherited score.
        assert score == int(Path("/proc/self/oom_score_adj").read_text())
        assert "Permission denied" in err
    sigterm_and_wait(pid)


def test_launcher_restarts_daemon_after_clean_stop_with_fresh_store(box):
    assert box.launch()[1] == 0
    first = box.daemon_pid()
    with box.client() as c:
        c.write("/drop-in/old", b"1")
    sigterm_and_wait(first)
    assert box.launch()[1] == 0
    second = box.daemon_pid()
    assert second != first and alive(second)
    # No --restart: a regular start; the stale socket file is replaced.
    with box.client() as c, pytest.raises(XsError, match="ENOENT"):
        c.read("/drop-in/old")
    sigterm_and_wait(second)


# -- SysV script ------------------------------------------------------------------

def test_sysv_start_status_client_stop_with_real_daemon(box, clients):
    code, out, _ = box.sysv("status")
    assert (code, out) == (3, "xenstored is not running\n")
    code, out, err = box.sysv("start")
    assert code == 0, out + err
    assert out.startswith(f"Starting {box.xenstored}...") and " done\n" in out
    if not can_lower_oom_score():
        assert "Could not set the OOM score of xenstored" in out
    pid = box.daemon_pid()
    code, out, _ = box.sysv("status")
    assert (code, out) == (0, f"xenstored is running (pid {pid})\n")
    r = clients.run(box.socket, "write", "/drop-in/sysv", "started by init")
    assert r.returncode == 0, r.stderr
    with box.client() as c:
        assert c.read("/drop-in/sysv") == b"started by init"
    code, out, err = box.sysv("stop")
    assert code == 0, out + err
    assert out.startswith(f"Stopping xenstored (pid {pid})...") and out.endswith(" done\n")
    assert wait_gone(pid, timeout=0) and not box.pidfile.exists()
    code, out, _ = box.sysv("status")
    assert (code, out) == (3, "xenstored is not running\n")
    assert dumped_nodes(box.db)[b"/drop-in/sysv"] == b"started by init"
    assert box.log_problems() == []


def test_sysv_restart_gives_new_daemon_with_fresh_store(box):
    assert box.sysv("start")[0] == 0
    first = box.daemon_pid()
    with box.client() as c:
        c.write("/drop-in/before-restart", b"1")
    code, out, err = box.sysv("restart")
    assert code == 0, out + err
    second = box.daemon_pid()
    assert second != first and not alive(first) and alive(second)
    # A regular start (no --restart in XENSTORED_ARGS): the store begins anew,
    # as oxenstored's would; the dump of the old one stays in the run dir.
    with box.client() as c:
        with pytest.raises(XsError, match="ENOENT"):
            c.read("/drop-in/before-restart")
        assert c.read("/tool/xenstored") == box.tool_node.encode()
        assert sorted(c.directory("/")) == ["@introduceDomain", "@releaseDomain", "local",
                                            "tool"]
    assert box.sysv("stop")[0] == 0
    assert not alive(second)


def test_sysv_stop_waits_while_a_transaction_is_open(box):
    box.env["XENSTORED_STOP_TIMEOUT"] = "1"
    assert box.sysv("start")[0] == 0
    pid = box.daemon_pid()
    c = box.client()
    try:
        tx = c.transaction_start()
        c.write("/drop-in/tx", b"pending", tx=tx)
        # oxenstored only quits once no connection has an open transaction.
        code, out, _ = box.sysv("stop")
        assert code == 1 and "still running after 1 s" in out
        assert alive(pid) and box.pidfile.exists()
    finally:
        c.close()  # the connection goes, with its transaction
    assert wait_gone(pid), "oxenstored did not exit once the blocking client left"
    assert not box.pidfile.exists()
    assert b"/drop-in/tx" not in dumped_nodes(box.db)
    code, out, _ = box.sysv("status")
    assert code == 3
