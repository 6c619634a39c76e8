"""Command line: flags, OCaml Arg error texts, usage layout, --live --help (parse_arg.ml: do_argv).

Expected texts were produced by Debian's oxenstored 4.17 (argv[0] = PROG).
"""
from __future__ import annotations

import pytest

from oxsd import parse_arg
from oxsd.parse_arg import ArgBad, ArgHelp, CmdLine, parse, parse_argv

PROG = "/usr/lib/xen-4.17/bin/oxenstored"

USAGE = """\
usage : xenstored [--config-file <filename>] [--no-domain-init] [--help] [--no-fork] [--reraise-top-level] [--restart] [--disable-socket]
  --no-domain-init to state that xenstored should not initialise dom0
  --config-file set an alternative location for the configuration file
  --no-fork to request that the daemon does not fork
  --reraise-top-level reraise exceptions caught at the top level
  --no-access-log do not create a xenstore-access.log file
  --restart Read database on starting
  --live Read live dump on startup
  --config-test Test validity of config file
  --disable-socket Disable socket
  --help Display this list of options
  -help  Display this list of options
"""


def run(capsys, *args):
    """parse() as the daemon calls it: (CmdLine or exit status, stdout, stderr)."""
    try:
        result = parse([PROG, *args])
    except SystemExit as e:
        result = e.code
    out, err = capsys.readouterr()
    return result, out, err


def test_no_arguments_gives_the_record_defaults():
    assert parse_argv([PROG]) == CmdLine(
        domain_init=True, activate_access_log=True, daemonize=True, reraise_top_level=False,
        config_file=None, pidfile=None, tracefile=None, restart=False, live_reload=False,
        disable_socket=False, config_test=False, sim=None)


def test_every_flag_sets_its_field():
    cf = parse_argv([PROG, "--no-domain-init", "--no-fork", "--reraise-top-level",
                     "--no-access-log", "--restart", "--live", "--config-test",
                     "--disable-socket"])
    assert (cf.domain_init, cf.daemonize, cf.reraise_top_level, cf.activate_access_log) == \
        (False, False, True, False)
    assert cf.restart and cf.live_reload and cf.config_test and cf.disable_socket


def test_string_options_take_the_next_word_whatever_it_is():
    cf = parse_argv([PROG, "--config-file", "--help", "--pid-file", "/p", "-T", "/t"])
    assert (cf.config_file, cf.pidfile, cf.tracefile) == ("--help", "/p", "/t")


def test_string_options_accept_the_equals_form_and_empty_means_unset():
    cf = parse_argv([PROG, "--config-file=/etc/x=y.conf", "-T=/t", "--pid-file="])
    assert (cf.config_file, cf.tracefile, cf.pidfile) == ("/etc/x=y.conf", "/t", None)


def test_last_repeated_option_wins_and_anonymous_words_are_ignored():
    cf = parse_argv([PROG, "word", "--config-file", "/a", "other", "--config-file", "/b"])
    assert cf.config_file == "/b"


def test_sim_option_takes_a_directory():
    assert parse_argv([PROG, "--sim", "/tmp/sim"]).sim == "/tmp/sim"
    assert parse_argv([PROG, "--sim=/s"]).sim == "/s"


def test_config_filename_defaults_to_etc_xen():
    assert parse_argv([PROG]).config_filename() == "/etc/xen/oxenstored.conf"
    assert parse_argv([PROG, "--config-file", "/c"]).config_filename() == "/c"


def test_usage_string_is_byte_identical_to_oxenstored_and_hides_sim():
    assert parse_arg.usage_string() == USAGE
    assert "--sim" not in USAGE


def test_help_prints_usage_plus_empty_line_on_stdout_and_exits_0(capsys):
    assert run(capsys, "--help") == (0, USAGE + "\n", "")


def test_arg_help_prints_usage_without_extra_line(capsys):
    assert run(capsys, "-help") == (0, USAGE, "")


def test_arg_help_wins_even_with_live(capsys):
    assert run(capsys, "--live", "-help") == (0, USAGE, "")


@pytest.mark.parametrize("args", [("--live", "--help"), ("--help", "--live")])
def test_live_help_means_config_test(capsys, args):
    cf, out, err = run(capsys, *args)
    assert isinstance(cf, CmdLine) and cf.config_test and cf.live_reload
    assert (out, err) == ("", "")


def test_help_is_acted_on_only_after_the_whole_line_parses(capsys):
    assert run(capsys, "--help", "--bogus") == (
        2, "", f"{PROG}: unknown option '--bogus'.\n" + USAGE)


@pytest.mark.parametrize("args,message", [
    (("--bogus",), "unknown option '--bogus'"),
    (("--bogus=1",), "unknown option '--bogus=1'"),
    (("--",), "unknown option '--'"),
    (("-",), "unknown option '-'"),
    (("-help=x",), "unknown option '-help=x'"),
    (("x", "--nope=3", "--help"), "unknown option '--nope=3'"),
    (("--no-fork=1",), "wrong argument '1'; option '--no-fork=1' expects no argument"),
    (("--help=x",), "wrong argument 'x'; option '--help=x' expects no argument"),
    (("--restart=", "--help"), "wrong argument ''; option '--restart=' expects no argument"),
    (("--config-test=1",), "wrong argument '1'; option '--config-test=1' expects no argument"),
    (("--config-file",), "option '--config-file' needs an argument"),
    (("-T",), "option '-T' needs an argument"),
    (("--pid-file",), "option '--pid-file' needs an argument"),
    (("--sim",), "option '--sim' needs an argument"),
])
def test_argument_errors_print_arg_text_and_usage_on_stderr_and_exit_2(capsys, args, message):
    assert run(capsys, *args) == (2, "", f"{PROG}: {message}.\n" + USAGE)


def test_parse_argv_raises_instead_of_exiting():
    with pytest.raises(ArgHelp) as h:
        parse_argv([PROG, "-help"])
    assert h.value.text == USAGE
    with pytest.raises(ArgBad) as b:
        parse_argv(["prog", "--x"])
    assert b.value.text.startswith("prog: unknown option '--x'.\nusage : xenstored")
