"""Standard Webhooks signatures interoperate with the reference library (issue 8, item 7).

The secret is `whsec_` + base64 and the HMAC key is the decoded bytes: a signature made by
`standardwebhooks.Webhook` verifies here and ours verify there. Every way a request can be
malformed is a SignatureError (the route's 401), never another exception (a 500).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from datetime import UTC, datetime

import pytest
from standardwebhooks import Webhook

from product_shop.cli import _parser
from product_shop.config import ConfigurationError, Settings
from product_shop.core.signing import (
    DEMO_WEBHOOK_SECRET,
    SignatureError,
    decode_secret,
    new_secret,
    sign,
    verify,
)
from product_shop.simulators.payments import SimulatorConfig

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"  # the secret of the reference test vector
BODY = json.dumps({"id": "evt_1", "type": "payment.captured", "data": {"intent_id": "pi_1"}})


def _now() -> int:
    return int(time.time())


def test_our_signature_verifies_with_the_reference_library() -> None:
    headers = sign(SECRET, "msg_1", _now(), BODY.encode()).as_dict()

    assert Webhook(SECRET).verify(BODY.encode(), headers) == json.loads(BODY)


def test_a_reference_library_signature_verifies_with_ours() -> None:
    now = _now()
    signature = Webhook(SECRET).sign("msg_2", datetime.fromtimestamp(now, UTC), BODY)
    headers = {"webhook-id": "msg_2", "webhook-timestamp": str(now), "webhook-signature": signature}

    assert verify(SECRET, headers, BODY.encode(), now=now) == "msg_2"


def test_the_reference_test_vector_is_reproduced() -> None:
    """The known answer the Standard Webhooks (Svix) libraries test against."""
    headers = sign(SECRET, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, b'{"test": 2432232314}')

    assert headers.signature == "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def test_the_hmac_key_is_the_decoded_secret_not_its_text() -> None:
    key = base64.b64decode(SECRET.removeprefix("whsec_"))
    signed = b"msg_3.1700000000." + BODY.encode()
    expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    as_text = base64.b64encode(hmac.new(SECRET.encode(), signed, hashlib.sha256).digest()).decode()

    headers = sign(SECRET, "msg_3", 1_700_000_000, BODY.encode())

    assert headers.signature == f"v1,{expected}"
    assert headers.signature != f"v1,{as_text}"
    assert decode_secret(SECRET) == key


def test_one_valid_signature_among_several_suffices_for_key_rotation() -> None:
    now = _now()
    good = sign(SECRET, "msg_4", now, BODY.encode()).signature
    old = sign(new_secret(), "msg_4", now, BODY.encode()).signature
    headers = {
        "Webhook-Id": "msg_4",
        "Webhook-Timestamp": str(now),
        "Webhook-Signature": f"{old} v2,c29tZXRoaW5n {good}",
    }

    assert verify(SECRET, headers, BODY.encode(), now=now) == "msg_4"


def _headers(**overrides: str | None) -> dict[str, str]:
    """Fresh, valid headers with some replaced (`{now}` is the current time) or removed."""
    now = _now()
    headers = sign(SECRET, "msg_5", now, BODY.encode()).as_dict()
    for name, value in overrides.items():
        key = name.replace("_", "-")
        if value is None:
            headers.pop(key)
        else:
            headers[key] = value.format(now=now)
    return headers


TAMPERED = BODY.replace("pi_1", "pi_2").encode()
REFUSED: dict[str, tuple[dict[str, str | None], bytes]] = {
    "garbage signature (no comma)": ({"webhook_signature": "garbage"}, BODY.encode()),
    "two commas": ({"webhook_signature": "v1,abc,def"}, BODY.encode()),
    "bad base64": ({"webhook_signature": "v1,abc"}, BODY.encode()),
    "not base64 at all": ({"webhook_signature": "v1,!!!!"}, BODY.encode()),
    "only an unknown version": ({"webhook_signature": "v2,c29tZXRoaW5n"}, BODY.encode()),
    "empty signature": ({"webhook_signature": ""}, BODY.encode()),
    "no signature": ({"webhook_signature": None}, BODY.encode()),
    "no id": ({"webhook_id": None}, BODY.encode()),
    "no timestamp": ({"webhook_timestamp": None}, BODY.encode()),
    "timestamp not a number": ({"webhook_timestamp": "soon"}, BODY.encode()),
    "timestamp with a fraction": ({"webhook_timestamp": "{now}.5"}, BODY.encode()),
    "timestamp with a sign": ({"webhook_timestamp": "+{now}"}, BODY.encode()),
    "negative timestamp": ({"webhook_timestamp": "-1"}, BODY.encode()),
    "tampered body": ({}, TAMPERED),
    "body not UTF-8": ({}, b"\xff\xfe" + BODY.encode()),
    "different id": ({"webhook_id": "msg_other"}, BODY.encode()),
}


@pytest.mark.parametrize(("overrides", "body"), REFUSED.values(), ids=REFUSED.keys())
def test_malformed_or_tampered_webhooks_raise_only_signature_error(
    overrides: dict[str, str | None], body: bytes
) -> None:
    headers = _headers(**overrides)
    with pytest.raises(SignatureError):
        verify(SECRET, headers, body, now=_now())


@pytest.mark.parametrize(
    "secret",
    [
        "whsec_YW5vdGhlci1rZXktdGhhdC1pcy0zMi1ieXRlcy1sb25n",  # well formed, another key
        "whsec_",
        "",
        "whsec_not base64 ü",
        "not-the-secret",
    ],
)
def test_a_wrong_or_unusable_secret_is_a_signature_error(secret: str) -> None:
    with pytest.raises(SignatureError):
        verify(secret, _headers(), BODY.encode(), now=_now())


@pytest.mark.parametrize("skew", [-301, 301, -3600, 3600])
def test_a_timestamp_outside_five_minutes_of_our_clock_is_refused(skew: int) -> None:
    now = _now()
    headers = sign(SECRET, "msg_6", now + skew, BODY.encode()).as_dict()

    with pytest.raises(SignatureError, match="tolerance"):
        verify(SECRET, headers, BODY.encode(), now=now)


def test_the_window_is_measured_by_our_clock_and_may_only_be_narrowed() -> None:
    now = _now()
    headers = sign(SECRET, "msg_7", now, BODY.encode()).as_dict()

    with pytest.raises(SignatureError, match="tolerance"):  # our clock says an hour later
        verify(SECRET, headers, BODY.encode(), now=now + 3600)
    with pytest.raises(SignatureError, match="tolerance"):
        verify(SECRET, headers, BODY.encode(), now=now + 20, tolerance_seconds=10)
    with pytest.raises(ValueError, match="library"):  # wider than the library's window: a bug
        verify(SECRET, headers, BODY.encode(), now=now, tolerance_seconds=3600)


def test_signing_with_an_unusable_secret_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="whsec_"):
        sign("", "msg_8", _now(), BODY.encode())


@pytest.mark.parametrize(
    "secret",
    [
        "a-real-secret-from-the-vault",  # text, not whsec_
        "whsec_" + base64.b64encode(b"x" * 23).decode(),  # too short
        "whsec_@@@@not*base64@@@@@@@@@@@@@@@@@@",
        "whsec_",
    ],
)
def test_settings_refuse_a_webhook_secret_that_is_not_whsec_base64_of_24_bytes(
    secret: str,
) -> None:
    with pytest.raises(ConfigurationError, match="whsec_"):
        Settings(environment="development", webhook_secret=secret).check()


def test_the_refusal_does_not_repeat_the_secret() -> None:
    with pytest.raises(ConfigurationError) as refused:
        Settings(webhook_secret="a-real-secret-from-the-vault").check()
    assert "a-real-secret" not in str(refused.value)


def test_settings_accept_a_standard_webhooks_secret_unpadded_or_padded() -> None:
    Settings(environment="development", webhook_secret=new_secret()).check()
    unpadded = "whsec_" + base64.b64encode(b"y" * 25).decode().rstrip("=")
    Settings(environment="development", webhook_secret=unpadded).check()


def test_the_demo_defaults_are_one_valid_secret_that_production_refuses() -> None:
    cli_default = _parser().parse_args(["simulate", "payments"]).webhook_secret
    assert (
        Settings().webhook_secret.get_secret_value()
        == SimulatorConfig().webhook_secret
        == cli_default
        == DEMO_WEBHOOK_SECRET
    )
    assert len(decode_secret(DEMO_WEBHOOK_SECRET)) >= 24
    headers = sign(DEMO_WEBHOOK_SECRET, "msg_9", _now(), BODY.encode()).as_dict()
    Webhook(DEMO_WEBHOOK_SECRET).verify(BODY.encode(), headers)
    with pytest.raises(ConfigurationError, match="webhook_secret is a demo secret"):
        Settings(environment="production").check()
