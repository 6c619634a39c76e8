"""systemd readiness notification without libsystemd (port of systemd.ml + Xen's xen-sd-notify.h).

The protocol: one datagram with the state text (`READY=1`) sent to the
AF_UNIX socket named by `$NOTIFY_SOCKET`; a name starting with `@` is an
abstract socket (the `@` becomes a NUL byte and the address has no trailing
NUL).  Unset variable: nothing to do.  Like Xen's `sd_notify(1, ...)`, the
variable is removed afterwards so that a process exec'ed by live update
does not notify again.

Debian's oxenstored is built without systemd support (its stub does
nothing); Xen's systemd unit for xenstored is `Type=notify` with
`NotifyAccess=all`, which needs the notification, so oxsd sends it.

Return values follow xen-sd-notify.h: 1 sent, 0 no socket configured,
negative errno on failure.  Failures are never raised.

`sd_booted()` is libsystemd's test: is `/run/systemd/system` a directory
(what `systemd-notify --booted` checks in launch-xenstore).
"""
from __future__ import annotations

import errno
import os
import socket
import stat

__all__ = ["NOTIFY_SOCKET", "sd_notify", "sd_notify_ready", "sd_booted"]

NOTIFY_SOCKET = "NOTIFY_SOCKET"
_SUN_PATH_MAX = 108  # sizeof(sockaddr_un.sun_path) on Linux


def _notify(message: str) -> int:
    if not message:
        return -errno.EINVAL
    path = os.environb.get(NOTIFY_SOCKET.encode()) if os.supports_bytes_environ else None
    if path is None:
        env = os.environ.get(NOTIFY_SOCKET)
        path = None if env is None else os.fsencode(env)
    if path is None:
        return 0
    if path[:1] not in (b"/", b"@"):
        return -errno.EAFNOSUPPORT
    if len(path) >= _SUN_PATH_MAX:
        return -errno.E2BIG
    if path[:1] == b"@":
        path = b"\0" + path[1:]
    data = message.encode()
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as s:
            s.connect(path)
            sent = s.send(data)
    except OSError as e:
        return -(e.errno or errno.EIO)
    return 1 if sent == len(data) else -errno.EPROTO


def sd_notify(unset_environment: bool, message: str) -> int:
    """Send `message` to $NOTIFY_SOCKET; optionally drop the variable afterwards."""
    r = _notify(message)
    if unset_environment:
        os.environ.pop(NOTIFY_SOCKET, None)
    return r


def sd_notify_ready() -> int:
    """Systemd.sd_notify_ready: READY=1, then forget the socket."""
    return sd_notify(True, "READY=1")


def sd_booted(run_dir: str = "/run/systemd/system") -> bool:
    """True if the system was booted with systemd."""
    try:
        return stat.S_ISDIR(os.lstat(run_dir).st_mode)
    except OSError:
        return False
