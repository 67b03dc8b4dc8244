"""Shared steps for the staff portal's tests: Access Manager's simulator on a local port, with
the test world's staff as its users, and signing in through it the way a browser does (the
portal's redirects followed by hand, the simulator's forms posted)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from urllib.parse import urlsplit

import httpx
import pyotp
import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr

from product_shop.config import DEFAULT_AUDIENCE, DEFAULT_ISSUER, Settings
from product_shop.simulators.access import (
    AccessClient,
    AccessSimulatorConfig,
    AccessUser,
    create_access_simulator,
    demo_totp_secret,
)
from product_shop.simulators.server import BackgroundServer, free_port, serve_in_background
from tests.conftest import KeyPair, Person, World
from tests.http_support import http_client

CLIENT_ID = "product-shop-portal"
CLIENT_SECRET = "portal-test-client-secret"
TEST_SERVER = "http://testserver"
_PENDING = re.compile(r'name="pending" value="([^"]+)"')


def access_user(handle: str, person: Person) -> AccessUser:
    actor = person.actor
    return AccessUser(
        handle=handle,
        subject=actor.actor_id,
        name=actor.name or handle,
        role=actor.role.value,
        practice_id=str(actor.practice_id) if actor.practice_id else None,
        totp_secret=demo_totp_secret(actor.actor_id),
    )


def staff_of(world: World) -> dict[str, Person]:
    return {
        "admin_a": world.admin_a,
        "admin_b": world.admin_b,
        "clinician_a": world.clinician_a,
        "finance_a": world.finance_a,
        "staff_a": world.staff_a,
        "patient_a": world.patient_a,
    }


def start_access_simulator(
    key_pair: KeyPair,
    world: World,
    redirect_base: str = TEST_SERVER,
    *,
    site: str = "/portal",
    client: tuple[str, str] = (CLIENT_ID, CLIENT_SECRET),
    people: dict[str, Person] | None = None,
) -> BackgroundServer:
    """Access Manager on a port of its own with one client, the site at `site` (its callback
    and signed-out pages under `redirect_base`), and `people` (default: `staff_of(world)`)."""
    port = free_port()
    client_id, client_secret = client
    config = AccessSimulatorConfig(
        private_pem=key_pair.private_pem,
        issuer=DEFAULT_ISSUER,
        audience=DEFAULT_AUDIENCE,
        public_url=f"http://127.0.0.1:{port}",
        clients={
            client_id: AccessClient(
                client_id=client_id,
                client_secret=client_secret,
                redirect_uris=(f"{redirect_base}{site}/callback",),
                post_logout_redirect_uris=(f"{redirect_base}{site}/signed-out",),
            )
        },
        users=[
            access_user(handle, person)
            for handle, person in (staff_of(world) if people is None else people).items()
        ],
    )
    return serve_in_background(create_access_simulator(config), port)


@pytest.fixture(scope="session")
def access_simulator(key_pair: KeyPair, world: World) -> Iterator[BackgroundServer]:
    server = start_access_simulator(key_pair, world)
    yield server
    server.stop()


def portal_settings(settings: Settings, access_url: str) -> Settings:
    return settings.model_copy(
        update={
            "oidc_discovery_url": f"{access_url}/.well-known/openid-configuration",
            "oidc_client_secret": SecretStr(CLIENT_SECRET),
            "portal_cookie_secure": False,  # the test client speaks plain HTTP
        }
    )


@dataclass
class SignedIn:
    landing: httpx.Response  # the portal's answer after the callback's redirect


def _path(url: str) -> str:
    parts = urlsplit(url)
    return parts.path + (f"?{parts.query}" if parts.query else "")


def through_access_manager(
    authorize_url: str, handle: str | None, *, totp: str | None = None
) -> str:
    """What the person does at Access Manager: choose themselves (unless the portal named
    them), pass the TOTP step if asked. Returns the callback URL it sends the browser to."""
    base = f"{urlsplit(authorize_url).scheme}://{urlsplit(authorize_url).netloc}"
    with http_client() as idp:
        answer = idp.get(authorize_url)
        if answer.status_code == 200 and 'name="handle"' in answer.text:
            assert handle is not None
            pending = _PENDING.search(answer.text)
            assert pending, answer.text
            answer = idp.post(
                f"{base}/authorize/login", data={"pending": pending.group(1), "handle": handle}
            )
        if answer.status_code == 200 and 'name="code"' in answer.text:
            assert totp is not None, "Access Manager asked for a code"
            pending = _PENDING.search(answer.text)
            assert pending
            answer = idp.post(
                f"{base}/authorize/mfa",
                data={"pending": pending.group(1), "code": pyotp.TOTP(totp).now()},
            )
        assert answer.status_code == 302, answer.text
        return answer.headers["location"]


def sign_in(
    client: TestClient, person: Person, handle: str, *, start: str = "/portal/orders"
) -> httpx.Response:
    """Sign in as `person` (known to the simulator as `handle`) starting from `start`; returns
    the page the portal lands on."""
    first = client.get(start, follow_redirects=False)
    assert first.status_code == 303, first.text
    login = client.get(first.headers["location"], follow_redirects=False)
    assert login.status_code == 303, login.text
    callback = through_access_manager(login.headers["location"], handle)
    landed = client.get(_path(callback), follow_redirects=False)
    assert landed.status_code == 303, landed.text
    return client.get(landed.headers["location"], follow_redirects=False)


def follow(
    client: TestClient, response: httpx.Response, *, totp: str | None = None
) -> httpx.Response:
    """Follow the portal's redirects, through Access Manager when they lead there."""
    while response.status_code in (302, 303):
        location = response.headers["location"]
        if location.startswith("http") and not location.startswith(TEST_SERVER):
            location = through_access_manager(location, None, totp=totp)
        response = client.get(_path(location), follow_redirects=False)
    return response


def csrf_of(page: httpx.Response) -> str:
    found = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
    assert found, "the page has no form with a CSRF token"
    return found.group(1)
