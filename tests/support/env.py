"""Locating (and, when missing, building/fetching) what integration tests need.

Rule: a test that needs the OCaml reference or the Debian clients is skipped,
with the reason, only when they cannot be had; with CI=true it fails instead,
so that a CI run can never pass by skipping everything.
"""
from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from oxsd.diff.daemons import (REPO_ROOT, DaemonError, check_reference_version, find_ocaml_ref,
                               ocaml_ref_work)

__all__ = ["unavailable", "ensure_reference", "ensure_clients", "Clients", "in_ci"]

FETCH_CLIENTS = REPO_ROOT / "tools" / "fetch-clients.sh"


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() == "true"


def unavailable(reason: str) -> None:
    """Skip (or, under CI=true, fail) the current test."""
    if in_ci():
        pytest.fail(f"{reason} (CI=true: not skipping)", pytrace=False)
    pytest.skip(reason)


def check_reference_version_quietly() -> str | None:
    """The pinned version when the cache holds it, else None."""
    try:
        return check_reference_version()
    except DaemonError:
        return None


def ensure_reference() -> Path:
    """The reference kit, built and of the pinned version (its build.sh is
    idempotent: it runs when the fake libs are missing, and rebuilds a cache
    of another version)."""
    ref = find_ocaml_ref()
    if ref is None:
        unavailable("OCaml reference kit not found: set OCAML_REF or provide "
                    f"{REPO_ROOT.parent / 'shared' / 'ocaml-ref'}")
    if os.geteuid() != 0:
        unavailable("the OCaml reference needs root (unshare -m and bind mounts)")
    if shutil.which("gcc") is None:
        unavailable("no C compiler (gcc) to build the reference kit's fake libraries")
    built = (ocaml_ref_work() / "_build" / "lib" / "libxenevtchn.so.1").exists()
    if not built or check_reference_version_quietly() is None:
        res = subprocess.run([str(ref / "build.sh")], capture_output=True, text=True,
                             timeout=900)
        if res.returncode != 0:
            pytest.fail(f"{ref}/build.sh failed ({res.returncode}):\n{res.stderr[-3000:]}",
                        pytrace=False)
    try:
        check_reference_version()
    except DaemonError as e:  # a stale cache: never compare against it
        pytest.fail(str(e), pytrace=False)
    return ref


@dataclass(frozen=True)
class Clients:
    """The extracted Debian clients (tools/fetch-clients.sh)."""

    root: Path

    @property
    def bindir(self) -> Path:
        return self.root / "usr" / "bin"

    @property
    def test_xenstore(self) -> Path:
        return self.root / "usr" / "lib" / "xen-4.17" / "bin" / "test-xenstore"

    @property
    def libdir(self) -> Path:
        return next(self.root.glob("usr/lib/*/libxenstore.so.4")).parent

    @property
    def pythonpath(self) -> Path:
        return self.root / "usr" / "lib" / "python3" / "dist-packages"

    def env(self, socket_path: str) -> dict[str, str]:
        return dict(os.environ, XENSTORED_PATH=socket_path,
                    LD_LIBRARY_PATH=str(self.libdir), LC_ALL="C")

    def run(self, socket_path: str, tool: str, *args: str, timeout: float = 10.0,
            check: bool = False) -> subprocess.CompletedProcess:
        """Run a xenstore-utils command (``read``, ``ls``, ...) against a daemon."""
        exe = tool if tool.startswith("/") else str(self.bindir / f"xenstore-{tool}")
        return subprocess.run([exe, *args], env=self.env(socket_path), capture_output=True,
                              text=True, timeout=timeout, check=check,
                              stdin=subprocess.DEVNULL)


def ensure_clients() -> Clients:
    """Fetch the clients if needed (apt-get download + dpkg -x into a cache)."""
    try:
        res = subprocess.run([str(FETCH_CLIENTS)], capture_output=True, text=True,
                             timeout=900)
    except OSError as e:
        unavailable(f"cannot run {FETCH_CLIENTS}: {e}")
    if res.returncode != 0:
        unavailable(f"could not fetch the Debian clients ({FETCH_CLIENTS}):\n"
                    f"{res.stderr[-2000:]}")
    return Clients(Path(res.stdout.strip().splitlines()[-1]))
