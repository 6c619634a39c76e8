"""oxsd on Debian's pypy3 (PyPy 7.3.11, Python 3.9), its second supported runtime.

The unit tests and the differential corpus (oxsd started with the runner's
interpreter, oxsd/diff/daemons.py: sys.executable) run under pypy3 and must
pass there as they do on CPython.  pypy3 and the test needs come from the
project's own files (tools/setup-pypy.sh through tests/support/pypy.py) on
first use; without them these tests skip, or fail under CI=true.
"""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from oxsd.diff.daemons import REPO_ROOT  # noqa: E402
from support.pypy import ensure_pypy, pypy_env  # noqa: E402


@pytest.fixture(scope="session")
def pypy() -> Path:
    """The pypy3 venv's interpreter (installed on first use)."""
    return ensure_pypy()


def run(pypy: Path, *args: str, timeout: float) -> subprocess.CompletedProcess:
    return subprocess.run([str(pypy), *args], cwd=str(REPO_ROOT), env=pypy_env(),
                          capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)


def test_the_interpreter_is_pypy_3_9_or_later(pypy):
    res = run(pypy, "-c", "import sys, oxsd; print(sys.implementation.name, "
              "sys.version_info[:2] >= (3, 9), oxsd.__file__)", timeout=60)
    assert res.returncode == 0, res.stderr
    name, recent, path = res.stdout.split()
    assert (name, recent) == ("pypy", "True")
    assert Path(path).resolve().is_relative_to(REPO_ROOT)  # this checkout's oxsd, not a copy


def test_unit_tests_pass_under_pypy(pypy):
    res = run(pypy, "-m", "pytest", "tests/unit", "-q", "-p", "no:cacheprovider",
              timeout=900)
    tail = res.stdout[-3000:]
    assert res.returncode == 0, tail + res.stderr[-2000:]
    # pytest's closing line: passes, and nothing failed or errored
    summary = re.search(r"^=*\s*(\d+) passed(.*) in [\d.]+s", tail, re.M)
    assert summary and int(summary.group(1)) > 0, tail
    assert "failed" not in summary.group(2) and "error" not in summary.group(2), summary.group(0)


def test_the_corpus_is_identical_with_oxsd_under_pypy(pypy, ocaml_ref, clients):
    res = run(pypy, "-m", "oxsd.diff", "tests/scenarios", "-q", timeout=1800)
    out = res.stdout + res.stderr
    m = re.search(r"^(\d+) scenarios, (\d+) identical", out, re.M)
    assert m, out[-3000:]
    assert res.returncode == 0 and m.group(1) == m.group(2) and int(m.group(1)) > 0, out[-6000:]
