"""Directories compiled into oxenstored (port of paths.ml.in).

The values are those of Debian's build of Xen 4.17 (Debian's
xen 4.17 packaging).  They are functions rather than constants so that
the one override the Xen tools know, the environment variable
`XENSTORED_RUNDIR` (honoured by libxenstore and C xenstored through
`xs_daemon_rundir()`), is read when a path is needed and a test can set it
per process.  An empty `XENSTORED_RUNDIR` counts as unset (C xenstored would
use "" and put its socket at `/socket`, which is never what anyone wants).

`XENSTORED_PATH` (the client-side socket override) is deliberately not used
by the daemon: the socket stays `<xenstored run dir>/socket`.

Public API: `xen_log_dir()`, `xen_config_dir()`, `xen_run_dir()`,
`xen_run_stored()`, and the files derived from them: `default_config_file()`,
`default_pidfile()`, `xs_daemon_socket()`, `xs_daemon_database()`,
`xs_daemon_db_debug()`.
"""
from __future__ import annotations

import os

__all__ = [
    "XEN_LOG_DIR", "XEN_CONFIG_DIR", "XEN_RUN_DIR", "XEN_RUN_STORED", "RUNDIR_ENV",
    "xen_log_dir", "xen_config_dir", "xen_run_dir", "xen_run_stored",
    "default_config_file", "default_pidfile", "xs_daemon_socket",
    "xs_daemon_database", "xs_daemon_db_debug",
]

# Compiled-in values (Debian bookworm, xen-utils-4.17).
XEN_LOG_DIR = "/var/log/xen"
XEN_CONFIG_DIR = "/etc/xen"
XEN_RUN_DIR = "/var/run/xen"
XEN_RUN_STORED = "/var/run/xenstored"

RUNDIR_ENV = "XENSTORED_RUNDIR"


def xen_log_dir() -> str:
    return XEN_LOG_DIR


def xen_config_dir() -> str:
    return XEN_CONFIG_DIR


def xen_run_dir() -> str:
    """Where the pid file lives (`/var/run/xen`)."""
    return XEN_RUN_DIR


def xen_run_stored() -> str:
    """The xenstored run dir: socket, DB dump, debug dump; `$XENSTORED_RUNDIR` if set."""
    return os.environ.get(RUNDIR_ENV) or XEN_RUN_STORED


def default_config_file() -> str:
    return xen_config_dir() + "/oxenstored.conf"


def default_pidfile() -> str:
    return xen_run_dir() + "/xenstored.pid"


def xs_daemon_socket() -> str:
    return xen_run_stored() + "/socket"


def xs_daemon_database() -> str:
    """The live-update / access-log-rotation DB dump (`Disk.xs_daemon_database`)."""
    return xen_run_stored() + "/db"


def xs_daemon_db_debug() -> str:
    """The SIGUSR1 store dump."""
    return xen_run_stored() + "/db.debug"
