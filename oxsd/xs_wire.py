"""The XenStore wire table (xs_wire.h) and the scenario text of a packet.

Shared by the daemon's packet trace (`oxsd -T`, oxsd/trace.py) and the
differential harness (oxsd/diff/wire.py), so that a trace is written in
exactly the syntax the harness parses.  Like the harness, it is
deliberately independent of the daemon's own packet code (`oxsd.xb`): it
keeps its own small copy of the op table and header layout, so the
harness never trusts the code under test.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass

__all__ = [
    "HEADER", "OPS", "OP_CODES", "XS_WATCH_EVENT", "XS_ERROR", "RING_OFFSETS",
    "Packet", "op_name", "op_code", "encode_request", "escape", "describe",
]

HEADER = struct.Struct("<IIII")  # type, req_id, tx_id, len

# enum xsd_sockmsg_type (xen/include/public/io/xs_wire.h)
OPS: dict[int, str] = {
    0: "CONTROL", 1: "DIRECTORY", 2: "READ", 3: "GET_PERMS", 4: "WATCH",
    5: "UNWATCH", 6: "TRANSACTION_START", 7: "TRANSACTION_END",
    8: "INTRODUCE", 9: "RELEASE", 10: "GET_DOMAIN_PATH", 11: "WRITE",
    12: "MKDIR", 13: "RM", 14: "SET_PERMS", 15: "WATCH_EVENT", 16: "ERROR",
    17: "IS_DOMAIN_INTRODUCED", 18: "RESUME", 19: "SET_TARGET",
    20: "RESTRICT", 21: "RESET_WATCHES", 22: "DIRECTORY_PART",
    23: "GET_FEATURE", 24: "SET_FEATURE", 25: "GET_QUOTA", 26: "SET_QUOTA",
}
OP_CODES: dict[str, int] = {name: code for code, name in OPS.items()}
OP_CODES.update(DEBUG=0, IS_INTRODUCED=17)
XS_WATCH_EVENT = 15
XS_ERROR = 16

# struct xenstore_domain_interface: byte offsets of the 32-bit fields after
# req[1024] and rsp[1024] (xs_wire.h)
RING_OFFSETS: dict[str, int] = {
    "req_cons": 2048, "req_prod": 2052, "rsp_cons": 2056, "rsp_prod": 2060,
    "server_features": 2064, "connection": 2068, "error": 2072,
}


def op_name(code: int) -> str:
    """Readable name of a wire type (numeric when unknown)."""
    return OPS.get(code, str(code))


def op_code(word: str) -> int:
    """Wire type from an op name (``READ``, ``XS_READ``) or a number."""
    name = word.upper()
    if name.startswith("XS_"):
        name = name[3:]
    if name in OP_CODES:
        return OP_CODES[name]
    try:
        value = int(word, 0)
    except ValueError:
        raise ValueError(f"unknown op {word!r}") from None
    if not 0 <= value <= 0xFFFFFFFF:
        raise ValueError(f"op {word!r} does not fit in 32 bits")
    return value


def encode_request(op: int, payload: bytes, tx_id: int = 0, req_id: int = 0,
                   length: int | None = None) -> bytes:
    """Header + payload; ``length`` overrides the declared length."""
    declared = len(payload) if length is None else length
    return HEADER.pack(op, req_id, tx_id, declared) + payload


def escape(data: bytes) -> str:
    """Bytes as a scenario-style literal: printable ASCII, ``\\0``, ``\\xNN``."""
    out = []
    for b in data:
        if b == 0:
            out.append("\\0")
        elif b == 0x5C:
            out.append("\\\\")
        elif b == 0x22:
            out.append('\\"')
        elif 0x20 <= b < 0x7F:
            out.append(chr(b))
        else:
            out.append(f"\\x{b:02x}")
    return "".join(out)


@dataclass(frozen=True)
class Packet:
    """One framed message as received (header fields + payload)."""

    op: int
    req_id: int
    tx_id: int
    payload: bytes

    @property
    def is_event(self) -> bool:
        return self.op == XS_WATCH_EVENT

    def raw(self) -> bytes:
        return encode_request(self.op, self.payload, self.tx_id, self.req_id)

    def __str__(self) -> str:
        return describe(self)


def describe(p: Packet, limit: int = 160) -> str:
    """One readable line for a report."""
    text = escape(p.payload)
    if len(text) > limit:
        text = f"{text[:limit]}...(+{len(p.payload)} bytes in all)"
    return f'{op_name(p.op)} rid={p.req_id} tx={p.tx_id} len={len(p.payload)} "{text}"'
