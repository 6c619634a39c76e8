"""A complete XenStore packet and its wire header (port of libs/xb/packet.ml).

The header is four little-endian uint32: type, req_id, tx_id, len.
"""
from __future__ import annotations

import struct

from ..compat import slotted_dataclass
from .op import Op

HEADER = struct.Struct("<IIII")
HEADER_SIZE = HEADER.size  # 16


@slotted_dataclass
class Packet:
    tid: int
    rid: int
    ty: Op
    data: bytes

    def to_bytes(self) -> bytes:
        """Header plus payload, as written on the wire."""
        return HEADER.pack(int(self.ty), self.rid, self.tid, len(self.data)) + self.data

    def get_data(self) -> bytes:
        """The payload without one trailing NUL (Packet.get_data)."""
        d = self.data
        return d[:-1] if d.endswith(b"\0") else d


def create(tid: int, rid: int, ty: Op, data: bytes) -> Packet:
    return Packet(tid, rid, ty, data)
