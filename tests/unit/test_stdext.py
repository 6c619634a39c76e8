"""stdext: split with a limit, mkdir -p, pid files, fd limit, daemonising (process.ml: split)."""
from __future__ import annotations

import json
import os
import socket
import stat
import subprocess
import sys
import textwrap
import time

import pytest

from oxsd import stdext
from oxsd.stdext import ocaml_dirname, split


# -- split (Stdext.String.split ?limit) -------------------------------------

@pytest.mark.parametrize("data,limit,pieces", [
    (b"a\0b\0", 8, [b"a", b"b", b""]),
    (b"", 8, [b""]),
    (b"abc", 8, [b"abc"]),
    (b"/a\0x\0y\0", 2, [b"/a", b"x\0y\0"]),
    (b"/a", 2, [b"/a"]),
    (b"a\0b\0c", 1, [b"a\0b\0c"]),
    (b"1\x002\x003\x004\x005\x006\x007\x008\x009\x00", 8,
     [b"1", b"2", b"3", b"4", b"5", b"6", b"7", b"8\x009\x00"]),
    (b"a\0b\0c", 0, [b"a", b"b", b"c"]),
    (b"a\0b\0c", -1, [b"a", b"b", b"c"]),
    (b"a\0b\0c", -5, [b"a", b"b", b"c"]),
])
def test_split_stops_at_limit_pieces_and_keeps_the_rest(data, limit, pieces):
    assert split(data, b"\0", limit) == pieces


def test_split_on_other_separator():
    assert split(b"k=v=w", b"=", 2) == [b"k", b"v=w"]


def test_startswith():
    assert stdext.startswith(b"ENOENT", b"ENOENT\0") and not stdext.startswith(b"ENOENT", b"ENO")


# -- directories and files ------------------------------------------------------

@pytest.mark.parametrize("name,parent", [
    ("/a/b", "/a"), ("/a/b/", "/a"), ("a", "."), ("a/b", "a"), ("/", "/"), ("//x", "/"),
    ("", "."), ("a//b", "a"), ("//", "/"), ("/a", "/"),
])
def test_dirname_follows_ocaml_filename_dirname(name, parent):
    assert ocaml_dirname(name) == parent


def test_mkdir_rec_creates_parents_with_mode_and_accepts_existing(tmp_path):
    old = os.umask(0)
    try:
        target = tmp_path / "a" / "b" / "c"
        stdext.mkdir_rec(str(target) + "/", 0o700)
        stdext.mkdir_rec(str(target), 0o700)
    finally:
        os.umask(old)
    assert target.is_dir()
    assert stat.S_IMODE((tmp_path / "a").stat().st_mode) == 0o700


def test_mkdir_rec_fails_when_a_file_is_in_the_way(tmp_path):
    (tmp_path / "f").write_text("")
    with pytest.raises(NotADirectoryError):
        stdext.mkdir_rec(str(tmp_path / "f" / "d"), 0o755)


def test_pidfile_write_truncates_and_uses_mode_0640(tmp_path):
    p = tmp_path / "x.pid"
    p.write_text("999999999999\n")
    old = os.umask(0)
    try:
        os.unlink(p)
        stdext.pidfile_write(str(p))
        assert stat.S_IMODE(p.stat().st_mode) == 0o640
        p.write_text("9" * 40)
        stdext.pidfile_write(str(p))
    finally:
        os.umask(old)
    assert p.read_text() == f"{os.getpid()}\n"


def test_pidfile_write_errors_raise(tmp_path):
    with pytest.raises(FileNotFoundError):
        stdext.pidfile_write(str(tmp_path / "missing" / "x.pid"))


def test_unlink_safe_ignores_missing_files(tmp_path):
    stdext.unlink_safe(str(tmp_path / "nope"))
    (tmp_path / "f").write_text("")
    stdext.unlink_safe(str(tmp_path / "f"))
    assert not (tmp_path / "f").exists()


# -- RLIMIT_NOFILE (poll.ml) -------------------------------------------------------

@pytest.mark.parametrize("content,value", [
    (b"4096\n", 4096), (b"0x1000\n", 4096), (b"4096", 4096),
    (b"", 1048576), (b"12 \n", 1048576), (b"abc\n", 1048576),
])
def test_read_nr_open_parses_the_first_line_or_falls_back(tmp_path, content, value):
    p = tmp_path / "nr_open"
    p.write_bytes(content)
    assert stdext.read_nr_open(str(p)) == value


def test_read_nr_open_missing_file_falls_back(tmp_path):
    assert stdext.read_nr_open(str(tmp_path / "nope")) == 1048576


def run_py(code: str, *args: str, timeout: float = 30) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code), *args],
                          capture_output=True, text=True, timeout=timeout)


def test_raise_nofile_limit_sets_soft_and_hard_to_nr_open(tmp_path):
    import resource
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = min(hard, 4096)
    (tmp_path / "nr_open").write_text(f"{target}\n")
    r = run_py("""
        import resource, sys
        from oxsd import stdext
        ok = stdext.raise_nofile_limit(sys.argv[1])
        print(ok, *resource.getrlimit(resource.RLIMIT_NOFILE))
    """, str(tmp_path / "nr_open"))
    assert r.stdout.split() == ["True", str(target), str(target)]


def test_raise_nofile_limit_failure_is_not_fatal(tmp_path):
    import resource
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        pytest.skip("hard limit is infinite")
    (tmp_path / "nr_open").write_text(f"{hard * 2}\n")
    r = run_py("""
        import resource, sys
        from oxsd import stdext
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(256, hard), hard))
        ok = stdext.raise_nofile_limit(sys.argv[1])
        print(ok, *resource.getrlimit(resource.RLIMIT_NOFILE))
    """, str(tmp_path / "nr_open"))
    assert r.returncode == 0, r.stderr
    ok, soft2, hard2 = r.stdout.split()
    if ok == "True":  # privileged: the limit was raised above the old hard limit
        assert (int(soft2), int(hard2)) == (hard * 2, hard * 2)
    else:  # unprivileged: at least the soft limit went up to the hard one
        assert int(soft2) == int(hard2) == hard


# -- daemonize ---------------------------------------------------------------------

DAEMON = """
    import json, os, socket, sys
    from oxsd import stdext
    sock_path, pidfile, mode = sys.argv[1:]
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(sock_path)
    listener.listen(1)
    marker = os.path.join(os.path.dirname(sock_path), "marker")
    other = os.open(marker, os.O_RDWR | os.O_CREAT)  # not kept: must be closed
    os.umask(0o027)
    print("before fork", flush=True)

    def ready():
        if mode == "fail":
            raise RuntimeError("ready failed")
        stdext.pidfile_write(pidfile)

    stdext.daemonize(keep=[listener], ready=ready)
    listener.settimeout(20)
    conn, _ = listener.accept()
    other_open = any(os.readlink(f"/proc/self/fd/{fd}") == marker
                     for fd in os.listdir("/proc/self/fd") if os.path.exists(f"/proc/self/fd/{fd}"))
    umask = os.umask(0)
    report = dict(pid=os.getpid(), sid=os.getsid(0), other_open=other_open,
                  stdin=os.readlink("/proc/self/fd/0"), stdout=os.readlink("/proc/self/fd/1"),
                  stderr=os.readlink("/proc/self/fd/2"), cwd=os.getcwd(), umask=umask,
                  pidfile_at_start=open(pidfile).read())
    conn.sendall(json.dumps(report).encode())
    conn.close()
"""


def test_daemonize_writes_pid_file_before_the_launcher_exits(tmp_path):
    sock_path, pidfile = str(tmp_path / "s"), str(tmp_path / "x.pid")
    launcher = subprocess.Popen([sys.executable, "-c", textwrap.dedent(DAEMON), sock_path,
                                 pidfile, "ok"], cwd=str(tmp_path),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out, err = launcher.communicate(timeout=30)
    # The launcher is gone and the pid file is already there.
    assert launcher.returncode == 0, err
    assert os.path.exists(pidfile)
    assert out == "before fork\n"  # printed once: flushed before forking
    daemon_pid = int(open(pidfile).read())
    assert daemon_pid != launcher.pid

    c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    c.settimeout(20)
    c.connect(sock_path)  # the kept listening socket still works in the daemon
    data = b""
    while chunk := c.recv(4096):
        data += chunk
    c.close()
    report = json.loads(data)
    assert report["pid"] == daemon_pid
    assert report["pidfile_at_start"] == f"{daemon_pid}\n"
    assert report["sid"] not in (os.getsid(0), daemon_pid)  # new session, not its leader
    assert report["other_open"] is False
    assert (report["stdin"], report["stdout"], report["stderr"]) == ("/dev/null",) * 3
    assert report["cwd"] == str(tmp_path) and report["umask"] == 0o027
    _wait_gone(daemon_pid)


def test_daemonize_launcher_fails_if_the_daemon_dies_before_ready(tmp_path):
    r = run_py(DAEMON, str(tmp_path / "s"), str(tmp_path / "x.pid"), "fail")
    assert r.returncode == 1
    assert not (tmp_path / "x.pid").exists()


def _wait_gone(pid: int, timeout: float = 20) -> None:
    """Wait until `pid` has exited (a zombie nobody reaped counts as exited)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            state = open(f"/proc/{pid}/stat").read().rsplit(") ", 1)[1][0]
        except (OSError, IndexError):
            return
        if state == "Z":
            return
        time.sleep(0.02)
    raise AssertionError(f"process {pid} still running")
