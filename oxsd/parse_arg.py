"""The command line (port of parse_arg.ml, with OCaml 4.13's `Arg.parse` semantics).

`parse(argv)` returns a `CmdLine` or, like `Arg.parse`, ends the process:

* `-help` (added by Arg): usage on stdout, exit 0, at once;
* `--help`: after the whole line is parsed, usage plus an empty line on
  stdout and exit 0 — unless `--live` was also given, in which case it
  means `--config-test` (live update checks a new command line that way);
* an unknown option (anything starting with `-` that is not in the table,
  including `-`, `--` and `-help=x`), a missing argument, or an argument
  given to a flag (`--no-fork=1`): `<argv0>: <message>.` then the usage on
  stderr, exit 2.

Options that take an argument accept it as the next word (whatever it looks
like) or as `--opt=value`; an empty value means "not given".  Words that
do not start with `-` are ignored; the last of repeated options wins.

oxsd adds one option, `--sim DIR` (run on the simulated hypervisor of
oxsd/sim/layout.py).  Like the original's compatibility options `--pid-file` and
`-T` it has no description, so `Arg` leaves it out of the usage text, which
stays byte-identical to oxenstored's.  Only the flag selects the
simulation; no environment variable does.

`--protocol-level 4.17|4.22` (also undocumented in the usage) overrides the
`protocol-level` config key (docs/protocol-4.22.md); another value is
refused as `Arg.Symbol` refuses it (exit 2).

`parse_argv(argv)` is the same parser raising `ArgHelp`/`ArgBad` (carrying
the text to print) instead of exiting.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Callable, Dict, Optional, Sequence, Tuple

from . import paths

__all__ = ["CmdLine", "parse", "parse_argv", "usage_string", "get_config_filename",
           "ArgHelp", "ArgBad", "USAGE_MSG"]

USAGE_MSG = ("usage : xenstored [--config-file <filename>] [--no-domain-init] [--help] "
             "[--no-fork] [--reraise-top-level] [--restart] [--disable-socket]")


@dataclass
class CmdLine:
    """Parse_arg.config, plus oxsd's `sim` directory."""

    domain_init: bool = True
    activate_access_log: bool = True
    daemonize: bool = True
    reraise_top_level: bool = False
    config_file: Optional[str] = None
    pidfile: Optional[str] = None  # --pid-file: old xenstored compatibility
    tracefile: Optional[str] = None  # -T: old xenstored compatibility, ignored
    restart: bool = False
    live_reload: bool = False
    disable_socket: bool = False
    config_test: bool = False
    sim: Optional[str] = None
    protocol_level: Optional[str] = None  # --protocol-level: overrides the config key

    def config_filename(self) -> str:
        return get_config_filename(self.config_file)


def get_config_filename(config_file: Optional[str]) -> str:
    return config_file if config_file is not None else paths.default_config_file()


class ArgHelp(Exception):
    """Arg.Help: print `text` on stdout and exit 0."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text


class ArgBad(Exception):
    """Arg.Bad: print `text` on stderr and exit 2."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text


# Spec kinds: a flag takes no argument, a string option takes one.
_FLAG, _STRING = "flag", "string"

# (option, kind, field, value for a flag, description); order = usage order.
_SPECS: Tuple[Tuple[str, str, str, object, str], ...] = (
    ("--no-domain-init", _FLAG, "domain_init", False,
     "to state that xenstored should not initialise dom0"),
    ("--config-file", _STRING, "config_file", None,
     "set an alternative location for the configuration file"),
    ("--no-fork", _FLAG, "daemonize", False, "to request that the daemon does not fork"),
    ("--reraise-top-level", _FLAG, "reraise_top_level", True,
     "reraise exceptions caught at the top level"),
    ("--no-access-log", _FLAG, "activate_access_log", False,
     "do not create a xenstore-access.log file"),
    ("--pid-file", _STRING, "pidfile", None, ""),
    ("-T", _STRING, "tracefile", None, ""),
    ("--restart", _FLAG, "restart", True, "Read database on starting"),
    ("--live", _FLAG, "live_reload", True, "Read live dump on startup"),
    ("--config-test", _FLAG, "config_test", True, "Test validity of config file"),
    ("--disable-socket", _FLAG, "disable_socket", True, "Disable socket"),
    ("--help", _FLAG, "help", True, "Display this list of options"),
    ("--sim", _STRING, "sim", None, ""),
    ("--protocol-level", _STRING, "protocol_level", None, ""),
)
_BY_NAME: Dict[str, Tuple[str, str, str, object, str]] = {s[0]: s for s in _SPECS}
PROTOCOL_LEVELS = ("4.17", "4.22")  # oxsd.protocol_level.LEVELS


def usage_string() -> str:
    """Arg.usage_string: the usage line, then each documented option, then Arg's `-help`."""
    out = [USAGE_MSG + "\n"]
    for name, _kind, _field, _value, doc in _SPECS:
        if doc:
            out.append(f"  {name} {doc}\n")
    # Arg.add_help: "--help" is ours, so only "-help" is added (its doc starts with a space).
    out.append("  -help  Display this list of options\n")
    return "".join(out)


def _error_text(progname: str, message: str) -> str:
    return f"{progname}: {message}.\n" + usage_string()


def parse_argv(argv: Sequence[str]) -> CmdLine:
    """Parse argv (argv[0] = program name); raise ArgHelp or ArgBad where Arg.parse would exit."""
    progname = argv[0] if argv else "(?)"
    values: Dict[str, object] = {}
    i = 1
    n = len(argv)
    while i < n:
        s = argv[i]
        if s[:1] == "-":
            follow: Optional[str] = None
            spec = _BY_NAME.get(s)
            if spec is None:
                key, eq, arg = s.partition("=")
                spec = _BY_NAME.get(key) if eq else None
                if spec is None:
                    if s == "-help":
                        raise ArgHelp(usage_string())
                    raise ArgBad(_error_text(progname, f"unknown option '{s}'"))
                follow = arg
            _name, kind, field, value, _doc = spec
            if kind == _FLAG:
                if follow is not None:
                    raise ArgBad(_error_text(
                        progname, f"wrong argument '{follow}'; option '{s}' expects no argument"))
                values[field] = value
            else:
                if follow is None:
                    if i + 1 >= n:
                        raise ArgBad(_error_text(progname, f"option '{s}' needs an argument"))
                    i += 1
                    follow = argv[i]
                values[field] = follow
        i += 1

    cf = CmdLine()
    for field, value in values.items():
        if field == "help":
            continue
        if isinstance(value, str) or value is None:
            value = value or None  # Set_string to "" means "not given"
        setattr(cf, field, value)
    if cf.protocol_level is not None and cf.protocol_level not in PROTOCOL_LEVELS:
        # as OCaml's Arg.Symbol says it
        raise ArgBad(_error_text(progname, f"wrong argument '{cf.protocol_level}'; option "
                                 f"'--protocol-level' expects one of: {' '.join(PROTOCOL_LEVELS)}"))
    if values.get("help"):
        if cf.live_reload:
            cf.config_test = True
        else:
            raise ArgHelp(usage_string() + "\n")
    return cf


def parse(argv: Optional[Sequence[str]] = None,
          exit: Callable[[int], None] = sys.exit) -> CmdLine:
    """Arg.parse + the --help handling of parse_arg.ml: print and exit where OCaml does."""
    try:
        return parse_argv(list(sys.argv if argv is None else argv))
    except ArgHelp as h:
        sys.stdout.write(h.text)
        sys.stdout.flush()
        exit(0)
    except ArgBad as b:
        sys.stdout.flush()
        sys.stderr.write(b.text)
        sys.stderr.flush()
        exit(2)
    raise AssertionError("exit() returned")  # pragma: no cover
