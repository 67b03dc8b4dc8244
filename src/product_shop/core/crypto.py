"""Field encryption at rest: personal values (delivery addresses, recipient names, free-text
notes, and every stored copy of them) are written to the database encrypted (docs/security.md).

A value is sealed with AES-256-GCM (the `cryptography` library's AESGCM; a random 96-bit nonce
per value) and stored as a text token

    v1.<key_id>.<base64url(nonce || ciphertext || tag)>

The key id travels with the value, so several keys can be in use at once: the keyring encrypts
with its current key and decrypts with whichever key a token names. The associated data binds a
token to its place (`table.column`) and to its key id: a ciphertext copied into another column,
or a key id edited, fails authentication (`FieldDecryptionError`), as does any changed byte.

Keys come from settings (`Settings.keyring`: `encryption_keys` / `encryption_key_file`,
`encryption_key_id`), never from the repository; the one exception is the DEMO key below,
derived from a public string so the demo and the tests need no set-up, and refused in
production by `Settings.check`.

The keyring in use is process-wide (`install_keyring`, `current_keyring`): the column types of
`db/encrypted.py` run inside SQLAlchemy's bind and result processing, where no request context
is at hand. `AppContext.build` (and the CLI commands through it) install the settings' keyring
at start; a process that installed none gets the one its environment's settings describe on
first use. One AESGCM object is kept per key: no per-value key derivation on the hot path.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import re
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

TOKEN_VERSION = "v1"  # noqa: S105 (a format marker, not a secret)
KEY_BYTES = 32  # AES-256
NONCE_BYTES = 12  # 96 bits, random per value
KEY_ID = re.compile(r"^[A-Za-z0-9_-]{1,32}$")
# The demo key: derived from a public string, so it protects nothing. For the demo and tests
# only; `Settings.check` refuses it in production.
DEMO_KEY_ID = "demo"
DEMO_KEY = hashlib.sha256(b"product-shop DEMO field encryption key - public, not a secret").digest()


class KeyringError(ValueError):
    """The keys given cannot make a keyring (malformed, missing, or no current key)."""


class FieldDecryptionError(ValueError):
    """A stored value could not be decrypted: not a token, a key the keyring does not hold, or
    failed authentication (tampered with, or moved from another column)."""


def is_token(value: object) -> bool:
    """Whether a stored value looks like one of our tokens (not whether it is authentic)."""
    return isinstance(value, str) and value.startswith(TOKEN_VERSION + ".")


def key_id_of(token: str) -> str:
    """The key id a token names (unauthenticated: a hint for rotation and statistics)."""
    parts = token.split(".", 2)
    if len(parts) != 3 or parts[0] != TOKEN_VERSION:
        raise FieldDecryptionError("not an encrypted value (expected v1.<key_id>.<data>)")
    return parts[1]


def _associated_data(context: str, key_id: str) -> bytes:
    return f"product-shop/{TOKEN_VERSION}|{context}|{key_id}".encode()


@dataclass(frozen=True)
class Keyring:
    """Keys by id; `current_id` encrypts, every key decrypts."""

    keys: Mapping[str, bytes]
    current_id: str
    _ciphers: dict[str, AESGCM] = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.keys:
            raise KeyringError("no encryption keys")
        for key_id, key in self.keys.items():
            if not KEY_ID.match(key_id):
                raise KeyringError(
                    f"encryption key id {key_id!r} must be 1-32 letters, digits, '-' or '_'"
                )
            if len(key) != KEY_BYTES:
                raise KeyringError(
                    f"encryption key {key_id!r} must be {KEY_BYTES} bytes (base64 of 32 random "
                    f"bytes), not {len(key)}"
                )
            self._ciphers[key_id] = AESGCM(key)
        if self.current_id not in self.keys:
            raise KeyringError(
                f"the current encryption key id {self.current_id!r} is not among the keys "
                f"({', '.join(sorted(self.keys))})"
            )

    @classmethod
    def from_text(cls, keys: Mapping[str, str], current_id: str | None) -> Keyring:
        """Keys given as base64 (standard or url-safe) text by id; the current id may be left
        out when there is one key."""
        decoded: dict[str, bytes] = {}
        for key_id, text in keys.items():
            try:
                standard = text.strip().replace("-", "+").replace("_", "/")
                decoded[key_id] = base64.b64decode(
                    standard + "=" * (-len(standard) % 4), validate=True
                )
            except (binascii.Error, ValueError) as exc:
                raise KeyringError(f"encryption key {key_id!r} is not base64") from exc
        if current_id is None:
            if len(decoded) != 1:
                raise KeyringError(
                    "several encryption keys: name the current one (encryption_key_id)"
                )
            current_id = next(iter(decoded))
        return cls(decoded, current_id)

    @property
    def uses_demo_key(self) -> bool:
        """Whether the current key, or any key, is the public demo key."""
        return any(key == DEMO_KEY for key in self.keys.values())

    def encrypt(self, plaintext: bytes, context: str) -> str:
        key_id = self.current_id
        nonce = os.urandom(NONCE_BYTES)
        sealed = self._ciphers[key_id].encrypt(nonce, plaintext, _associated_data(context, key_id))
        return f"{TOKEN_VERSION}.{key_id}.{base64.urlsafe_b64encode(nonce + sealed).decode()}"

    def decrypt(self, token: str, context: str) -> bytes:
        key_id = key_id_of(token)
        cipher = self._ciphers.get(key_id)
        if cipher is None:
            raise FieldDecryptionError(
                f"{context}: the value is encrypted with key {key_id!r}, which the keyring does "
                f"not hold (keys: {', '.join(sorted(self.keys))})"
            )
        try:
            data = base64.urlsafe_b64decode(token.split(".", 2)[2])
        except (binascii.Error, ValueError) as exc:
            raise FieldDecryptionError(f"{context}: the encrypted value is not base64") from exc
        if len(data) < NONCE_BYTES + 16:
            raise FieldDecryptionError(f"{context}: the encrypted value is truncated")
        try:
            return cipher.decrypt(
                data[:NONCE_BYTES], data[NONCE_BYTES:], _associated_data(context, key_id)
            )
        except InvalidTag as exc:
            raise FieldDecryptionError(
                f"{context}: the encrypted value failed authentication (key {key_id!r}): it was "
                "altered, or belongs to another column"
            ) from exc

    def encrypt_text(self, value: str, context: str) -> str:
        return self.encrypt(value.encode(), context)

    def decrypt_text(self, token: str, context: str) -> str:
        return self.decrypt(token, context).decode()


def demo_keyring() -> Keyring:
    return Keyring({DEMO_KEY_ID: DEMO_KEY}, DEMO_KEY_ID)


def new_key_text() -> str:
    """A fresh key as settings take it (base64 of 32 random bytes)."""
    return base64.b64encode(os.urandom(KEY_BYTES)).decode()


# ---- the process-wide keyring -----------------------------------------------------------------

_lock = threading.Lock()
_installed: Keyring | None = None


def install_keyring(keyring: Keyring) -> None:
    """Make `keyring` the one every encrypted column uses in this process."""
    global _installed
    with _lock:
        _installed = keyring


def current_keyring() -> Keyring:
    """The installed keyring; if none was, the one this process's settings describe."""
    global _installed
    keyring = _installed
    if keyring is not None:
        return keyring
    from product_shop.config import Settings  # config imports this module

    built = Settings().keyring()
    with _lock:
        if _installed is None:
            _installed = built
        return _installed


@contextmanager
def using_keyring(keyring: Keyring) -> Iterator[Keyring]:
    """`keyring` installed for a block, the previous one back after it (tests, key rotation)."""
    global _installed
    with _lock:
        previous = _installed
        _installed = keyring
    try:
        yield keyring
    finally:
        with _lock:
            _installed = previous
