"""Launchers for the two daemons under comparison.

* ``ocaml``: Debian's real oxenstored 4.17 on the simulated hypervisor,
  started through ``<ocaml-ref>/run-oxenstored.sh SIMDIR SCRATCH`` (needs
  root for ``unshare -m``).
* ``oxsd``: ``python3 -m oxsd --no-fork --config-file CONF --sim SIMDIR`` (plus
  ``--no-domain-init`` when asked; the interpreter is this one unless
  ``DaemonSettings.python`` names another, e.g. pypy3) with
  ``XENSTORED_RUNDIR=SCRATCH/run/xenstored`` (the variable names the
  xenstored run dir itself, as for libxenstore's ``xs_daemon_rundir()``).

Both get the same configuration: Debian's ``/etc/xen/oxenstored.conf`` with
the reference launcher's overrides (``write_config`` mirrors the shell
script line for line), and both put their socket at
``SCRATCH/run/xenstored/socket``.  The one deliberate difference is the pid
file: the reference sees ``SCRATCH/run`` mounted over ``/run`` and keeps
``/var/run/xen/xenstored.pid``; oxsd runs in the host namespace, so its
config names the same file by its real path.

Both launchers end with the same readiness probe (one socket connection
reading ``/tool/xenstored``), so connection numbering in the access logs
(``A1`` = the probe) is the same for both daemons.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from .wire import SocketConn, op_code

__all__ = [
    "KINDS", "DaemonError", "DaemonSettings", "Daemon", "start_daemon",
    "start_reference", "start_oxsd", "find_ocaml_ref", "ocaml_ref_work",
    "debian_conf", "write_config", "init_sim_dir", "make_scratch",
    "REPO_ROOT",
    "PINNED_REFERENCE",
    "reference_version",
    "check_reference_version",
]

KINDS = ("ocaml", "oxsd")
REPO_ROOT = Path(__file__).resolve().parents[2]
PAGE_SIZE = 4096

# Keys whose Debian value the reference launcher replaces (run-oxenstored.sh).
_OVERRIDDEN = ("pid-file", "xenstored-log-", "access-log-", "ring-scan-interval",
               "xenstored-kva", "xenstored-port", "persistent")


def _rotated_files(path: Path) -> list[Path]:
    """A log file's rotated copies, oldest first (``.N`` ... ``.1``), then the file itself."""
    old = []
    n = 1
    while (p := path.with_name(f"{path.name}.{n}")).exists():
        old.append(p)
        n += 1
    return old[::-1] + [path]


def _read_all(paths: list[Path]) -> str:
    """The files' text joined (bytes kept as surrogates); a missing file reads as empty."""
    parts = []
    for path in paths:
        try:
            parts.append(path.read_text(errors="surrogateescape"))
        except FileNotFoundError:
            pass
    return "".join(parts)


class DaemonError(RuntimeError):
    """A daemon could not be started (message includes its output tail)."""


@dataclass
class DaemonSettings:
    """What both daemons are started with (the reference launcher's knobs)."""

    # xenstored-log-level of both daemons; the corpus runs at $OXSD_DIFF_LOG_LEVEL
    # (default info, the reference launcher's default) and compares the log
    log_level: str = field(default_factory=lambda: os.environ.get("OXSD_DIFF_LOG_LEVEL",
                                                                  "info"))
    access_log: bool = True
    ring_scan_interval: int = 20
    extra_conf: list[str] = field(default_factory=list)  # appended config lines
    domain_init: bool = True
    extra_args: list[str] = field(default_factory=list)
    binary: str | None = None  # another oxenstored for the ``ocaml`` kind
    python: str | None = None  # the ``oxsd`` kind's interpreter (default: sys.executable)
    source: str | None = None  # the ``oxsd`` kind's source tree (default: this one's REPO_ROOT)
    # argv the launcher runs under (it must exec the rest, keeping the pid), e.g.
    # ``unshare -m ... sh -c 'mount ... && exec "$@"'`` for a private tmpfs
    prefix: list[str] = field(default_factory=list)

    @property
    def effective_log_level(self) -> str:
        """The xenstored-log-level the daemons run at: an extra config line
        (a scenario's ``config``) comes after the launcher's and wins."""
        level = self.log_level
        for line in self.extra_conf:
            key, sep, value = line.partition("=")
            if sep and key.strip() == "xenstored-log-level":
                level = value.strip()
        return level


def find_ocaml_ref() -> Path | None:
    """The reference kit: $OCAML_REF, else <repo>/../shared/ocaml-ref."""
    env = os.environ.get("OCAML_REF")
    path = Path(env) if env else REPO_ROOT.parent / "shared" / "ocaml-ref"
    return path.resolve() if (path / "run-oxenstored.sh").is_file() else None


def ocaml_ref_work() -> Path:
    """Where the reference's build.sh puts the Debian packages and fake libs."""
    env = os.environ.get("OCAML_REF_WORK")
    if env:
        return Path(env)
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(Path.home(), ".cache")
    return Path(cache) / "ocaml-ref"


#: The Debian build of oxenstored that oxsd is compared with (xen-utils-4.17).
PINNED_REFERENCE = "4.17.7+13-g2445b30a44-0+deb12u1"


def reference_version() -> str | None:
    """The xen-utils-4.17 version the reference kit extracted (its _deps/versions.txt)."""
    try:
        text = (ocaml_ref_work() / "_deps" / "versions.txt").read_text()
    except OSError:
        return None
    for line in text.splitlines():
        fields = line.split()
        if fields[:2] == ["Package:", "xen-utils-4.17"] and len(fields) >= 4:
            return fields[3]
    return None


def check_reference_version() -> str:
    """The reference's version; DaemonError unless it is the pinned build."""
    found = reference_version()
    if found != PINNED_REFERENCE:
        raise DaemonError(
            f"the reference oxenstored in {ocaml_ref_work()} is "
            f"{found or 'of unknown version'}, not the pinned {PINNED_REFERENCE}: "
            "comparing against it proves nothing about the target; run "
            "../shared/ocaml-ref/build.sh (it rebuilds a cache of another version)")
    return found


def clients_cache() -> Path:
    """Where tools/fetch-clients.sh extracts the Debian client packages."""
    env = os.environ.get("OXSD_CLIENTS")
    if env:
        return Path(env)
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(Path.home(), ".cache")
    return Path(cache) / "oxsd-clients"


def debian_conf() -> Path:
    """Debian's /etc/xen/oxenstored.conf from an extracted xen-utils-common."""
    for root in (ocaml_ref_work() / "_deps" / "root", clients_cache() / "root"):
        conf = root / "etc" / "xen" / "oxenstored.conf"
        if conf.is_file():
            return conf
    raise DaemonError("Debian's oxenstored.conf not found: run tools/fetch-clients.sh "
                      "(or the reference's build.sh)")


def write_config(path: Path, scratch: Path, sim_dir: Path, settings: DaemonSettings,
                 pid_file: str, base: Path | None = None) -> None:
    """The config run-oxenstored.sh writes, with the given pid-file line."""
    lines = []
    for line in (base or debian_conf()).read_text().splitlines():
        if not line.lstrip(" \t").startswith(_OVERRIDDEN):
            lines.append(line)
    lines += [
        "# --- reference overrides",
        f"pid-file = {pid_file}",
        "persistent = false",
        f"xenstored-log-file = {scratch}/xenstored.log",
        f"xenstored-log-level = {settings.log_level}",
        "xenstored-log-nb-files = 10",
        "xenstored-log-nb-lines = 200000",
        f"access-log-file = {scratch}/xenstored-access.log",
        "access-log-nb-lines = 200000",
        f"ring-scan-interval = {settings.ring_scan_interval}",
        f"xenstored-kva = {sim_dir}/xsd_kva",
        f"xenstored-port = {sim_dir}/xsd_port",
    ]
    extra = "\n".join(settings.extra_conf)
    if extra:
        lines.append(extra)
    path.write_text("\n".join(lines) + "\n")


def init_sim_dir(sim_dir: Path) -> None:
    """Create a minimal sim dir (oxsd/sim/layout.py): dom0 running, its ring page and
    its unbound xsd_port.  Same layout as xensim.Sim() makes; done here so
    that launching oxsd does not need the reference kit."""
    if (sim_dir / "xsd_port").exists():
        return
    for sub in ("domains", "mem/0", "grant/0", "evtchn/ports/0", "evtchn/virq"):
        (sim_dir / sub).mkdir(parents=True, exist_ok=True)
    _write_atomic(sim_dir / "domains" / "0", "running\n")
    (sim_dir / "xsd_kva").write_bytes(bytes(PAGE_SIZE))
    ports = sim_dir / "evtchn" / "ports" / "0"
    port = 1
    while (ports / str(port)).exists():
        port += 1
    _write_atomic(ports / str(port), f"owner={sim_dir}/evtchn/xsd-0 peer=unbound\n")
    (sim_dir / "xsd_port").write_text(str(port))  # no newline: int_of_string


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f"{path.name}.tmp.{os.getpid()}")
    tmp.write_text(text)
    os.rename(tmp, path)


def make_scratch(prefix: str = "oxd-") -> Path:
    """A fresh short directory (AF_UNIX paths must stay under 108 bytes)."""
    return Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp" if os.path.isdir("/tmp") else None))


class Daemon:
    """A running daemon of either kind."""

    def __init__(self, kind: str, proc: subprocess.Popen, scratch: Path,
                 sim_dir: Path, settings: DaemonSettings) -> None:
        self.kind = kind
        self.proc = proc
        self.scratch = scratch
        self.sim_dir = sim_dir
        self.settings = settings
        self.socket_path = str(scratch / "run" / "xenstored" / "socket")
        self.access_log_path = scratch / "xenstored-access.log"
        self.log_path = scratch / "xenstored.log"
        self.out_path = scratch / "daemon.out"
        self.conf_path = scratch / "oxenstored.conf"

    def __repr__(self) -> str:
        return f"<Daemon {self.kind} pid={self.proc.pid} {self.scratch}>"

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def connect(self, timeout: float = 5.0) -> SocketConn:
        return SocketConn(self.socket_path, timeout)

    def output_tail(self, lines: int = 30) -> str:
        try:
            text = self.out_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    @property
    def db_path(self) -> Path:
        """The DB dump (/var/run/xenstored/db), written at exit and on every
        access-log rotation."""
        return self.scratch / "run" / "xenstored" / "db"

    def rotated_access_logs(self) -> list[Path]:
        """The access log's files, oldest first (``.N`` ... ``.1``, then the file)."""
        return _rotated_files(self.access_log_path)

    def access_log(self) -> str:
        """The whole access log, rotated files included, oldest line first."""
        return _read_all(self.rotated_access_logs())

    def rotated_logs(self) -> list[Path]:
        """The xenstored log's files, oldest first (``.N`` ... ``.1``, then the file)."""
        return _rotated_files(self.log_path)

    def xenstored_log(self) -> str:
        """The whole xenstored (diagnostic) log, rotated files included."""
        return _read_all(self.rotated_logs())

    def stop(self, timeout: float = 5.0) -> int | None:
        """SIGTERM, then SIGKILL if it has not exited in time.  Returns the
        exit status (negative: killed by that signal)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    def __enter__(self) -> "Daemon":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def _wait_ready(daemon: Daemon, timeout: float) -> Daemon:
    """Return once the daemon answers READ /tool/xenstored on its socket
    (any answer: an error reply, e.g. with a tiny quota-path-max, counts)."""
    deadline = time.monotonic() + timeout
    read = op_code("READ")
    while True:
        if not daemon.alive():
            raise DaemonError(f"{daemon.kind} daemon exited with status "
                              f"{daemon.proc.returncode}; output:\n{daemon.output_tail()}")
        if os.path.exists(daemon.socket_path):
            try:
                with daemon.connect(timeout=2.0) as conn:
                    conn.request(read, b"/tool/xenstored\0", timeout=2.0)
                return daemon
            except (OSError, TimeoutError, ConnectionError):
                pass
        if time.monotonic() > deadline:
            daemon.stop(timeout=1.0)
            raise DaemonError(f"{daemon.kind} daemon did not answer on "
                              f"{daemon.socket_path} within {timeout}s; output:\n"
                              f"{daemon.output_tail()}")
        time.sleep(0.02)


def start_reference(scratch: Path, sim_dir: Path | None = None,
                    settings: DaemonSettings | None = None,
                    timeout: float = 30.0) -> Daemon:
    """Start Debian's oxenstored through the reference kit's launcher."""
    settings = settings or DaemonSettings()
    ref = find_ocaml_ref()
    if ref is None:
        raise DaemonError("OCaml reference not found (set OCAML_REF or check "
                          "<repo>/../shared/ocaml-ref)")
    if not settings.binary:  # Debian's build: only the pinned one is the reference
        check_reference_version()
    scratch = Path(scratch).resolve()
    sim_dir = Path(sim_dir).resolve() if sim_dir else scratch / "sim"
    scratch.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ,
               RING_SCAN_INTERVAL=str(settings.ring_scan_interval),
               XS_LOG_LEVEL=settings.log_level,
               XS_ACCESS_LOG="1" if settings.access_log else "0",
               XS_CONF_EXTRA="\n".join(settings.extra_conf))
    args = list(settings.extra_args)
    if not settings.domain_init:
        args.insert(0, "--no-domain-init")
    launcher = ref / "run-oxenstored.sh"
    if settings.binary:
        launcher = _launcher_for(ref, Path(settings.binary), scratch)
    with open(scratch / "daemon.out", "ab") as out:
        proc = subprocess.Popen(
            settings.prefix + [str(launcher), str(sim_dir), str(scratch)] + args,
            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env)
    return _wait_ready(Daemon("ocaml", proc, scratch, sim_dir, settings), timeout)


def _launcher_for(ref: Path, binary: Path, scratch: Path) -> Path:
    """A copy of the reference launcher that runs `binary` instead of Debian's
    oxenstored (same sim, fake libs, config and mounts)."""
    binary = binary.resolve()
    if not (binary.is_file() and os.access(binary, os.X_OK)):
        raise DaemonError(f"{binary}: not an executable file")
    text = (ref / "run-oxenstored.sh").read_text()
    subs = {'HERE=$(cd "$(dirname "$0")" && pwd)': f"HERE='{ref}'",
            'BIN="$ROOT/usr/lib/xen-4.17/bin/oxenstored"': f"BIN='{binary}'"}
    for old, new in subs.items():
        if old not in text:
            raise DaemonError(f"cannot adapt {ref}/run-oxenstored.sh (no line {old!r})")
        text = text.replace(old, new)
    path = scratch / "run-oxenstored.sh"
    path.write_text(text)
    path.chmod(0o755)
    return path


def prepare_oxsd(scratch: Path, sim_dir: Path, settings: DaemonSettings) -> tuple[Path, Path]:
    """SCRATCH laid out for an oxsd (run dirs, sim dir, the reference's config): (config, rundir)."""
    rundir = scratch / "run"
    (rundir / "xen").mkdir(parents=True, exist_ok=True)
    (rundir / "xenstored").mkdir(parents=True, exist_ok=True)
    init_sim_dir(sim_dir)
    conf = scratch / "oxenstored.conf"
    write_config(conf, scratch, sim_dir, settings,
                 pid_file=str(rundir / "xen" / "xenstored.pid"))
    return conf, rundir


def start_oxsd(scratch: Path, sim_dir: Path | None = None,
               settings: DaemonSettings | None = None,
               timeout: float = 30.0) -> Daemon:
    """Start oxsd with the same configuration the reference gets."""
    settings = settings or DaemonSettings()
    scratch = Path(scratch).resolve()
    sim_dir = Path(sim_dir).resolve() if sim_dir else scratch / "sim"
    conf, rundir = prepare_oxsd(scratch, sim_dir, settings)
    cmd = [settings.python or sys.executable, "-m", "oxsd", "--no-fork", "--config-file",
           str(conf)]
    # the reference always has its sim (XENSIM_DIR), with or without domain init
    cmd += ["--sim", str(sim_dir)] + ([] if settings.domain_init else ["--no-domain-init"])
    if not settings.access_log:
        cmd.append("--no-access-log")
    cmd += settings.extra_args
    root = settings.source or str(REPO_ROOT)
    pythonpath = os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))
    env = dict(os.environ, XENSTORED_RUNDIR=str(rundir / "xenstored"), PYTHONPATH=pythonpath)
    with open(scratch / "daemon.out", "ab") as out:
        proc = subprocess.Popen(settings.prefix + cmd, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, env=env, cwd=str(scratch))
    return _wait_ready(Daemon("oxsd", proc, scratch, sim_dir, settings), timeout)


def start_daemon(kind: str, scratch: Path, sim_dir: Path | None = None,
                 settings: DaemonSettings | None = None, timeout: float = 30.0) -> Daemon:
    """Start a daemon of the given kind (``ocaml`` or ``oxsd``)."""
    if kind == "ocaml":
        return start_reference(scratch, sim_dir, settings, timeout)
    if kind == "oxsd":
        return start_oxsd(scratch, sim_dir, settings, timeout)
    raise ValueError(f"unknown daemon kind {kind!r} (expected one of {KINDS})")
