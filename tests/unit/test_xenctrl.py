"""oxsd.xenctrl and oxsd.hypervisor: domain info, xsd_port parsing, the real backend's wiring, oxsd.backend.open_backend."""
from __future__ import annotations

import ctypes
import errno
import struct
from unittest import mock

import pytest

from oxsd import backend, xenctrl
from oxsd.xenctrl import DomainInfo, Error, Libxenctrl, XenHypervisor


# -- DomainInfo -------------------------------------------------------------

def test_domaininfo_decodes_dying_shutdown_and_code_from_flags():
    info = DomainInfo(5, xenctrl.XEN_DOMINF_shutdown | (3 << 16))
    assert (info.shutdown, info.shutdown_code, info.dying, info.running) == (True, 3, False, False)
    info = DomainInfo(5, xenctrl.XEN_DOMINF_dying)
    assert (info.dying, info.shutdown) == (True, False)
    info = DomainInfo(5, xenctrl.XEN_DOMINF_running | (0x1FF << 16))
    assert info.running and info.shutdown_code == 0xFF  # code is 8 bits


# -- xenstored-port parsing (OCaml int_of_string on the raw bytes) ----------

@pytest.mark.parametrize("raw, value", [
    (b"5", 5), (b"+3", 3), (b"-2", -2), (b"1_000", 1000), (b"0x1F", 31), (b"0o17", 15),
    (b"0b101", 5), (b"0u12", 12), (b"-0x1", -1), (b"0x7fffffffffffffff", -1),
    (b"-4611686018427387904", -(1 << 62)), (b"4611686018427387903", (1 << 62) - 1),
    (b"-0x4000000000000000", -(1 << 62)),  # min_int, as OCaml's int_of_string gives it
])
def test_port_file_accepts_ocaml_int_syntax(raw, value):
    assert xenctrl.parse_port_file(raw) == value


@pytest.mark.parametrize("raw", [
    b"5\n", b" 5", b"", b"_1", b"0x", b"12a", b"4611686018427387904",
    b"0x8000000000000000", b"\xff", b"1 2",
])
def test_port_file_rejects_what_int_of_string_rejects(raw):
    with pytest.raises(ValueError):
        xenctrl.parse_port_file(raw)


def test_read_port_file_reads_at_most_20_bytes(tmp_path):
    p = tmp_path / "xsd_port"
    p.write_bytes(b"0" * 20 + b"12345")  # only the zeroes are read
    assert xenctrl.read_port_file(str(p)) == 0
    p.write_bytes(b"7\n")  # the kernel file has no newline; a newline fails as in 4.17
    with pytest.raises(ValueError):
        xenctrl.read_port_file(str(p))


# -- libxenctrl through ctypes ----------------------------------------------

class FakeLib:
    """Stands in for the ctypes CDLL of libxenctrl."""

    def __init__(self, domains):
        self.domains = domains  # domid -> flags
        self.xc_interface_open = mock.Mock(return_value=0x1234)
        self.xc_interface_close = mock.Mock()
        self.xc_domain_getinfolist = mock.Mock(side_effect=self._getinfolist)

    def _getinfolist(self, xch, first, max_domains, buf):
        assert (xch, max_domains) == (0x1234, 1)
        ids = sorted(d for d in self.domains if d >= first)
        if not ids:
            return 0
        raw = struct.pack("=HHI", ids[0], 0, self.domains[ids[0]])
        ctypes.memmove(buf, raw, len(raw))
        return 1


def test_getinfo_reads_domain_and_flags_from_xc_domaininfo():
    lib = FakeLib({3: xenctrl.XEN_DOMINF_shutdown | (4 << 16)})
    info = Libxenctrl(lib).domain_getinfo(3)
    assert (info.domid, info.shutdown, info.shutdown_code) == (3, True, 4)


def test_getinfo_of_missing_domain_raises_even_when_a_later_one_exists():
    lib = FakeLib({7: xenctrl.XEN_DOMINF_running})
    xc = Libxenctrl(lib)
    with pytest.raises(Error):
        xc.domain_getinfo(5)  # the hypercall answers domain 7: the stub's id check
    lib.domains = {}
    with pytest.raises(Error):
        xc.domain_getinfo(5)


def test_interface_open_failure_is_an_error():
    lib = FakeLib({})
    lib.xc_interface_open.return_value = None
    with pytest.raises(Error):
        Libxenctrl(lib)


def test_libxenctrl_close_closes_the_interface_once():
    lib = FakeLib({})
    xc = Libxenctrl(lib)
    xc.close()
    xc.close()
    lib.xc_interface_close.assert_called_once_with(0x1234)


# -- XenHypervisor wiring ---------------------------------------------------

def _hv(**kw):
    xc = mock.Mock(spec=Libxenctrl)
    privcmd = mock.Mock()
    return XenHypervisor(xc, privcmd, **kw), xc, privcmd


def test_map_foreign_maps_one_page_of_the_introduced_mfn():
    hv, _, privcmd = _hv()
    privcmd.map_foreign_range.return_value = "page"
    assert hv.map_foreign(5, 0x1000) == "page"
    privcmd.map_foreign_range.assert_called_once_with(5, hv.page_size, 0x1000)


def test_map_foreign_failure_becomes_xenctrl_error():
    hv, _, privcmd = _hv()
    privcmd.map_foreign_range.side_effect = OSError(errno.EFAULT, "bad mfn")
    with pytest.raises(Error) as ei:
        hv.map_foreign(5, 1)
    assert ei.value.errno == errno.EFAULT


def test_map_grant_uses_the_reserved_xenstore_ref():
    gnt = mock.Mock()
    hv, _, _ = _hv(gntdev=gnt)
    hv.map_grant(9)
    gnt.map_grant_ref.assert_called_once_with(9, xenctrl.GNTTAB_RESERVED_XENSTORE)


def test_map_ring_falls_back_to_foreign_map_when_gntdev_is_missing():
    hv, _, privcmd = _hv()
    privcmd.map_foreign_range.return_value = "foreign"
    with mock.patch.object(xenctrl.GntdevMapper, "open",
                           side_effect=FileNotFoundError(errno.ENOENT, "no gntdev")):
        assert hv.map_ring(5, 0x42) == "foreign"
    privcmd.map_foreign_range.assert_called_once_with(5, hv.page_size, 0x42)


def test_domain_getinfo_goes_to_libxenctrl():
    hv, xc, _ = _hv()
    xc.domain_getinfo.return_value = DomainInfo(4, 0)
    assert hv.domain_getinfo(4).domid == 4


def test_open_backend_without_xen_raises_error():
    with mock.patch.object(xenctrl.PrivcmdMapper, "open",
                           side_effect=FileNotFoundError(errno.ENOENT, "no privcmd")):
        with pytest.raises(Error) as ei:
            backend.open_backend(None)
    assert ei.value.errno == errno.ENOENT


def test_open_backend_with_sim_dir_gives_the_sim_backend(tmp_path):
    from oxsd.sim.hv import SimHypervisor
    (tmp_path / "domains").mkdir()
    hv = backend.open_backend(str(tmp_path), domid=0)
    assert isinstance(hv, SimHypervisor) and isinstance(hv, xenctrl.Hypervisor)


def test_open_backend_on_a_non_sim_dir_fails_like_interface_open(tmp_path):
    with pytest.raises(Error) as ei:
        backend.open_backend(str(tmp_path))
    assert ei.value.errno == errno.ENOENT


def test_open_evtchn_opens_fresh_or_adopts_the_dumped_fd():
    hv, _, _ = _hv()
    with mock.patch.object(xenctrl.XenEventChannel, "open", return_value="fresh") as op, \
            mock.patch.object(xenctrl.XenEventChannel, "fdopen", return_value="restored") as fo:
        assert hv.open_evtchn() == "fresh"
        assert hv.open_evtchn(12) == "restored"
    op.assert_called_once_with(False, "/dev/xen/evtchn")
    fo.assert_called_once_with(12)
