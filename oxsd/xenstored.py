"""Start-up, shutdown and signals of the daemon (port of xenstored.ml's main).

The original's long `main` is split into its steps, each a small function:
`main` parses and configures, `open_listening_socket`, `detach_or_announce`
(daemonize and pid files), `start_up` (`build_daemon`: `make_process`, then
`restore_from_dump` for --restart or `regular_startup`; the -T tracer,
`install_signal_handlers`, the access log), `run` (the loop, whose body is
`scheduler.Scheduler.main_loop`, and the dump at its end) and
`launch_live_update` (the exec).
"""
from __future__ import annotations

import errno
import logging
import os
import signal
import socket
import sys
import traceback
from dataclasses import dataclass, field
from typing import Callable, List, Optional, Tuple

from . import db as DB
from . import disk as Disk
from . import paths as Paths
from . import perms as Perms
from . import stdext as Stdext
from . import systemd as Systemd
from . import utils as Utils
from .config import ConfigError, Settings
from .connections import Connections
from .domains import Domains
from .event import Event
from .history import History
from .live_update import LiveUpdate
from .logging_ import (AccessLog, exn_to_string, fallback_exception_handler,
                       setup_xenstored_log, xenstored_log_handler)
from .parse_arg import CmdLine, parse
from .process import Process
from .ring import UnsupportedHost, require_supported_host
from .scheduler import Scheduler
from .store import Path, Store
from .transaction import TransactionRegistry

log = logging.getLogger("oxsd.xenstored")

BANNER = "Xen Storage Daemon, version 1.0"


def config_filename(cf: CmdLine) -> str:
    return cf.config_file or os.path.join(Paths.xen_config_dir(), "oxenstored.conf")


def create_unix_socket(path: str) -> socket.socket:
    """Utils.create_unix_socket, non-blocking (the loop accepts until EAGAIN)."""
    sock = Utils.create_unix_socket(path)
    sock.setblocking(False)
    return sock


def unix_error_message(argv0: str, e: OSError, path: str) -> str:
    """Unix.handle_unix_error's line: `<argv0>: "<call>" failed[ on "<arg>"]: <strerror>`.

    Of the socket set-up's calls only mkdir names its path (bind, socket and
    listen report an empty argument), which is how the call is told apart.
    A socket path too long for sockaddr_un is OCaml's ENAMETOOLONG on "".
    """
    if e.errno is None:  # Python's own "AF_UNIX path too long"
        call, arg, text = "", path, os.strerror(errno.ENAMETOOLONG)
    else:
        call, arg = ("mkdir", e.filename) if e.filename else ("bind", "")
        text = e.strerror
    where = f' on "{arg}"' if arg else ""
    return f'{argv0}: "{call}" failed{where}: {text}'


def write_specials(store: Store) -> None:
    for p in Path.specials:
        store.write(Perms.Connection.full_rights, p, b"")


def init_store_tree(store: Store) -> None:
    local = Path.of_string("/local")
    if not store.path_exists(local):
        store.mkdir(Perms.Connection.create(0), local)


def write_tool_node(store: Store, exe: str) -> None:
    """/tool/xenstored = our executable: xenstore-control looks for it to offer live update."""
    full = Perms.Connection.full_rights
    tool = Path.of_string("/tool")
    if not store.path_exists(tool):
        store.mkdir(full, tool)
    store.write(full, Path.of_string("/tool/xenstored"), exe.encode())


def executable_name(argv: List[str]) -> str:
    """The command that runs us again (live update): the `oxenstored` script or `python -m oxsd`."""
    exe = argv[0] if argv else ""
    if exe and os.path.basename(exe) != "__main__.py" and os.access(exe, os.X_OK):
        return os.path.abspath(exe)
    return sys.executable


def interpreter_args(argv: List[str]) -> Tuple[str, ...]:
    """`-m oxsd` when we were started as a module (live update must exec the same way)."""
    return ("-m", "oxsd") if executable_name(argv) == sys.executable else ()


def load_settings(cf: CmdLine) -> Settings:
    conf = config_filename(cf)
    settings = Settings.load(conf) if os.path.exists(conf) else Settings()
    if cf.sim:
        apply_sim_defaults(settings, cf.sim)
    if cf.protocol_level is not None:
        from .protocol_level import check_level
        settings.protocol_level = check_level(cf.protocol_level)
    return settings


def open_hypervisor(cf: CmdLine):
    """The hypervisor backend: the simulation with --sim, else /dev/xen; None without Xen."""
    from .backend import open_backend
    require_supported_host()  # before any ring page is mapped (sim or real)
    if cf.sim:
        # Like the reference's launcher: create the sim dir if needed, and free
        # the ports a dead daemon left bound (dom0's xsd_port among them).
        from .sim.guest import Sim
        sim = Sim(cf.sim)
        sim.close_dead_handles()
        sim.close()
        return open_backend(cf.sim)
    try:
        return open_backend(None)
    except OSError as e:
        if cf.domain_init:
            raise
        log.info("no hypervisor interface (%s): serving the socket only", e)
        return None


def config_test(cf: CmdLine) -> int:
    """--config-test: strict validation; errors exit 2 as the uncaught Config.Error does."""
    conf = config_filename(cf)
    try:
        Settings.load(conf, strict=True)
    except ConfigError as e:
        fallback_exception_handler(e, e.__traceback__)
        return 2
    print(f"Configuration valid at {conf}", flush=True)
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    """xenstored.ml: main: configure, open the socket, detach, start up, run the loop, exit."""
    argv = list(sys.argv if argv is None else argv)
    cf = parse(argv)
    if cf.config_test:
        return config_test(cf)
    settings = load_settings(cf)
    prepare_pidfile_dir(settings.pid_file)
    try:
        listen_sock = open_listening_socket(cf, argv)
        detach_or_announce(cf, settings.pid_file, listen_sock)
        daemon = start_up(cf, settings, listen_sock, argv)
    except StartupFailed:
        return 2
    Systemd.sd_notify_ready()
    live = run(daemon, cf)
    log.info("stopping xenstored")
    for p in (settings.pid_file, cf.pidfile):
        if p:
            Stdext.unlink_safe(p)
    if live:
        launch_live_update(daemon)
    return 0


class StartupFailed(Exception):
    """A start-up step the original dies of (exit 2); its message is already written."""


def prepare_pidfile_dir(pidfile: str) -> None:
    Stdext.raise_nofile_limit()
    try:
        Stdext.mkdir_rec(os.path.dirname(pidfile), 0o755)
    except OSError:
        pass


def open_listening_socket(cf: CmdLine, argv: List[str]) -> Optional[socket.socket]:
    """The unix socket, unless disabled or inherited (live reload: it comes with the dump)."""
    if cf.disable_socket or cf.live_reload:
        return None
    sock_path = Paths.xs_daemon_socket()
    try:
        return create_unix_socket(sock_path)
    except OSError as e:  # the original wraps this step in Unix.handle_unix_error
        print(unix_error_message(argv[0] if argv else "", e, sock_path), file=sys.stderr,
              flush=True)
        raise StartupFailed() from e


def detach_or_announce(cf: CmdLine, pidfile: str, listen_sock: Optional[socket.socket]) -> None:
    """Daemonize (the launcher returns once the pid files exist), or print the banner."""
    def write_pidfiles() -> None:
        try:
            Stdext.pidfile_write(pidfile)
        except OSError:
            pass
        if cf.pidfile:  # the compatibility pid file: failing to write it is fatal
            Stdext.pidfile_write(cf.pidfile)

    if cf.daemonize and not cf.live_reload:
        # The launcher exits only once the pid files exist (launch-xenstore reads them).
        Stdext.daemonize(keep=[listen_sock] if listen_sock else [], ready=write_pidfiles)
    else:
        print(BANNER, flush=True)
        write_pidfiles()


def start_up(cf: CmdLine, settings: Settings, listen_sock: Optional[socket.socket],
             argv: List[str]) -> "Daemon":
    """The daemon built, then its -T tracer, its signal handlers and its access log."""
    try:
        daemon = build_daemon(cf, settings, listen_sock, argv)
    except UnsupportedHost as e:
        print(f"{argv[0] if argv else 'oxenstored'}: {e}", file=sys.stderr, flush=True)
        log.error("%s", e)
        raise StartupFailed() from e
    except (DB.BadFormat, EOFError, OSError) as e:
        # A dump without its header line, or a log file that cannot be opened, is fatal,
        # as the original's uncaught Bad_format / Sys_error.
        fallback_exception_handler(e, e.__traceback__)
        raise StartupFailed() from e
    if cf.tracefile:  # -T FILE: every packet in and out, as a replayable scenario
        from .trace import open_tracer
        open_tracer(cf.tracefile, argv).install(daemon)
    install_signal_handlers(daemon)
    if cf.activate_access_log:
        # Rotating the access log also writes the state dump (the original's hook).
        try:
            access_log = AccessLog(settings, True, post_rotate=lambda: _dump_at_rotation(daemon))
        except OSError as e:  # the original dies of the uncaught Sys_error (exit 2)
            fallback_exception_handler(e, e.__traceback__)
            raise StartupFailed() from e
        daemon.set_access_log(access_log)
    return daemon


def install_signal_handlers(daemon: "Daemon") -> None:
    """SIGTERM ends the loop, SIGHUP reopens the logs, SIGUSR1 dumps the store; SIGPIPE ignored."""
    sched = daemon.scheduler

    def on_term() -> None:
        log.info("Received SIGTERM")
        sched.quit = True

    sched.install_signal(signal.SIGTERM, on_term)
    sched.install_signal(signal.SIGHUP, lambda: _sighup(daemon.access_log))
    sched.install_signal(signal.SIGUSR1, lambda: _sigusr1(daemon.store))
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)


@dataclass
class Daemon:
    """Everything the loop owns, built by `build_daemon`."""

    settings: Settings
    store: Store
    cons: Connections
    process: Process
    scheduler: Scheduler
    access_log: object
    # Sockets kept open but unused: the fresh listening socket of a --restart
    # that adopted the dumped one (a Python object closes its fd when collected).
    spare_sockets: List[socket.socket] = field(default_factory=list)

    def set_access_log(self, access_log) -> None:
        """Open the access log (after start-up, as the original: D0's newconn is not logged)."""
        self.access_log = access_log
        self.cons.access_log = access_log
        self.process.access_log = access_log
        for con in self.cons.iter():
            con.access_log = access_log


def build_daemon(cf: CmdLine, settings: Settings, listen_sock: Optional[socket.socket],
                 argv: List[str]) -> Daemon:
    """Steps 8-12 of xenstored.ml: main: store, logs, specials, restore or domains + dom0's ring, /tool."""
    process = make_process(settings, argv)
    loop: List[Scheduler] = []  # the scheduler, once built (conflict-pause callback)
    hv = open_hypervisor(cf)

    def domains_init(event: Event) -> Domains:
        """Domains.init on an event-channel handle (fresh, or inherited through exec)."""
        return Domains(event, hv, settings,
                       lambda: loop[0].advance_next_frequent_ops() if loop else None)

    spare: List[socket.socket] = []
    carried: List[DB.CarriedTransaction] = []  # transactions of a forced live update
    db_path = Paths.xs_daemon_database()
    if cf.restart and os.path.exists(db_path):
        restored = restore_from_dump(process, domains_init, hv, listen_sock, db_path)
        if listen_sock is not None and restored.listen_sock is not listen_sock:
            spare.append(listen_sock)  # the fresh socket stays open, unused [quirk]
        # The dumped socket replaces the fresh one; without a valid one there
        # is no listening socket at all (as the original).
        listen_sock = restored.listen_sock
        doms = restored.doms
        carried = restored.transactions
    else:
        doms = regular_startup(cf, process, domains_init, hv)
    event = doms.eventchn if doms is not None else None
    process.doms = doms
    sched = Scheduler(store=process.store, cons=process.cons, doms=doms, process=process,
                      settings=settings, history=process.history, listen_sock=listen_sock,
                      event=event, poll_evtchn=cf.domain_init and event is not None)
    loop.append(sched)
    write_tool_node(process.store, process.live_update.state.binary)
    if carried:  # after the last change of the restored store: they start on it
        process.restore_transactions(carried)
    return Daemon(settings, process.store, process.cons, process, sched, process.access_log,
                  spare)


def make_process(settings: Settings, argv: List[str]) -> Process:
    """The store, the xenstored log, the connections and the request processor (access log off)."""
    store = Store.create(settings)
    txreg = TransactionRegistry(settings)
    history = History(txreg)
    setup_xenstored_log(settings)
    write_specials(store)
    access_log = AccessLog.disabled()
    cons = Connections(settings, access_log)
    live_update = LiveUpdate(executable_name(argv), argv[1:],
                             interpreter_args=interpreter_args(argv))
    process = Process(store=store, cons=cons, doms=None, settings=settings,
                      access_log=access_log, txreg=txreg, history=history,
                      live_update=live_update)
    if settings.persistent:  # Disk.write after each committed transaction with writes
        process.disk_write = Disk.write
    if settings.protocol_level != "4.17":
        from .protocol_level import install
        install(process)
    return process


def restore_from_dump(process: Process, domains_init: Callable[[Event], Domains], hv,
                      listen_sock: Optional[socket.socket], db_path: str) -> DB.Restored:
    """--restart with a dump (xenstored.ml: main's `if cf.restart`): DB.from_file."""
    # A dumped fd number that is our fresh socket reuses that object.
    owned = {listen_sock.fileno(): listen_sock} if listen_sock is not None else None
    protocol = process.protocol
    restored = DB.from_file(process.store, process.cons, domains_init, hv, db_path, owned,
                            protocol.restore_line if protocol else None)
    if restored.listen_sock is not None:
        restored.listen_sock.setblocking(False)  # the loop accepts until EAGAIN
    log.info("Live reload: database loaded")
    process.live_update.completed()
    return restored


def regular_startup(cf: CmdLine, process: Process, domains_init: Callable[[Event], Domains],
                    hv) -> Optional[Domains]:
    """No dump: the domains (when Xen is there), the persistent store, /local, dom0's ring."""
    log.info("No live reload: regular startup")
    doms = domains_init(Event.init(hv.open_evtchn())) if hv is not None else None
    if process.settings.persistent:
        log.info("reading store from disk")
        Disk.read(process.store)
    init_store_tree(process.store)
    if cf.domain_init and doms is not None:
        process.cons.add_domain(doms.create0())
    return doms


def _sighup(access_log) -> None:
    handler = xenstored_log_handler()
    if handler is not None:
        handler.restart()
    access_log.restart()


def _sigusr1(store: Store) -> None:
    try:
        fd = os.open(Paths.xs_daemon_db_debug(), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            store.dump(f)
    except Exception:
        pass


def dump_db(daemon: "Daemon", with_socket: bool = True, with_transactions: bool = False) -> None:
    sched = daemon.scheduler
    protocol = daemon.process.protocol
    DB.to_file(daemon.store, daemon.cons, sched.listen_sock if with_socket else None,
               sched.event, Paths.xs_daemon_database(), with_transactions,
               protocol.dump_lines() if protocol is not None else ())


def _dump_at_rotation(daemon: "Daemon") -> None:
    """The access log's post-rotate hook.  A dump that fails is said once per rotation
    (the original's access log swallows it silently, docs/deviations.md)."""
    try:
        dump_db(daemon, False)
    except OSError as exc:
        log.error("access log rotated, but the state dump could not be written: %s",
                  exn_to_string(exc))


def run(daemon: "Daemon", cf: CmdLine) -> bool:
    """The loop; after SIGTERM or a due live update, dump the state each iteration until
    no connection blocks.  True when a live update should follow.

    One exit the original does not have: a live update forced with -F whose
    deadline passed while only open transactions block dumps them too and
    leaves at once (`LiveUpdate.carries_transactions`); the new process
    recreates them.  The original's -F keeps looping until they end.
    """
    sched = daemon.scheduler
    live_update = daemon.process.live_update
    live = False
    carry = False
    while not (sched.quit and (carry or not sched.cons.prevents_quit())):
        try:
            sched.main_loop()
            live = live_update.should_run(sched.cons)
            if live or sched.quit:
                carrying = live and live_update.carries_transactions(sched.cons)
                # Don't start a live update if the state cannot be saved.
                try:
                    dump_db(daemon, with_transactions=carrying)
                except OSError as exc:
                    if sched.quit:
                        raise  # SIGTERM: logged below, and the loop ends, as the original
                    live_update.dump_failed(exn_to_string(exc))
                    live = False
                    continue
                carry = carrying
                sched.quit = True
        except Exception as exc:
            log.error("caught exception %s: %s", exn_to_string(exc), traceback.format_exc())
            if cf.reraise_top_level:
                raise
    return live


def launch_live_update(daemon: "Daemon") -> None:
    """exec the new daemon with --live --restart (LiveUpdate.launch_exn); the dumped fds survive.

    The descriptors go over as the original would hand them: the listening
    socket blocking (oxsd's loop made it non-blocking) and inheritable, like
    the client sockets and the event-channel handle (made so by the dump).
    """
    daemon.access_log.live_update()
    argv = daemon.process.live_update.argv()
    listen_sock = daemon.scheduler.listen_sock
    if listen_sock is not None:
        listen_sock.setblocking(True)
    event = daemon.scheduler.event
    if event is not None:
        try:
            os.set_blocking(event.fd(), True)
        except OSError:
            pass
    logging.getLogger("oxsd.process").info("Launching %s, args: %s", argv[0], " ".join(argv[1:]))
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(argv[0], argv)


def apply_sim_defaults(settings: Settings, simdir: str) -> None:
    """With --sim, dom0's ring page and port live in the sim dir unless the config says otherwise."""
    if settings.xenstored_kva in ("", "/proc/xen/xsd_kva"):
        settings.xenstored_kva = os.path.join(simdir, "xsd_kva")
    if settings.xenstored_port in ("", "/proc/xen/xsd_port"):
        settings.xenstored_port = os.path.join(simdir, "xsd_port")


if __name__ == "__main__":
    sys.exit(main())
