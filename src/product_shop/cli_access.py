"""`product-shop simulate access`: the Access Manager simulator (an OpenID Connect provider for
the staff portal's sign-in), signing with the demo key in the data directory so the API (with
the same data directory) trusts the access tokens it issues."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from product_shop.cli_simulators import port, serve_simulator
from product_shop.logging import configure_logging

DEFAULT_PORT = 8107
DEFAULT_CLIENT_ID = "product-shop-portal"
# The portal served by `product-shop serve` on its default port.
DEFAULT_REDIRECT_URI = "http://127.0.0.1:8000/portal/callback"


def add_access_simulator(simulate_sub: Any) -> None:
    """`simulate access` (the subparsers action of `product-shop simulate`)."""
    access = simulate_sub.add_parser(
        "access",
        help="Access Manager (OpenID Connect sign-in for the staff portal, with a TOTP step)",
    )
    access.add_argument("--port", type=port, default=DEFAULT_PORT)
    access.add_argument("--host", default="127.0.0.1")
    access.add_argument(
        "--public-url",
        default=None,
        metavar="URL",
        help="The base URL its endpoints are advertised at (default http://HOST:PORT)",
    )
    access.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        metavar="DIR",
        help="Where the demo signing key is kept (default: the API's data_dir)",
    )
    access.add_argument("--issuer", default=None, help="The tokens' iss (default: jwt_issuer)")
    access.add_argument(
        "--audience", default=None, help="The access tokens' aud (default: jwt_audience)"
    )
    access.add_argument("--client-id", default=DEFAULT_CLIENT_ID)
    access.add_argument(
        "--client-secret",
        default=None,
        metavar="SECRET",
        help="The client's secret (default: none, the client authenticates by its id)",
    )
    access.add_argument(
        "--redirect-uri",
        action="append",
        default=[],
        metavar="URI",
        help=f"A registered redirect URI (repeatable; default {DEFAULT_REDIRECT_URI})",
    )
    access.add_argument(
        "--post-logout-redirect-uri",
        action="append",
        default=[],
        metavar="URI",
        help="A registered post-logout redirect URI (repeatable; default: the redirect URIs' "
        "origins with /portal/signed-out)",
    )
    access.add_argument(
        "--show-codes",
        action="store_true",
        help="Demo only: show the current TOTP code on the authentication code page",
    )
    access.set_defaults(handler=_simulate_access)


def _signed_out(uri: str) -> str:
    """The portal's signed-out page beside a redirect URI (same origin)."""
    parts = urlsplit(uri)
    return f"{parts.scheme}://{parts.netloc}/portal/signed-out"


def _simulate_access(args: argparse.Namespace) -> int:
    from product_shop.access import demo_idp
    from product_shop.config import Settings
    from product_shop.simulators.access import (
        AccessClient,
        AccessSimulatorConfig,
        create_access_simulator,
        users_from_demo,
    )

    configure_logging("INFO", json=True)
    settings = Settings()
    redirect_uris = tuple(args.redirect_uri) or (DEFAULT_REDIRECT_URI,)
    post_logout = tuple(args.post_logout_redirect_uri) or tuple(
        dict.fromkeys(_signed_out(uri) for uri in redirect_uris)
    )
    try:
        keys = demo_idp.ensure_key_pair(args.data_dir or settings.data_dir)
        config = AccessSimulatorConfig(
            private_pem=keys.private_pem,
            issuer=args.issuer or settings.jwt_issuer,
            audience=args.audience or settings.jwt_audience,
            public_url=(args.public_url or f"http://{args.host}:{args.port}").rstrip("/"),
            clients={
                args.client_id: AccessClient(
                    client_id=args.client_id,
                    client_secret=args.client_secret,
                    redirect_uris=redirect_uris,
                    post_logout_redirect_uris=post_logout,
                )
            },
            users=users_from_demo(),
            show_codes=args.show_codes,
        )
        app = create_access_simulator(config)
    except (OSError, ValueError) as exc:
        print(f"product-shop simulate access: {exc}", file=sys.stderr)
        return 2
    serve_simulator(app, args)
    return 0
