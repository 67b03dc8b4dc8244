"""The Access Manager simulator's pieces without a server: the demo TOTP secrets, the demo staff,
the configuration it refuses, and its pages (the demo code hint, escaping), in process."""

from __future__ import annotations

import base64
import re
from dataclasses import replace
from datetime import UTC, datetime

import pyotp
import pytest
from fastapi.testclient import TestClient

from product_shop.access import demo_idp
from product_shop.demo.data import USERS
from product_shop.simulators.access import (
    AccessClient,
    AccessSimulatorConfig,
    AccessUser,
    create_access_simulator,
    demo_totp_secret,
    users_from_demo,
)

CALLBACK = "http://127.0.0.1:9/callback"
CHALLENGE = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"  # RFC 7636 appendix B
FIXED = datetime(2026, 3, 2, 9, 30, 15, tzinfo=UTC)


@pytest.fixture(scope="module")
def keys() -> demo_idp.KeyPair:
    return demo_idp.generate_key_pair()


def config(keys: demo_idp.KeyPair, **changes: object) -> AccessSimulatorConfig:
    base = AccessSimulatorConfig(
        private_pem=keys.private_pem,
        issuer="https://am.test",
        audience="product-shop",
        public_url="http://testserver",
        clients={"portal": AccessClient("portal", None, (CALLBACK,))},
        users=users_from_demo(),
        clock=lambda: FIXED,
    )
    return replace(base, **changes)  # type: ignore[arg-type]


def authorize(client: TestClient, **extra: str) -> str:
    params = {
        "response_type": "code",
        "client_id": "portal",
        "redirect_uri": CALLBACK,
        "scope": "openid",
        "state": "s",
        "code_challenge": CHALLENGE,
        "code_challenge_method": "S256",
        **extra,
    }
    page = client.get("/authorize", params=params)
    assert page.status_code == 200, page.text
    return page.text


def test_demo_totp_secret_is_deterministic_base32() -> None:
    secret = demo_totp_secret("subject-1")
    assert secret == demo_totp_secret("subject-1")
    assert secret != demo_totp_secret("subject-2")
    assert re.fullmatch(r"[A-Z2-7]{32}", secret)
    assert len(base64.b32decode(secret)) == 20
    assert re.fullmatch(r"\d{6}", pyotp.TOTP(secret).now())


def test_users_from_demo_are_the_staff_with_their_secrets() -> None:
    users = users_from_demo()
    staff = [u for u in USERS if u.role not in ("patient", "service")]
    assert [u.handle for u in users] == [u.handle for u in staff]
    assert {u.role for u in users}.isdisjoint({"patient", "service"})
    for user, demo in zip(users, staff, strict=True):
        assert user.subject == demo.subject
        assert user.totp_secret == demo_totp_secret(demo.subject)
        expected = str(demo.practice.practice_id) if demo.practice else None
        assert user.practice_id == expected


def test_a_configuration_that_could_only_fail_later_is_refused(keys: demo_idp.KeyPair) -> None:
    users = users_from_demo()
    twin = replace(users[0], subject="another")
    bad_secret = replace(users[0], totp_secret="not base32!")
    relative = {"portal": AccessClient("portal", None, ("/callback",))}
    for changes in (
        {"users": [*users, twin]},
        {"users": [bad_secret]},
        {"clients": relative},
        {"code_ttl_seconds": 0},
        {"public_url": "127.0.0.1:8107"},
        {"private_pem": "not a key"},
    ):
        with pytest.raises(ValueError):  # noqa: PT011 - each names its own problem
            create_access_simulator(config(keys, **changes))
    create_access_simulator(config(keys))  # the base is fine


def test_the_demo_hint_shows_the_current_code_only_when_asked(keys: demo_idp.KeyPair) -> None:
    user = users_from_demo()[0]
    expected = pyotp.TOTP(user.totp_secret).at(FIXED)
    with_hint = TestClient(create_access_simulator(config(keys, show_codes=True)))
    page = authorize(with_hint, acr_values="mfa", login_hint=user.handle)
    assert f"<strong>{expected}</strong>" in page
    without = TestClient(create_access_simulator(config(keys)))
    assert expected not in authorize(without, acr_values="mfa", login_hint=user.handle)


def test_pages_escape_what_they_show(keys: demo_idp.KeyPair) -> None:
    odd = AccessUser(
        handle='x"><script>',
        subject="s-1",
        name="<b>Mallory</b>",
        role="staff",
        practice_id=None,
        totp_secret=demo_totp_secret("s-1"),
    )
    client = TestClient(create_access_simulator(config(keys, users=[odd])))
    page = authorize(client)
    assert "<b>Mallory</b>" not in page
    assert "&lt;b&gt;Mallory&lt;/b&gt;" in page
    assert "<script>" not in page
    assert "'none'" in client.get("/authorize").headers["content-security-policy"]


def test_the_token_endpoint_answers_rfc_6749_errors(keys: demo_idp.KeyPair) -> None:
    client = TestClient(create_access_simulator(config(keys)))
    other_grant = client.post("/token", data={"grant_type": "password", "client_id": "portal"})
    assert other_grant.status_code == 400
    assert other_grant.json()["error"] == "unsupported_grant_type"
    assert other_grant.headers["cache-control"] == "no-store"
    no_verifier = client.post(
        "/token",
        data={"grant_type": "authorization_code", "client_id": "portal", "code": "c"},
    )
    assert no_verifier.json()["error"] == "invalid_request"
    unknown = client.post("/token", data={"grant_type": "authorization_code", "client_id": "x"})
    assert unknown.status_code == 401
    assert unknown.json()["error"] == "invalid_client"
