"""XenStore operation codes (port of libs/xb/op.ml).

Codes 0..26 come from xs_wire.h.  Code 20 (the removed XS_RESTRICT) is the
internal INVALID op, and so is every code outside 0..26: such requests get
ENOSYS instead of closing the connection.  Codes 22..26 (DIRECTORY_PART ..
SET_QUOTA) are newer than 4.17's op.ml: at protocol level 4.17 they are
handled, logged and answered exactly as INVALID (ENOSYS); only protocol
level 4.22 (oxsd.protocol_level) gives them handlers.
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
    DIRECTORY_PART = 22
    GET_FEATURE = 23
    SET_FEATURE = 24
    GET_QUOTA = 25
    SET_QUOTA = 26

    def to_string(self) -> str:
        """The name Op.to_string gives (used in CONTROL output and logs)."""
        return self.name


# The members the request path names, as module constants: on CPython 3.11
# `Op.WRITE` is an attribute lookup through the enum's metaclass (~65 ns, not
# specialised), and each request named several.
OP_WRITE, OP_MKDIR, OP_RM, OP_SET_PERMS = Op.WRITE, Op.MKDIR, Op.RM, Op.SET_PERMS
OP_WATCH, OP_UNWATCH, OP_ERROR, OP_WATCH_EVENT = Op.WATCH, Op.UNWATCH, Op.ERROR, Op.WATCH_EVENT

# The ops that 4.17's op.ml does not know (INVALID there).
NEWER_OPS = (Op.DIRECTORY_PART, Op.GET_FEATURE, Op.SET_FEATURE, Op.GET_QUOTA, Op.SET_QUOTA)

# BY_CVAL[code]: the op of a wire type below N_CVALS (of_cval without the call).
BY_CVAL: tuple[Op, ...] = tuple(Op(i) for i in range(27))
N_CVALS = len(BY_CVAL)


def of_cval(code: int) -> Op:
    """Map a wire type to an op; anything unknown is INVALID."""
    if 0 <= code < N_CVALS:
        return BY_CVAL[code]
    return Op.INVALID
