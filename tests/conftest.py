"""Test harness.

Every test that touches the database runs on both engines (`engine` parameter):
- SQLite: a migrated template file made once per run, copied for each test.
- PostgreSQL: one schema per test worker, migrated once; every table is truncated after each
  test. In CI (CI=true) PostgreSQL must answer: its tests fail rather than skip.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Connection, create_engine, text
from sqlalchemy.engine import make_url

from product_shop.access.actor import Actor, Role
from product_shop.access.demo_idp import KeyPair, generate_key_pair, issue_token
from product_shop.config import DEFAULT_AUDIENCE, DEFAULT_ISSUER, EventSinkSettings, Settings
from product_shop.context import AppContext
from product_shop.db.engine import Database, make_engine
from product_shop.db.migrate import upgrade
from product_shop.db.models import metadata
from product_shop.db.roles import grant_service_role
from product_shop.events.routing import FEED_DESTINATIONS
from product_shop.simulators.payments import SimulatorConfig, create_payments_simulator
from product_shop.simulators.receivers import ReceiversSimulatorConfig, create_receivers_simulator
from product_shop.simulators.rewards import RewardsSimulatorConfig, create_rewards_simulator
from product_shop.simulators.server import BackgroundServer, free_port, serve_in_background
from product_shop.simulators.suppliers import SupplierSimulatorConfig, create_suppliers_simulator
from product_shop.web.app import create_app
from tests.http_support import SIMULATORS

DEFAULT_PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def pg_base_url() -> str:
    return os.environ.get("PRODUCT_SHOP_TEST_DATABASE_URL", DEFAULT_PG_URL)


def _worker() -> str:
    return os.environ.get("PYTEST_XDIST_WORKER", "main")


# ---- engines -------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("sqlite-template") / "template.sqlite3"
    engine = make_engine(f"sqlite:///{path}")
    upgrade(engine)
    with engine.connect() as connection:
        connection.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
    engine.dispose()
    return path


@pytest.fixture(scope="session")
def pg_schema_url() -> Iterator[str]:
    """A migrated schema of our own in the test database; dropped at the end of the run."""
    base = pg_base_url()
    schema = f"ps_test_{_worker()}_{os.getpid()}"
    admin = create_engine(base, connect_args={"connect_timeout": 3})
    try:
        with admin.begin() as connection:
            connection.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
            connection.execute(text(f'CREATE SCHEMA "{schema}"'))
    except Exception as exc:
        admin.dispose()
        message = f"PostgreSQL is not reachable at {make_url(base).render_as_string()}: {exc}"
        if IN_CI:
            pytest.fail(message + " (CI requires the PostgreSQL tests to run)")
        pytest.skip(message)
    url = make_url(base).update_query_dict({"options": f"-csearch_path={schema}"})
    rendered = url.render_as_string(hide_password=False)
    engine = make_engine(rendered)
    upgrade(engine)
    engine.dispose()
    yield rendered
    with admin.begin() as connection:
        connection.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
    admin.dispose()


@pytest.fixture(scope="session")
def pg_owner(pg_schema_url: str) -> Iterator[Database]:
    """The schema's owner (the test login, a superuser): for clean-up between tests and for the
    few tests about what even the owner may not do."""
    database = Database(pg_schema_url)
    yield database
    database.dispose()


@pytest.fixture(scope="session")
def pg_service_role(pg_owner: Database) -> Iterator[str]:
    """The non-owner role the app runs as in every PostgreSQL test, granted as `product-shop db
    grant` does: no superuser, no BYPASSRLS, so row-level security applies to everything the
    app does (docs/security.md)."""
    role = f"ps_service_{_worker()}_{os.getpid()}"
    with pg_owner.engine.begin() as connection:
        connection.execute(text(f'DROP ROLE IF EXISTS "{role}"'))
        grant_service_role(connection, role, create=True)
    yield role
    with pg_owner.engine.begin() as connection:
        connection.execute(text(f'DROP OWNED BY "{role}"'))
        connection.execute(text(f'DROP ROLE "{role}"'))


@pytest.fixture(scope="session")
def pg_database(pg_schema_url: str, pg_service_role: str) -> Iterator[Database]:
    """The database as the app sees it: connected as the service role."""
    database = Database(pg_schema_url, role=pg_service_role)
    yield database
    database.dispose()


@contextmanager
def as_owner(database: Database) -> Iterator[Connection]:
    """A transaction as the tables' owner (the test login), not as the service role the app
    runs as (`pg_service_role`): for what only the owner may do (DDL, terminating backends,
    going past the audit triggers). SQLite has no roles: the database itself."""
    owner = Database(database.url) if database.role else database
    try:
        with owner.engine.begin() as connection:
            yield connection
    finally:
        if owner is not database:
            owner.dispose()


_TABLES = [t.name for t in reversed(metadata.sorted_tables)]
# One round trip names the tables holding rows (cheap on empty ones): truncating only those takes
# a few milliseconds, all forty-odd about 70 ms, and it runs before every PostgreSQL test.
_USED_TABLES = " UNION ALL ".join(
    f"SELECT '{name}' WHERE EXISTS (SELECT 1 FROM \"{name}\")" for name in _TABLES
)
# Every sequence a test moved starts again at 1, as RESTART IDENTITY would (some tables may have
# been emptied by the code under test, and are not truncated).
_RESET_SEQUENCES = (
    "SELECT setval(format('%I.%I', schemaname, sequencename)::regclass, 1, false)"
    " FROM pg_sequences WHERE schemaname = current_schema() AND last_value IS NOT NULL"
)


def _truncate_all(database: Database) -> None:
    """Empty every table of the schema and reset its sequences, before a PostgreSQL test."""
    with database.engine.begin() as connection:
        # A test that leaks an open transaction makes this fail loudly instead of hanging.
        connection.execute(text("SET LOCAL lock_timeout = '10s'"))
        used = [row[0] for row in connection.execute(text(_USED_TABLES))]
        if used:
            # The audit tables' triggers refuse TRUNCATE; the test owner (a superuser) passes
            # them for the clean-up between tests only.
            connection.execute(text("SET LOCAL session_replication_role = replica"))
            tables = ", ".join(f'"{name}"' for name in used)
            connection.execute(text(f"TRUNCATE {tables} CASCADE"))
        connection.execute(text(_RESET_SEQUENCES))


@pytest.fixture(params=["sqlite", "postgresql"])
def engine_name(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    return name


@pytest.fixture
def database(
    engine_name: str, request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[Database]:
    if engine_name == "sqlite":
        if request.node.get_closest_marker("postgres_only"):
            pytest.skip("PostgreSQL-only behaviour")
        template: Path = request.getfixturevalue("sqlite_template")
        path = tmp_path / "product_shop.sqlite3"
        shutil.copyfile(template, path)
        database = Database(f"sqlite:///{path}")
        yield database
        database.dispose()
        return
    database = request.getfixturevalue("pg_database")
    owner = request.getfixturevalue("pg_owner")
    _truncate_all(owner)  # before each test, whatever the last one left
    yield database


# ---- identity ------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def key_pair() -> KeyPair:
    return generate_key_pair()


@pytest.fixture(scope="session")
def other_key_pair() -> KeyPair:
    return generate_key_pair()


@dataclass(frozen=True)
class Person:
    """A test user: their Actor for service calls and a token for HTTP calls."""

    actor: Actor
    token: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


TokenFactory = Callable[..., str]


@pytest.fixture(scope="session")
def make_token(key_pair: KeyPair) -> TokenFactory:
    def factory(
        *,
        role: str,
        subject: str | None = None,
        practice_id: uuid.UUID | None = None,
        name: str | None = "Test User",
        mfa: bool = False,
        now: datetime | None = None,
        ttl: timedelta = timedelta(hours=1),
        issuer: str = DEFAULT_ISSUER,
        audience: str = DEFAULT_AUDIENCE,
        private_pem: str | None = None,
        extra: dict[str, Any] | None = None,
    ) -> str:
        return issue_token(
            private_pem or key_pair.private_pem,
            subject=subject or str(uuid.uuid4()),
            role=role,
            issuer=issuer,
            audience=audience,
            now=now or datetime.now(UTC),
            name=name,
            practice_id=str(practice_id) if practice_id else None,
            mfa=mfa,
            ttl=ttl,
            extra=extra,
        )

    return factory


@pytest.fixture(scope="session")
def person(make_token: TokenFactory) -> Callable[..., Person]:
    def factory(role: str, practice_id: uuid.UUID | None = None, name: str = "Test User") -> Person:
        subject = str(uuid.uuid4()) if role != "service" else "hygiene-subscriptions"
        token = make_token(role=role, subject=subject, practice_id=practice_id, name=name)
        actor = Actor(
            actor_id=subject,
            name=name,
            role=Role(role),
            practice_id=practice_id,
            mfa=False,
            auth_time=None,
        )
        return Person(actor=actor, token=token)

    return factory


# ---- Integrated Payments, over real HTTP ----------------------------------------------------

# Standard Webhooks format: whsec_ + base64 of the HMAC key (here 32 bytes).
WEBHOOK_SECRET = "whsec_dGVzdC13ZWJob29rLXNlY3JldC0zMi1ieXRlcy1rZXk="
PAYMENTS_API_KEY = "test-payments-api-key"


@pytest.fixture(scope="session")
def payments_simulator() -> Iterator[BackgroundServer]:
    """The Integrated Payments simulator on a local port (callbacks are driven by the tests)."""
    port = free_port()
    app = create_payments_simulator(
        SimulatorConfig(
            api_key=PAYMENTS_API_KEY,
            webhook_secret=WEBHOOK_SECRET,
            public_url=f"http://127.0.0.1:{port}",
            callback_url=None,
        )
    )
    server = serve_in_background(app, port)
    yield server
    server.stop()


@pytest.fixture
def payments_url(payments_simulator: BackgroundServer) -> Iterator[str]:
    yield payments_simulator.url
    SIMULATORS.post(f"{payments_simulator.url}/_simulator/reset")


# ---- the supplier network, over real HTTP ---------------------------------------------------

# Its own Standard Webhooks secret (32 bytes), not the payments one.
SUPPLIER_WEBHOOK_SECRET = "whsec_dGVzdC1zdXBwbGllci13ZWJob29rLXNlY3JldC0zMmI="
SUPPLIERS_API_KEY = "test-suppliers-api-key"


@pytest.fixture(scope="session")
def suppliers_simulator() -> Iterator[BackgroundServer]:
    """The supplier network simulator on a local port. Shipments move only when a test says so
    (`/_simulator/shipments/{id}/advance`), and callbacks go nowhere until a test names a
    receiver (`POST /_simulator/config {"callback_url": ...}`)."""
    app = create_suppliers_simulator(
        SupplierSimulatorConfig(
            api_key=SUPPLIERS_API_KEY,
            webhook_secret=SUPPLIER_WEBHOOK_SECRET,
            callback_url=None,
            auto_advance=False,
            duplicate_rate=0.0,
        )
    )
    server = serve_in_background(app)
    yield server
    server.stop()


@pytest.fixture
def suppliers_url(suppliers_simulator: BackgroundServer) -> Iterator[str]:
    """The simulator's URL; afterwards its faults, refusals, held callbacks and callback URL
    are reset (shipments stay)."""
    yield suppliers_simulator.url
    SIMULATORS.post(f"{suppliers_simulator.url}/_simulator/reset")


# ---- Rewards Manager, over real HTTP --------------------------------------------------------

REWARDS_WEBHOOK_SECRET = "whsec_dGVzdC1yZXdhcmRzLXdlYmhvb2stc2VjcmV0LTMyYnl0ZXM="
REWARDS_API_KEY = "test-rewards-api-key"
APPOINTMENTS_WEBHOOK_SECRET = "whsec_dGVzdC1hcHBvaW50bWVudHMtd2ViaG9vay1zZWNyZXQtMzJi"


@pytest.fixture(scope="session")
def rewards_simulator() -> Iterator[BackgroundServer]:
    """The Rewards Manager simulator on a local port; callbacks go nowhere until a test names a
    receiver (`POST /_simulator/config {"callback_url": ...}`)."""
    app = create_rewards_simulator(
        RewardsSimulatorConfig(
            api_key=REWARDS_API_KEY,
            webhook_secret=REWARDS_WEBHOOK_SECRET,
            callback_url=None,
            duplicate_callback_rate=0.0,
            confirm_delay_seconds=0.0,
        )
    )
    server = serve_in_background(app)
    yield server
    server.stop()


@pytest.fixture
def rewards_url(rewards_simulator: BackgroundServer) -> Iterator[str]:
    """The simulator's URL; afterwards its faults and callback URL are reset."""
    yield rewards_simulator.url
    SIMULATORS.post(f"{rewards_simulator.url}/_simulator/reset")


# ---- the modules that receive our events, over real HTTP -------------------------------------


@pytest.fixture(scope="session")
def receivers_simulator() -> Iterator[BackgroundServer]:
    """Communication Hub, Finance, Financial Insights, Hygiene Subscriptions and the module
    owners' endpoint, each checking our signatures with its (demo) secret."""
    server = serve_in_background(create_receivers_simulator(ReceiversSimulatorConfig()))
    yield server
    server.stop()


@pytest.fixture
def receivers_url(receivers_simulator: BackgroundServer) -> Iterator[str]:
    """The simulator's URL; afterwards what it received and its faults are cleared."""
    yield receivers_simulator.url
    SIMULATORS.delete(f"{receivers_simulator.url}/_simulator/received")
    for destination in FEED_DESTINATIONS:
        SIMULATORS.delete(f"{receivers_simulator.url}/_simulator/{destination.value}/faults")


# ---- the application -----------------------------------------------------------------------


@pytest.fixture
def settings(
    database: Database,
    key_pair: KeyPair,
    tmp_path: Path,
    payments_url: str,
    suppliers_url: str,
    rewards_url: str,
) -> Settings:
    return Settings(
        environment="test",
        database_url=database.url,
        data_dir=tmp_path,
        jwt_public_key=key_pair.public_pem,
        payments_base_url=payments_url,
        payments_api_key=PAYMENTS_API_KEY,
        payments_timeout_seconds=1.0,
        webhook_secret=WEBHOOK_SECRET,
        suppliers_base_url=suppliers_url,
        suppliers_api_key=SUPPLIERS_API_KEY,
        suppliers_timeout_seconds=1.0,
        supplier_webhook_secret=SUPPLIER_WEBHOOK_SECRET,
        rewards_base_url=rewards_url,
        rewards_api_key=REWARDS_API_KEY,
        rewards_timeout_seconds=1.0,
        rewards_webhook_secret=REWARDS_WEBHOOK_SECRET,
        appointments_webhook_secret=APPOINTMENTS_WEBHOOK_SECRET,
        relay_in_process=False,  # tests drive the relay themselves
        # The event feeds wait in the outbox unless a test starts the receivers (`receivers`).
        event_sinks={d.value: EventSinkSettings(kind="off") for d in FEED_DESTINATIONS},
    )


@pytest.fixture
def context(settings: Settings, database: Database) -> Iterator[AppContext]:
    context = AppContext.build(settings, database=database)
    yield context
    context.close()


@pytest.fixture
def client(context: AppContext) -> Iterator[TestClient]:
    with TestClient(create_app(context=context), raise_server_exceptions=False) as test_client:
        yield test_client


# ---- a small world: two practices and their people ----------------------------------------


@dataclass
class World:
    practice_a: uuid.UUID
    practice_b: uuid.UUID
    catalogue_admin: Person
    operator: Person
    admin_a: Person
    admin_b: Person
    clinician_a: Person
    finance_a: Person
    staff_a: Person
    patient_a: Person
    patient_a2: Person
    patient_b: Person
    service: Person


@pytest.fixture(scope="session")
def world(person: Callable[..., Person]) -> World:
    a, b = uuid.uuid4(), uuid.uuid4()
    return World(
        practice_a=a,
        practice_b=b,
        catalogue_admin=person("catalogue_admin", name="Cat Admin"),
        operator=person("platform_operator", name="Ops Person"),
        admin_a=person("practice_admin", a, "Alice Admin"),
        admin_b=person("practice_admin", b, "Bob Admin"),
        clinician_a=person("clinician", a, "Dr Clare"),
        finance_a=person("finance", a, "Fin Ance"),
        staff_a=person("staff", a, "Stan Staff"),
        patient_a=person("patient", a, "Penny Patient"),
        patient_a2=person("patient", a, "Paul Patient"),
        patient_b=person("patient", b, "Petra Patient"),
        service=person("service"),
    )


# ---- reporting: CI's log counts the PostgreSQL tests ----------------------------------------


def pytest_terminal_summary(terminalreporter: Any) -> None:
    counts: dict[str, int] = {}
    for outcome in ("passed", "failed", "error", "skipped"):
        counts[outcome] = sum(
            1
            for report in terminalreporter.stats.get(outcome, [])
            if "postgresql" in getattr(report, "nodeid", "")
            and getattr(report, "when", "call") in ("call", "setup")
        )
    line = "PostgreSQL tests: {passed} passed, {failed} failed, {error} errors, {skipped} skipped"
    terminalreporter.write_line(line.format(**counts))
