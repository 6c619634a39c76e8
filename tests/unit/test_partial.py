"""Sans-IO packet reassembly (partial.py): clamp, zero-length quirk, to_read."""
from __future__ import annotations

import struct

import pytest

from oxsd.xb.op import Op
from oxsd.xb.packet import Packet
from oxsd.xb.partial import (HEADER_SIZE, XENSTORE_PAYLOAD_MAX, PartialIn, PartialPkt,
                             header_of_bytes, whole_packet)


def hdr(ty: int, rid: int, tid: int, length: int) -> bytes:
    return struct.pack("<IIII", ty, rid, tid, length)


def test_header_fields_are_type_rid_tid_len_in_that_order():
    assert header_of_bytes(hdr(2, 7, 9, 3)) == (9, 7, 2, 3)


def test_header_of_wrong_size_is_refused():
    with pytest.raises(ValueError):
        header_of_bytes(b"\0" * 15)


@pytest.mark.parametrize("declared,used", [(0, 0), (1, 1), (4096, 4096), (4097, 4096),
                                           (0xFFFFFFFF, 4096)])
def test_declared_length_is_clamped_to_4096(declared, used):
    assert PartialPkt.of_bytes(hdr(2, 1, 0, declared)).len == used


def test_unknown_op_code_becomes_invalid():
    assert PartialPkt.of_bytes(hdr(0xFFFF, 1, 0, 0)).ty is Op.INVALID
    assert PartialPkt.of_bytes(hdr(20, 1, 0, 0)).ty is Op.INVALID


def test_header_then_body_gives_the_packet_on_the_body_step():
    p = PartialIn()
    assert p.to_read() == HEADER_SIZE
    assert p.feed(hdr(2, 5, 3, 4)) is None
    assert p.to_read() == 4
    pkt = p.feed(b"a/b\0")
    assert pkt == Packet(3, 5, Op.READ, b"a/b\0")
    assert p.to_read() == HEADER_SIZE and not p.has_partial_input()


def test_zero_length_packet_is_returned_only_by_the_next_step():
    p = PartialIn()
    assert p.feed(hdr(6, 1, 0, 0)) is None  # 4.17: header step yields nothing
    assert p.to_read() == 0
    assert p.has_partial_input()
    assert p.feed(b"") == Packet(0, 1, Op.TRANSACTION_START, b"")
    assert not p.has_partial_input()


def test_header_received_byte_by_byte_counts_down_to_read():
    p = PartialIn()
    h = hdr(1, 2, 0, 2)
    for i in range(HEADER_SIZE):
        assert p.to_read() == HEADER_SIZE - i
        assert p.feed(h[i:i + 1]) is None
        assert p.has_partial_input()
    assert p.to_read() == 2
    assert p.feed(b"/") is None
    assert p.feed(b"\0") == Packet(0, 2, Op.DIRECTORY, b"/\0")


def test_empty_read_in_header_state_changes_nothing():
    p = PartialIn()
    assert p.feed(b"") is None
    assert p.to_read() == HEADER_SIZE and not p.has_partial_input()


def test_feeding_more_than_to_read_is_refused():
    p = PartialIn()
    with pytest.raises(ValueError):
        p.feed(b"x" * (HEADER_SIZE + 1))
    p.feed(hdr(2, 1, 0, 3))
    with pytest.raises(ValueError):
        p.feed(b"abcd")


def test_body_in_one_read_is_used_without_copy():
    p = PartialIn()
    p.feed(hdr(11, 1, 0, 6))
    body = bytes(b"a\0bcd\0")
    assert p.feed(body).data is body


def test_body_in_pieces_is_reassembled():
    p = PartialIn()
    p.feed(hdr(11, 1, 0, 3000))
    chunks = [bytes([i % 251]) * 1000 for i in range(3)]
    assert p.feed(chunks[0]) is None
    assert p.to_read() == 2000
    assert p.feed(chunks[1]) is None
    assert p.feed(chunks[2]).data == b"".join(chunks)


def test_oversized_length_takes_4096_bytes_and_the_rest_is_the_next_header():
    p = PartialIn()
    p.feed(hdr(11, 1, 0, 5000))
    assert p.to_read() == XENSTORE_PAYLOAD_MAX
    pkt = p.feed(b"v" * 4096)
    assert len(pkt.data) == 4096
    # The surplus 904 bytes are then parsed as a header: the stream is out of step.
    assert p.to_read() == HEADER_SIZE
    assert p.feed(b"v" * 16) is None
    assert p.to_read() == XENSTORE_PAYLOAD_MAX  # 0x76767676 clamped


def test_reset_drops_partial_input():
    p = PartialIn()
    p.feed(hdr(2, 1, 0, 10))
    p.feed(b"abc")
    p.reset()
    assert p.to_read() == HEADER_SIZE and not p.has_partial_input()


def test_partial_pkt_append_past_length_is_refused():
    pp = PartialPkt.of_bytes(hdr(2, 1, 0, 2))
    with pytest.raises(ValueError):
        pp.append(b"abc")
    pp.append(b"a")
    assert pp.to_complete() == 1 and pp.contents() == b"a"


def step_by_step(stream: bytes) -> list:
    """The packets PartialIn gives for a stream, fed as one read per step would give them."""
    p, out, off = PartialIn(), [], 0
    while off < len(stream) or p.to_read() == 0:
        n = p.to_read()
        data = stream[off:off + n]
        off += len(data)
        pkt = p.feed(data)
        if pkt is not None:
            out.append(pkt)
        elif not data and n > 0:
            break
    return out


def test_whole_packet_gives_what_the_two_steps_give_and_its_end():
    stream = hdr(2, 7, 3, 3) + b"/a\0" + hdr(11, 8, 0, 5) + b"/b\0xy"
    first, end = whole_packet(stream, 0)
    second, end2 = whole_packet(stream, end)
    assert [first, second] == step_by_step(stream) == [
        Packet(3, 7, Op.READ, b"/a\0"), Packet(0, 8, Op.WRITE, b"/b\0xy")]
    assert (end, end2) == (19, len(stream))
    assert whole_packet(hdr(0xFFFF, 1, 0, 1) + b"x", 0)[0].ty is Op.INVALID


@pytest.mark.parametrize("stream", [
    b"", hdr(2, 1, 0, 3)[:15], hdr(2, 1, 0, 3) + b"/a",  # not all there
    hdr(6, 1, 0, 0),  # zero length: the parser's quirk decides when it comes out
    hdr(2, 1, 0, XENSTORE_PAYLOAD_MAX + 1) + b"x" * (XENSTORE_PAYLOAD_MAX + 1),  # clamped
])
def test_whole_packet_leaves_to_the_parser_what_it_alone_handles(stream):
    assert whole_packet(stream, 0) is None
