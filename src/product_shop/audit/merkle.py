"""Merkle tree hashing as RFC 6962 (Certificate Transparency) defines it, section 2.1:

    MTH({})        = SHA-256()
    MTH({d(0)})    = SHA-256(0x00 || d(0))
    MTH(D[n])      = SHA-256(0x01 || MTH(D[0:k]) || MTH(D[k:n])),  k the largest power of 2 < n

The audit checkpoints hash every stream's head as one leaf, so a stream removed or cut short
changes the root. Nothing here needs more than `hashlib`: an outside party can do the same
(docs/audit.md).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

EMPTY_ROOT = hashlib.sha256(b"").hexdigest()


def leaf_hash(data: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def merkle_root(leaves: Sequence[bytes]) -> str:
    """The root of the leaves' data (not yet hashed), as hex."""
    if not leaves:
        return EMPTY_ROOT
    level = [leaf_hash(leaf) for leaf in leaves]
    return _root(level).hex()


def _root(hashes: list[bytes]) -> bytes:
    """MTH over already hashed leaves: split at the largest power of two below n."""
    n = len(hashes)
    if n == 1:
        return hashes[0]
    k = 1 << ((n - 1).bit_length() - 1)
    return node_hash(_root(hashes[:k]), _root(hashes[k:]))
