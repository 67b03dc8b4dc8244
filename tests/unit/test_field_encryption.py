"""Field encryption (core/crypto.py): AES-GCM tokens carrying their key id, bound to their
column; a changed byte, a token moved to another column or an edited key id fails
authentication with a clear error."""

from __future__ import annotations

import base64

import pytest
from sqlalchemy.dialects import sqlite

from product_shop.core.crypto import (
    DEMO_KEY_ID,
    FieldDecryptionError,
    Keyring,
    KeyringError,
    demo_keyring,
    key_id_of,
    new_key_text,
    using_keyring,
)
from product_shop.db.encrypted import EncryptedJSON, EncryptedText

K1 = bytes(range(32))
K2 = bytes(range(32, 64))
ADDRESS = "checkouts.delivery_address"
DIALECT = sqlite.dialect()


def _ring(current: str = "k1") -> Keyring:
    return Keyring({"k1": K1, "k2": K2}, current)


def test_a_value_round_trips_and_the_token_names_its_key_and_hides_the_value() -> None:
    ring = _ring()
    token = ring.encrypt_text("Penny Patient, 1 Harbour Road", ADDRESS)
    assert token.startswith("v1.k1.")
    assert key_id_of(token) == "k1"
    assert "Penny" not in token
    assert "Harbour" not in token
    assert b"Penny" not in base64.urlsafe_b64decode(token.split(".", 2)[2])
    assert ring.decrypt_text(token, ADDRESS) == "Penny Patient, 1 Harbour Road"
    # A random nonce per value: the same plaintext never gives the same token.
    assert ring.encrypt_text("Penny", ADDRESS) != ring.encrypt_text("Penny", ADDRESS)


def test_every_key_decrypts_and_only_the_current_one_encrypts() -> None:
    old = _ring("k1").encrypt_text("note", "refunds.note")
    rotated = _ring("k2")
    assert rotated.decrypt_text(old, "refunds.note") == "note"
    assert key_id_of(rotated.encrypt_text("note", "refunds.note")) == "k2"
    without_k1 = Keyring({"k2": K2}, "k2")
    with pytest.raises(FieldDecryptionError, match="key 'k1', which the keyring does not hold"):
        without_k1.decrypt_text(old, "refunds.note")


def _flip(token: str, position: int) -> str:
    version, key_id, data = token.split(".", 2)
    raw = bytearray(base64.urlsafe_b64decode(data))
    raw[position] ^= 0x01
    return f"{version}.{key_id}.{base64.urlsafe_b64encode(bytes(raw)).decode()}"


@pytest.mark.parametrize("position", [0, 12, -1], ids=["nonce", "ciphertext", "tag"])
def test_a_tampered_value_fails_authentication(position: int) -> None:
    ring = _ring()
    token = ring.encrypt_text("1 Harbour Road", ADDRESS)
    with pytest.raises(FieldDecryptionError, match=r"checkouts\.delivery_address: .*failed "):
        ring.decrypt_text(_flip(token, position), ADDRESS)


def test_a_value_moved_to_another_column_fails_authentication() -> None:
    ring = _ring()
    token = ring.encrypt_text("Penny Patient", "checkouts.patient_first_name")
    with pytest.raises(FieldDecryptionError, match="belongs to another column"):
        ring.decrypt_text(token, "refunds.note")


def test_an_edited_key_id_fails_authentication() -> None:
    """Both keys held: relabelling a k1 token as k2 must not decrypt (the key id is bound)."""
    ring = Keyring({"k1": K1, "k2": K1}, "k1")
    token = ring.encrypt_text("Penny", ADDRESS)
    relabelled = token.replace("v1.k1.", "v1.k2.", 1)
    with pytest.raises(FieldDecryptionError, match="failed authentication"):
        ring.decrypt_text(relabelled, ADDRESS)


@pytest.mark.parametrize(
    "token", ["Penny Patient", "v1.k1", "v1.k1.!!!", "v1.k1.AAAA"], ids=str.strip
)
def test_what_is_not_a_token_is_refused_clearly(token: str) -> None:
    with pytest.raises(FieldDecryptionError):
        _ring().decrypt_text(token, ADDRESS)


def test_the_column_types_encrypt_on_the_way_in_and_decrypt_on_the_way_out() -> None:
    document = {"recipient_name": "Penny Patient", "line1": "1 Harbour Road"}
    json_type, text_type = EncryptedJSON(ADDRESS), EncryptedText("refunds.note")
    with using_keyring(_ring()) as ring:
        stored = json_type.process_bind_param(document, DIALECT)
        assert stored is not None
        assert stored.startswith("v1.k1.")
        assert "Penny" not in stored
        assert json_type.process_result_value(stored, DIALECT) == document
        note = text_type.process_bind_param("called the patient", DIALECT)
        assert note is not None
        assert "patient" not in note
        assert ring.decrypt_text(note, "refunds.note") == "called the patient"
        # None stays SQL NULL; a token of one column does not read as another.
        assert json_type.process_bind_param(None, DIALECT) is None
        with pytest.raises(FieldDecryptionError, match="another column"):
            text_type.process_result_value(stored, DIALECT)


def test_keyrings_refuse_bad_keys() -> None:
    with pytest.raises(KeyringError, match="32 bytes"):
        Keyring({"k1": b"short"}, "k1")
    with pytest.raises(KeyringError, match="not among the keys"):
        Keyring({"k1": K1}, "k2")
    with pytest.raises(KeyringError, match="key id"):
        Keyring({"k.1": K1}, "k.1")  # a dot would break the token format
    assert len(base64.b64decode(new_key_text())) == 32
    assert Keyring.from_text({"k1": new_key_text()}, None).current_id == "k1"


def test_the_demo_keyring_is_marked_as_such() -> None:
    assert demo_keyring().current_id == DEMO_KEY_ID
    assert demo_keyring().uses_demo_key
    assert not _ring().uses_demo_key
