"""In production the service refuses to start with demo keys, demo secrets or unsafe settings."""

import base64
import json
from pathlib import Path

import pytest

from product_shop.access.demo_idp import DEMO_KEY_HEADER, KeyPair
from product_shop.config import ConfigurationError, Settings
from product_shop.core.crypto import DEMO_KEY
from product_shop.core.signing import (
    DEMO_APPOINTMENTS_WEBHOOK_SECRET,
    DEMO_REWARDS_WEBHOOK_SECRET,
    DEMO_SUPPLIER_WEBHOOK_SECRET,
    DEMO_WEBHOOK_SECRET,
)
from product_shop.web.app import create_app

PG = "postgresql+psycopg://shop@db.internal/shop"
TEST_ENCRYPTION_KEY = base64.b64encode(b"test-only field key, 32 bytes!!!").decode()


def _production(key_pair: KeyPair, **overrides: object) -> Settings:
    values: dict[str, object] = {
        "environment": "production",
        "database_url": PG,
        "jwt_public_key": key_pair.public_pem,
        "webhook_secret": "whsec_YS1yZWFsLXNlY3JldC1mcm9tLXRoZS12YXVsdCEh",  # a vault value
        "payments_api_key": "a-real-api-key-from-the-vault",
        "supplier_webhook_secret": "whsec_YW5vdGhlci1yZWFsLXNlY3JldC1mb3Itc3VwcGxpZXJz",
        "suppliers_api_key": "a-real-supplier-key-from-the-vault",
        "rewards_webhook_secret": "whsec_YS1yZWFsLXJld2FyZHMtc2VjcmV0LWZyb20tdGhlLXZhdWx0",
        "rewards_api_key": "a-real-rewards-key-from-the-vault",
        "voucher_secret": "a-real-voucher-key-from-the-vault-0123456789",
        "appointments_webhook_secret": "whsec_YS1yZWFsLWFwcG9pbnRtZW50cy1zZWNyZXQtZnJvbS12YXVsdA==",
        "trusted_proxies": ["10.0.0.0/8"],  # behind a TLS-terminating load balancer
        # Field encryption (a test key: base64 of 32 bytes, not a real one).
        "encryption_keys": {"k1": TEST_ENCRYPTION_KEY},
        "event_sinks": {
            "communication_hub": {
                "url": "https://hub.internal/events",
                "secret": "whsec_Y29tbXVuaWNhdGlvbi1odWItcmVhbC1zZWNyZXQtMDE=",
            },
            "finance": {"kind": "nats"},
            "financial_insights": {"kind": "nats"},
            "hygiene_subscriptions": {"kind": "nats"},
            "module_owners": {"kind": "off"},
            "audit_compliance": {"kind": "nats"},
        },
    }
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]


def test_a_properly_configured_production_passes_the_check(key_pair: KeyPair) -> None:
    _production(key_pair).check()


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        ({"demo_mode": True}, "demo_mode"),
        ({"webhook_secret": DEMO_WEBHOOK_SECRET}, "webhook_secret is a demo secret"),
        ({"payments_api_key": "demo-payments-api-key"}, "payments_api_key is a demo secret"),
        (
            {"supplier_webhook_secret": DEMO_SUPPLIER_WEBHOOK_SECRET},
            "supplier_webhook_secret is a demo secret",
        ),
        ({"suppliers_api_key": "demo-suppliers-api-key"}, "suppliers_api_key is a demo secret"),
        (
            {"rewards_webhook_secret": DEMO_REWARDS_WEBHOOK_SECRET},
            "rewards_webhook_secret is a demo secret",
        ),
        ({"rewards_api_key": "demo-rewards-api-key"}, "rewards_api_key is a demo secret"),
        (
            {"voucher_secret": "demo-voucher-key-0123456789abcdefghij"},
            "voucher_secret is a demo secret",
        ),
        (
            {"appointments_webhook_secret": DEMO_APPOINTMENTS_WEBHOOK_SECRET},
            "appointments_webhook_secret is a demo secret",
        ),
        (
            {"suggestion_engine": "platform", "ai_service_api_key": "demo-ai-service-api-key"},
            "ai_service_api_key is a demo secret",
        ),
        ({"jwt_public_key": None}, "no JWT verification key"),
        ({"event_sinks": {}}, "event_sinks.communication_hub has a demo secret"),
        ({"database_url": "sqlite:///var/shop.sqlite3"}, "PostgreSQL"),
        ({"trusted_proxies": []}, "plain HTTP"),
    ],
)
def test_production_refuses_unsafe_settings(
    key_pair: KeyPair, overrides: dict[str, object], reason: str
) -> None:
    with pytest.raises(ConfigurationError, match=reason):
        _production(key_pair, **overrides).check()


def test_the_supplier_defaults_are_the_local_simulator_and_demo_values_production_refuses(
    key_pair: KeyPair,
) -> None:
    defaults = Settings()
    assert defaults.suppliers_base_url == "http://127.0.0.1:8102"
    assert defaults.supplier_webhook_secret.get_secret_value() == DEMO_SUPPLIER_WEBHOOK_SECRET
    assert DEMO_SUPPLIER_WEBHOOK_SECRET != DEMO_WEBHOOK_SECRET
    defaults.check()  # valid outside production
    with pytest.raises(ConfigurationError) as refused:
        _production(
            key_pair,
            supplier_webhook_secret=DEMO_SUPPLIER_WEBHOOK_SECRET,
            suppliers_api_key="demo-suppliers-api-key",
        ).check()
    assert "supplier_webhook_secret is a demo secret" in str(refused.value)
    assert "suppliers_api_key is a demo secret" in str(refused.value)


@pytest.mark.parametrize(
    "secret", ["a-plain-secret-from-the-vault", "whsec_not base64!", "whsec_c2hvcnQ="]
)
def test_a_supplier_webhook_secret_not_in_the_standard_webhooks_format_is_refused_anywhere(
    secret: str,
) -> None:
    with pytest.raises(ConfigurationError, match="supplier_webhook_secret") as refused:
        Settings(environment="development", supplier_webhook_secret=secret).check()
    assert secret not in str(refused.value)


def test_production_refuses_the_demo_identity_providers_key(
    key_pair: KeyPair, tmp_path: Path
) -> None:
    with pytest.raises(ConfigurationError, match="demo identity provider"):
        _production(key_pair, jwt_public_key=DEMO_KEY_HEADER + key_pair.public_pem).check()
    key_file = tmp_path / "demo-idp" / "public-key.pem"
    key_file.parent.mkdir()
    key_file.write_text(key_pair.public_pem)
    with pytest.raises(ConfigurationError, match="demo identity provider"):
        _production(key_pair, jwt_public_key=None, jwt_public_key_file=key_file).check()


def test_the_app_factory_refuses_to_start_with_demo_settings_in_production(
    key_pair: KeyPair,
) -> None:
    with pytest.raises(ConfigurationError):
        create_app(_production(key_pair, demo_mode=True))


@pytest.mark.parametrize("algorithms", [["HS256"], ["none"], ["RS256", "HS384"], []])
def test_symmetric_or_none_algorithms_are_refused_in_any_environment(algorithms: list[str]) -> None:
    with pytest.raises(ConfigurationError, match="asymmetric"):
        Settings(environment="development", jwt_algorithms=algorithms).check()


def test_settings_read_the_product_shop_prefix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PRODUCT_SHOP_DATABASE_URL", PG)
    monkeypatch.setenv("PRODUCT_SHOP_ENVIRONMENT", "production")
    settings = Settings()
    assert settings.database_url == PG
    assert settings.environment == "production"


def test_concurrent_first_use_of_a_data_dir_yields_one_demo_key(tmp_path: Path) -> None:
    from concurrent.futures import ThreadPoolExecutor

    from product_shop.access.demo_idp import ensure_key_pair, public_key_file

    with ThreadPoolExecutor(max_workers=6) as pool:
        pairs = list(pool.map(lambda _: ensure_key_pair(tmp_path), range(6)))
    assert len({p.private_pem for p in pairs}) == 1
    assert public_key_file(tmp_path).read_text() == DEMO_KEY_HEADER + pairs[0].public_pem


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        ({"event_sinks": {"accounts": {"kind": "off"}}}, "unknown destinations accounts"),
        ({"event_routes": {"order.created.v1": ["nowhere"]}}, "unknown destination"),
        ({"event_routes": {"order.exploded.v1": ["finance"]}}, "unknown event type"),
        (
            {"event_sinks": {"finance": {"secret": "whsec_c2hvcnQ="}}},
            "event_sinks.finance.secret must be",
        ),
    ],
)
def test_event_delivery_settings_that_name_nothing_real_are_refused_anywhere(
    overrides: dict[str, object], reason: str
) -> None:
    with pytest.raises(ConfigurationError, match=reason):
        Settings(environment="development", **overrides).check()  # type: ignore[arg-type]


def test_a_webhook_destination_defaults_to_the_receivers_simulator_with_its_demo_secret() -> None:
    from product_shop.core.signing import demo_destination_secret

    sink = Settings(receivers_base_url="http://127.0.0.1:9999/").event_sink("finance")
    assert (sink.kind, sink.url) == ("webhook", "http://127.0.0.1:9999/finance")
    assert sink.secret is not None
    assert sink.secret.get_secret_value() == demo_destination_secret("finance")


def test_production_serves_tls_itself_or_behind_trusted_proxies(key_pair: KeyPair) -> None:
    _production(
        key_pair,
        trusted_proxies=[],
        ssl_certfile="/etc/tls/cert.pem",
        ssl_keyfile="/etc/tls/key.pem",
    ).check()
    with pytest.raises(ConfigurationError, match="go together"):
        _production(key_pair, ssl_certfile="/etc/tls/cert.pem").check()
    with pytest.raises(ConfigurationError, match="trusted_proxies"):
        _production(key_pair, trusted_proxies=["not-a-network"]).check()


@pytest.mark.parametrize("name", ["checkout_rate_limit", "webhook_rate_limit"])
def test_rate_limits_must_be_rates(name: str) -> None:
    Settings(**{name: "5/second"}).check()  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match=name):
        Settings(**{name: "lots"}).check()  # type: ignore[arg-type]


def test_production_refuses_the_demo_field_encryption_key(key_pair: KeyPair) -> None:
    """No key set means the public DEMO key (core/crypto.py): fine for the demo and tests,
    refused in production with a message naming the settings to set."""
    demo = base64.b64encode(DEMO_KEY).decode()
    for keys, current in (
        ({}, None),
        ({"demo": demo}, None),
        ({"k1": TEST_ENCRYPTION_KEY, "old": demo}, "k1"),
    ):
        settings = _production(key_pair, encryption_keys=keys, encryption_key_id=current)
        with pytest.raises(ConfigurationError, match=r"DEMO key.*PRODUCT_SHOP_ENCRYPTION_KEYS"):
            settings.check()
    _production(key_pair, encryption_keys={}, environment="development").check()


def test_encryption_keys_come_from_the_environment_or_a_key_file(
    key_pair: KeyPair, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    second = base64.b64encode(b"another test-only key, 32 bytes!").decode()
    monkeypatch.setenv(
        "PRODUCT_SHOP_ENCRYPTION_KEYS", json.dumps({"k1": TEST_ENCRYPTION_KEY, "k2": second})
    )
    monkeypatch.setenv("PRODUCT_SHOP_ENCRYPTION_KEY_ID", "k2")
    keyring = Settings().keyring()
    assert (sorted(keyring.keys), keyring.current_id) == (["k1", "k2"], "k2")
    monkeypatch.delenv("PRODUCT_SHOP_ENCRYPTION_KEYS")
    monkeypatch.delenv("PRODUCT_SHOP_ENCRYPTION_KEY_ID")
    key_file = tmp_path / "keys.json"
    key_file.write_text(json.dumps({"k3": second}))
    from_file = _production(key_pair, encryption_keys={}, encryption_key_file=key_file)
    from_file.check()
    assert from_file.keyring().current_id == "k3"


@pytest.mark.parametrize(
    ("keys", "current", "reason"),
    [
        ({"k1": "bm90IDMyIGJ5dGVz"}, None, "must be 32 bytes"),
        ({"k1": "***"}, None, "not base64"),
        ({"k1": TEST_ENCRYPTION_KEY, "k2": TEST_ENCRYPTION_KEY}, None, "name the current one"),
        ({"k1": TEST_ENCRYPTION_KEY}, "k9", "not among the keys"),
        ({"bad id!": TEST_ENCRYPTION_KEY}, None, "key id"),
    ],
)
def test_malformed_encryption_keys_are_refused_without_repeating_them(
    key_pair: KeyPair, keys: dict[str, str], current: str | None, reason: str
) -> None:
    settings = _production(key_pair, encryption_keys=keys, encryption_key_id=current)
    with pytest.raises(ConfigurationError, match=reason) as refused:
        settings.check()
    assert TEST_ENCRYPTION_KEY not in str(refused.value)
