"""Digital voucher codes (spec §6.1 Digital).

A code is derived from its voucher id with a server key (HMAC-SHA256, 80 bits kept, written as
16 base32 characters in four groups), so the database never holds it: the `vouchers` table
keeps the code's SHA-256 (to redeem it) and its last four characters (what staff see). The
owning patient's order shows the full code, derived again for each request; staff, logs and
audit entries only ever get the masked form.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import uuid

CODE_BYTES = 10  # 80 bits of the HMAC: unguessable without the key
PREFIX = "PRIM"


def voucher_code(key: bytes, voucher_id: uuid.UUID) -> str:
    """The code of a voucher, e.g. PRIM-7K2Q-MX4D-9TRB-AZ3W."""
    digest = hmac.new(key, b"voucher:" + voucher_id.bytes, hashlib.sha256).digest()
    text = base64.b32encode(digest[:CODE_BYTES]).decode()
    return "-".join([PREFIX, *(text[i : i + 4] for i in range(0, len(text), 4))])


def code_hash(code: str) -> str:
    return hashlib.sha256(normalise(code).encode()).hexdigest()


def normalise(code: str) -> str:
    """What a person may type: any case, with or without dashes and spaces."""
    return code.replace("-", "").replace(" ", "").upper()


def last_four(code: str) -> str:
    return normalise(code)[-4:]


def masked(last: str) -> str:
    """What staff see of a code."""
    return f"{PREFIX}-••••-••••-••••-{last}"
