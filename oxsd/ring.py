"""The shared xenstore ring page (port of libs/xb/xs_ring.ml and xs_ring_stubs.c).

Layout of `struct xenstore_domain_interface` (xs_wire.h), one 4 KiB page:

    req[1024] @0        guest -> daemon bytes
    rsp[1024] @1024     daemon -> guest bytes
    req_cons  @2048     written by us        req_prod @2052  written by the guest
    rsp_cons  @2056     written by the guest rsp_prod @2060  written by us
    server_features @2064, connection @2068, error @2072, evtchn_port @2076

Indexes are uint32 in host byte order and run freely modulo 2^32; stream
byte i lives at i mod 1024.  The guest is untrusted: it may write anything
into any field at any time, so every index read is validated (the `> 1024`
checks below) and a failed check raises `BadConnection`, which the caller
turns into "bad client" (connection.ml: mark_as_bad).  The copy per call is at most
1024 bytes, so a call is O(1024) whatever the guest does.

Memory ordering.  The C stubs read (volatile) the indexes and `connection`,
issue a full barrier, copy, issue another barrier and only then publish the
new index.  The barriers make sure (1) the bytes are read only after the
producer index that covers them, and (2) our copy is complete before the
other side can see the updated index and reuse the space.  Here:

* every index is one aligned 32-bit load or store, through
  `compat.uint32_words`: on CPython element access on a
  `memoryview.cast('I')` is a fixed-size memcpy, compiled to a single
  `mov`; on PyPy that memoryview stores bytes one at a time, so the view
  there is a cffi `uint32_t[]`, whose item accesses the JIT emits as one
  4-byte `getarrayitem_raw`/`setarrayitem_raw` (a single `mov`) and the
  interpreter as one typed C access.  `struct.pack_into('<I')` assembles
  bytes one at a time too, and the guest could observe a torn index (say
  0x00ff -> 0x0000 -> 0x0100), which would look like a broken ring;
* the compiler cannot move those accesses across each other: on CPython
  each is a separate C call from the interpreter loop; PyPy's JIT keeps
  raw-memory loads and stores in program order and does not merge or drop
  them (a raw array item may alias anything);
* on x86 (TSO), loads are not reordered with other loads, and stores are not
  reordered with other stores or with earlier loads, which is exactly (1) and
  (2); a full fence would only add store->load ordering, which the ring
  protocol does not need (the event channel notification, a syscall, orders
  the rest);
* the GIL plays no part: the other side is another domain (or the simulator,
  another process); it only means that no other thread of ours touches the
  page, and the daemon is single-threaded anyway.

On a weakly ordered CPU (Arm) this code would need real barriers, which
Python does not expose, so the daemon refuses to open a hypervisor interface
on any other architecture (`require_supported_host`, called at start-up).
"""
from __future__ import annotations

import mmap
import platform
import struct
import sys
from typing import Tuple, Union

from .compat import uint32_words

__all__ = [
    "XENSTORE_RING_SIZE",
    "XENSTORE_CONNECTED",
    "XENSTORE_RECONNECT",
    "XENSTORE_SERVER_FEATURE_RECONNECTION",
    "XENSTORE_SERVER_FEATURE_ERROR",
    "Reconnect",
    "BadConnection",
    "Ring",
    "UnsupportedHost",
    "require_supported_host",
]

XENSTORE_RING_SIZE = 1024
XENSTORE_CONNECTED = 0
XENSTORE_RECONNECT = 1
XENSTORE_SERVER_FEATURE_RECONNECTION = 1
XENSTORE_SERVER_FEATURE_ERROR = 2

OFF_REQ = 0
OFF_RSP = 1024
OFF_IDX = 2048  # start of the uint32 fields
INTERFACE_SIZE = 2080  # through evtchn_port

# Positions in the uint32 view starting at OFF_IDX.
REQ_CONS = 0
REQ_PROD = 1
RSP_CONS = 2
RSP_PROD = 3
SERVER_FEATURES = 4
CONNECTION = 5
ERROR = 6
EVTCHN_PORT = 7

# The same positions in a uint32 view of the whole page (used on the hot path).
_I = OFF_IDX // 4
_REQ_CONS = _I + REQ_CONS
_REQ_PROD = _I + REQ_PROD
_RSP_CONS = _I + RSP_CONS
_RSP_PROD = _I + RSP_PROD
_CONNECTION = _I + CONNECTION

_MASK32 = 0xFFFFFFFF
_SIZE = XENSTORE_RING_SIZE
# xs_wire.h's xsd_sockmsg (type, req_id, tx_id, len), for read_packet.
_HEADER = struct.Struct("<IIII")
_HEADER_SIZE = 16
_unpack_header = _HEADER.unpack
_unpack_header_from = _HEADER.unpack_from
_INVALID_FILL = b"\xff" * (2 * XENSTORE_RING_SIZE)  # XS_INVALID (0xffff) everywhere

if sys.byteorder != "little":  # pragma: no cover - wire header is '<IIII' elsewhere
    raise ImportError("oxsd assumes a little-endian host")


# x86 in its 64- and 32-bit names (platform.machine): the TSO hosts the above relies on.
TSO_MACHINES = frozenset({"x86_64", "amd64", "i386", "i486", "i586", "i686", "x86"})


class UnsupportedHost(RuntimeError):
    """The ring code cannot be correct on this CPU (no barriers in Python)."""


def require_supported_host(machine: str = "") -> None:
    """Refuse (UnsupportedHost) to serve rings on a CPU that is not x86: there the
    index loads and stores may be reordered with the data copies (see above)."""
    machine = machine or platform.machine()
    if machine.lower() not in TSO_MACHINES:
        raise UnsupportedHost(
            f"oxsd cannot serve xenstore rings on {machine!r}: its ring accesses rely on "
            "x86 memory ordering and this CPU needs memory barriers that Python does not "
            "expose; use oxenstored on this host")


class Reconnect(Exception):
    """The guest set `connection` to RECONNECT (Xb.Reconnect)."""


class BadConnection(Exception):
    """A ring index pair is impossible (more than 1024 bytes in flight).

    oxenstored raises `Failure "bad connection"`; the message is the same.
    """

    def __init__(self, msg: str = "bad connection") -> None:
        super().__init__(msg)

    def ocaml_str(self) -> str:
        """Printexc.to_string of the original's exception."""
        return f'Failure("{self.args[0]}")'


Buffer = Union[bytearray, memoryview, mmap.mmap]  # any writable byte buffer


_CLOSED = memoryview(b"")
_CLOSED.release()  # memoryview(_CLOSED) raises ValueError: what a closed Ring does


class Ring:
    """Daemon side of one xenstore_domain_interface over a writable buffer (mmap or bytearray).

    No view of the buffer is kept between calls: each call takes its own
    `memoryview` and drops it before returning (or explicitly before
    raising).  So whoever owns the mmap may close it at any time (Domain.close
    unmaps the page before the connection is closed) without BufferError; a
    later call on the Ring then raises ValueError.  The cost is ~0.15 us per
    call for the two views.  `close()` closes the buffer if it has a `close`
    (an mmap: Xenmmap.unmap); it is idempotent.
    """

    __slots__ = ("_buf",)

    def __init__(self, buf: Buffer) -> None:
        with memoryview(buf) as page:
            if page.readonly:
                raise ValueError("ring buffer must be writable")
            if (page.nbytes < INTERFACE_SIZE or page.nbytes % 4 or page.ndim != 1
                    or page.itemsize != 1):
                raise ValueError("ring buffer too small or not a byte buffer")
        self._buf = buf

    # -- data path ------------------------------------------------------
    def _open(self, cons_slot: int, prod_slot: int
              ) -> Tuple[memoryview, memoryview, int, int, int]:
        """The page, its uint32 view, one ring's cons and prod, and the bytes between them.

        Both indexes are read once, before the connection field, as
        ml_interface_read/write do.  Raises Reconnect when the guest asked
        for a reconnection and BadConnection when prod - cons is over 1024.
        """
        page = memoryview(self._buf)
        idx = uint32_words(page)  # whole page as uint32: field k is idx[_I + k]
        cons = idx[cons_slot]
        prod = idx[prod_slot]
        if idx[_CONNECTION] != XENSTORE_CONNECTED:
            idx.release()
            page.release()
            raise Reconnect()
        used = (prod - cons) & _MASK32
        if used > _SIZE:
            idx.release()
            page.release()
            raise BadConnection()
        return page, idx, cons, prod, used

    def read(self, n: int) -> bytes:
        """Take up to n request bytes (ml_interface_read); b"" when none are waiting.

        Raises Reconnect when the guest asked for a reconnection, and
        BadConnection when req_prod - req_cons > 1024.
        """
        page, idx, cons, _prod, avail = self._open(_REQ_CONS, _REQ_PROD)
        if avail == 0:
            return b""
        if avail < n:
            n = avail
        start = cons & (_SIZE - 1)  # req[] is at offset 0
        end = start + n
        if end <= _SIZE:
            data = page[start:end].tobytes()
        else:
            data = page[start:_SIZE].tobytes() + page[:end - _SIZE].tobytes()
        # The C code re-reads req_cons for the increment ("+="); so do we.
        idx[_REQ_CONS] = (idx[_REQ_CONS] + n) & _MASK32
        return data

    def read_packet(self) -> Union[Tuple[int, int, int, bytes], int]:
        """Take one whole request at once when it is all in req[]; else how many bytes are there.

        A request is a 16-byte xsd_sockmsg header (type, req_id, tx_id,
        len) and len body bytes.  When req[] holds at least a header and a
        body of 1 <= len bytes, both are taken with one req_cons update and
        returned as (type, req_id, tx_id, body): what two `read` calls of 16
        and len bytes would give.  Otherwise nothing is consumed and the
        number of bytes waiting is returned (0: none), for the caller's
        byte-wise path (a partial packet, a zero-length body, a declared
        length that cannot fit).  Reconnect / BadConnection as `read`.
        """
        page, idx, cons, _prod, avail = self._open(_REQ_CONS, _REQ_PROD)
        if avail <= _HEADER_SIZE:
            return avail
        start = cons & (_SIZE - 1)
        if start <= _SIZE - _HEADER_SIZE:
            ty, rid, tid, length = _unpack_header_from(page, start)
        else:  # the header wraps
            ty, rid, tid, length = _unpack_header(
                page[start:_SIZE].tobytes() + page[:start + _HEADER_SIZE - _SIZE].tobytes())
        if length == 0 or length > avail - _HEADER_SIZE:
            return avail
        start = (start + _HEADER_SIZE) & (_SIZE - 1)
        end = start + length
        if end <= _SIZE:
            body = page[start:end].tobytes()
        else:
            body = page[start:_SIZE].tobytes() + page[:end - _SIZE].tobytes()
        idx[_REQ_CONS] = (idx[_REQ_CONS] + _HEADER_SIZE + length) & _MASK32
        return ty, rid, tid, body

    def write(self, data: Union[bytes, bytearray, memoryview]) -> int:
        """Put as much of data as fits into rsp[] (ml_interface_write); bytes written.

        Raises Reconnect when the guest asked for a reconnection, and
        BadConnection when rsp_prod - rsp_cons > 1024.
        """
        page, idx, _cons, prod, used = self._open(_RSP_CONS, _RSP_PROD)
        space = _SIZE - used
        n = len(data)
        if space == 0 or n == 0:
            return 0
        if space < n:
            n = space
        src = data if type(data) is memoryview else memoryview(data)
        start = OFF_RSP + (prod & (_SIZE - 1))
        first = OFF_RSP + _SIZE - start
        if n <= first:
            page[start:start + n] = src[:n]
        else:
            page[start:OFF_RSP + _SIZE] = src[:first]
            page[OFF_RSP:OFF_RSP + n - first] = src[first:n]
        # Data stores happen before this index store (x86 keeps store order).
        idx[_RSP_PROD] = (idx[_RSP_PROD] + n) & _MASK32
        return n

    # -- control ----------------------------------------------------------
    def set_server_features(self, features: int) -> None:
        """Overwrite the whole server_features field (only RECONNECTION=1 is ever set)."""
        with memoryview(self._buf) as page, uint32_words(page) as idx:
            idx[_I + SERVER_FEATURES] = features & _MASK32

    def get_server_features(self) -> int:
        return self.field(SERVER_FEATURES)

    def set_error(self, error: int) -> None:
        """Write the connection error indicator (protocol level 4.22, XENSTORE_SERVER_FEATURE_ERROR)."""
        with memoryview(self._buf) as page, page.cast("I") as idx:
            idx[_I + ERROR] = error & _MASK32

    def reconnect(self) -> None:
        """Reset the page after a reconnect request (ml_interface_close; Xs_ring.close).

        Zero the four indexes, fill req[] and rsp[] with 0xff (invalid
        packets), then set connection = CONNECTED last, so the guest sees a
        clean ring once it sees the connection back.
        """
        with memoryview(self._buf) as page, uint32_words(page) as idx:
            idx[_RSP_PROD] = 0
            idx[_RSP_CONS] = 0
            idx[_REQ_PROD] = 0
            idx[_REQ_CONS] = 0
            page[OFF_REQ:OFF_RSP + _SIZE] = _INVALID_FILL
            idx[_CONNECTION] = XENSTORE_CONNECTED

    def close(self) -> None:
        """Unmap the page (Xenmmap.unmap) when it can be closed; later calls raise ValueError."""
        buf, self._buf = self._buf, _CLOSED
        close = getattr(buf, "close", None)
        if close is not None and buf is not _CLOSED:
            close()

    # -- inspection (tests, debugging) --------------------------------
    def field(self, pos: int) -> int:
        """One uint32 field by position (REQ_CONS .. EVTCHN_PORT)."""
        with memoryview(self._buf) as page, uint32_words(page) as idx:
            return idx[_I + pos]

    @property
    def closed(self) -> bool:
        return self._buf is _CLOSED or bool(getattr(self._buf, "closed", False))
