"""XSA-420: a packet length between 1 and 2 GiB livelocked 32-bit oxenstored.

The header's uint32 length turned negative in a 31-bit OCaml int, Bytes.make
raised, the packet stayed on the ring and the exception came back on every
read.  The fix (`partial.ml: of_string`) clamps the declared length into
[0, 4096] before anything is allocated: a header claiming more is read as a
4096-byte packet, and framing continues after it.  Safe outcome, on the
ring and on a socket: the request is answered as a 4096-byte one (EINVAL: its
body is not a path), the next
request is answered normally, nothing over 4096 bytes is ever buffered, the
daemon neither dies nor spins, the store intact.
"""
import struct

import pytest


HDR = struct.Struct("<IIII")
XS_READ, XS_ERROR = 2, 16
LENGTHS = [4097, 0x40000000, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF]


def clamped_read(client, length: int) -> None:
    """A READ of `data/x` declaring `length` bytes, followed by exactly 4096 of body."""
    body = b"data/x\0".ljust(4096, b"\0")
    client._send_bytes(HDR.pack(XS_READ, 77, 0, length) + body)
    # "data/x" + 4089 NULs is not a path: EINVAL, for the whole 4096-byte packet
    assert client.recv_reply(77, 10.0) == (XS_ERROR, 0, b"EINVAL\0")
    assert client.read("data/x") == b"v"            # framing resumed right after 4096


@pytest.mark.parametrize("length", LENGTHS)
def test_an_oversized_length_on_the_ring_is_clamped_to_4096(world, length):
    g, other = world.guest(5), world.guest(6)
    g.write("data/x", "v")
    before = world.tree()
    clamped_read(g.client, length)
    assert world.tree() == before
    world.assert_guest_served(other, 6)
    world.assert_alive()


@pytest.mark.parametrize("length", [4097, 0x80000000, 0xFFFFFFFF])
def test_an_oversized_length_on_a_socket_is_clamped_to_4096(world, length):
    world.d0.write("/tool/data/x", "v")
    before = world.tree()
    client = world.X.SocketClient(world.daemon.socket_path)
    try:
        body = b"/tool/data/x\0".ljust(4096, b"\0")
        client._send_bytes(HDR.pack(XS_READ, 77, 0, length) + body)
        assert client.recv_reply(77, 10.0) == (XS_ERROR, 0, b"EINVAL\0")
        assert client.read("/tool/data/x") == b"v"
    finally:
        client.close()
    assert world.tree() == before
    world.assert_alive()
