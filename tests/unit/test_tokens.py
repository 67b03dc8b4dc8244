"""Forged, expired and misdirected tokens are refused; good ones become an Actor."""

import base64
import json
import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, HTTPServer

import jwt
import pytest
from cryptography.hazmat.primitives.serialization import load_pem_private_key

from product_shop.access.actor import Role
from product_shop.access.demo_idp import KeyPair
from product_shop.access.tokens import TokenVerifier
from product_shop.config import DEFAULT_AUDIENCE, DEFAULT_ISSUER
from product_shop.core.errors import Forbidden, InvalidToken
from tests.conftest import TokenFactory

PRACTICE = uuid.uuid4()


@pytest.fixture
def verifier(key_pair: KeyPair) -> TokenVerifier:
    return TokenVerifier(
        issuer=DEFAULT_ISSUER,
        audience=DEFAULT_AUDIENCE,
        algorithms=["RS256"],
        public_key=key_pair.public_pem,
        leeway_seconds=0,
    )


def test_a_valid_patient_token_becomes_an_actor(
    verifier: TokenVerifier, make_token: TokenFactory
) -> None:
    subject = str(uuid.uuid4())
    actor = verifier.verify(
        make_token(role="patient", subject=subject, practice_id=PRACTICE, name="Penny", mfa=True)
    )
    assert actor.role is Role.PATIENT
    assert actor.actor_id == subject
    assert actor.patient_id == uuid.UUID(subject)
    assert actor.practice_id == PRACTICE
    assert actor.name == "Penny"
    assert actor.mfa is True
    assert actor.auth_time is not None


def test_a_token_signed_with_another_key_is_refused(
    verifier: TokenVerifier, make_token: TokenFactory, other_key_pair: KeyPair
) -> None:
    token = make_token(role="patient", practice_id=PRACTICE, private_pem=other_key_pair.private_pem)
    with pytest.raises(InvalidToken):
        verifier.verify(token)


def _unsigned(claims: dict[str, object], alg: str = "none") -> str:
    def part(data: dict[str, object]) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()

    return f"{part({'alg': alg, 'typ': 'JWT'})}.{part(claims)}."


def _claims() -> dict[str, object]:
    now = int(datetime.now(UTC).timestamp())
    return {
        "iss": DEFAULT_ISSUER,
        "aud": DEFAULT_AUDIENCE,
        "sub": str(uuid.uuid4()),
        "role": "practice_admin",
        "practice_id": str(PRACTICE),
        "exp": now + 600,
    }


@pytest.mark.parametrize("alg", ["none", "None", "NONE"])
def test_an_unsigned_alg_none_token_is_refused(verifier: TokenVerifier, alg: str) -> None:
    with pytest.raises(InvalidToken):
        verifier.verify(_unsigned(_claims(), alg))


def test_hmac_signed_with_the_public_key_is_refused(
    verifier: TokenVerifier, key_pair: KeyPair
) -> None:
    """The classic algorithm-confusion forgery: HS256 keyed with the (public) RSA key."""
    header = base64.urlsafe_b64encode(b'{"alg":"HS256","typ":"JWT"}').rstrip(b"=")
    body = base64.urlsafe_b64encode(json.dumps(_claims()).encode()).rstrip(b"=")
    import hashlib
    import hmac

    signature = hmac.new(
        key_pair.public_pem.encode(), header + b"." + body, hashlib.sha256
    ).digest()
    token = b".".join([header, body, base64.urlsafe_b64encode(signature).rstrip(b"=")]).decode()
    with pytest.raises(InvalidToken, match="algorithm"):
        verifier.verify(token)


def test_an_expired_token_is_refused(verifier: TokenVerifier, make_token: TokenFactory) -> None:
    token = make_token(
        role="patient",
        practice_id=PRACTICE,
        now=datetime.now(UTC) - timedelta(hours=2),
        ttl=timedelta(hours=1),
    )
    with pytest.raises(InvalidToken, match="expired"):
        verifier.verify(token)


def test_a_token_not_yet_valid_is_refused(
    verifier: TokenVerifier, make_token: TokenFactory
) -> None:
    token = make_token(
        role="patient", practice_id=PRACTICE, now=datetime.now(UTC) + timedelta(minutes=10)
    )
    with pytest.raises(InvalidToken, match="not valid yet"):
        verifier.verify(token)


def test_a_token_for_another_audience_is_refused(
    verifier: TokenVerifier, make_token: TokenFactory
) -> None:
    with pytest.raises(InvalidToken, match="not issued for Product Shop"):
        verifier.verify(
            make_token(role="patient", practice_id=PRACTICE, audience="hygiene-subscriptions")
        )


def test_a_token_from_another_issuer_is_refused(
    verifier: TokenVerifier, make_token: TokenFactory
) -> None:
    with pytest.raises(InvalidToken, match="Access Manager"):
        verifier.verify(
            make_token(role="patient", practice_id=PRACTICE, issuer="https://evil.example")
        )


def test_a_token_without_expiry_is_refused(verifier: TokenVerifier, key_pair: KeyPair) -> None:
    claims = _claims()
    del claims["exp"]
    token = jwt.encode(claims, key_pair.private_pem, algorithm="RS256")
    with pytest.raises(InvalidToken):
        verifier.verify(token)


def test_a_practice_role_without_practice_is_refused(
    verifier: TokenVerifier, make_token: TokenFactory
) -> None:
    with pytest.raises(InvalidToken, match="names no practice"):
        verifier.verify(make_token(role="clinician"))


def test_an_unknown_role_is_forbidden(verifier: TokenVerifier, make_token: TokenFactory) -> None:
    with pytest.raises(Forbidden):
        verifier.verify(make_token(role="superuser", practice_id=PRACTICE))


def test_garbage_is_refused(verifier: TokenVerifier) -> None:
    with pytest.raises(InvalidToken):
        verifier.verify("not-a-jwt")


def test_the_verifier_refuses_to_be_configured_with_hmac_or_none(key_pair: KeyPair) -> None:
    for algorithms in (["HS256"], ["none"], ["RS256", "HS512"], []):
        with pytest.raises(ValueError, match="refusing"):
            TokenVerifier(
                issuer="i", audience="a", algorithms=algorithms, public_key=key_pair.public_pem
            )


@pytest.fixture
def jwks_url(key_pair: KeyPair) -> Iterator[str]:
    """Access Manager's JWKS endpoint, served over real HTTP on a local port."""
    private = load_pem_private_key(key_pair.private_pem.encode(), password=None)
    jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(private.public_key()))  # type: ignore[arg-type]
    jwk.update({"kid": "demo-idp-1", "use": "sig", "alg": "RS256"})
    body = json.dumps({"keys": [jwk]}).encode()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/.well-known/jwks.json"
    server.shutdown()
    server.server_close()


def test_tokens_verify_against_a_jwks_url(
    jwks_url: str, make_token: TokenFactory, other_key_pair: KeyPair
) -> None:
    verifier = TokenVerifier(
        issuer=DEFAULT_ISSUER, audience=DEFAULT_AUDIENCE, algorithms=["RS256"], jwks_url=jwks_url
    )
    actor = verifier.verify(make_token(role="finance", practice_id=PRACTICE))
    assert actor.role is Role.FINANCE
    with pytest.raises(InvalidToken):
        verifier.verify(
            make_token(role="finance", practice_id=PRACTICE, private_pem=other_key_pair.private_pem)
        )
