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
