"""oxsd.xenmmap: mapped pages, privcmd foreign maps and gntdev grant maps against the Linux ABI."""
from __future__ import annotations

import ctypes
import errno
import fcntl
import mmap
import os
import struct
from unittest import mock

import pytest

from oxsd import xenmmap
from oxsd.xenmmap import GntdevMapper, MmapInterface, PrivcmdMapper

PAGE = mmap.PAGESIZE
is_64bit = ctypes.sizeof(ctypes.c_void_p) == 8


@pytest.fixture
def page_file(tmp_path):
    """An fd on a 4-page file standing in for a mapping device."""
    path = tmp_path / "dev"
    path.write_bytes(b"".join(bytes([i]) * PAGE for i in range(4)))
    fd = os.open(path, os.O_RDWR)
    yield fd, path
    os.close(fd)


@pytest.mark.skipif(not is_64bit, reason="struct sizes checked for LP64")
def test_ioctl_numbers_match_linux_uapi():
    # _IOC(_IOC_NONE, 'P', 4, sizeof(struct privcmd_mmapbatch_v2) == 32)
    assert xenmmap.IOCTL_PRIVCMD_MMAPBATCH_V2 == 0x00205004
    # _IOC(_IOC_NONE, 'G', 0, 24) and _IOC(_IOC_NONE, 'G', 1, 16)
    assert xenmmap.IOCTL_GNTDEV_MAP_GRANT_REF == 0x00184700
    assert xenmmap.IOCTL_GNTDEV_UNMAP_GRANT_REF == 0x00104701


@pytest.mark.skipif(not is_64bit, reason="struct layout checked for LP64")
def test_privcmd_mmapbatch_v2_layout_and_frame_array(page_file):
    fd, _ = page_file
    seen = {}

    def fake_ioctl(ifd, request, arg, mutate=False):
        assert (ifd, request, mutate) == (fd, 0x00205004, True)
        raw = bytes(arg)
        assert len(raw) == 32
        num, dom = struct.unpack_from("=IH", raw, 0)
        addr, arr, err = struct.unpack_from("=QQQ", raw, 8)
        seen.update(num=num, dom=dom, addr=addr,
                    mfn=ctypes.c_ulong.from_address(arr).value,
                    err=ctypes.c_int.from_address(err).value)
        return 0

    m = PrivcmdMapper(fd)
    with mock.patch.object(fcntl, "ioctl", fake_ioctl):
        page = m.map_foreign_range(7, PAGE, 0xABCDE)
    try:
        assert (seen["num"], seen["dom"], seen["mfn"], seen["err"]) == (1, 7, 0xABCDE, 0)
        assert seen["addr"] == xenmmap.address_of(page)  # the vma the kernel fills
        assert isinstance(page, MmapInterface) and len(page) == PAGE
    finally:
        page.close()


def test_privcmd_per_frame_error_fails_and_unmaps(page_file):
    fd, _ = page_file
    made = []
    real_init = MmapInterface.__new__

    def track(cls, *a, **kw):
        obj = real_init(cls, *a, **kw)
        made.append(obj)
        return obj

    def fake_ioctl(ifd, request, arg, mutate=False):
        err = struct.unpack_from("@IHQPP", bytes(arg))[4]
        ctypes.c_int.from_address(err).value = -errno.EFAULT
        return 0

    with mock.patch.object(fcntl, "ioctl", fake_ioctl), \
            mock.patch.object(MmapInterface, "__new__", track), \
            pytest.raises(OSError) as ei:
        PrivcmdMapper(fd).map_foreign_range(3, PAGE, 1)
    assert ei.value.errno == errno.EFAULT
    assert made and made[0].closed


def test_privcmd_ioctl_failure_propagates_errno(page_file):
    fd, _ = page_file
    with mock.patch.object(fcntl, "ioctl", side_effect=OSError(errno.ESRCH, "x")), \
            pytest.raises(OSError) as ei:
        PrivcmdMapper(fd).map_foreign_range(3, PAGE, 1)
    assert ei.value.errno == errno.ESRCH


def test_gntdev_maps_ref_at_returned_index_and_unmaps_after_munmap(page_file):
    fd, _ = page_file
    calls = []

    def fake_ioctl(ifd, request, arg, mutate=False):
        calls.append((request, bytes(arg)))
        if request == xenmmap.IOCTL_GNTDEV_MAP_GRANT_REF:
            struct.pack_into("=Q", arg, 8, 2 * PAGE)  # the kernel's OUT index
        return 0

    g = GntdevMapper(fd)
    with mock.patch.object(fcntl, "ioctl", fake_ioctl):
        page = g.map_grant_ref(5, 1)
        # struct ioctl_gntdev_map_grant_ref {count=1, pad, index, {domid=5, ref=1}}
        assert calls == [(xenmmap.IOCTL_GNTDEV_MAP_GRANT_REF,
                          struct.pack("=IIQII", 1, 0, 0, 5, 1))]
        assert page[:4] == b"\x02" * 4  # mmap'ed at offset `index`
        page.close()
    # struct ioctl_gntdev_unmap_grant_ref {index, count=1, pad}
    assert calls[1] == (xenmmap.IOCTL_GNTDEV_UNMAP_GRANT_REF,
                        struct.pack("=QII", 2 * PAGE, 1, 0))
    assert page.closed


def test_gntdev_map_failure_raises_without_mapping(page_file):
    fd, _ = page_file
    with mock.patch.object(fcntl, "ioctl", side_effect=OSError(errno.EINVAL, "bad")), \
            pytest.raises(OSError) as ei:
        GntdevMapper(fd).map_grant_ref(5, 1)
    assert ei.value.errno == errno.EINVAL


def test_map_file_is_shared_read_write_and_closes_its_fd(tmp_path):
    path = tmp_path / "kva"
    path.write_bytes(bytes(PAGE))
    before = set(os.listdir("/proc/self/fd"))
    page = xenmmap.map_file(str(path))
    try:
        assert set(os.listdir("/proc/self/fd")) == before
        page[10:13] = b"abc"
        with open(path, "rb") as f:
            assert f.read()[10:13] == b"abc"
    finally:
        page.unmap()


def test_map_fd_accepts_a_regular_file_whose_size_reads_zero(page_file):
    # xenfs reports st_size 0 for /proc/xen/xsd_kva; mmap.mmap(fd, ...) would refuse it
    fd, _ = page_file
    fake_stat = os.stat_result((0o100600, 0, 0, 1, 0, 0, 0, 0, 0, 0))
    with mock.patch.object(os, "fstat", return_value=fake_stat):
        page = xenmmap.map_fd(fd, PAGE)
    assert page[:2] == b"\x00\x00"
    page.close()


def test_map_fd_gives_a_shared_mapping_at_the_offset_holding_no_fd(page_file):
    fd, path = page_file
    before = set(os.listdir("/proc/self/fd"))
    page = xenmmap.map_fd(fd, PAGE, PAGE)
    assert set(os.listdir("/proc/self/fd")) == before
    try:
        assert page[:3] == b"\x01\x01\x01"  # the file's second page, not anonymous zeroes
        page[0:3] = b"xyz"
        with open(path, "rb") as f:
            assert f.read()[PAGE:PAGE + 3] == b"xyz"
        words = memoryview(page).cast("I")
        words[1] = 0xDEADBEEF
        words.release()
        with open(path, "rb") as f:
            assert struct.unpack_from("=I", f.read(), PAGE + 4)[0] == 0xDEADBEEF
    finally:
        page.close()


def test_too_short_regular_file_is_einval(tmp_path):
    path = tmp_path / "short"
    path.write_bytes(b"x" * 100)
    fd = os.open(path, os.O_RDWR)
    try:
        with pytest.raises(OSError) as ei:
            xenmmap.map_fd(fd, PAGE)
        assert ei.value.errno == errno.EINVAL
    finally:
        os.close(fd)


def test_close_runs_release_hook_once():
    page = MmapInterface(-1, PAGE)
    hook = mock.Mock()
    page.set_release(hook)
    page.close()
    page.unmap()
    hook.assert_called_once_with()


def test_address_of_leaves_no_buffer_export():
    page = MmapInterface(-1, PAGE)
    assert xenmmap.address_of(page) != 0
    page.close()  # would raise BufferError if the ctypes anchor were still alive
    assert page.closed


def test_getpagesize_is_the_system_page_size():
    assert xenmmap.getpagesize() == os.sysconf("SC_PAGE_SIZE")
