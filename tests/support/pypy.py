"""Debian's pypy3 for the tests: a venv with oxsd's dependencies, made on first use.

`ensure_pypy()` runs tools/setup-pypy.sh (apt-get install pypy3 pypy3-venv
when missing, then a venv with setup.cfg's install_requires and test extra)
and returns the venv's interpreter.  When that cannot be had the test is
skipped, or fails under CI=true (`unavailable`).  `pypy_env()` is the
environment to run this checkout's oxsd under it: PYTHONPATH names the
repository, so the venv never holds a copy of oxsd that could go stale.
"""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

from oxsd.diff.daemons import REPO_ROOT

from .env import unavailable

__all__ = ["ensure_pypy", "pypy_env", "SETUP_PYPY"]

SETUP_PYPY = REPO_ROOT / "tools" / "setup-pypy.sh"


def ensure_pypy() -> Path:
    try:
        res = subprocess.run([str(SETUP_PYPY)], capture_output=True, text=True, timeout=900,
                             stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired) as e:
        unavailable(f"cannot run {SETUP_PYPY}: {e}")
    if res.returncode != 0:
        unavailable(f"no pypy3 runtime ({SETUP_PYPY} exited {res.returncode}):\n"
                    f"{res.stderr[-2000:]}")
    python = Path(res.stdout.strip().splitlines()[-1])
    if not os.access(python, os.X_OK):
        unavailable(f"{SETUP_PYPY} printed {python}, which is not executable")
    return python


def pypy_env() -> dict[str, str]:
    """os.environ with this checkout first on PYTHONPATH."""
    path = os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))
    return dict(os.environ, PYTHONPATH=path)
