"""The XS_CONTROL live-update state machine (port of process.ml's module LiveUpdate).

`CONTROL live-update -f BINARY`, `-c ARGS`, `-s [-t SECONDS] [-F]`, `-a`:
`parse_live_update` validates the new command line (runs it with
`--help`), queues the update, and answers BUSY until the main loop, after
every iteration, finds that no connection blocks it (`should_run`); then
xenstored.py dumps the state (db.py) and execs `argv()`.  It logs under
the process logger, as the original's messages come from process.ml.
"""
from __future__ import annotations

import logging
import os
import sys
import time
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, List, Optional, Tuple

from . import perms as Perms
from . import utils as Utils

if TYPE_CHECKING:
    from .connections import Connections

__all__ = ["LiveUpdate", "LiveUpdateState", "LiveUpdateError", "FORCED_ARGS", "ocaml_quote"]

log = logging.getLogger("oxsd.process")  # the key of the original's lines (process.ml)
_b = Utils.string_of_bool


# -- live update (Process.LiveUpdate) ---------------------------------------

FORCED_ARGS = ("--live", "--restart")

_S_USAGE = ("live-update -s\n"
            "  -t timeout in seconds to wait for active transactions to finish\n"
            "  -F force live update to happen even with running transactions after timeout elapsed\n"
            "  -help  Display this list of options\n"
            "  --help  Display this list of options\n")


def ocaml_quote(word: str) -> str:
    """Filename.quote: single quotes, with ' written as '\\''."""
    return "'" + word.replace("'", "'\\''") + "'"


@dataclass
class LiveUpdateState:
    binary: str
    cmdline: List[str]
    deadline: float = 0.0
    force: bool = False
    result: List[str] = field(default_factory=list)
    pending: bool = False


class LiveUpdateError(Exception):
    """Its message is the CONTROL reply (invalid_arg / Arg.Bad in the original)."""


class LiveUpdate:
    """The XS_CONTROL live-update state machine (process.ml: LiveUpdate)."""

    def __init__(self, binary: str, cmdline: List[str], clock=time.time,
                 interpreter_args: Tuple[str, ...] = ()) -> None:
        self.state = LiveUpdateState(binary, list(cmdline))
        self.clock = clock
        # `-m oxsd` when the binary is the Python interpreter: it must come first.
        self.interpreter_args = list(interpreter_args)

    def args_of(self, st: LiveUpdateState) -> Tuple[str, List[str]]:
        filtered = [x for x in st.cmdline if x not in FORCED_ARGS]
        prefix = self.interpreter_args if st.binary == sys.executable else []
        return st.binary, prefix + list(FORCED_ARGS) + filtered

    def string_of(self, st: LiveUpdateState) -> str:
        exe, rest = self.args_of(st)
        return " ".join(ocaml_quote(w) for w in [exe] + rest)

    def argv(self) -> List[str]:
        exe, rest = self.args_of(self.state)
        return [exe] + rest

    def validate(self, st: LiveUpdateState) -> LiveUpdateState:
        """Run the new command line with --help (i.e. --config-test) and require exit 0."""
        check = replace(st, cmdline=st.cmdline + ["--help"])
        cmd = self.string_of(check)
        sys.stderr.write(f"Executing {cmd}")
        sys.stderr.flush()
        exe, rest = self.args_of(check)
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child execs or exits
            try:
                os.execv(exe, [exe] + rest)
            finally:
                os._exit(2)
        _, status = os.waitpid(pid, 0)
        if os.WIFEXITED(status):
            code = os.WEXITSTATUS(status)
            if code == 0:
                sys.stderr.write(f"Live update validated cmdline {cmd}")
                sys.stderr.flush()
                return st
            raise LiveUpdateError(f"Command {cmd} exited with code {code}")
        if os.WIFSIGNALED(status):
            raise LiveUpdateError(f"Command {cmd} killed by ocaml signal number "
                                  f"{_ocaml_signal(os.WTERMSIG(status))}")
        raise LiveUpdateError(f"Command {cmd} stopped by ocaml signal number "
                              f"{_ocaml_signal(os.WSTOPSIG(status))}")

    def _parse_s_options(self, args: List[str]) -> Tuple[int, bool]:
        timeout, force = 60, False
        i = 1
        while i < len(args):
            a = args[i]
            if a == "-t":
                if i + 1 >= len(args):
                    raise LiveUpdateError(f"-s: option '-t' needs an argument.\n{_S_USAGE}")
                try:
                    timeout = Utils.int_of_string(args[i + 1])
                except Exception:
                    raise LiveUpdateError(f"-s: wrong argument '{args[i + 1]}'; option '-t' "
                                          f"expects an integer.\n{_S_USAGE}") from None
                i += 2
                continue
            if a == "-F":
                force = True
            elif a in ("-help", "--help"):
                raise LiveUpdateError(_S_USAGE)
            elif a.startswith("-"):
                raise LiveUpdateError(f"-s: unknown option '{a}'.\n{_S_USAGE}")
            else:
                raise LiveUpdateError(f"-s: {a}.\n{_S_USAGE}")
            i += 1
        return timeout, force

    def parse_live_update(self, args: List[str]) -> Optional[str]:
        st = self.state
        try:
            if len(args) == 2 and args[0] == "-f":
                self.state = self.validate(replace(st, binary=args[1]))
            elif args == ["-a"]:
                sys.stderr.write("Live update aborted")
                sys.stderr.flush()
                self.state = replace(st, pending=False, result=[])
            elif args and args[0] == "-c":
                self.state = self.validate(replace(st, cmdline=st.cmdline + args[1:]))
            elif args and args[0] == "-s":
                if not st.pending and not st.result:
                    timeout, force = self._parse_s_options(args)
                    sys.stderr.write("Live update process queued")
                    sys.stderr.flush()
                    self.state = replace(st, deadline=self.clock() + timeout, force=force,
                                         pending=True)
            else:
                raise LiveUpdateError("Unknown arguments: " + ",".join(args))
        except LiveUpdateError as e:
            return str(e)
        except OSError as e:
            return f"{getattr(e, 'filename', '') or 'fork'}: {e.strerror}"
        st = self.state
        if st.pending:
            return "BUSY"
        if st.result:
            self.state = replace(st, result=[])
            return "\n".join(st.result)
        return None

    def should_run(self, cons: "Connections") -> bool:
        st = self.state
        if not st.pending:
            return False
        blocking = cons.prevents_quit()
        if not blocking:
            return True
        if self.clock() < st.deadline:
            return False
        log.warning("timeout reached: have to wait, migrate or shutdown %d domains:", len(blocking))
        msgs = [f"{c.domstr}: {c.number_of_transactions()} tx, out: {_b(c.has_output())}, "
                f"perm: {Perms.Connection.to_string(c.perm)}" for c in reversed(blocking)]
        for m in msgs:
            log.warning("Live-update: %s", m)
        if st.force:
            log.warning("Live update forced, some domain connections may break!")
            return True
        log.warning("Live update aborted (see above for domains preventing it)")
        self.state = replace(st, pending=False, result=msgs)
        return False

    def dump_failed(self, reason: str) -> None:
        """The state could not be saved (full or read-only run dir): give the update up.

        oxsd only.  The original keeps it pending and tries the dump again on
        every loop iteration, each time building the whole dump and logging
        the exception with its backtrace, while `-s` answers BUSY for ever;
        oxsd says it once and `-s` answers the reason, as after a timeout
        (docs/deviations.md).
        """
        message = f"Live update aborted: the state could not be saved: {reason}"
        log.error("%s", message)
        self.state = replace(self.state, pending=False, result=[message])

    def carries_transactions(self, cons: "Connections") -> bool:
        """-F past the deadline and what blocks is only open transactions: dump them and go.

        oxsd only.  The original's loop goes on while anything blocks, so its
        -F never drops or carries a transaction; oxsd carries them in the dump
        (db.py `transaction` lines) and recreates them after the exec.  A
        connection with a partial packet, queued output or a changed identity
        (set_target) is not carried: the update still waits for it, every
        iteration repeating the warnings of `should_run`, as the original does.
        """
        st = self.state
        if not (st.pending and st.force) or self.clock() < st.deadline:
            return False
        blocking = cons.prevents_quit()
        return bool(blocking) and not any(c.has_extra_connection_data() for c in blocking)

    def completed(self) -> None:
        self.state = replace(self.state, result=["OK"])


def _ocaml_signal(signum: int) -> int:
    """OCaml reports signals with its own negative numbers."""
    import signal as _signal
    table = {_signal.SIGABRT: -1, _signal.SIGALRM: -2, _signal.SIGFPE: -3, _signal.SIGHUP: -4,
             _signal.SIGILL: -5, _signal.SIGINT: -6, _signal.SIGKILL: -7, _signal.SIGPIPE: -8,
             _signal.SIGQUIT: -9, _signal.SIGSEGV: -10, _signal.SIGTERM: -11,
             _signal.SIGUSR1: -12, _signal.SIGUSR2: -13, _signal.SIGCHLD: -14,
             _signal.SIGCONT: -15, _signal.SIGSTOP: -16, _signal.SIGTSTP: -17,
             _signal.SIGTTIN: -18, _signal.SIGTTOU: -19, _signal.SIGVTALRM: -20,
             _signal.SIGPROF: -21, _signal.SIGBUS: -22, _signal.SIGPOLL: -23,
             _signal.SIGSYS: -24, _signal.SIGTRAP: -25, _signal.SIGURG: -26,
             _signal.SIGXCPU: -27, _signal.SIGXFSZ: -28}
    return table.get(signum, signum)
