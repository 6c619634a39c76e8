"""sd_notify over the plain datagram protocol, abstract names included (systemd.ml: sd_notify_ready)."""
from __future__ import annotations

import errno
import os
import socket

import pytest

from oxsd import systemd


@pytest.fixture
def listener(tmp_path):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    path = str(tmp_path / "notify")
    s.bind(path)
    s.settimeout(5)
    yield s, path
    s.close()


def test_unset_notify_socket_is_a_noop(monkeypatch):
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert systemd.sd_notify_ready() == 0


def test_ready_is_sent_to_a_path_socket_and_the_variable_is_dropped(monkeypatch, listener):
    s, path = listener
    monkeypatch.setenv("NOTIFY_SOCKET", path)
    assert systemd.sd_notify_ready() == 1
    assert s.recv(100) == b"READY=1"
    assert "NOTIFY_SOCKET" not in os.environ


def test_abstract_socket_name_starting_with_at(monkeypatch):
    name = f"oxsd-test-{os.getpid()}"
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind(b"\0" + name.encode())
    s.settimeout(5)
    try:
        monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
        assert systemd.sd_notify(False, "READY=1") == 1
        assert s.recv(100) == b"READY=1"
        assert os.environ["NOTIFY_SOCKET"] == "@" + name  # kept when not asked to unset
    finally:
        s.close()


def test_relative_address_is_not_supported(monkeypatch):
    monkeypatch.setenv("NOTIFY_SOCKET", "relative/sock")
    assert systemd.sd_notify(False, "READY=1") == -errno.EAFNOSUPPORT


def test_too_long_address_is_refused(monkeypatch):
    monkeypatch.setenv("NOTIFY_SOCKET", "/" + "x" * 200)
    assert systemd.sd_notify(False, "READY=1") == -errno.E2BIG


def test_missing_listener_gives_a_negative_errno_not_an_exception(monkeypatch, tmp_path):
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "nobody"))
    assert systemd.sd_notify_ready() == -errno.ENOENT
    assert "NOTIFY_SOCKET" not in os.environ


def test_empty_message_is_invalid(monkeypatch, listener):
    monkeypatch.setenv("NOTIFY_SOCKET", listener[1])
    assert systemd.sd_notify(False, "") == -errno.EINVAL


def test_sd_booted_checks_for_the_systemd_run_directory(tmp_path):
    assert systemd.sd_booted(str(tmp_path))
    assert not systemd.sd_booted(str(tmp_path / "missing"))
    (tmp_path / "file").write_text("")
    assert not systemd.sd_booted(str(tmp_path / "file"))
