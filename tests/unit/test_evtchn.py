"""oxsd.evtchn: the /dev/xen/evtchn backend against the Linux ABI (include/uapi/xen/evtchn.h)."""
from __future__ import annotations

import errno
import fcntl
import os
import struct
from unittest import mock

import pytest

from oxsd import evtchn
from oxsd.evtchn import EvtchnError, XenEventChannel

LE = struct.pack("=I", 1) == b"\x01\0\0\0"


def test_ioctl_numbers_match_linux_uapi():
    # _IOC(_IOC_NONE, 'E', nr, size) = size << 16 | 'E' << 8 | nr
    assert evtchn.IOCTL_EVTCHN_BIND_VIRQ == 0x00044500
    assert evtchn.IOCTL_EVTCHN_BIND_INTERDOMAIN == 0x00084501
    assert evtchn.IOCTL_EVTCHN_BIND_UNBOUND_PORT == 0x00044502
    assert evtchn.IOCTL_EVTCHN_UNBIND == 0x00044503
    assert evtchn.IOCTL_EVTCHN_NOTIFY == 0x00044504
    assert evtchn.IOCTL_EVTCHN_RESET == 0x00004505
    assert evtchn.IOCTL_EVTCHN_RESTRICT_DOMID == 0x00024506
    assert evtchn.VIRQ_DOM_EXC == 3


@pytest.fixture
def pipe_handle():
    """A handle whose fd is the read end of a pipe: read(2) semantics without a device."""
    r, w = os.pipe()
    h = XenEventChannel(r)
    yield h, w
    h.close()
    os.close(w)


class _IoctlRecorder:
    def __init__(self, ret=0, exc=None):
        self.calls = []
        self.ret = ret
        self.exc = exc

    def __call__(self, fd, request, arg, mutate=False):
        self.calls.append((fd, request, bytes(arg) if not isinstance(arg, int) else arg,
                           type(arg), mutate))
        if self.exc:
            raise self.exc
        return self.ret


@pytest.mark.skipif(not LE, reason="byte layouts written for little-endian hosts")
def test_bind_interdomain_passes_domid_then_port_and_returns_ioctl_value(pipe_handle):
    h, _ = pipe_handle
    rec = _IoctlRecorder(ret=17)
    with mock.patch.object(fcntl, "ioctl", rec):
        assert h.bind_interdomain(5, 0x0102) == 17
    (fd, req, arg, argtype, mutate), = rec.calls
    assert (fd, req) == (h.fd(), 0x00084501)
    assert arg == b"\x05\0\0\0\x02\x01\0\0"
    # a mutable buffer + mutate flag is what makes fcntl.ioctl return the port
    assert argtype is bytearray and mutate is True


@pytest.mark.skipif(not LE, reason="byte layouts written for little-endian hosts")
@pytest.mark.parametrize("call, req, arg", [
    (lambda h: h.bind_virq(3), 0x00044500, b"\x03\0\0\0"),
    (lambda h: h.bind_dom_exc_virq(), 0x00044500, b"\x03\0\0\0"),
    (lambda h: h.bind_unbound_port(7), 0x00044502, b"\x07\0\0\0"),
    (lambda h: h.unbind(9), 0x00044503, b"\x09\0\0\0"),
    (lambda h: h.notify(0x1234), 0x00044504, b"\x34\x12\0\0"),
    (lambda h: h.restrict(0x7ff0), 0x00024506, b"\xf0\x7f"),
])
def test_each_op_sends_its_request_and_struct(pipe_handle, call, req, arg):
    h, _ = pipe_handle
    rec = _IoctlRecorder(ret=4)
    with mock.patch.object(fcntl, "ioctl", rec):
        call(h)
    assert [(c[1], c[2]) for c in rec.calls] == [(req, arg)]


def test_failed_ioctl_raises_evtchn_error_with_errno_and_ocaml_message(pipe_handle):
    h, _ = pipe_handle
    rec = _IoctlRecorder(exc=OSError(errno.EINVAL, "Invalid argument"))
    with mock.patch.object(fcntl, "ioctl", rec), pytest.raises(EvtchnError) as ei:
        h.bind_interdomain(5, 1)
    assert ei.value.errno == errno.EINVAL
    assert "evtchn bind_interdomain failed" in str(ei.value)
    assert isinstance(ei.value, OSError)


def test_pending_reads_one_native_uint32_port(pipe_handle):
    h, w = pipe_handle
    os.write(w, struct.pack("=II", 42, 43))
    assert h.pending() == 42
    assert h.pending() == 43


def test_pending_returns_none_instead_of_blocking_when_nothing_is_queued(pipe_handle):
    h, _ = pipe_handle
    assert fcntl.fcntl(h.fd(), fcntl.F_GETFL) & os.O_NONBLOCK
    assert h.pending() is None


def test_pending_short_read_is_an_error(pipe_handle):
    h, w = pipe_handle
    with mock.patch.object(os, "read", return_value=b"\x01\x00"):
        with pytest.raises(EvtchnError) as ei:
            h.pending()
    assert "evtchn pending failed" in str(ei.value)


def test_unmask_writes_the_port_back_as_uint32():
    r, w = os.pipe()
    h = XenEventChannel(w)  # write end: what unmask writes can be read back
    try:
        h.unmask(77)
        assert os.read(r, 16) == struct.pack("=I", 77)
    finally:
        h.close()
        os.close(r)


def test_unmask_short_write_is_an_error(pipe_handle):
    h, _ = pipe_handle
    with mock.patch.object(os, "write", return_value=2), pytest.raises(EvtchnError):
        h.unmask(1)


def test_open_keeps_fd_across_exec_by_default(tmp_path):
    dev = tmp_path / "evtchn"
    dev.write_bytes(b"")
    h = XenEventChannel.open(device=str(dev))
    try:
        assert os.get_inheritable(h.fd())
        assert fcntl.fcntl(h.fd(), fcntl.F_GETFL) & os.O_ACCMODE == os.O_RDWR
    finally:
        h.close()
    h = XenEventChannel.open(cloexec=True, device=str(dev))
    try:
        assert not os.get_inheritable(h.fd())
    finally:
        h.close()


def test_open_missing_device_is_open_failed(tmp_path):
    with pytest.raises(EvtchnError) as ei:
        XenEventChannel.open(device=str(tmp_path / "nope"))
    assert ei.value.errno == errno.ENOENT
    assert "evtchn open failed" in str(ei.value)


def test_fdopen_wraps_an_inherited_fd_and_rejects_a_closed_one():
    r, w = os.pipe()
    h = XenEventChannel.fdopen(r)
    assert h.fd() == r
    h.close()
    os.close(w)
    with pytest.raises(EvtchnError) as ei:
        XenEventChannel.fdopen(r)
    assert ei.value.errno == errno.EBADF


def test_close_releases_the_fd_once(pipe_handle):
    h, _ = pipe_handle
    fd = h.fd()
    h.close()
    with pytest.raises(OSError):
        os.fstat(fd)
    h.close()  # second close is harmless


def test_evtchn_error_prints_as_the_stubs_failure():
    from oxsd.printexc import ocaml_exn_str
    assert ocaml_exn_str(EvtchnError.of("bind_interdomain", errno.EINVAL)) == \
        'Failure("evtchn bind_interdomain failed")'
