"""Small OS and string helpers (port of stdext.ml, plus poll.ml's fd limit).

* `split(data, sep, limit)` — `Stdext.String.split ?limit`: cut at each
  separator left to right until `limit` pieces exist, the last piece keeps
  the rest; `limit <= 0` means no limit (process.ml: split).
* `unlink_safe`, `mkdir_safe`, `mkdir_rec` — as `Unixext`; `mkdir_rec` walks
  up with OCaml's `Filename.dirname` rules and ignores only EEXIST.
* `pidfile_write(path)` — `"<pid>\\n"`, O_WRONLY|O_CREAT|O_TRUNC, mode 0640;
  errors raise (the caller decides whether they matter, xenstored.ml: main (its pidfile_write)).
* `raise_nofile_limit()` — poll.ml's module initialisation: RLIMIT_NOFILE
  soft and hard to `/proc/sys/fs/nr_open` (1048576 if unreadable).  The
  original dies when that fails; here failure is ignored (poll.ml: get_sys_fs_nr_open), after
  a best-effort raise of the soft limit to the hard one.
* `daemonize(keep, ready)` — detach with python-daemon's `DaemonContext`
  (fork, setsid, fork; stdin/stdout/stderr on /dev/null; every other
  descriptor closed except `keep`).  Unlike a bare DaemonContext it keeps
  the working directory, umask, signal handlers and core-dump limit, as
  `Unixext.daemonize` does.  The process that called it only exits once the
  daemon has run `ready` (write the pid files there): Xen's launch-xenstore
  reads the pid file as soon as the command returns when systemd is the
  init, so the file must exist by then.  That launching process exits 0,
  or 1 if the daemon died or `ready` raised before reporting.
"""
from __future__ import annotations

import errno
import os
import sys
from typing import Callable, Iterable, List, Optional, Union

from .ocaml_int import int_of_string

__all__ = ["split", "startswith", "unlink_safe", "mkdir_safe", "mkdir_rec", "ocaml_dirname",
           "pidfile_write", "read_nr_open", "raise_nofile_limit", "daemonize"]

NR_OPEN_FILE = "/proc/sys/fs/nr_open"
NR_OPEN_DEFAULT = 1024 * 1024


def split(data: bytes, sep: bytes = b"\0", limit: int = -1) -> List[bytes]:
    """Stdext.String.split ~limit sep data (limit <= 0: no limit)."""
    if limit <= 0:
        return data.split(sep)
    return data.split(sep, limit - 1)


def startswith(prefix: bytes, data: bytes) -> bool:
    return data[:len(prefix)] == prefix


def unlink_safe(path: str) -> None:
    """Remove a file, ignoring every error."""
    try:
        os.unlink(path)
    except OSError:
        pass


def mkdir_safe(path: str, mode: int) -> None:
    """mkdir, ignoring only "already exists"."""
    try:
        os.mkdir(path, mode)
    except FileExistsError:
        pass


def ocaml_dirname(name: str) -> str:
    """Filename.dirname (Unix): trailing slashes ignored, "//x" -> "/", "x" -> "."."""
    if name == "":
        return "."
    n = len(name) - 1
    while n >= 0 and name[n] == "/":  # trailing separators
        n -= 1
    if n < 0:
        return "/"
    while n >= 0 and name[n] != "/":  # the base name
        n -= 1
    if n < 0:
        return "."
    while n >= 0 and name[n] == "/":  # separators before it
        n -= 1
    if n < 0:
        return "/"
    return name[:n + 1]


def mkdir_rec(path: str, mode: int) -> None:
    """mkdir -p: parents first (each with `mode`), existing directories are fine."""
    parent = ocaml_dirname(path)
    if parent not in ("/", "."):
        mkdir_rec(parent, mode)
    mkdir_safe(path, mode)


def pidfile_write(filename: str) -> None:
    """Write "<pid>\\n" to `filename` (created 0640, truncated)."""
    fd = os.open(filename, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o640)
    try:
        buf = f"{os.getpid()}\n".encode()
        if os.write(fd, buf) != len(buf):
            raise OSError(errno.EIO, "pidfile_write failed", filename)
    finally:
        os.close(fd)


def read_nr_open(path: str = NR_OPEN_FILE) -> int:
    """The first line of /proc/sys/fs/nr_open as an OCaml int, 1048576 on any failure."""
    try:
        with open(path, "rb") as f:
            line = f.readline().rstrip(b"\n")
        return int_of_string(line)
    except Exception:
        return NR_OPEN_DEFAULT


def raise_nofile_limit(nr_open_path: str = NR_OPEN_FILE) -> bool:
    """Set RLIMIT_NOFILE soft = hard = nr_open; True if done.  Failure is not fatal."""
    import resource
    n = read_nr_open(nr_open_path)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (n, n))
        return True
    except (OSError, ValueError):
        pass
    try:  # without privileges: at least the soft limit up to the hard one
        _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    except (OSError, ValueError):
        pass
    return False


FdLike = Union[int, "object"]


def _fileno(x: FdLike) -> Optional[int]:
    if isinstance(x, int):
        return x
    fileno = getattr(x, "fileno", None)
    if fileno is None:
        return None
    try:
        fd = fileno()
    except (OSError, ValueError):
        return None
    return fd if isinstance(fd, int) and fd >= 0 else None


def daemonize(keep: Iterable[FdLike] = (), ready: Optional[Callable[[], None]] = None) -> None:
    """Become a daemon; return in the daemon process only (see the module doc).

    `keep`: descriptors (ints or objects with fileno(), e.g. the listening
    socket, the event-channel handle, open log files) that stay open.
    `ready`: run in the daemon before the launching process may exit.
    Must be called before any thread is started.
    """
    import daemon  # python-daemon

    for stream in (sys.stdout, sys.stderr):
        if stream is not None:
            try:
                stream.flush()  # or the buffered text would be written twice
            except (OSError, ValueError):
                pass
    keep_fds = [fd for fd in (_fileno(x) for x in keep) if fd is not None]

    rfd, wfd = os.pipe()
    pid = os.fork()
    if pid > 0:  # the launching process: wait for the daemon's word
        os.close(wfd)
        status = _wait_ready(rfd)
        try:
            os.waitpid(pid, 0)  # the intermediate child exits at once
        except ChildProcessError:
            pass
        os._exit(status)

    os.close(rfd)
    umask = os.umask(0)
    os.umask(umask)
    ctx = daemon.DaemonContext(
        detach_process=True,  # even under init or inetd, like the original
        files_preserve=keep_fds + [wfd],
        working_directory=os.getcwd(),
        umask=umask,
        prevent_core=False,
        signal_map={},
    )
    try:
        ctx.open()
        if ready is not None:
            ready()
        os.write(wfd, b"R")
    finally:
        try:
            os.close(wfd)
        except OSError:
            pass


def _wait_ready(rfd: int) -> int:
    """0 once the daemon wrote its byte, 1 if the pipe closed without it."""
    try:
        while True:
            try:
                data = os.read(rfd, 1)
            except InterruptedError:  # pragma: no cover - PEP 475 retries anyway
                continue
            return 0 if data == b"R" else 1
    finally:
        os.close(rfd)
