"""Demo identity provider, for the embedded default only.

It stands in for Access Manager on one laptop: a local RSA signing key kept in the data
directory and a function that issues tokens with the same claims Access Manager issues. The
service verifies these tokens exactly as it verifies real ones (public key, iss, aud, exp). In
production the settings check refuses to start with this key (see `config.Settings.check`).
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from product_shop.config import DEMO_KEY_MARKER

KEY_ID = "demo-idp-1"
DEMO_KEY_DIR = "demo-idp"
# Marker in the public key file: the production settings check refuses any key carrying it.
DEMO_KEY_HEADER = f"# {DEMO_KEY_MARKER} - never use in production\n"


@dataclass(frozen=True, slots=True)
class KeyPair:
    private_pem: str
    public_pem: str


def generate_key_pair() -> KeyPair:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    public_pem = (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    return KeyPair(private_pem=private_pem, public_pem=public_pem)


def key_dir(data_dir: Path) -> Path:
    return data_dir / DEMO_KEY_DIR


def public_key_file(data_dir: Path) -> Path:
    return key_dir(data_dir) / "public-key.pem"


def ensure_key_pair(data_dir: Path) -> KeyPair:
    """Load the demo key pair from the data directory, creating it on first use.

    Safe when several processes start on a fresh directory at once: the private key is created
    exclusively (one writer wins, the others load its key) and the public key is derived from it.
    """
    directory = key_dir(data_dir)
    directory.mkdir(parents=True, exist_ok=True)
    private_file = directory / "signing-key.pem"
    if not private_file.exists():
        candidate = generate_key_pair()
        staging = directory / f".signing-key.{os.getpid()}.{secrets.token_hex(4)}"
        staging.write_text(candidate.private_pem)
        staging.chmod(0o600)
        try:
            os.link(staging, private_file)  # fails if another process got there first
        except FileExistsError:
            pass
        finally:
            staging.unlink()
    private_pem = private_file.read_text()
    public_pem = _public_pem(private_pem)
    public_file = directory / "public-key.pem"
    if not public_file.exists() or public_file.read_text() != DEMO_KEY_HEADER + public_pem:
        staging = directory / f".public-key.{os.getpid()}.{secrets.token_hex(4)}"
        staging.write_text(DEMO_KEY_HEADER + public_pem)
        staging.replace(public_file)
    return KeyPair(private_pem, public_pem)


def _public_pem(private_pem: str) -> str:
    key = serialization.load_pem_private_key(private_pem.encode(), password=None)
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


def issue_token(
    private_pem: str,
    *,
    subject: str,
    role: str,
    issuer: str,
    audience: str,
    now: datetime,
    name: str | None = None,
    practice_id: str | None = None,
    mfa: bool = False,
    ttl: timedelta = timedelta(hours=8),
    extra: dict[str, Any] | None = None,
) -> str:
    claims: dict[str, Any] = {
        "iss": issuer,
        "aud": audience,
        "sub": subject,
        "role": role,
        "iat": int(now.timestamp()),
        "nbf": int(now.timestamp()),
        "exp": int((now + ttl).timestamp()),
        "auth_time": int(now.timestamp()),
        "amr": ["pwd", "mfa"] if mfa else ["pwd"],
    }
    if name is not None:
        claims["name"] = name
    if practice_id is not None:
        claims["practice_id"] = practice_id
    if extra:
        claims.update(extra)
    return jwt.encode(claims, private_pem, algorithm="RS256", headers={"kid": KEY_ID})
