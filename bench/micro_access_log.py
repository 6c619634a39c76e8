#!/usr/bin/env python3
"""The access log's cost per line: N `xb_op` lines of a write request into a file log.

A development tool, not a benchmark against the original.  Prints the time
per line; under callgrind, two runs with different N give the instructions
per line by difference:

    python3 bench/micro_access_log.py 200000
    valgrind --tool=callgrind python3 bench/micro_access_log.py 1000    # and 11000
"""
from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

# OXSD_SOURCE: measure the oxsd of another source tree (a before/after of two commits).
sys.path.insert(0, os.environ.get("OXSD_SOURCE") or str(Path(__file__).resolve().parents[1]))

from oxsd.config import Settings  # noqa: E402
from oxsd.logging_ import AccessLog  # noqa: E402
from oxsd.xb.op import Op  # noqa: E402


def main() -> int:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 100000
    with tempfile.TemporaryDirectory(prefix="oxal-") as tmp:
        log = AccessLog(Settings(access_log_file=f"{tmp}/access.log", access_log_nb_lines=10**9))
        data = b"/local/domain/5/device/vif/0/state\x004"
        started = time.perf_counter()
        for _ in range(n):
            log.xb_op(0, "D5", Op.WRITE, data)
        elapsed = time.perf_counter() - started
        log.close()
        print(f"{elapsed / n * 1e6:.3f} us per line: "
              + Path(f"{tmp}/access.log").read_text().splitlines()[0])
    return 0


if __name__ == "__main__":
    sys.exit(main())
