"""Requests and the three kinds of response a handler gives (port of xenstored/packet.ml)."""
from __future__ import annotations

from typing import Callable, Optional, Union

from .compat import slotted_dataclass
from .xb.packet import Packet as Request  # a request is an Xb packet: tid, rid, ty, data

__all__ = ["Request", "Ack", "Reply", "Error", "Response", "response_equal",
           "DATA", "ACK", "DATA_OR_ACK", "NONE"]

# How a handler's result becomes a Response (process.ml: reply_data, reply_ack,
# reply_data_or_ack, reply_none): the first field of the dispatcher's table.
DATA, ACK, DATA_OR_ACK, NONE = range(4)


@slotted_dataclass
class Ack:
    """Reply `OK\\0`, then run `after` (watch firing, the initial watch event...)."""

    after: Optional[Callable[[], None]] = None


@slotted_dataclass
class Reply:
    data: bytes


@slotted_dataclass
class Error:
    name: str


Response = Union[Ack, Reply, Error]


def response_equal(a: Response, b: Response) -> bool:
    """Replay comparison: any two Acks are equal; otherwise type and payload."""
    if type(a) is not type(b):
        return False
    if isinstance(a, Ack):
        return True
    return a == b
