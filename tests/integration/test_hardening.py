"""Hardening fixes that show on the daemon's outside (issue 12): what a guest's
mistakes cost in the log, on both daemons."""
from __future__ import annotations

import time

from oxsd.diff.wire import op_code


def log_lines_with(daemon, text: str, count: int, timeout: float = 5.0) -> list[str]:
    """The xenstored-log lines containing `text` once there are `count` of them."""
    deadline = time.monotonic() + timeout
    while True:
        lines = daemon.log_path.read_text(errors="replace").splitlines() \
            if daemon.log_path.exists() else []
        hits = [i for i, line in enumerate(lines) if text in line]
        if len(hits) >= count or time.monotonic() > deadline:
            return [lines[i] for i in hits], lines


def test_unknown_transaction_id_gets_eio_and_the_originals_one_error_line(daemon):
    """A guest can name any tid: it costs one `process packet: Not_found.` error line
    (the original adds two frames of its own backtrace), not a Python traceback."""
    with daemon.connect() as c:
        for rid in range(3):
            reply = c.request(op_code("READ"), b"/local\0", tx_id=99, req_id=rid)
            assert (reply.op, reply.tx_id, reply.payload) == (op_code("ERROR"), 99, b"EIO\0")
    hits, lines = log_lines_with(daemon, "|error|process] process packet: Not_found. ", 3)
    assert len(hits) == 3, lines[-20:]
    if daemon.kind == "oxsd":
        assert all(h.endswith("process packet: Not_found. ") for h in hits)
        assert not any("Traceback" in line for line in lines)


def test_the_daemon_refuses_to_start_on_a_weakly_ordered_cpu(tmp_path):
    """On arm64 (say) the ring code would need barriers: a clear error and exit 2,
    before any ring page is mapped, instead of a daemon that may corrupt rings."""
    import subprocess
    import sys

    from oxsd.diff.daemons import REPO_ROOT, DaemonSettings, init_sim_dir, write_config
    rundir = tmp_path / "run"
    (rundir / "xenstored").mkdir(parents=True)
    init_sim_dir(tmp_path / "sim")
    conf = tmp_path / "oxenstored.conf"
    write_config(conf, tmp_path, tmp_path / "sim", DaemonSettings(),
                 pid_file=str(rundir / "xenstored.pid"))
    code = ("import platform, sys\n"
            "platform.machine = lambda: 'aarch64'\n"
            "from oxsd.xenstored import main\n"
            "sys.exit(main(sys.argv))\n")
    res = subprocess.run(
        [sys.executable, "-c", code, "--no-fork", "--config-file", str(conf),
         "--sim", str(tmp_path / "sim"), "--disable-socket"],
        capture_output=True, text=True, timeout=60, cwd=str(tmp_path),
        env={"PYTHONPATH": str(REPO_ROOT), "XENSTORED_RUNDIR": str(rundir / "xenstored"),
             "PATH": "/usr/bin:/bin"})
    assert res.returncode == 2, (res.stdout, res.stderr)
    assert "cannot serve xenstore rings on 'aarch64'" in res.stderr
    assert "Traceback" not in res.stderr
