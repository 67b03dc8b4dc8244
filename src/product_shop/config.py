"""The one settings object (environment prefix PRODUCT_SHOP_).

In production the service refuses to start with the demo identity provider, demo secrets, the
demo field encryption key, an embedded SQLite database, or no way to verify access tokens.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from product_shop.core.crypto import DEMO_KEY_ID, Keyring, KeyringError, demo_keyring
from product_shop.core.signing import (
    DEMO_APPOINTMENTS_WEBHOOK_SECRET,
    DEMO_REWARDS_WEBHOOK_SECRET,
    DEMO_SUPPLIER_WEBHOOK_SECRET,
    DEMO_WEBHOOK_SECRET,
    demo_destination_secret,
)
from product_shop.core.urls import origin_of

DEMO_SECRET_PREFIX = "demo-"  # noqa: S105 (a marker to refuse, not a secret)
# Marker line the demo identity provider writes into its public key file.
DEMO_KEY_MARKER = "Product Shop demo identity provider key"
DEFAULT_ISSUER = "https://access-manager.primoro.local"
DEFAULT_AUDIENCE = "product-shop"
# Asymmetric algorithms only: never "none", never HMAC (a public key must not become a secret).
ALLOWED_JWT_ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "ES256", "ES384", "EdDSA")


class ConfigurationError(RuntimeError):
    """The service cannot start safely with these settings."""


def _upper(value: Any) -> Any:
    return value.upper() if isinstance(value, str) else value


class EventSinkSettings(BaseModel):
    """How one receiving module gets its events (settings `event_sinks`, by destination key).

    `webhook`: POST to `url` (default: the receivers simulator, `receivers_base_url`/<key>),
    signed with `secret` (default: the destination's demo secret, refused in production).
    `nats`: publish to the JetStream stream (`nats_url`, `nats_stream`). `off`: its deliveries
    are queued and wait, never dropped, until a sink is configured."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["webhook", "nats", "off"] = "webhook"
    url: str | None = None

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("http://", "https://")):
            raise ValueError("a webhook sink's url is an http(s) URL")
        return value

    secret: SecretStr | None = None
    connect_timeout_seconds: float = Field(default=3.0, gt=0, le=60)
    read_timeout_seconds: float = Field(default=10.0, gt=0, le=120)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="PRODUCT_SHOP_", extra="ignore")

    environment: Literal["development", "test", "production"] = "development"
    database_url: str = "sqlite:///var/product_shop.sqlite3"
    # PostgreSQL connections each process keeps open (plus half as many more under a burst). At
    # least the requests a worker runs at once, or connections are opened and closed under load
    # (a server process each). Workers x 1.5 x this must stay under the server's max_connections.
    db_pool_size: int = Field(default=20, ge=1, le=100)
    # PostgreSQL: the role the service acts as once connected (SET ROLE), when the login role is
    # a member of it rather than the role itself. Either way the role must not own the tables
    # nor bypass row-level security: production refuses to start otherwise (docs/security.md).
    database_role: str | None = None
    data_dir: Path = Path("var")

    jwt_issuer: str = DEFAULT_ISSUER
    jwt_audience: str = DEFAULT_AUDIENCE
    jwt_jwks_url: str | None = None
    jwt_public_key: str | None = Field(default=None, description="PEM public key")
    jwt_public_key_file: Path | None = None
    jwt_algorithms: list[str] = Field(default_factory=lambda: ["RS256", "ES256", "EdDSA"])
    jwt_leeway_seconds: int = Field(default=30, ge=0, le=300)

    demo_mode: bool = False
    # Secret for signed inbound webhooks (Standard Webhooks: `whsec_` + base64 of >= 24 random
    # bytes, checked by `check`). The demo value is refused in production.
    webhook_secret: SecretStr = SecretStr(DEMO_WEBHOOK_SECRET)

    # Integrated Payments (the only payment path, spec §5.1).
    payments_base_url: str = "http://127.0.0.1:8101"
    payments_api_key: SecretStr = SecretStr("demo-payments-api-key")
    payments_timeout_seconds: float = Field(default=5.0, gt=0, le=120)
    # The Primoro supplier network (drop-ship, spec §6.1), and the secret its signed callbacks to
    # `/v1/webhooks/suppliers` carry (same format and checks as `webhook_secret`, its own value).
    suppliers_base_url: str = "http://127.0.0.1:8102"
    suppliers_api_key: SecretStr = SecretStr("demo-suppliers-api-key")
    suppliers_timeout_seconds: float = Field(default=5.0, gt=0)
    supplier_webhook_secret: SecretStr = SecretStr(DEMO_SUPPLIER_WEBHOOK_SECRET)
    # Rewards Manager (points redemption, spec §5.4), and the secret its signed callbacks to
    # `/v1/webhooks/rewards` carry (same format and checks as `webhook_secret`, its own value).
    rewards_base_url: str = "http://127.0.0.1:8103"
    rewards_api_key: SecretStr = SecretStr("demo-rewards-api-key")
    rewards_timeout_seconds: float = Field(default=5.0, gt=0)
    rewards_webhook_secret: SecretStr = SecretStr(DEMO_REWARDS_WEBHOOK_SECRET)
    # Appointment Manager's signed `appointment.ended` webhooks to `/v1/webhooks/appointments`
    # (spec §11.1; same format and checks as `webhook_secret`, its own value).
    appointments_webhook_secret: SecretStr = SecretStr(DEMO_APPOINTMENTS_WEBHOOK_SECRET)
    # AI suggestions for staff (spec §7): "local" ranks the practice's catalogue in-process
    # (recommendations/ai/local.py); "platform" asks the platform AI service over HTTP; "off"
    # stores the appointment context and suggests nothing. Suggestions not decided within their
    # lifetime expire and can no longer be approved.
    suggestion_engine: Literal["local", "platform", "off"] = "local"
    ai_service_base_url: str = "http://127.0.0.1:8105"
    ai_service_api_key: SecretStr = SecretStr("demo-ai-service-api-key")
    ai_service_timeout_seconds: float = Field(default=5.0, gt=0)
    suggestions_per_appointment: int = Field(default=3, ge=1, le=10)
    suggestion_lifetime_seconds: float = Field(default=14 * 86_400.0, ge=60)
    # The key digital voucher codes are derived from (fulfilment/vouchers.py): at least 32
    # characters; codes are never stored, so changing it changes every code shown. The demo value
    # is refused in production.
    voucher_secret: SecretStr = SecretStr(DEMO_SECRET_PREFIX + "voucher-key-0123456789abcdefghij")
    # Field encryption at rest (core/crypto.py, docs/security.md): keys by id, each base64 of
    # 32 random bytes, as JSON (PRODUCT_SHOP_ENCRYPTION_KEYS='{"k2": "...", "k1": "..."}') and/or
    # in a file of the same JSON (`encryption_key_file`, read at start); `encryption_key_id`
    # names the one new values are encrypted with (may be left out with a single key). Every key
    # listed decrypts; `product-shop keys rotate` re-encrypts old values under the current key.
    # With none set, the public DEMO key is used, which production refuses.
    encryption_keys: dict[str, SecretStr] = Field(default_factory=dict)
    encryption_key_file: Path | None = None
    encryption_key_id: str | None = None
    # Run the outbox relay inside the API process (the embedded default); at scale run
    # `product-shop relay` as its own process instead.
    relay_in_process: bool = True
    relay_interval_seconds: float = Field(default=1.0, gt=0, le=3600)
    # The relay's own transactions (routing, claims, each delivery's record) on PostgreSQL commit
    # without waiting for the WAL flush, on a pool of their own: a database crash may forget the
    # last fraction of a second of them, and those deliveries are sent again (receivers drop
    # duplicates by webhook-id); an event is never lost. About half the database's CPU per
    # delivered order (docs/benchmarks.md). `true` waits for the flush as every request does.
    relay_synchronous_commit: bool = False
    # `product-shop relay` lowers its own CPU priority by this much (os.nice) at start: on a host
    # it shares with the API, the requests a patient waits for win the CPU and the relay, whose
    # work is asynchronous by design, takes what is left (docs/benchmarks.md). 0 leaves it.
    relay_nice: int = Field(default=10, ge=0, le=19)

    # Event delivery (spec §11.2, §12; docs/events.md). Where each receiving module's events go,
    # by destination key (communication_hub, finance, financial_insights, hygiene_subscriptions,
    # module_owners, audit_compliance), e.g. PRODUCT_SHOP_EVENT_SINKS='{"finance": {"kind":
    # "nats"}}'; a missing key is a webhook to the receivers simulator with the demo secret.
    event_sinks: dict[str, EventSinkSettings] = Field(default_factory=dict)
    receivers_base_url: str = "http://127.0.0.1:8104"
    # Re-routing: event type (e.g. "order.created.v1") -> destination keys replacing the spec's.
    event_routes: dict[str, list[str]] = Field(default_factory=dict)
    # The JetStream sink: one stream, a subject per event type under the prefix.
    nats_url: str = "nats://127.0.0.1:4222"
    nats_stream: str = "PRODUCT_SHOP_EVENTS"
    nats_subject_prefix: str = "primoro.productshop"
    # Retries: exponential from the base, each wait at most the cap, with jitter; a delivery
    # still failing after the horizon (about three days, as Stripe) is parked for
    # `product-shop events redeliver`. The lease is how long a claimed delivery is the
    # claiming relay's before another may send it (longer than a sink's timeouts).
    delivery_retry_base_seconds: float = Field(default=30.0, gt=0)
    delivery_retry_cap_seconds: float = Field(default=6 * 3600.0, gt=0)
    delivery_retry_horizon_seconds: float = Field(default=3 * 86_400.0, gt=0)
    delivery_lease_seconds: float = Field(default=60.0, ge=5)
    # The audit feed to Audit & Compliance sends the log in position order; a position missing
    # this long is a rolled-back transaction, passed (far longer than any transaction lasts).
    audit_feed_gap_seconds: float = Field(default=300.0, ge=1)
    # How often a checkpoint (a Merkle root over every audit stream's head) is taken, when
    # anything moved since the last (`jobs/audit_checkpoint.py`; on demand: `audit checkpoint`).
    audit_checkpoint_interval_seconds: float = Field(default=3600.0, ge=1)
    # How long an unpaid checkout stays open.
    checkout_ttl_minutes: int = Field(default=24 * 60, ge=1, le=30 * 24 * 60)

    # Background jobs (`jobs/schedule.py`; `product-shop worker`, or in the API process). Unset,
    # the API process runs them when it runs the relay (`relay_in_process`: the embedded
    # default is one process). At scale turn both off and run `product-shop relay` and
    # `product-shop worker`; several workers are safe (one runs a given job at a time).
    jobs_in_process: bool | None = None
    checkout_expiry_interval_seconds: float = Field(default=60.0, ge=1)
    # Checkouts awaiting payment this long after their payment page opened, with no callback
    # and no app call, are checked through Integrated Payments' sync API and completed or
    # failed (`jobs/capture_reconciliation.py`).
    capture_reconciliation_interval_seconds: float = Field(default=60.0, ge=1)
    capture_reconciliation_after_seconds: float = Field(default=300.0, ge=0)
    # How long an Idempotency-Key replays its first response (then the purge deletes it).
    idempotency_key_ttl_seconds: float = Field(default=86_400.0, ge=3600)
    # Idempotency keys are deleted once past their `expires_at` (idempotency_key_ttl_seconds).
    idempotency_purge_interval_seconds: float = Field(default=3600.0, ge=1)
    # Inbound message ids (webhook dedupe) are kept this long: longer than any sender retries
    # one message (the relay's own horizon is about three days, as Stripe's).
    inbox_retention_seconds: float = Field(default=7 * 86_400.0, ge=86_400)
    inbox_purge_interval_seconds: float = Field(default=3600.0, ge=1)

    # Refunds (spec §5.3, §9): the practice staff roles that may refund (each also needs a
    # fresh MFA step-up: `amr` with `mfa` and `auth_time` at most this old).
    refund_roles: list[str] = Field(default_factory=lambda: ["practice_admin", "finance"])
    refund_mfa_max_age_seconds: int = Field(default=300, ge=30, le=3600)
    # Integrated Payments' refund reason codes are read through the port and kept this long.
    refund_reasons_cache_seconds: float = Field(default=300.0, ge=0, le=86_400)
    # A refund whose outcome is unknown (Integrated Payments did not answer) is settled by reading
    # its status once it is at least this old (the relay's loop and `product-shop refunds
    # reconcile`).
    refund_reconcile_after_seconds: float = Field(default=30.0, ge=0)
    # Distance selling: a patient may ask to cancel within this many days of delivery or
    # collection (an undispatched drop-ship line at once).
    cancellation_period_days: int = Field(default=14, ge=1, le=365)
    # Retention (spec §16 Privacy, §17): orders placed longer ago than this have their personal
    # data erased (`orders/retention.py`, `product-shop retention`); amounts, dates, statuses and
    # references stay. Default 6 years (2192 days): the UK's record-keeping norm for financial
    # records (HMRC). At least a year, so no refund or cancellation window is cut short.
    retention_days: int = Field(default=2192, ge=365)
    # How often the retention job looks for orders past `retention_days` (`jobs/retention.py`).
    retention_interval_seconds: float = Field(default=86_400.0, ge=60)

    # `GET /metrics` answers callers from these networks (CIDRs: the monitoring network) and
    # gives anyone else a 404. `metrics_dir`: where `serve --workers N` has its workers write
    # their samples (emptied at start); None: a fresh directory under the system's temporary one.
    metrics_allowed_networks: list[str] = Field(default_factory=lambda: ["127.0.0.1/32", "::1/128"])
    metrics_dir: Path | None = None

    # Transport and abuse limits (docs/security.md). `serve` speaks TLS with both files set (also
    # `--ssl-certfile/--ssl-keyfile`); production refuses plain HTTP unless `trusted_proxies`
    # names the TLS-terminating proxies (CIDRs), whose X-Forwarded-Proto/For alone are believed.
    ssl_certfile: Path | None = None
    ssl_keyfile: Path | None = None
    trusted_proxies: list[str] = Field(default_factory=list)
    # Request bodies above this are refused (413) while they stream in.
    max_body_bytes: int = Field(default=64 * 1024, ge=1024, le=16 * 1024 * 1024)
    # Rate limits (the `limits` library's notation, moving window): checkout creation per caller,
    # each webhook endpoint per client address. `memory://` counts per process; a shared storage
    # (e.g. redis://127.0.0.1:6379) counts across workers and hosts.
    checkout_rate_limit: str = "30/minute"
    webhook_rate_limit: str = "600/minute"
    rate_limit_storage_url: str = "memory://"

    # The staff portal (/portal; docs/portal.md): staff sign in through Access Manager with
    # OpenID Connect (authorization code with PKCE). `oidc_discovery_url`: Access Manager's
    # discovery document (None: the portal answers 503 until it is set; the demo sets its
    # simulator's). The redirect URI registered there is `{portal_public_url}/portal/callback`
    # (default: the URL the request came in on). Sessions are server-side: a random cookie,
    # `Secure` unless `portal_cookie_secure` is false (default: secure outside the demo), ended
    # after `portal_session_idle_seconds` without a request or `portal_session_lifetime_seconds`.
    oidc_discovery_url: str | None = None
    oidc_client_id: str = "product-shop-portal"
    oidc_client_secret: SecretStr | None = None
    oidc_timeout_seconds: float = Field(default=5.0, gt=0, le=60)
    portal_public_url: str | None = None
    portal_session_lifetime_seconds: int = Field(default=8 * 3600, ge=300, le=7 * 86_400)
    portal_session_idle_seconds: int = Field(default=30 * 60, ge=60, le=86_400)
    portal_cookie_secure: bool | None = None
    # The patient app preview (/app; docs/patient-app.md) signs patients in through the same
    # Access Manager as another client: redirect URI `{portal_public_url}/app/callback`.
    oidc_app_client_id: str = "product-shop-app"
    oidc_app_client_secret: SecretStr | None = None
    # Where Integrated Payments' hosted page may send a patient back to after paying (the
    # `return_url` of `POST /v1/checkouts`): these origins (`https://app.example.com`: scheme,
    # host and port only) and the origin of `portal_public_url`. Any other is refused (422
    # `return_url_not_allowed`), so the payment page never sends patients to a site of the
    # caller's choosing (`checkout/return_urls.py`).
    payment_return_origins: list[str] = Field(default_factory=list)

    log_level: Annotated[
        Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"], BeforeValidator(_upper)
    ] = "INFO"
    log_json: bool = True

    def payment_return_allowed(self) -> frozenset[str]:
        """The origins a checkout's `return_url` may point at (`payment_return_origins`)."""
        allowed = {origin_of(origin) for origin in self.payment_return_origins}
        if self.portal_public_url:
            allowed.add(origin_of(self.portal_public_url))
        return frozenset(origin for origin in allowed if origin is not None)

    def keyring(self) -> Keyring:
        """The field encryption keyring these settings describe (the demo keyring when no key
        is set); raises ConfigurationError, never repeating a key."""
        keys: dict[str, str] = {}
        try:
            if self.encryption_key_file is not None:
                loaded = json.loads(self.encryption_key_file.read_text())
                if not isinstance(loaded, dict) or not all(
                    isinstance(k, str) and isinstance(v, str) for k, v in loaded.items()
                ):
                    raise KeyringError('the key file must hold {"key id": "base64 key", ...}')
                keys.update(loaded)
            keys.update({k: v.get_secret_value() for k, v in self.encryption_keys.items()})
            if not keys:
                if self.encryption_key_id not in (None, DEMO_KEY_ID):
                    raise KeyringError(
                        f"encryption_key_id is {self.encryption_key_id!r} but no keys are set"
                    )
                return demo_keyring()
            return Keyring.from_text(keys, self.encryption_key_id)
        except (OSError, json.JSONDecodeError, KeyringError) as exc:
            raise ConfigurationError(
                f"field encryption keys (PRODUCT_SHOP_ENCRYPTION_KEYS, "
                f"PRODUCT_SHOP_ENCRYPTION_KEY_FILE, PRODUCT_SHOP_ENCRYPTION_KEY_ID): {exc}; a "
                "key is base64 of 32 random bytes, e.g. from python3 -c 'import base64, "
                "secrets; print(base64.b64encode(secrets.token_bytes(32)).decode())'"
            ) from exc

    def voucher_key(self) -> bytes:
        return self.voucher_secret.get_secret_value().encode()

    def event_sink(self, destination: str) -> EventSinkSettings:
        """`event_sinks[destination]` with its defaults filled in."""
        configured = self.event_sinks.get(destination) or EventSinkSettings()
        return configured.model_copy(
            update={
                "url": configured.url or f"{self.receivers_base_url.rstrip('/')}/{destination}",
                "secret": configured.secret or SecretStr(demo_destination_secret(destination)),
            }
        )

    def portal_cookies_secure(self) -> bool:
        """Whether the portal's cookies carry `Secure` (HTTPS only): yes outside the demo."""
        if self.portal_cookie_secure is not None:
            return self.portal_cookie_secure
        return not self.demo_mode

    def public_key_pem(self) -> str | None:
        if self.jwt_public_key:
            return self.jwt_public_key
        if self.jwt_public_key_file is not None:
            return self.jwt_public_key_file.read_text()
        return None

    def check(self) -> None:
        """Refuse settings that would be unsafe; raises ConfigurationError (the checks are in
        `config_checks.py`, which reads these settings)."""
        from product_shop.config_checks import check_settings  # here: it imports this module

        check_settings(self)
