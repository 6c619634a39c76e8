"""XenStore operation codes (port of libs/xb/op.ml).

Codes 0..21 come from xs_wire.h.  Code 20 (the removed XS_RESTRICT) is the
internal INVALID op, and so is every code outside 0..21: such requests get
ENOSYS instead of closing the connection.
"""
from __future__ import annotations

import enum


class Op(enum.IntEnum):
    DEBUG = 0  # XS_CONTROL
    DIRECTORY = 1
    READ = 2
    GET_PERMS = 3
    WATCH = 4
    UNWATCH = 5
    TRANSACTION_START = 6
    TRANSACTION_END = 7
    INTRODUCE = 8
    RELEASE = 9
    GET_DOMAIN_PATH = 10
    WRITE = 11
    MKDIR = 12
    RM = 13
    SET_PERMS = 14
    WATCH_EVENT = 15
    ERROR = 16
    IS_INTRODUCED = 17
    RESUME = 18
    SET_TARGET = 19
    INVALID = 20
    RESET_WATCHES = 21

    def to_string(self) -> str:
        """The name Op.to_string gives (used in CONTROL output and logs)."""
        return self.name


_BY_CVAL: tuple[Op, ...] = tuple(Op(i) for i in range(22))


def of_cval(code: int) -> Op:
    """Map a wire type to an op; anything unknown is INVALID."""
    if 0 <= code < 22:
        return _BY_CVAL[code]
    return Op.INVALID
