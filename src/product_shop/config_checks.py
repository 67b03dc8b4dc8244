"""What `Settings.check` refuses: unsafe or malformed settings anywhere, and in production the
demo identity provider, demo secrets, the demo field encryption key, an embedded SQLite
database, or no way to verify access tokens (docs/security.md). Raises `ConfigurationError`."""

from __future__ import annotations

import ipaddress

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from limits import parse as parse_rate

from product_shop.config import (
    ALLOWED_JWT_ALGORITHMS,
    DEMO_KEY_MARKER,
    DEMO_SECRET_PREFIX,
    ConfigurationError,
    Settings,
)
from product_shop.core.signing import SECRET_FORMAT, decode_secret
from product_shop.core.urls import is_origin
from product_shop.events.routing import FEED_DESTINATIONS, Routing, RoutingError


def _check_networks(setting: str, networks: list[str]) -> None:
    """Each entry of a list setting is a network (CIDR) or one address."""
    for network in networks:
        try:
            ipaddress.ip_network(network, strict=False)
        except ValueError as exc:
            raise ConfigurationError(
                f"{setting}: {network!r} is not a network (CIDR, e.g. 10.0.0.0/8)"
            ) from exc


def check_settings(settings: Settings) -> None:
    """Refuse settings that would be unsafe; raises ConfigurationError."""
    bad = [a for a in settings.jwt_algorithms if a not in ALLOWED_JWT_ALGORITHMS]
    if bad or not settings.jwt_algorithms:
        raise ConfigurationError(
            f"jwt_algorithms may only name asymmetric algorithms "
            f"{', '.join(ALLOWED_JWT_ALGORITHMS)}; refused: {', '.join(bad) or '(empty)'}"
        )
    _check_token_key(settings)
    try:  # the message never repeats the value: it is a secret
        webhook_key = decode_secret(settings.webhook_secret.get_secret_value())
    except ValueError as exc:
        raise ConfigurationError(
            f"webhook_secret (PRODUCT_SHOP_WEBHOOK_SECRET) must be {SECRET_FORMAT}, e.g. from "
            "python3 -c 'import base64, secrets; "
            'print("whsec_" + base64.b64encode(secrets.token_bytes(32)).decode())\''
        ) from exc
    try:
        supplier_webhook_key = decode_secret(settings.supplier_webhook_secret.get_secret_value())
    except ValueError as exc:
        raise ConfigurationError(
            "supplier_webhook_secret (PRODUCT_SHOP_SUPPLIER_WEBHOOK_SECRET) must be "
            f"{SECRET_FORMAT}"
        ) from exc
    refunders = {"practice_admin", "finance", "staff", "clinician"}
    if not settings.refund_roles or set(settings.refund_roles) - refunders:
        raise ConfigurationError(
            "refund_roles (PRODUCT_SHOP_REFUND_ROLES) must name practice staff roles only, "
            f"from {', '.join(sorted(refunders))}"
        )
    try:
        rewards_webhook_key = decode_secret(settings.rewards_webhook_secret.get_secret_value())
    except ValueError as exc:
        raise ConfigurationError(
            f"rewards_webhook_secret (PRODUCT_SHOP_REWARDS_WEBHOOK_SECRET) must be {SECRET_FORMAT}"
        ) from exc
    try:
        appointments_webhook_key = decode_secret(
            settings.appointments_webhook_secret.get_secret_value()
        )
    except ValueError as exc:
        raise ConfigurationError(
            "appointments_webhook_secret (PRODUCT_SHOP_APPOINTMENTS_WEBHOOK_SECRET) must be "
            f"{SECRET_FORMAT}"
        ) from exc
    demo_event_sinks = _check_event_delivery(settings)
    _check_networks("metrics_allowed_networks", settings.metrics_allowed_networks)
    for origin in settings.payment_return_origins:
        if not is_origin(origin):
            raise ConfigurationError(
                f"payment_return_origins: {origin!r} is not an origin "
                "(scheme, host and port only, e.g. https://app.example.com)"
            )
    _check_transport_and_limits(settings)
    keyring = settings.keyring()
    if len(settings.voucher_secret.get_secret_value()) < 32:
        raise ConfigurationError(
            "voucher_secret (PRODUCT_SHOP_VOUCHER_SECRET) must be at least 32 characters"
        )
    if settings.environment != "production":
        return
    problems: list[str] = []
    if settings.demo_mode:
        problems.append("demo_mode is on (the demo identity provider must not run)")
    if webhook_key.startswith(DEMO_SECRET_PREFIX.encode()):
        problems.append("webhook_secret is a demo secret")
    if settings.payments_api_key.get_secret_value().startswith(DEMO_SECRET_PREFIX):
        problems.append("payments_api_key is a demo secret")
    if supplier_webhook_key.startswith(DEMO_SECRET_PREFIX.encode()):
        problems.append("supplier_webhook_secret is a demo secret")
    if settings.suppliers_api_key.get_secret_value().startswith(DEMO_SECRET_PREFIX):
        problems.append("suppliers_api_key is a demo secret")
    if rewards_webhook_key.startswith(DEMO_SECRET_PREFIX.encode()):
        problems.append("rewards_webhook_secret is a demo secret")
    if settings.rewards_api_key.get_secret_value().startswith(DEMO_SECRET_PREFIX):
        problems.append("rewards_api_key is a demo secret")
    if appointments_webhook_key.startswith(DEMO_SECRET_PREFIX.encode()):
        problems.append("appointments_webhook_secret is a demo secret")
    if (
        settings.suggestion_engine == "platform"
        and settings.ai_service_api_key.get_secret_value().startswith(DEMO_SECRET_PREFIX)
    ):
        problems.append("ai_service_api_key is a demo secret")
    if settings.voucher_secret.get_secret_value().startswith(DEMO_SECRET_PREFIX):
        problems.append("voucher_secret is a demo secret")
    if keyring.uses_demo_key:
        problems.append(
            "the field encryption key is the public DEMO key: set PRODUCT_SHOP_ENCRYPTION_KEYS"
            " or PRODUCT_SHOP_ENCRYPTION_KEY_FILE (docs/security.md)"
        )
    problems.extend(f"event_sinks.{key} has a demo secret" for key in demo_event_sinks)
    if not (settings.jwt_jwks_url or settings.public_key_pem()):
        problems.append("no JWT verification key: set jwt_jwks_url or jwt_public_key")
    pem = settings.public_key_pem()
    if pem and DEMO_KEY_MARKER in pem:
        problems.append("the JWT public key is the demo identity provider's key")
    if settings.jwt_public_key_file and "demo-idp" in settings.jwt_public_key_file.parts:
        problems.append("the JWT public key file belongs to the demo identity provider")
    if (
        settings.oidc_client_secret is not None
        and settings.oidc_client_secret.get_secret_value().startswith(DEMO_SECRET_PREFIX)
    ):
        problems.append("oidc_client_secret is a demo secret")
    if (
        settings.oidc_app_client_secret is not None
        and settings.oidc_app_client_secret.get_secret_value().startswith(DEMO_SECRET_PREFIX)
    ):
        problems.append("oidc_app_client_secret is a demo secret")
    if settings.portal_cookie_secure is False:
        problems.append("portal_cookie_secure is false (portal session cookies over HTTP)")
    if settings.oidc_discovery_url and settings.oidc_discovery_url.startswith("http://"):
        problems.append("oidc_discovery_url is plain HTTP")
    if not settings.database_url.startswith("postgresql"):
        problems.append("production needs PostgreSQL (database_url)")
    if settings.ssl_certfile is None and not settings.trusted_proxies:
        problems.append(
            "plain HTTP: set ssl_certfile and ssl_keyfile, or trusted_proxies (the "
            "TLS-terminating proxies in front)"
        )
    if problems:
        raise ConfigurationError("refusing to start in production: " + "; ".join(problems))


def _check_token_key(settings: Settings) -> None:
    """A JWT public key given must be one: a file that cannot be read or text that is not a PEM
    public key would start a service that refuses every token."""
    try:
        pem = settings.public_key_pem()
    except OSError as exc:
        raise ConfigurationError(
            "jwt_public_key_file (PRODUCT_SHOP_JWT_PUBLIC_KEY_FILE) cannot be read: "
            f"{exc.strerror or type(exc).__name__}"
        ) from exc
    if not pem:
        return
    try:
        serialization.load_pem_public_key(pem.encode())
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise ConfigurationError(
            "the JWT public key (PRODUCT_SHOP_JWT_PUBLIC_KEY or PRODUCT_SHOP_JWT_PUBLIC_KEY_FILE)"
            " is not a PEM public key"
        ) from exc


def _check_transport_and_limits(settings: Settings) -> None:
    if (settings.ssl_certfile is None) != (settings.ssl_keyfile is None):
        raise ConfigurationError("ssl_certfile and ssl_keyfile go together: set both or none")
    _check_networks("trusted_proxies", settings.trusted_proxies)
    for name in ("checkout_rate_limit", "webhook_rate_limit"):
        try:
            parse_rate(getattr(settings, name))
        except ValueError as exc:
            raise ConfigurationError(
                f"{name} must be a rate such as 30/minute: {getattr(settings, name)!r}"
            ) from exc


def _check_event_delivery(settings: Settings) -> list[str]:
    """Refuse unknown destinations, routes and malformed secrets; return the webhook
    destinations signing with a demo secret."""
    feeds = {d.value for d in FEED_DESTINATIONS}
    unknown = sorted(set(settings.event_sinks) - feeds)
    if unknown:
        raise ConfigurationError(
            f"event_sinks names unknown destinations {', '.join(unknown)}; "
            f"known: {', '.join(sorted(feeds))}"
        )
    try:
        Routing(overrides=settings.event_routes)
    except RoutingError as exc:
        raise ConfigurationError(str(exc)) from exc
    demo: list[str] = []
    for key in sorted(feeds):
        sink = settings.event_sink(key)
        if sink.kind != "webhook":
            continue
        assert sink.secret is not None  # filled in by event_sink
        try:
            secret = decode_secret(sink.secret.get_secret_value())
        except ValueError as exc:
            raise ConfigurationError(f"event_sinks.{key}.secret must be {SECRET_FORMAT}") from exc
        if secret.startswith(DEMO_SECRET_PREFIX.encode()):
            demo.append(key)
    return demo
