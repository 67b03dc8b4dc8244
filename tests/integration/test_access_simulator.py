"""The Access Manager simulator over real HTTP on a local port: discovery and JWKS, the code
flow with PKCE driven by Authlib's standard client, the token endpoint's refusals, the TOTP
step, login_hint, userinfo, logout and the token-failures control.

One simulator for the module (a fresh key, the demo's staff, a confidential and a public
client, a clock the tests can move); after each test it is reset and the clock put back. Its
access tokens are checked with Product Shop's own `TokenVerifier` on the simulator's JWKS.
"""

from __future__ import annotations

import base64
import hashlib
import re
import secrets
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import jwt
import pyotp
import pytest
from authlib.integrations.httpx_client import OAuth2Client

from product_shop.access import demo_idp
from product_shop.access.actor import Role
from product_shop.access.tokens import TokenVerifier
from product_shop.simulators.access import (
    AccessClient,
    AccessSimulatorConfig,
    AccessUser,
    create_access_simulator,
    demo_totp_secret,
    users_from_demo,
)
from product_shop.simulators.server import BackgroundServer, free_port, serve_in_background

ISSUER = "https://access-manager.test"  # not where it is served: iss and URLs are separate
AUDIENCE = "product-shop"
PORTAL = "portal"
PORTAL_SECRET = "portal-secret"
PUBLIC = "public-app"
CALLBACK = "http://127.0.0.1:9/portal/auth/callback"
SIGNED_OUT = "http://127.0.0.1:9/portal/"
CODE_TTL = 60
AUTH_METHODS = ["client_secret_basic", "client_secret_post", "none"]


class Clock:
    """Real time plus an offset a test may move."""

    def __init__(self) -> None:
        self.offset = timedelta()

    def __call__(self) -> datetime:
        return datetime.now(UTC) + self.offset


@pytest.fixture(scope="module")
def clock() -> Clock:
    return Clock()


@pytest.fixture(scope="module")
def simulator(clock: Clock) -> Iterator[BackgroundServer]:
    port = free_port()
    config = AccessSimulatorConfig(
        private_pem=demo_idp.generate_key_pair().private_pem,
        issuer=ISSUER,
        audience=AUDIENCE,
        public_url=f"http://127.0.0.1:{port}",
        clients={
            PORTAL: AccessClient(PORTAL, PORTAL_SECRET, (CALLBACK,), (SIGNED_OUT,)),
            PUBLIC: AccessClient(PUBLIC, None, (CALLBACK,)),
        },
        users=users_from_demo(),
        code_ttl_seconds=CODE_TTL,
        clock=clock,
    )
    server = serve_in_background(create_access_simulator(config), port)
    yield server
    server.stop()


@pytest.fixture
def http(simulator: BackgroundServer, clock: Clock) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=simulator.url, follow_redirects=False, timeout=10) as client:
        yield client
        clock.offset = timedelta()
        client.post("/_simulator/reset").raise_for_status()


@pytest.fixture(scope="module")
def staff() -> dict[str, AccessUser]:
    return {user.handle: user for user in users_from_demo()}


def pkce() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    digest = hashlib.sha256(verifier.encode()).digest()
    return verifier, base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def authorize(http: httpx.Client, challenge: str | None, **extra: str) -> httpx.Response:
    params = {
        "response_type": "code",
        "client_id": PORTAL,
        "redirect_uri": CALLBACK,
        "scope": "openid profile",
        "state": "state-123",
        "nonce": "nonce-456",
        "code_challenge_method": "S256",
        **extra,
    }
    if challenge is not None:
        params["code_challenge"] = challenge
    return http.get("/authorize", params=params)


def pending_id(page: httpx.Response) -> str:
    found = re.search(r'name="pending" value="([^"]+)"', page.text)
    assert found, page.text
    return found.group(1)


def query_of(response: httpx.Response) -> dict[str, str]:
    assert response.status_code == 302, response.text
    location = response.headers["location"]
    assert location.startswith(CALLBACK + "?")
    return {key: values[0] for key, values in parse_qs(urlsplit(location).query).items()}


def sign_in(http: httpx.Client, handle: str, challenge: str, **extra: str) -> str:
    """The picker, then the user chosen: the code the client is sent back with."""
    page = authorize(http, challenge, **extra)
    assert page.status_code == 200
    chosen = http.post("/authorize/login", data={"pending": pending_id(page), "handle": handle})
    returned = query_of(chosen)
    assert returned["state"] == "state-123"
    return returned["code"]


def exchange(http: httpx.Client, code: str, verifier: str, **overrides: Any) -> httpx.Response:
    data = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": CALLBACK,
        "code_verifier": verifier,
    }
    auth = overrides.pop("auth", (PORTAL, PORTAL_SECRET))
    data.update(overrides)
    return http.post("/token", data=data, auth=auth)


def verifier_for(simulator: BackgroundServer) -> TokenVerifier:
    return TokenVerifier(
        issuer=ISSUER, audience=AUDIENCE, algorithms=["RS256"], jwks_url=f"{simulator.url}/jwks"
    )


def wrong_code(secret: str) -> str:
    """A six-digit code valid nowhere in the accepted window."""
    totp, now = pyotp.TOTP(secret), time.time()
    valid = {totp.at(now + 30 * step) for step in (-1, 0, 1)}
    return next(code for code in ("000000", "111111", "222222", "333333") if code not in valid)


def assert_no_redirect(response: httpx.Response, status: int) -> None:
    assert response.status_code == status, response.text
    assert "location" not in response.headers


def assert_invalid_grant(response: httpx.Response) -> None:
    assert response.status_code == 400, response.text
    assert response.json()["error"] == "invalid_grant"
    assert response.headers["cache-control"] == "no-store"


def test_discovery_document(http: httpx.Client, simulator: BackgroundServer) -> None:
    document = http.get("/.well-known/openid-configuration").json()
    base = simulator.url
    expected = {
        "issuer": ISSUER,
        "authorization_endpoint": f"{base}/authorize",
        "token_endpoint": f"{base}/token",
        "jwks_uri": f"{base}/jwks",
        "userinfo_endpoint": f"{base}/userinfo",
        "end_session_endpoint": f"{base}/logout",
        "response_types_supported": ["code"],
        "grant_types_supported": ["authorization_code"],
        "code_challenge_methods_supported": ["S256"],
        "id_token_signing_alg_values_supported": ["RS256"],
        "scopes_supported": ["openid", "profile"],
        "token_endpoint_auth_methods_supported": AUTH_METHODS,
        "acr_values_supported": ["mfa"],
    }
    assert {key: document.get(key) for key in expected} == expected
    claims = {"sub", "nonce", "amr", "acr", "role", "practice_id"}
    assert claims <= set(document["claims_supported"])


def test_the_jwks_key_verifies_the_id_token(
    http: httpx.Client, staff: dict[str, AccessUser]
) -> None:
    keys = http.get("/jwks").json()["keys"]
    assert len(keys) == 1
    jwk = keys[0]
    assert (jwk["kty"], jwk["kid"], jwk["use"], jwk["alg"]) == ("RSA", "demo-idp-1", "sig", "RS256")
    verifier, challenge = pkce()
    code = sign_in(http, "meadowbank-finance", challenge)
    id_token = exchange(http, code, verifier).json()["id_token"]
    assert jwt.get_unverified_header(id_token)["kid"] == "demo-idp-1"
    key = jwt.PyJWK(jwk).key
    claims = jwt.decode(id_token, key, algorithms=["RS256"], audience=PORTAL, issuer=ISSUER)
    user = staff["meadowbank-finance"]
    assert claims["sub"] == user.subject
    assert claims["nonce"] == "nonce-456"
    assert claims["amr"] == ["pwd"]
    assert "acr" not in claims
    assert (claims["role"], claims["practice_id"]) == ("finance", user.practice_id)
    # A token signed with another key does not verify against the JWKS key.
    forged = jwt.encode(claims, demo_idp.generate_key_pair().private_pem, algorithm="RS256")
    with pytest.raises(jwt.InvalidSignatureError):
        jwt.decode(forged, key, algorithms=["RS256"], audience=PORTAL, issuer=ISSUER)


def test_the_code_flow_with_a_standard_client(
    http: httpx.Client, simulator: BackgroundServer, staff: dict[str, AccessUser]
) -> None:
    document = http.get("/.well-known/openid-configuration").json()
    verifier = secrets.token_urlsafe(48)
    with OAuth2Client(
        client_id=PORTAL,
        client_secret=PORTAL_SECRET,
        scope="openid profile",
        redirect_uri=CALLBACK,
        code_challenge_method="S256",
    ) as client:
        url, state = client.create_authorization_url(
            document["authorization_endpoint"], code_verifier=verifier, nonce="n-1"
        )
        page = http.get(url)
        assert page.status_code == 200
        shown = ("Sign in to Primoro (demo)", "Dr Priya Raman", "Harbour Dental Care")
        assert all(text in page.text for text in shown)
        chosen = http.post(
            "/authorize/login", data={"pending": pending_id(page), "handle": "harbour-clinician"}
        )
        assert query_of(chosen)["state"] == state
        token = client.fetch_token(
            document["token_endpoint"],
            authorization_response=chosen.headers["location"],
            state=state,
            code_verifier=verifier,
        )
    assert token["token_type"] == "Bearer"
    assert 0 < token["expires_in"] <= 3600
    assert token["scope"] == "openid profile"
    actor = verifier_for(simulator).verify(token["access_token"])
    user = staff["harbour-clinician"]
    assert actor.actor_id == user.subject
    assert actor.role is Role.CLINICIAN
    assert str(actor.practice_id) == user.practice_id
    assert actor.mfa is False
    counters = http.get("/_simulator/state").json()
    assert [counters[k] for k in ("authorizations", "codes_issued", "tokens_issued")] == [1, 1, 1]


def test_a_public_client_authenticates_by_its_id(http: httpx.Client) -> None:
    verifier, challenge = pkce()
    code = sign_in(http, "harbour-staff", challenge, client_id=PUBLIC)
    answer = exchange(http, code, verifier, auth=None, client_id=PUBLIC)
    assert answer.status_code == 200, answer.text
    assert answer.headers["cache-control"] == "no-store"
    id_claims = jwt.decode(answer.json()["id_token"], options={"verify_signature": False})
    assert id_claims["aud"] == PUBLIC


def test_a_wrong_code_verifier_is_refused(http: httpx.Client) -> None:
    _verifier, challenge = pkce()
    code = sign_in(http, "harbour-clinician", challenge)
    assert_invalid_grant(exchange(http, code, pkce()[0]))
    assert http.get("/_simulator/state").json()["tokens_issued"] == 0


def test_a_code_is_used_once(http: httpx.Client) -> None:
    verifier, challenge = pkce()
    code = sign_in(http, "harbour-clinician", challenge)
    assert exchange(http, code, verifier).status_code == 200
    assert_invalid_grant(exchange(http, code, verifier))


def test_an_expired_code_is_refused(http: httpx.Client, clock: Clock) -> None:
    verifier, challenge = pkce()
    code = sign_in(http, "harbour-clinician", challenge)
    clock.offset = timedelta(seconds=CODE_TTL + 1)
    assert_invalid_grant(exchange(http, code, verifier))


def test_the_code_is_bound_to_its_redirect_uri(http: httpx.Client) -> None:
    verifier, challenge = pkce()
    code = sign_in(http, "harbour-clinician", challenge)
    assert_invalid_grant(exchange(http, code, verifier, redirect_uri=CALLBACK + "/other"))


def test_a_wrong_client_secret_is_refused(http: httpx.Client) -> None:
    verifier, challenge = pkce()
    code = sign_in(http, "harbour-clinician", challenge)
    answer = exchange(http, code, verifier, auth=(PORTAL, "not-the-secret"))
    assert answer.status_code == 401
    assert answer.json()["error"] == "invalid_client"
    assert answer.headers["cache-control"] == "no-store"
    in_body = exchange(http, code, verifier, auth=None, client_id=PORTAL, client_secret="nope")
    assert in_body.status_code == 401


def test_an_unregistered_redirect_uri_is_a_page_not_a_redirect(http: httpx.Client) -> None:
    _, challenge = pkce()
    page = authorize(http, challenge, redirect_uri="https://attacker.example/callback")
    assert_no_redirect(page, 400)
    assert page.headers["content-type"].startswith("text/html")
    assert "attacker.example" not in page.text
    unknown = authorize(http, challenge, client_id="nobody")
    assert_no_redirect(unknown, 400)


def test_a_missing_code_challenge_goes_back_as_invalid_request(http: httpx.Client) -> None:
    returned = query_of(authorize(http, None))
    assert returned["error"] == "invalid_request"
    assert returned["state"] == "state-123"
    assert "code" not in returned
    _, challenge = pkce()
    wrong_scope = query_of(authorize(http, challenge, scope="profile"))
    assert wrong_scope["error"] == "invalid_scope"
    plain = query_of(authorize(http, challenge, code_challenge_method="plain"))
    assert plain["error"] == "invalid_request"


def test_mfa_needs_the_right_totp_code(
    http: httpx.Client, simulator: BackgroundServer, staff: dict[str, AccessUser]
) -> None:
    user = staff["harbour-practice-admin"]
    verifier, challenge = pkce()
    page = authorize(http, challenge, acr_values="mfa")
    pending = pending_id(page)
    prompt = http.post("/authorize/login", data={"pending": pending, "handle": user.handle})
    assert_no_redirect(prompt, 200)
    assert '<label for="code">Authentication code</label>' in prompt.text
    assert 'autocomplete="one-time-code"' in prompt.text
    assert 'inputmode="numeric"' in prompt.text
    bad = wrong_code(user.totp_secret)
    wrong = http.post("/authorize/mfa", data={"pending": pending, "code": bad})
    assert_no_redirect(wrong, 400)
    assert 'role="alert"' in wrong.text
    assert 'name="code"' in wrong.text
    started = int(time.time())
    code = pyotp.TOTP(demo_totp_secret(user.subject)).now()
    passed = http.post("/authorize/mfa", data={"pending": pending, "code": code})
    returned = query_of(passed)
    answer = exchange(http, returned["code"], verifier).json()
    actor = verifier_for(simulator).verify(answer["access_token"])
    assert (actor.mfa, actor.role) == (True, Role.PRACTICE_ADMIN)
    assert actor.auth_time is not None
    assert started <= actor.auth_time.timestamp() <= time.time() + 1
    id_claims = jwt.decode(answer["id_token"], options={"verify_signature": False})
    assert (id_claims["acr"], id_claims["amr"]) == ("mfa", ["pwd", "mfa"])
    assert http.get("/_simulator/state").json()["failed_mfa_attempts"] == 1


def test_six_wrong_codes_drop_the_authorization(
    http: httpx.Client, staff: dict[str, AccessUser]
) -> None:
    user = staff["meadowbank-clinician"]
    _, challenge = pkce()
    page = authorize(http, challenge, acr_values="mfa", login_hint=user.handle)
    pending = pending_id(page)
    bad = wrong_code(user.totp_secret)
    answers = [
        http.post("/authorize/mfa", data={"pending": pending, "code": bad}) for _ in range(6)
    ]
    assert [a.status_code for a in answers] == [400] * 6
    assert all('name="code"' in a.text for a in answers[:4])  # still asking
    assert all('name="code"' not in a.text for a in answers[4:])  # given up
    right = pyotp.TOTP(user.totp_secret).now()
    late = http.post("/authorize/mfa", data={"pending": pending, "code": right})
    assert_no_redirect(late, 400)
    counters = http.get("/_simulator/state").json()
    assert counters["pending_authorizations"] == 0
    assert counters["codes_issued"] == 0


def test_login_hint_skips_the_picker(http: httpx.Client, staff: dict[str, AccessUser]) -> None:
    user = staff["meadowbank-staff"]
    verifier, challenge = pkce()
    returned = query_of(authorize(http, challenge, login_hint=user.handle))
    claims = exchange(http, returned["code"], verifier).json()
    id_claims = jwt.decode(claims["id_token"], options={"verify_signature": False})
    assert id_claims["sub"] == user.subject
    # By subject too; with "mfa" the TOTP step comes straight away, for that user.
    step_up = authorize(http, challenge, login_hint=user.subject, acr_values="mfa")
    assert step_up.status_code == 200
    assert 'name="code"' in step_up.text
    assert user.name in step_up.text
    assert 'name="handle"' not in step_up.text


def test_token_failures_control(http: httpx.Client) -> None:
    verifier, challenge = pkce()
    code = sign_in(http, "harbour-finance", challenge)
    queued = http.post("/_simulator/token-failures", json={"count": 1, "status": 503})
    assert queued.status_code == 200
    failed = exchange(http, code, verifier)
    assert failed.status_code == 503
    assert failed.json()["error"] == "temporarily_unavailable"
    assert exchange(http, code, verifier).status_code == 200  # only the next one failed


def test_userinfo_needs_a_valid_access_token(
    http: httpx.Client, staff: dict[str, AccessUser]
) -> None:
    user = staff["harbour-finance"]
    verifier, challenge = pkce()
    code = sign_in(http, user.handle, challenge)
    access_token = exchange(http, code, verifier).json()["access_token"]
    info = http.get("/userinfo", headers={"Authorization": f"Bearer {access_token}"})
    assert info.json() == {
        "sub": user.subject,
        "name": user.name,
        "role": "finance",
        "practice_id": user.practice_id,
    }
    assert http.get("/userinfo").status_code == 401
    header, payload, signature = access_token.split(".")
    forged = f"{header}.{payload}.{signature[::-1]}"
    assert http.get("/userinfo", headers={"Authorization": f"Bearer {forged}"}).status_code == 401


def test_logout(http: httpx.Client) -> None:
    back = http.get("/logout", params={"post_logout_redirect_uri": SIGNED_OUT, "state": "s1"})
    assert back.status_code == 302
    assert back.headers["location"] == f"{SIGNED_OUT}?state=s1"
    # Not registered anywhere; registered, but not for the client named.
    for uri, client in (("https://x.example/", ""), (SIGNED_OUT, PUBLIC)):
        page = http.get("/logout", params={"post_logout_redirect_uri": uri, "client_id": client})
        assert_no_redirect(page, 200)
        assert "Signed out" in page.text
