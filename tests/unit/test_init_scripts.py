"""init/: SysV script, systemd unit, launcher: syntax, unit check, start/stop of a fake daemon."""
from __future__ import annotations

import json
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from support.env import unavailable

REPO = Path(__file__).resolve().parents[2]
INIT = REPO / "init"
LAUNCHER = INIT / "launch-xenstore"
SYSV = INIT / "oxenstored"
UNIT = INIT / "xenstored.service"
MOUNT = INIT / "proc-xen.mount"

# A stand-in for oxenstored: records its argv and fd limit, daemonises with
# oxsd.stdext.daemonize (pid file written before the launching process
# exits), then sleeps until SIGTERM (at most 60 s).
FAKE_DAEMON = """\
#!{python}
import json, os, resource, sys, time
from oxsd import stdext
args = sys.argv[1:]
report = os.environ["FAKE_REPORT"]
with open(report, "w") as f:
    json.dump(dict(args=args, nofile=resource.getrlimit(resource.RLIMIT_NOFILE),
                   gc={{k: v for k, v in os.environ.items() if k.startswith("PYPY_GC_")}}), f)
pidfile = args[args.index("--pid-file") + 1]
stdext.daemonize(ready=lambda: stdext.pidfile_write(pidfile))
time.sleep(60)
"""


def hard_nofile() -> int:
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    return 4096 if hard == resource.RLIM_INFINITY else hard


@pytest.fixture
def sandbox(tmp_path):
    """Run dir, log dir, xencommons file, nr_open file and a fake daemon; kills what it started."""
    fake = tmp_path / "fake-oxenstored"
    fake.write_text(FAKE_DAEMON.format(python=sys.executable))
    fake.chmod(0o755)
    (tmp_path / "nr_open").write_text(f"{hard_nofile()}\n")
    conf = tmp_path / "xencommons"
    conf.write_text(f"XENSTORED={fake}\n")
    # The fake daemon imports oxsd: from this checkout, whatever is installed.
    pythonpath = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    env = dict(os.environ, XEN_RUN_DIR=str(tmp_path / "run"), XEN_LOG_DIR=str(tmp_path / "log"),
               XENCOMMONS_CONFIG=str(conf), NR_OPEN_FILE=str(tmp_path / "nr_open"),
               FAKE_REPORT=str(tmp_path / "report.json"), XENSTORED_STOP_TIMEOUT="10",
               PYTHONPATH=pythonpath)
    env.pop("NOTIFY_SOCKET", None)
    box = type("Box", (), dict(path=tmp_path, env=env, conf=conf, fake=fake,
                               pidfile=tmp_path / "run" / "xenstored.pid"))
    yield box
    if box.pidfile.exists():
        try:
            pid = int(box.pidfile.read_text())
            os.kill(pid, signal.SIGKILL)
        except (ValueError, ProcessLookupError):
            pass


def run(script: Path, *args: str, env: dict, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(script), *args], env=env, capture_output=True, text=True,
                          timeout=timeout)


def gone(pid: int, timeout: float = 20) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1][0]
        except (OSError, IndexError):
            return True
        if state == "Z":
            return True
        time.sleep(0.05)
    return False


# -- static checks -------------------------------------------------------------

@pytest.mark.parametrize("script", [LAUNCHER, SYSV])
def test_scripts_pass_bash_syntax_check_and_are_executable(script):
    r = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert os.access(script, os.X_OK)


def test_sysv_script_has_a_complete_lsb_header():
    text = SYSV.read_text()
    header = text[text.index("### BEGIN INIT INFO"):text.index("### END INIT INFO")]
    for field in ("Provides: ", "Required-Start: ", "Required-Stop: ", "Default-Start: ",
                  "Default-Stop: ", "Short-Description: ", "Description: "):
        assert re.search(r"^# " + field, header, re.M), field


def test_unit_is_type_notify_with_launcher_like_xen():
    text = UNIT.read_text()
    for line in ("Type=notify", "NotifyAccess=all", "RemainAfterExit=true",
                 "Requires=proc-xen.mount", "ConditionPathExists=/proc/xen/capabilities"):
        assert re.search("^" + re.escape(line) + "$", text, re.M), line
    assert re.search(r"^ExecStart=\S+/launch-xenstore$", text, re.M)


def test_systemd_analyze_verify_accepts_the_unit(tmp_path):
    tool = shutil.which("systemd-analyze")
    if tool is None:
        unavailable("systemd-analyze is not installed")
    # ExecStart must name an executable file: point it at the repository's launcher.
    unit = re.sub(r"^ExecStart=.*$", f"ExecStart={LAUNCHER}", UNIT.read_text(), flags=re.M)
    (tmp_path / "xenstored.service").write_text(unit)
    shutil.copy(MOUNT, tmp_path / "proc-xen.mount")
    r = subprocess.run([tool, "verify", "--man=no", str(tmp_path / "xenstored.service"),
                        str(tmp_path / "proc-xen.mount")], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stderr == ""


# -- launch-xenstore --------------------------------------------------------------

def test_launcher_starts_daemon_with_pid_file_args_and_fd_limit(sandbox):
    n = min(hard_nofile(), 2048)
    sandbox.conf.write_text(f"XENSTORED={sandbox.fake}\nXENSTORED_ARGS='--no-domain-init -x'\n"
                            f"XENSTORED_TRACE=yes\nXENSTORED_MAX_OPEN_FDS={n}\n")
    r = run(LAUNCHER, env=sandbox.env)
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.startswith(f"Starting {sandbox.fake}...")
    pid = int(sandbox.pidfile.read_text())
    assert not gone(pid, timeout=0.1)
    report = json.loads((sandbox.path / "report.json").read_text())
    assert report["args"] == ["--pid-file", str(sandbox.pidfile), "--no-domain-init", "-x",
                              "-T", str(sandbox.path / "log" / "xenstored-trace.log")]
    assert report["nofile"] == [n, n]
    os.kill(pid, signal.SIGTERM)
    assert gone(pid)


@pytest.mark.parametrize("script", [LAUNCHER, SYSV], ids=["launcher", "sysv"])
def test_pypy_gc_knobs_from_xencommons_reach_the_daemon(sandbox, script):
    sandbox.conf.write_text(f"XENSTORED={sandbox.fake}\nPYPY_GC_NURSERY=1M\n"
                            "PYPY_GC_MAJOR_COLLECT=1.4\nPYPY_GC_MAX=9G\n")
    env = {k: v for k, v in sandbox.env.items() if not k.startswith("PYPY_GC_")}
    r = run(script, *(["start"] if script == SYSV else []), env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    report = json.loads((sandbox.path / "report.json").read_text())
    # the two knobs the launchers hand on; any other xencommons variable stays unexported
    assert report["gc"] == {"PYPY_GC_NURSERY": "1M", "PYPY_GC_MAJOR_COLLECT": "1.4"}
    os.kill(int(sandbox.pidfile.read_text()), signal.SIGTERM)


@pytest.mark.parametrize("script", [LAUNCHER, SYSV], ids=["launcher", "sysv"])
def test_pypy_gc_knobs_default_to_2m_and_1_3_when_xencommons_sets_none(sandbox, script):
    # PyPy's own default (half the reported CPU cache) can be hundreds of MiB
    sandbox.conf.write_text(f"XENSTORED={sandbox.fake}\n")
    env = {k: v for k, v in sandbox.env.items() if not k.startswith("PYPY_GC_")}
    r = run(script, *(["start"] if script == SYSV else []), env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    report = json.loads((sandbox.path / "report.json").read_text())
    assert report["gc"] == {"PYPY_GC_NURSERY": "2M", "PYPY_GC_MAJOR_COLLECT": "1.3"}
    os.kill(int(sandbox.pidfile.read_text()), signal.SIGTERM)


def test_launcher_caps_unlimited_and_invalid_fd_limits_at_nr_open(sandbox):
    sandbox.conf.write_text(f"XENSTORED={sandbox.fake}\nXENSTORED_MAX_OPEN_FDS=lots\n")
    r = run(LAUNCHER, env=sandbox.env)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "XENSTORED_MAX_OPEN_FDS=lots invalid" in r.stdout
    report = json.loads((sandbox.path / "report.json").read_text())
    assert report["nofile"] == [hard_nofile()] * 2
    os.kill(int(sandbox.pidfile.read_text()), signal.SIGTERM)


def test_launcher_does_nothing_when_the_pid_file_exists(sandbox):
    sandbox.pidfile.parent.mkdir(parents=True)
    sandbox.pidfile.write_text("1\n")
    r = run(LAUNCHER, env=sandbox.env)
    assert (r.returncode, r.stdout) == (0, "")
    assert not (sandbox.path / "report.json").exists()
    sandbox.pidfile.unlink()


def test_launcher_without_executable_daemon_fails(sandbox):
    sandbox.conf.write_text(f"XENSTORED={sandbox.path / 'missing'}\n")
    r = run(LAUNCHER, env=sandbox.env)
    assert (r.returncode, r.stdout) == (1, "No xenstored found\n")


def test_launcher_refuses_a_stub_domain_xenstore(sandbox):
    sandbox.conf.write_text("XENSTORETYPE=domain\n")
    r = run(LAUNCHER, env=sandbox.env)
    assert r.returncode == 1 and "XENSTORETYPE=domain" in r.stdout


def test_launcher_fails_when_the_daemon_fails(sandbox):
    bad = sandbox.path / "bad-daemon"
    bad.write_text("#!/bin/sh\nexit 2\n")
    bad.chmod(0o755)
    sandbox.conf.write_text(f"XENSTORED={bad}\n")
    r = run(LAUNCHER, env=sandbox.env)
    assert r.returncode == 1 and f"Could not start {bad}" in r.stdout


# -- SysV script ------------------------------------------------------------------------

def test_sysv_start_status_stop_cycle(sandbox):
    env = sandbox.env
    assert run(SYSV, "status", env=env).returncode == 3
    r = run(SYSV, "start", env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    pid = int(sandbox.pidfile.read_text())
    r = run(SYSV, "status", env=env)
    assert (r.returncode, r.stdout) == (0, f"xenstored is running (pid {pid})\n")
    r = run(SYSV, "start", env=env)
    assert (r.returncode, r.stdout) == (0, f"xenstored is already running (pid {pid})\n")
    r = run(SYSV, "stop", env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    assert gone(pid, timeout=1) and not sandbox.pidfile.exists()
    assert run(SYSV, "status", env=env).returncode == 3
    assert run(SYSV, "stop", env=env).returncode == 0


def test_sysv_restart_gives_a_new_daemon(sandbox):
    env = sandbox.env
    assert run(SYSV, "start", env=env).returncode == 0
    first = int(sandbox.pidfile.read_text())
    r = run(SYSV, "restart", env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    second = int(sandbox.pidfile.read_text())
    assert second != first and gone(first, timeout=1)
    assert run(SYSV, "stop", env=env).returncode == 0


def test_sysv_status_with_stale_pid_file_is_1(sandbox):
    sandbox.pidfile.parent.mkdir(parents=True)
    p = subprocess.Popen(["true"])
    p.wait()
    sandbox.pidfile.write_text(f"{p.pid}\n")
    r = run(SYSV, "status", env=sandbox.env)
    assert r.returncode == 1
    sandbox.pidfile.unlink()


@pytest.mark.parametrize("action,code", [("reload", 3), ("bogus", 2), ("", 2)])
def test_sysv_unsupported_actions(sandbox, action, code):
    assert run(SYSV, action, env=sandbox.env).returncode == code
