"""The embedded default: settings for a data directory, set-up, and demo tokens."""

from __future__ import annotations

import os
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

from product_shop.access.demo_idp import ensure_key_pair, issue_token, key_dir, public_key_file
from product_shop.config import Settings
from product_shop.context import AppContext
from product_shop.core.clock import utcnow
from product_shop.db.engine import Database
from product_shop.db.migrate import upgrade
from product_shop.demo.data import APPOINTMENTS, HARBOUR, USERS, user_by_handle
from product_shop.demo.seed import is_seeded, seed
from product_shop.events.routing import FEED_DESTINATIONS
from product_shop.simulators.access import (
    AccessClient,
    AccessSimulatorConfig,
    create_access_simulator,
    users_from_demo,
)
from product_shop.simulators.appointments import (
    AppointmentsSimulatorConfig,
    create_appointments_simulator,
)
from product_shop.simulators.payments import SimulatorConfig, create_payments_simulator
from product_shop.simulators.receivers import (
    ReceiversSimulatorConfig,
    create_receivers_simulator,
)
from product_shop.simulators.rewards import RewardsSimulatorConfig, create_rewards_simulator
from product_shop.simulators.server import BackgroundServer, free_port, serve_in_background
from product_shop.simulators.suppliers import SupplierSimulatorConfig, create_suppliers_simulator

DATA_DIR_VARIABLE = "PRODUCT_SHOP_DATA_DIR"
# The staff portal's client secret at the demo's Access Manager (refused in production).
DEMO_PORTAL_CLIENT_SECRET = "demo-portal-client-secret"  # noqa: S105
# The patient app preview's (docs/patient-app.md), likewise.
DEMO_APP_CLIENT_SECRET = "demo-app-client-secret"  # noqa: S105


class NoDemo(RuntimeError):
    """The data directory holds no demo: nothing to issue tokens for."""


def default_data_dir() -> Path:
    """Where `demo` and `demo-users` keep the demo when no --data-dir is given, wherever they
    are run from: PRODUCT_SHOP_DATA_DIR when set; else, when this package is the project's
    source (the editable install `make` sets up), the project's var/, the one `make demo` uses;
    else var/ in the current directory. Always absolute."""
    configured = os.environ.get(DATA_DIR_VARIABLE)
    if configured:
        return Path(configured).expanduser().resolve()
    checkout = Path(__file__).resolve().parents[3]  # src/product_shop/demo/runtime.py
    if (checkout / "pyproject.toml").is_file() and (checkout / "src" / "product_shop").is_dir():
        return checkout / "var"
    return Path("var").resolve()


def missing_demo(data_dir: Path) -> list[str]:
    """What a demo data directory lacks (empty when it holds one): the identity key its tokens
    are signed with and, unless PRODUCT_SHOP_DATABASE_URL points elsewhere, its database."""
    missing = []
    if not (key_dir(data_dir) / "signing-key.pem").is_file():
        missing.append(f"no demo identity key ({key_dir(data_dir)})")
    database_url = demo_settings(data_dir).database_url
    if database_url.startswith("sqlite:///"):
        database = Path(database_url.removeprefix("sqlite:///"))
        if not database.is_file():
            missing.append(f"no demo database ({database})")
    return missing


def demo_settings(
    data_dir: Path,
    *,
    payments_url: str | None = None,
    suppliers_url: str | None = None,
    rewards_url: str | None = None,
    receivers_url: str | None = None,
    access_url: str | None = None,
    portal_url: str | None = None,
) -> Settings:
    """SQLite in the data directory (unless PRODUCT_SHOP_DATABASE_URL says otherwise), the demo
    identity provider's public key, development mode; the simulators' URLs when given (with
    Access Manager's, the staff portal signs in through it, the API served at `portal_url`)."""
    data_dir = data_dir.resolve()
    overrides: dict[str, Any] = {
        "environment": "development",
        "demo_mode": True,
        "data_dir": data_dir,
        "jwt_public_key_file": public_key_file(data_dir),
        "jwt_jwks_url": None,
    }
    if payments_url is not None:
        overrides["payments_base_url"] = payments_url
    if suppliers_url is not None:
        overrides["suppliers_base_url"] = suppliers_url
    if rewards_url is not None:
        overrides["rewards_base_url"] = rewards_url
    if receivers_url is not None:
        overrides["receivers_base_url"] = receivers_url
    if access_url is not None:
        overrides["oidc_discovery_url"] = f"{access_url}/.well-known/openid-configuration"
        overrides["oidc_client_secret"] = DEMO_PORTAL_CLIENT_SECRET
        overrides["oidc_app_client_secret"] = DEMO_APP_CLIENT_SECRET
    if portal_url is not None:
        overrides["portal_public_url"] = portal_url
    if "PRODUCT_SHOP_DATABASE_URL" not in os.environ:
        overrides["database_url"] = f"sqlite:///{data_dir / 'product_shop.sqlite3'}"
    return Settings(**overrides)


def start_access_simulator(data_dir: Path, api_url: str) -> BackgroundServer:
    """Access Manager for the demo: an OpenID Connect provider for the staff portal's sign-in
    (a page to pick a demo staff member; the TOTP step for a refund shows the current code as
    a hint) and the patient app preview's (a page to pick a demo patient), signing with the
    demo identity key the API trusts."""
    settings = demo_settings(data_dir)
    port = free_port()
    users = users_from_demo(include_patients=True)
    config = AccessSimulatorConfig(
        private_pem=ensure_key_pair(data_dir).private_pem,
        issuer=settings.jwt_issuer,
        audience=settings.jwt_audience,
        public_url=f"http://127.0.0.1:{port}",
        clients={
            settings.oidc_client_id: AccessClient(
                client_id=settings.oidc_client_id,
                client_secret=DEMO_PORTAL_CLIENT_SECRET,
                redirect_uris=(f"{api_url}/portal/callback",),
                post_logout_redirect_uris=(f"{api_url}/portal/signed-out",),
                roles=frozenset(user.role for user in users if user.role != "patient"),
            ),
            settings.oidc_app_client_id: AccessClient(
                client_id=settings.oidc_app_client_id,
                client_secret=DEMO_APP_CLIENT_SECRET,
                redirect_uris=(f"{api_url}/app/callback",),
                post_logout_redirect_uris=(f"{api_url}/app/signed-out",),
                roles=frozenset({"patient"}),
            ),
        },
        users=users,
        show_codes=True,
    )
    return serve_in_background(create_access_simulator(config), port)


def start_payments_simulator(settings: Settings, api_url: str) -> BackgroundServer:
    """Integrated Payments for the demo: its own port, signed callbacks to our webhook."""
    port = free_port()
    config = SimulatorConfig(
        api_key=settings.payments_api_key.get_secret_value(),
        webhook_secret=settings.webhook_secret.get_secret_value(),
        public_url=f"http://127.0.0.1:{port}",
        callback_url=f"{api_url}/v1/webhooks/payments",
        duplicate_callback_rate=0.3,
    )
    return serve_in_background(create_payments_simulator(config), port)


def start_suppliers_simulator(settings: Settings, api_url: str) -> BackgroundServer:
    """The supplier network for the demo: its own port, shipments that dispatch, travel and
    arrive by themselves, signed callbacks to our webhook."""
    config = SupplierSimulatorConfig(
        api_key=settings.suppliers_api_key.get_secret_value(),
        webhook_secret=settings.supplier_webhook_secret.get_secret_value(),
        callback_url=f"{api_url}/v1/webhooks/suppliers",
        dispatch_after_seconds=3.0,
        in_transit_after_seconds=6.0,
        deliver_after_seconds=12.0,
        auto_advance=True,
        duplicate_rate=0.2,
    )
    return serve_in_background(create_suppliers_simulator(config))


def start_rewards_simulator(settings: Settings, api_url: str) -> BackgroundServer:
    """Rewards Manager for the demo: Harbour Dental Care offers points (1 point = 1p; each
    patient starts with 2,500), Meadowbank does not; signed confirmations to our webhook."""
    config = RewardsSimulatorConfig(
        api_key=settings.rewards_api_key.get_secret_value(),
        webhook_secret=settings.rewards_webhook_secret.get_secret_value(),
        callback_url=f"{api_url}/v1/webhooks/rewards",
        enabled_practices={str(HARBOUR.practice_id): 1},
        default_balance_points=2500,
        confirm_delay_seconds=0.5,
        duplicate_callback_rate=0.2,
    )
    return serve_in_background(create_rewards_simulator(config))


def start_receivers_simulator(settings: Settings) -> BackgroundServer:
    """The modules that receive our events (Communication Hub, Finance, Financial Insights,
    Hygiene Subscriptions, module owners), each checking our signatures with its secret."""
    secrets = {}
    for destination in FEED_DESTINATIONS:
        sink = settings.event_sink(destination.value)
        assert sink.secret is not None  # filled in by event_sink
        secrets[destination.value] = sink.secret.get_secret_value()
    return serve_in_background(
        create_receivers_simulator(ReceiversSimulatorConfig(secrets=secrets))
    )


def start_appointments_simulator(settings: Settings, api_url: str) -> BackgroundServer:
    """Appointment Manager for the demo: signed `appointment.ended` webhooks to our endpoint,
    some delivered twice."""
    config = AppointmentsSimulatorConfig(
        webhook_secret=settings.appointments_webhook_secret.get_secret_value(),
        callback_url=f"{api_url}/v1/webhooks/appointments",
        duplicate_rate=0.3,
    )
    return serve_in_background(create_appointments_simulator(config))


def end_demo_appointments(
    appointments_url: str, api_url: str, *, wait_seconds: float = 30.0
) -> list[dict[str, Any]]:
    """Once the API answers, have Appointment Manager's simulator end the demo's appointments
    (`demo.data.APPOINTMENTS`): their pending AI suggestions wait for the practices' staff. The
    ids are stable, so a restarted demo records nothing twice. Returns what the simulator said."""
    deadline = time.monotonic() + wait_seconds
    with httpx.Client(timeout=10.0) as client:
        while True:
            try:
                if client.get(f"{api_url}/healthz").status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                return []
            time.sleep(0.2)
        answers = []
        for appointment in APPOINTMENTS:
            patient = user_by_handle(appointment.patient)
            clinician = user_by_handle(appointment.clinician)
            assert patient.practice is not None
            body = {
                "appointment_id": f"demo-{appointment.key}",
                "practice_id": str(patient.practice.practice_id),
                "patient_id": patient.subject,
                "clinician_id": clinician.subject,
                "clinician_name": clinician.name,
                "treatment_codes": list(appointment.treatment_codes),
                "reason": appointment.reason,
            }
            answer = client.post(f"{appointments_url}/_simulator/appointments/end", json=body)
            answers.append(answer.json())
        return answers


def prepare(
    data_dir: Path,
    *,
    payments_url: str | None = None,
    suppliers_url: str | None = None,
    rewards_url: str | None = None,
    receivers_url: str | None = None,
    access_url: str | None = None,
    portal_url: str | None = None,
) -> AppContext:
    """Create the data directory and key, migrate, seed once. Returns the wired context."""
    data_dir.mkdir(parents=True, exist_ok=True)
    ensure_key_pair(data_dir)
    settings = demo_settings(
        data_dir,
        payments_url=payments_url,
        suppliers_url=suppliers_url,
        rewards_url=rewards_url,
        receivers_url=receivers_url,
        access_url=access_url,
        portal_url=portal_url,
    )
    database = Database(settings.database_url)
    upgrade(database.engine)
    context = AppContext.build(settings, database=database)
    with database.unit_of_work() as session:
        if not is_seeded(session):
            seed(session, context.catalogue)
    return context


def demo_users(
    data_dir: Path, *, mfa: bool = False, now: datetime | None = None
) -> list[dict[str, Any]]:
    """Every seeded user with a fresh token from the demo identity provider. Raises NoDemo when
    the directory holds no demo (its tokens would be refused): it never makes a new key."""
    data_dir = data_dir.resolve()
    missing = missing_demo(data_dir)
    if missing:
        raise NoDemo(
            f"no demo in {data_dir}: {'; '.join(missing)}. Start one there with "
            f"`product-shop demo --data-dir {data_dir}` (or `make demo` for the project's var/), "
            f"or name the running demo's directory with --data-dir or {DATA_DIR_VARIABLE}."
        )
    pair = ensure_key_pair(data_dir)  # loads the existing key
    settings = demo_settings(data_dir)
    issued_at = now or utcnow()
    users = []
    for user in USERS:
        practice_id = str(user.practice.practice_id) if user.practice else None
        token = issue_token(
            pair.private_pem,
            subject=user.subject,
            role=user.role,
            issuer=settings.jwt_issuer,
            audience=settings.jwt_audience,
            now=issued_at,
            name=user.name,
            practice_id=practice_id,
            mfa=mfa,
        )
        users.append(
            {
                "handle": user.handle,
                "name": user.name,
                "role": user.role,
                "practice_id": practice_id,
                "practice_name": user.practice.name if user.practice else None,
                "patient_id": user.patient_id,
                "token": token,
            }
        )
    return users
