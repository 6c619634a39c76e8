"""Garbage on many connections at once must not hurt the daemon or the store.

Seeded random input, on both daemons: random op codes and payloads, unknown
transaction ids, over-long declared lengths, zero-length requests, headers
and bodies cut short, pure noise, connections closed without reading their
replies.  The input is built so that nothing in it *may* change the store
(mutating ops only ever carry an unknown tx_id, and framing errors can only
produce invalid op codes), so afterwards the tree must be exactly as before,
the daemon alive, and other clients served, even while bad connections sit
in the middle of a packet.
"""
from __future__ import annotations

import random
import socket
import struct
import time

import pytest

from oxsd.diff.final_state import walk_tree
from oxsd.diff.wire import HEADER, SocketConn, op_code

# ops that cannot change the store whatever their payload (tx_id 0)
HARMLESS = [op_code(n) for n in ("READ", "DIRECTORY", "GET_PERMS", "GET_DOMAIN_PATH",
                                 "IS_DOMAIN_INTRODUCED", "RESUME", "WATCH", "UNWATCH",
                                 "TRANSACTION_START", "RESET_WATCHES")] + [15, 16, 20, 22, 23, 26]
# everything else; only ever sent with a tx_id no transaction can have (EIO first)
ANY = list(range(0, 27))
BOGUS_TX = (0x40000000, 0xFFFFFFFF)  # transaction ids stay below 0x3fffffff


def _noise(rng: random.Random, n: int) -> bytes:
    """Bytes >= 0x80: any 4 of them read as an op code give an invalid op."""
    return bytes(rng.randrange(0x80, 0x100) for _ in range(n))


def _payload(rng: random.Random) -> bytes:
    kind = rng.randrange(4)
    if kind == 0:
        return rng.randbytes(rng.randrange(0, 64))
    if kind == 1:  # path-like
        return b"/" + b"/".join(rng.choice([b"a", b"b", b"..", b"", b"@x", b"local"])
                                for _ in range(rng.randrange(1, 5))) + b"\0"
    if kind == 2:
        return b"\0" * rng.randrange(0, 9)
    return rng.randbytes(rng.randrange(64, 3000))


def _framed(rng: random.Random) -> bytes:
    """One well-framed packet that cannot modify the store."""
    payload = _payload(rng)
    rid = rng.randrange(1 << 32)
    if rng.random() < 0.5:
        op, tx = rng.choice(HARMLESS), 0
    else:
        op, tx = rng.choice(ANY), rng.randrange(*BOGUS_TX)
    if rng.random() < 0.1:
        op = rng.randrange(27, 1 << 32)
    return HEADER.pack(op, rid, tx, len(payload)) + payload


def _bad_tail(rng: random.Random) -> bytes:
    """What a connection may end with: nothing after it is framed any more."""
    kind = rng.randrange(5)
    if kind == 0:  # header cut short
        return struct.pack("<I", op_code("WRITE")) + b"\x01\0"
    if kind == 1:  # body cut short (a WRITE that would be valid)
        return HEADER.pack(op_code("WRITE"), 1, 0, 40) + b"/bad-input/never\0value"
    if kind == 2:  # declared length clamped to 4096; a few bytes of a next header follow
        return HEADER.pack(rng.randrange(27, 1 << 31), 2, 0, rng.randrange(4097, 1 << 32)) \
            + _noise(rng, 4096 + rng.randrange(0, 15))
    if kind == 3:  # zero-length request, answered only when more bytes come
        return HEADER.pack(op_code("READ"), 3, 0, 0)
    return _noise(rng, rng.randrange(1, 5000))


def _script(rng: random.Random) -> list[bytes]:
    """The chunks one bad connection sends, in order."""
    if rng.random() < 0.2:
        return [_noise(rng, rng.randrange(1, 3000)) for _ in range(rng.randrange(1, 6))]
    stream = b"".join(_framed(rng) for _ in range(rng.randrange(1, 25))) + _bad_tail(rng)
    cuts = sorted(rng.sample(range(1, len(stream)), min(len(stream) - 1, rng.randrange(0, 6))))
    return [stream[i:j] for i, j in zip([0] + cuts, cuts + [len(stream)])]


def _populate(daemon) -> None:
    with daemon.connect() as c:
        for i, (path, value) in enumerate([(b"/bad-input/a", b"1"), (b"/bad-input/b/c", b"2"),
                                           (b"/local/domain/0/x", b"rel")], 1):
            reply = c.request(op_code("WRITE"), path + b"\0" + value, req_id=i)
            assert reply.payload == b"OK\0"


def _served(daemon) -> None:
    """A fresh client gets correct answers."""
    with daemon.connect() as c:
        reply = c.request(op_code("READ"), b"/bad-input/b/c\0", req_id=77)
        assert (reply.op, reply.req_id, reply.payload) == (op_code("READ"), 77, b"2")


def _run_scripts(daemon, scripts: list[list[bytes]], quiet: float = 0.3) -> list[bytes]:
    """Send every connection's chunks, interleaved; return what each received.
    The connections are left open (stuck mid-packet) and returned too."""
    conns = [daemon.connect() for _ in scripts]
    received = [bytearray() for _ in scripts]

    def drain() -> bool:
        got = False
        for conn, buf in zip(conns, received):
            data = conn.recv_nowait()
            if data:
                buf += data
                got = True
        return got

    pending = [list(s) for s in scripts]
    while any(pending):
        for conn, chunks in zip(conns, pending):
            if chunks:
                conn.send_bytes(chunks.pop(0))
        drain()  # so that the daemon never blocks writing to us
    deadline = time.monotonic() + quiet
    while time.monotonic() < deadline:
        if drain():
            deadline = time.monotonic() + quiet
        time.sleep(0.01)
    return conns, [bytes(b) for b in received]


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_random_and_truncated_packets_leave_store_and_daemon_intact(daemon, seed):
    rng = random.Random(seed)
    _populate(daemon)
    before = walk_tree(daemon)

    conns, received = _run_scripts(daemon, [_script(rng) for _ in range(40)])
    assert sum(map(len, received)) > 1000  # the daemon did answer the framed part

    # served while the bad connections are stuck mid-packet
    _served(daemon)
    assert walk_tree(daemon) == before

    # half of them go away without reading their replies
    for conn in conns[::2]:
        conn.close()
    _served(daemon)
    for conn in conns[1::2]:
        conn.close()
    _served(daemon)
    assert walk_tree(daemon) == before
    assert daemon.alive()


@pytest.mark.parametrize("seed", [4, 5])
def test_random_input_gets_the_reference_replies(start, seed):
    """The same seeded garbage, per connection, byte for byte on both daemons."""
    replies = {}
    for kind in ("ocaml", "oxsd"):
        daemon = start(kind)
        _populate(daemon)
        conns, replies[kind] = _run_scripts(daemon, [_script(random.Random(seed * 100 + i))
                                                     for i in range(30)])
        for conn in conns:
            conn.close()
        assert daemon.alive()
    for i, (ref, ours) in enumerate(zip(replies["ocaml"], replies["oxsd"])):
        assert ours == ref, f"connection {i} (seed {seed * 100 + i}) differs"


def test_many_connections_closing_mid_packet(daemon):
    """Connections that vanish in the middle of a header or body, many at once."""
    _populate(daemon)
    before = walk_tree(daemon)
    for round_ in range(5):
        conns = [daemon.connect() for _ in range(30)]
        for i, conn in enumerate(conns):
            data = HEADER.pack(op_code("WRITE"), i, 0, 30) + b"/bad-input/half\0"
            conn.send_bytes(data[:5 + (i * 7) % len(data)])
        for conn in conns:
            conn.close()
        _served(daemon)
    assert walk_tree(daemon) == before
    assert daemon.alive()


def test_pipelined_requests_from_a_client_not_reading_are_all_answered(daemon):
    """2000 requests sent before reading anything: others are served meanwhile,
    and the 2000 replies then arrive complete and in order.  (Far more than the
    socket buffers hold would block the original daemon: it writes to sockets
    with blocking writes, tolerated because sockets are dom0-only.)"""
    _populate(daemon)
    hog = daemon.connect()
    body = b"/bad-input/a\0"
    hog.send_bytes(b"".join(HEADER.pack(op_code("READ"), rid, 0, len(body)) + body
                            for rid in range(2000)))
    _served(daemon)
    want = b"".join(HEADER.pack(op_code("READ"), rid, 0, 1) + b"1" for rid in range(2000))
    got = bytearray()
    deadline = time.monotonic() + 10
    while len(got) < len(want) and time.monotonic() < deadline:
        hog.wait_readable(0.1)
        got += hog.recv_nowait() or b""
    hog.close()
    assert bytes(got) == want
    assert daemon.alive()


def test_sockets_survive_their_peer_resetting(daemon):
    """EPIPE/ECONNRESET on the daemon side (SO_LINGER 0 close) is harmless."""
    _populate(daemon)
    for _ in range(20):
        conn = SocketConn(daemon.socket_path)
        conn.send_bytes(HEADER.pack(op_code("DIRECTORY"), 1, 0, 2) + b"/\0")
        conn.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        conn.close()
    _served(daemon)
    assert daemon.alive()
