"""What counts as a payment card number in a request body (`web/abuse.py`
`find_card_number`), and what does not: ids, timestamps, amounts, phone numbers, postcodes."""

from __future__ import annotations

import json
import uuid

import pytest

from product_shop.web.abuse import find_card_number, luhn_valid

VISA = "4111111111111111"
FORM = "application/x-www-form-urlencoded"


@pytest.mark.parametrize(
    "body",
    [
        {"card_number": VISA},
        {"a": {"b": [{"c": f"my card is {VISA}, thanks"}]}},
        {"note": "4111 1111 1111 1111"},
        {"note": "4111-1111-1111-1111"},
        {"n": int(VISA)},
        {"n": [1, 2, {"deep": 378282246310005}]},  # Amex, 15 digits
        {"n": "6011111111111117"},  # Discover
        {"n": "4222222222222"},  # Visa, 13 digits
        {"n": "6250941006528599"},  # UnionPay, 16
        {VISA: "as a key"},
    ],
)
def test_card_numbers_in_json_are_found(body: object) -> None:
    assert find_card_number(json.dumps(body).encode(), "application/json")


def test_escaped_exponent_and_form_bodies_are_read_as_the_client_meant_them() -> None:
    assert find_card_number(json.dumps({"n": VISA}).replace("1", "\\u0031").encode())
    assert find_card_number(b'{"n": 4.111111111111111e15}')
    assert find_card_number(b"card=4111+1111+1111+1111&x=1", "application/x-www-form-urlencoded")
    assert find_card_number(b"card=4111%201111%201111%201111", "application/x-www-form-urlencoded")


@pytest.mark.parametrize(
    "text",
    [
        str(uuid.UUID("12345678-1234-5678-1234-567812345678")),
        "01a22fd6-7071-7daa-b95f-2af12d9e8ab4",
        "2026-12-01T04:10:27.123456+00:00",
        "+44 7911 123456",
        "+4479111234567",
        "+44 4111 1111 1111 1111",  # after a +: a phone number, not a card
        "BS1 4DJ",
        "1764562227009",  # an epoch in milliseconds (and Luhn-valid)
        "4111111111111112",  # fails Luhn
        "411111111111",  # 12 digits
        "41111111111111111111",  # 20 digits
        "AB4111111111111111GB",  # inside a reference
        "order 12999 of 1 items: 2999 pence",
    ],
)
def test_other_numbers_are_not_card_numbers(text: str) -> None:
    assert not find_card_number(json.dumps({"value": text}).encode(), "application/json")


def test_many_uuids_and_amounts_are_never_card_numbers() -> None:
    body = json.dumps(
        {
            "ids": [str(uuid.uuid4()) for _ in range(2000)],
            "amounts": list(range(0, 10_000_000, 9973)),
        }
    ).encode()
    assert not find_card_number(body, "application/json")


def test_a_uuid_whose_digits_pass_the_luhn_check_is_an_id_but_a_card_beside_it_is_not() -> None:
    luhn_shaped = "41111111-1111-4115-a123-0123456789ab"  # its first 16 digits pass the check
    assert luhn_valid(luhn_shaped.replace("-", "")[:16])
    assert not find_card_number(
        json.dumps({"product_id": luhn_shaped}).encode(), "application/json"
    )
    assert not find_card_number(f"id={luhn_shaped}".encode(), "application/x-www-form-urlencoded")
    assert not find_card_number(f"see {luhn_shaped}.".encode(), "text/plain")
    assert find_card_number(
        json.dumps({"note": f"{luhn_shaped} 4111 1111 1111 1111"}).encode(), "application/json"
    )
    # Only the whole canonical form is an id: the same digits inside a longer hex run are read.
    assert find_card_number(json.dumps({"note": "4111111111111111"}).encode(), "application/json")


def test_luhn() -> None:
    assert luhn_valid(VISA)
    assert luhn_valid("1764562227009")
    assert not luhn_valid("4111111111111112")


# Luhn-valid digit runs a carrier may well use as a parcel number (DPD's are 14 digits).
PARCEL = "64818311058679"


def test_a_carriers_tracking_number_is_not_a_card_number_but_a_card_beside_it_is() -> None:
    assert luhn_valid(PARCEL)
    update = {
        "type": "shipment.dispatched",
        "data": {
            "tracking_number": PARCEL,
            "tracking_url": f"https://track.example-carrier.test/parcel/dpd/{PARCEL}",
        },
    }
    assert not find_card_number(json.dumps(update).encode(), "application/json")
    assert not find_card_number(f"tracking_number={PARCEL}&carrier=DPD".encode(), FORM)
    # The same digits anywhere else, and a card number in any other field, are still refused.
    assert find_card_number(json.dumps({"data": {"note": PARCEL}}).encode())
    update["data"]["exception_reason"] = f"card {VISA}"  # type: ignore[index]
    assert find_card_number(json.dumps(update).encode(), "application/json")
    assert find_card_number(f"tracking_number={PARCEL}&note={VISA}".encode(), FORM)
    assert find_card_number(f"{VISA}=tracking_number".encode(), FORM)
    # A key is never exempt, nor a value under a key that only looks like one.
    assert find_card_number(json.dumps({"tracking_numbers": PARCEL}).encode())
    assert find_card_number(json.dumps({"tracking_number": {VISA: "x"}}).encode())
    assert find_card_number(json.dumps({"tracking_number": [VISA]}).encode())


def test_a_body_that_is_not_json_is_read_as_text_whole() -> None:
    assert find_card_number(f"tracking_number: {PARCEL}".encode(), "text/plain")
    assert find_card_number(f'{{"tracking_number": "{PARCEL}"'.encode(), "application/json")
