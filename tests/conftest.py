"""Shared fixtures for the integration tests.

Nothing here runs for tests that do not ask for these fixtures, so unit tests
stay fast.  The first test that needs them builds the OCaml reference (its
build.sh, idempotent) and fetches the Debian clients (tools/fetch-clients.sh,
apt-get download + dpkg -x into ~/.cache/oxsd-clients), so one `pytest`
on a fresh machine is enough.  Without the reference kit the tests that need
it are skipped with the reason, except under CI=true, where they fail.
"""
from __future__ import annotations

import shutil
import sys
from pathlib import Path
from typing import Callable

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from oxsd.diff.daemons import (KINDS, PINNED_REFERENCE, DaemonError,  # noqa: E402
                               DaemonSettings, debian_conf, make_scratch,
                               ocaml_ref_work, reference_version, start_daemon)
from support.env import Clients, ensure_clients, ensure_reference  # noqa: E402
from support.guests import XensimGuests, load_xensim  # noqa: E402


_REFERENCE_USED: list[Path] = []  # the session's reference kit, once a test asked for it


@pytest.fixture(scope="session")
def ocaml_ref() -> Path:
    """The reference kit directory (built, of the pinned version)."""
    ref = ensure_reference()
    _REFERENCE_USED.append(ref)
    return ref


def pytest_terminal_summary(terminalreporter) -> None:
    """Say once which reference build the differential tests compared with."""
    if _REFERENCE_USED:
        terminalreporter.write_line(
            f"reference: Debian oxenstored {reference_version()} (xen-utils-4.17, pinned "
            f"{PINNED_REFERENCE}) from {_REFERENCE_USED[0]}, built in {ocaml_ref_work()}")
    else:
        terminalreporter.write_line("reference: not used by the tests of this run")


@pytest.fixture(scope="session")
def clients() -> Clients:
    """The real Debian clients: xenstore-utils, test-xenstore, pyxs."""
    return ensure_clients()


@pytest.fixture(scope="session")
def xensim(ocaml_ref):
    """The reference kit's simulation library (guests, sim actions)."""
    return load_xensim(ocaml_ref)


@pytest.fixture(scope="session")
def guest_backend(xensim) -> XensimGuests:
    return XensimGuests(xensim)


def _need(request, kind: str) -> None:
    """Resolve what starting a daemon of this kind needs."""
    if kind == "ocaml":
        request.getfixturevalue("ocaml_ref")
    try:
        debian_conf()
    except DaemonError:
        request.getfixturevalue("clients")  # fetches xen-utils-common's config


@pytest.fixture
def start(request):
    """Factory: start(kind, settings=None, prepare=None) -> a running Daemon, stopped and
    its scratch dir removed at teardown.  `prepare(scratch)` runs before the daemon
    starts (to leave files in its run dir: support.rundir.leave_dump)."""
    started: list[tuple[Path, object]] = []  # (scratch, daemon or None if it did not start)

    def _start(kind: str, settings: DaemonSettings | None = None,
               prepare: Callable[[Path], None] | None = None):
        _need(request, kind)
        scratch = make_scratch(f"oxt-{kind[:2]}-")
        started.append((scratch, None))
        if prepare is not None:
            prepare(scratch)
        try:
            daemon = start_daemon(kind, scratch, settings=settings)
        except DaemonError as e:
            pytest.fail(f"cannot start the {kind} daemon: {e}", pytrace=False)
        started[-1] = (scratch, daemon)
        return daemon

    yield _start
    for scratch, daemon in started:
        if daemon is not None:
            daemon.stop()
        shutil.rmtree(scratch, ignore_errors=True)


@pytest.fixture
def start_fatal(request):
    """Factory: start_fatal(kind, settings, prepare=None, timeout=15.0) -> the message of
    the DaemonError a daemon that must not start fails with (the test fails if it starts)."""
    def _start_fatal(kind: str, settings: DaemonSettings,
                     prepare: Callable[[Path], None] | None = None,
                     timeout: float = 15.0) -> str:
        _need(request, kind)
        scratch = make_scratch(f"oxt-{kind[:2]}-")
        try:
            if prepare is not None:
                prepare(scratch)
            try:
                daemon = start_daemon(kind, scratch, settings=settings, timeout=timeout)
            except DaemonError as e:
                return str(e)
            daemon.stop()
            pytest.fail(f"the {kind} daemon started", pytrace=False)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)

    return _start_fatal


@pytest.fixture(params=KINDS)
def daemon(request, start):
    """A fresh daemon of each kind (ocaml = Debian's oxenstored, oxsd = ours),
    Debian's config, socket at <scratch>/run/xenstored/socket."""
    return start(request.param)
