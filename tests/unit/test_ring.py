"""Shared ring page (ring.py): layout, index arithmetic, sanity checks, reconnect."""
from __future__ import annotations

import mmap
import struct

import pytest

from oxsd import ring as ring_mod
from oxsd.ring import (BadConnection, Reconnect, Ring, XENSTORE_RING_SIZE)

M32 = 0xFFFFFFFF
OFFS = dict(req_cons=2048, req_prod=2052, rsp_cons=2056, rsp_prod=2060,
            server_features=2064, connection=2068, error=2072, evtchn_port=2076)


class Page:
    """The guest's view of a bytearray-backed page (independent of Ring's code)."""

    def __init__(self) -> None:
        self.buf = bytearray(4096)

    def get(self, name: str) -> int:
        return struct.unpack_from("<I", self.buf, OFFS[name])[0]

    def set(self, name: str, value: int) -> None:
        struct.pack_into("<I", self.buf, OFFS[name], value & M32)

    def put_req(self, data: bytes) -> None:
        """Append request bytes at req_prod (with wrap) and publish them."""
        prod = self.get("req_prod")
        for i, b in enumerate(data):
            self.buf[(prod + i) % 1024] = b
        self.set("req_prod", prod + len(data))

    def rsp_bytes(self, start: int, n: int) -> bytes:
        return bytes(self.buf[1024 + (start + i) % 1024] for i in range(n))


@pytest.fixture
def page() -> Page:
    return Page()


@pytest.fixture
def ring(page: Page) -> Ring:
    return Ring(page.buf)


def test_read_of_empty_ring_returns_nothing(ring, page):
    assert ring.read(16) == b""
    assert page.get("req_cons") == 0


def test_read_takes_at_most_n_and_advances_req_cons(ring, page):
    page.put_req(b"0123456789")
    assert ring.read(4) == b"0123"
    assert page.get("req_cons") == 4
    assert ring.read(100) == b"456789"
    assert page.get("req_cons") == 10


def test_read_wraps_around_the_end_of_req(ring, page):
    page.set("req_cons", 1020)
    page.set("req_prod", 1020)
    page.put_req(b"abcdefgh")
    assert ring.read(8) == b"abcdefgh"
    assert page.get("req_cons") == 1028


def test_indexes_wrap_modulo_2_32(ring, page):
    page.set("req_cons", M32 - 3)
    page.set("req_prod", M32 - 3)
    page.put_req(b"12345678")  # req_prod wraps to 4
    assert page.get("req_prod") == 4
    assert ring.read(8) == b"12345678"
    assert page.get("req_cons") == 4


def test_read_of_a_full_ring_is_allowed(ring, page):
    page.set("req_prod", 1024)
    assert len(ring.read(4096)) == 1024


@pytest.mark.parametrize("cons,prod", [(0, 1025), (10, 5), (0, M32)])
def test_read_with_more_than_1024_in_flight_is_bad_connection(ring, page, cons, prod):
    page.set("req_cons", cons)
    page.set("req_prod", prod)
    with pytest.raises(BadConnection, match="^bad connection$"):
        ring.read(16)
    assert page.get("req_cons") == cons


def test_read_raises_reconnect_before_checking_indexes(ring, page):
    page.set("req_prod", 5000)  # also bad
    page.set("connection", 1)
    with pytest.raises(Reconnect):
        ring.read(16)


# -- read_packet: a whole request in one step ----------------------------------

def hdr(ty: int, rid: int, tid: int, length: int) -> bytes:
    return struct.pack("<IIII", ty, rid, tid, length)


def test_read_packet_takes_header_and_body_with_one_index_update(ring, page):
    page.put_req(hdr(2, 7, 3, 4) + b"/ab\0" + hdr(2, 8, 0, 2) + b"/\0")
    assert ring.read_packet() == (2, 7, 3, b"/ab\0")
    assert page.get("req_cons") == 20  # exactly the packet, not the next one
    assert ring.read_packet() == (2, 8, 0, b"/\0")
    assert page.get("req_cons") == 38
    assert ring.read_packet() == 0


def test_read_packet_leaves_a_packet_whose_body_is_not_all_there(ring, page):
    page.put_req(hdr(11, 1, 0, 10) + b"12345")
    assert ring.read_packet() == 21  # bytes waiting; nothing consumed
    assert page.get("req_cons") == 0
    page.put_req(b"67890")
    assert ring.read_packet() == (11, 1, 0, b"1234567890")


def test_read_packet_leaves_a_lone_or_partial_header(ring, page):
    page.put_req(hdr(2, 1, 0, 3)[:9])
    assert ring.read_packet() == 9
    page.put_req(hdr(2, 1, 0, 3)[9:])
    assert ring.read_packet() == 16
    assert page.get("req_cons") == 0


def test_read_packet_leaves_a_zero_length_packet_to_the_byte_wise_path(ring, page):
    page.put_req(hdr(21, 1, 0, 0) + hdr(2, 2, 0, 2) + b"/\0")
    assert ring.read_packet() == 34  # the 4.17 header step must still happen
    assert page.get("req_cons") == 0


@pytest.mark.parametrize("length", [1009, 5000, M32])
def test_read_packet_leaves_a_length_that_cannot_be_in_the_ring(ring, page, length):
    page.put_req(hdr(11, 1, 0, length) + b"z" * 1008)  # the ring is full
    assert ring.read_packet() == 1024
    assert page.get("req_cons") == 0


@pytest.mark.parametrize("start", [1000, 1010, 1017, 1023])
def test_read_packet_across_the_end_of_req(ring, page, start):
    page.set("req_cons", start)
    page.set("req_prod", start)
    body = bytes(range(40))
    page.put_req(hdr(11, 5, 1, len(body)) + body)  # header and/or body wrap
    assert ring.read_packet() == (11, 5, 1, body)
    assert page.get("req_cons") == start + 56


def test_read_packet_across_2_32(ring, page):
    page.set("req_cons", M32 - 5)
    page.set("req_prod", M32 - 5)
    page.put_req(hdr(2, 9, 0, 3) + b"/a\0")
    assert ring.read_packet() == (2, 9, 0, b"/a\0")
    assert page.get("req_cons") == 13


def test_read_packet_checks_connection_then_indexes_like_read(ring, page):
    page.set("req_prod", 2000)
    with pytest.raises(BadConnection):
        ring.read_packet()
    page.set("connection", 1)
    with pytest.raises(Reconnect):
        ring.read_packet()
    assert page.get("req_cons") == 0
    page.buf.extend(b"x")  # no view left on the page after either error


def test_write_advances_rsp_prod_and_copies(ring, page):
    assert ring.write(b"hello") == 5
    assert page.get("rsp_prod") == 5
    assert page.rsp_bytes(0, 5) == b"hello"


def test_write_wraps_around_the_end_of_rsp(ring, page):
    page.set("rsp_cons", 1020)
    page.set("rsp_prod", 1020)
    assert ring.write(memoryview(b"ABCDEFGH")) == 8
    assert page.rsp_bytes(1020, 8) == b"ABCDEFGH"
    assert page.buf[1024:1028] == b"EFGH"
    assert page.get("rsp_prod") == 1028


def test_write_is_partial_when_space_is_short_and_zero_when_full(ring, page):
    page.set("rsp_prod", 1020)  # rsp_cons 0: 4 bytes free
    assert ring.write(b"0123456789") == 4
    assert page.get("rsp_prod") == 1024
    assert ring.write(b"more") == 0
    assert page.get("rsp_prod") == 1024


def test_write_across_2_32_wrap(ring, page):
    page.set("rsp_cons", M32 - 1)
    page.set("rsp_prod", M32 - 1)
    assert ring.write(b"wxyz") == 4
    assert page.get("rsp_prod") == 2
    assert page.rsp_bytes(M32 - 1, 4) == b"wxyz"


@pytest.mark.parametrize("cons,prod", [(0, 1025), (7, 6)])
def test_write_with_more_than_1024_in_flight_is_bad_connection(ring, page, cons, prod):
    page.set("rsp_cons", cons)
    page.set("rsp_prod", prod)
    with pytest.raises(BadConnection):
        ring.write(b"x")
    assert page.get("rsp_prod") == prod


def test_write_raises_reconnect_when_guest_requests_it(ring, page):
    page.set("connection", 1)
    with pytest.raises(Reconnect):
        ring.write(b"x")
    assert page.get("rsp_prod") == 0


def test_reconnect_zeroes_indexes_fills_rings_and_reconnects(ring, page):
    for name, v in (("req_cons", 3), ("req_prod", 9), ("rsp_cons", 11), ("rsp_prod", 12),
                    ("server_features", 1), ("connection", 1), ("error", 2),
                    ("evtchn_port", 77)):
        page.set(name, v)
    ring.reconnect()
    assert bytes(page.buf[:2048]) == b"\xff" * 2048
    assert [page.get(n) for n in ("req_cons", "req_prod", "rsp_cons", "rsp_prod",
                                  "connection")] == [0, 0, 0, 0, 0]
    # Fields reconnect does not own are left alone.
    assert (page.get("server_features"), page.get("error"), page.get("evtchn_port")) == (1, 2, 77)


def test_server_features_field_is_overwritten_whole(ring, page):
    page.set("server_features", 0xF0)
    ring.set_server_features(1)
    assert page.get("server_features") == 1
    assert ring.get_server_features() == 1


def test_close_unmaps_an_mmap_page():
    mm = mmap.mmap(-1, 4096)
    ring = Ring(mm)
    ring.write(b"x")
    ring.close()
    assert mm.closed and ring.closed
    with pytest.raises(ValueError):
        ring.read(1)


def test_owner_may_unmap_the_page_while_the_ring_exists():
    # Domains.cleanup unmaps the page before Connections.del_domain closes the Xb.
    mm = mmap.mmap(-1, 4096)
    ring = Ring(mm)
    ring.write(b"x")
    ring.read(1)
    mm.close()  # no BufferError: the Ring keeps no view between calls
    with pytest.raises(ValueError):
        ring.write(b"y")
    ring.close()  # idempotent
    assert ring.closed


def test_ring_errors_leave_no_view_on_the_page(page):
    ring = Ring(page.buf)
    page.set("req_prod", 5000)
    with pytest.raises(BadConnection) as exc:
        ring.read(1)
    page.set("connection", 1)
    with pytest.raises(Reconnect) as exc2:
        ring.write(b"x")
    # Even with the tracebacks alive, the bytearray is not exported any more.
    assert exc.value and exc2.value
    page.buf.extend(b"x")


def test_too_small_or_readonly_buffer_is_refused():
    with pytest.raises(ValueError):
        Ring(bytearray(2048))
    with pytest.raises((ValueError, TypeError)):
        Ring(bytes(4096))


def test_fields_are_native_uint32_at_the_xs_wire_offsets(ring, page):
    for pos, name in enumerate(("req_cons", "req_prod", "rsp_cons", "rsp_prod",
                                "server_features", "connection", "error", "evtchn_port")):
        page.set(name, 0x01020304 + pos)
        assert ring.field(pos) == 0x01020304 + pos
    assert XENSTORE_RING_SIZE == 1024


@pytest.mark.parametrize("machine", ["x86_64", "AMD64", "i686"])
def test_x86_hosts_may_serve_rings(machine):
    ring_mod.require_supported_host(machine)


@pytest.mark.parametrize("machine", ["aarch64", "arm64", "armv7l", "ppc64le", "riscv64"])
def test_weakly_ordered_hosts_are_refused_with_the_reason(machine):
    """No barriers in Python: on these CPUs the index/data ordering would not hold."""
    with pytest.raises(ring_mod.UnsupportedHost, match=f"cannot serve xenstore rings on '{machine}'"):
        ring_mod.require_supported_host(machine)
