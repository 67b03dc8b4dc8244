"""The one id generator: UUID version 7 (RFC 9562), time-ordered so B-tree inserts stay local."""

from __future__ import annotations

import secrets
import time
import uuid

_RAND_B_BITS = 62
_RAND_A_BITS = 12


def new_id() -> uuid.UUID:
    unix_ms = time.time_ns() // 1_000_000
    rand = secrets.randbits(_RAND_A_BITS + _RAND_B_BITS)
    rand_a = rand >> _RAND_B_BITS
    rand_b = rand & ((1 << _RAND_B_BITS) - 1)
    value = (unix_ms & ((1 << 48) - 1)) << 80 | 0x7 << 76 | rand_a << 64 | 0b10 << 62 | rand_b
    return uuid.UUID(int=value)
