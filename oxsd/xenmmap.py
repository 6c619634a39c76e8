"""Mapped pages (port of libs/mmap) and the Linux foreign/grant mapping devices.

A mapped page is an `MmapInterface`: an `mmap.mmap` (so it supports the
buffer protocol, slicing and `memoryview(page).cast('I')` for single aligned
32-bit ring-index accesses) whose `close()`/`unmap()` also undoes what the
mapping device needs undone.  As with any mmap, `close()` raises BufferError
while memoryviews of the page are alive: release them first.

Mapping sources:

* `map_fd` / `map_file`: a plain shared mapping of a file (dom0's
  `/proc/xen/xsd_kva`, the simulated frames);
* `PrivcmdMapper`: foreign mapping of a guest frame through
  `/dev/xen/privcmd` and `IOCTL_PRIVCMD_MMAPBATCH_V2` (what
  xc_map_foreign_range / libxenforeignmemory do on Linux);
* `GntdevMapper`: grant mapping through `/dev/xen/gntdev`
  (`IOCTL_GNTDEV_MAP_GRANT_REF`, then mmap at the returned offset;
  libxengnttab's Linux backend).
"""
from __future__ import annotations

import ctypes
import enum
import errno
import fcntl
import functools
import mmap
import os
import stat
import struct
from typing import Callable, Optional

__all__ = [
    "Prot", "MmapInterface", "getpagesize", "map_fd", "map_file",
    "PrivcmdMapper", "GntdevMapper",
    "IOCTL_PRIVCMD_MMAPBATCH_V2", "IOCTL_GNTDEV_MAP_GRANT_REF", "IOCTL_GNTDEV_UNMAP_GRANT_REF",
]


class Prot(enum.Enum):
    """Xenmmap.mmap_prot_flag."""
    RDONLY = mmap.PROT_READ
    WRONLY = mmap.PROT_WRITE
    RDWR = mmap.PROT_READ | mmap.PROT_WRITE


def getpagesize() -> int:
    return mmap.PAGESIZE


class MmapInterface(mmap.mmap):
    """A mapped region; `unmap()` (= `close()`) munmaps it, then runs the device's release hook."""

    _release: Optional[Callable[[], None]] = None

    def set_release(self, release: Callable[[], None]) -> None:
        self._release = release

    def close(self) -> None:
        if self.closed:
            return
        super().close()
        release, self._release = self._release, None
        if release is not None:
            release()

    unmap = close


# -- raw mmap(2) -------------------------------------------------------------

_MAP_FIXED = 0x10  # Linux; not exported by the mmap module
_MAP_FAILED = ctypes.c_void_p(-1).value


@functools.lru_cache(maxsize=None)
def _libc() -> ctypes.CDLL:
    lib = ctypes.CDLL(None, use_errno=True)
    lib.mmap.restype = ctypes.c_void_p
    lib.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int,
                         ctypes.c_int, ctypes.c_long]
    return lib


def address_of(mem: mmap.mmap) -> int:
    """The start address of a writable mapping (for ioctls that take a virtual address)."""
    anchor = ctypes.c_char.from_buffer(mem)
    try:
        return ctypes.addressof(anchor)
    finally:
        del anchor  # drops the buffer export so the mmap can be closed later


def _map_fixed(fd: int, length: int, prot: Prot, flags: int, offset: int) -> MmapInterface:
    """mmap(2) `fd` into a fresh MmapInterface without keeping an fd open.

    Reserve an anonymous mapping of the right length, then replace it in
    place (MAP_FIXED) with the mapping of `fd`; the mmap object unmaps it on
    close.  Compared with mmap.mmap(fd, ...) this keeps no dup of the fd (one
    per guest page otherwise), and it maps regular files whose st_size says
    0 (xenfs's /proc/xen/xsd_kva), which mmap.mmap refuses.
    """
    mem = MmapInterface(-1, length, mmap.MAP_PRIVATE)  # placeholder pages, replaced below
    addr = address_of(mem)
    r = _libc().mmap(addr, length, prot.value, flags | _MAP_FIXED, fd, offset)
    if r is None or r == _MAP_FAILED or r != addr:
        err = ctypes.get_errno() or errno.EINVAL
        mem.close()
        raise OSError(err, os.strerror(err))
    return mem


def map_fd(fd: int, length: int, offset: int = 0, prot: Prot = Prot.RDWR,
           shared: bool = True) -> MmapInterface:
    """Xenmmap.mmap: map `length` bytes of `fd` at `offset`; the fd may be closed afterwards."""
    flags = mmap.MAP_SHARED if shared else mmap.MAP_PRIVATE
    st = os.fstat(fd)
    if stat.S_ISREG(st.st_mode) and 0 < st.st_size < offset + length:
        # past EOF would be SIGBUS on access; size 0 is xenfs's "unknown"
        raise OSError(errno.EINVAL, "file shorter than the mapping")
    if prot is not Prot.RDWR:
        # the anonymous reservation is writable; keep mmap's own access checks
        access = mmap.ACCESS_READ if prot is Prot.RDONLY else mmap.ACCESS_WRITE
        return MmapInterface(fd, length, access=access, offset=offset)
    return _map_fixed(fd, length, prot, flags, offset)


def map_file(path: str, length: Optional[int] = None) -> MmapInterface:
    """Open `path` O_RDWR, map one page (or `length`) shared read-write at 0, close the fd.

    This is how oxenstored maps dom0's ring (`xenstored-kva`).
    """
    fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
    try:
        return map_fd(fd, length or getpagesize())
    finally:
        os.close(fd)


def _ioc(direction: int, kind: str, nr: int, size: int) -> int:
    return (direction << 30) | (size << 16) | (ord(kind) << 8) | nr


# -- privcmd (include/uapi/xen/privcmd.h) -------------------------------------

# struct privcmd_mmapbatch_v2 { unsigned int num; domid_t dom; __u64 addr;
#   const xen_pfn_t *arr; int *err; } with the C compiler's native alignment.
_MMAPBATCH_V2 = struct.Struct("@IHQPP")
IOCTL_PRIVCMD_MMAPBATCH_V2 = _ioc(0, "P", 4, _MMAPBATCH_V2.size)
_XEN_PFN = ctypes.c_ulong  # xen_pfn_t on x86 and arm64
PRIVCMD_DEVICES = ("/dev/xen/privcmd", "/proc/xen/privcmd")


class PrivcmdMapper:
    """Foreign mappings of guest frames (xc_map_foreign_range) through privcmd."""

    def __init__(self, fd: int) -> None:
        self.fd = fd

    @classmethod
    def open(cls, devices: tuple[str, ...] = PRIVCMD_DEVICES) -> "PrivcmdMapper":
        last: Optional[OSError] = None
        for dev in devices:
            try:
                return cls(os.open(dev, os.O_RDWR | os.O_CLOEXEC))
            except OSError as e:
                last = e
        assert last is not None
        raise last

    def map_foreign_range(self, domid: int, size: int, mfn: int,
                          prot: Prot = Prot.RDWR) -> MmapInterface:
        """Map `size` bytes (whole pages) of `domid` starting at frame `mfn`."""
        page = getpagesize()
        npages = max(1, -(-size // page))
        mem = map_fd(self.fd, npages * page, 0, prot)
        try:
            frames = (_XEN_PFN * npages)(*range(mfn, mfn + npages))
            errs = (ctypes.c_int * npages)()
            arg = bytearray(_MMAPBATCH_V2.pack(npages, domid, address_of(mem),
                                               ctypes.addressof(frames), ctypes.addressof(errs)))
            fcntl.ioctl(self.fd, IOCTL_PRIVCMD_MMAPBATCH_V2, arg, True)
            bad = next((e for e in errs if e), 0)
            if bad:
                raise OSError(-bad if bad < 0 else bad, "privcmd: frame not mapped")
        except BaseException:
            mem.close()
            raise
        return mem

    def close(self) -> None:
        if self.fd >= 0:
            fd, self.fd = self.fd, -1
            os.close(fd)


# -- gntdev (include/uapi/xen/gntdev.h) ---------------------------------------

# struct ioctl_gntdev_map_grant_ref { __u32 count; __u32 pad; __u64 index;
#   struct { __u32 domid; __u32 ref; } refs[1]; }
_MAP_GRANT_REF = struct.Struct("=IIQII")
# struct ioctl_gntdev_unmap_grant_ref { __u64 index; __u32 count; __u32 pad; }
_UNMAP_GRANT_REF = struct.Struct("=QII")
IOCTL_GNTDEV_MAP_GRANT_REF = _ioc(0, "G", 0, _MAP_GRANT_REF.size)
IOCTL_GNTDEV_UNMAP_GRANT_REF = _ioc(0, "G", 1, _UNMAP_GRANT_REF.size)
GNTDEV_DEVICE = "/dev/xen/gntdev"


class GntdevMapper:
    """Grant mappings (xengnttab_map_grant_ref) through gntdev."""

    def __init__(self, fd: int) -> None:
        self.fd = fd

    @classmethod
    def open(cls, device: str = GNTDEV_DEVICE) -> "GntdevMapper":
        return cls(os.open(device, os.O_RDWR | os.O_CLOEXEC))

    def map_grant_ref(self, domid: int, ref: int, prot: Prot = Prot.RDWR) -> MmapInterface:
        arg = bytearray(_MAP_GRANT_REF.pack(1, 0, 0, domid, ref))
        fcntl.ioctl(self.fd, IOCTL_GNTDEV_MAP_GRANT_REF, arg, True)
        index = _MAP_GRANT_REF.unpack(arg)[2]
        try:
            mem = map_fd(self.fd, getpagesize(), index, prot)
        except BaseException:
            self._unmap_grant_ref(index)
            raise
        # As libxengnttab: munmap first, then drop the grant from gntdev's table.
        mem.set_release(lambda: self._unmap_grant_ref(index))
        return mem

    def _unmap_grant_ref(self, index: int) -> None:
        if self.fd < 0:
            return
        try:
            fcntl.ioctl(self.fd, IOCTL_GNTDEV_UNMAP_GRANT_REF,
                        bytearray(_UNMAP_GRANT_REF.pack(index, 1, 0)), True)
        except OSError:
            pass  # nothing useful to do: the page is unmapped from our address space

    def close(self) -> None:
        if self.fd >= 0:
            fd, self.fd = self.fd, -1
            os.close(fd)
