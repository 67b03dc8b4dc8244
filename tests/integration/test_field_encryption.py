"""Personal data encrypted at rest (spec §16 Security "all data at rest encrypted", Privacy;
docs/security.md): after a drop-ship purchase (with a refund note, a cancellation reason and a
dispatch with tracking and a note), no table holds the recipient's name, the address lines or
the notes in plaintext, the audit log included (it records `has_note`), nor any table the
tracking number or URL (the audit log keeps the number's last four characters), read as raw
rows (no column types) and, on SQLite, as the database file's and its WAL's bytes; the patient
still gets them back from the API and the supplier network still gets them in the shipment.
`product-shop keys rotate` moves every value to a new key, after which the old key can go.
A changed token, or one moved to another column, fails authentication."""

from __future__ import annotations

import base64
import json
import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import inspect, select
from sqlalchemy import table as sa_table
from sqlalchemy.engine import make_url
from sqlalchemy.sql import column as sa_column

from product_shop.audit.tables import AuditEntry
from product_shop.checkout.tables import Checkout
from product_shop.cli import main
from product_shop.context import AppContext
from product_shop.core.crypto import (
    DEMO_KEY,
    FieldDecryptionError,
    Keyring,
    current_keyring,
    new_key_text,
    using_keyring,
)
from product_shop.db.encrypted import ENCRYPTED_COLUMNS
from product_shop.db.engine import Database, make_engine
from product_shop.db.migrate import downgrade, upgrade
from product_shop.db.models import metadata
from product_shop.db.roles import grant_service_role
from tests.conftest import Person, World
from tests.integration.checkout_support import Shop, key, pay
from tests.integration.refund_support import refund

RECIPIENT = "Rosalind Quixley-Vane"
ADDRESS = {
    "recipient_name": RECIPIENT,
    "line1": "17 Zephyr Crescent",
    "line2": "Annexe Marigold",
    "city": "Wexbury Parva",
    "postcode": "WX9 7QZ",
}
REFUND_NOTE = "Rosalind rang: parcel left at 19 Zephyr Crescent"
CANCEL_REASON = "Moving to Larkspur Cottage next week"
DISPATCH_NOTE = "Handed to the courier for Larkspur; ring the bell twice"
TRACKING_NUMBER = "ZQ4471908GBX"
TRACKING_URL = f"https://track.example/zq/{TRACKING_NUMBER}"
# What may never be found in plaintext (the patient's first name, from their token, too).
SECRETS = [*ADDRESS.values(), REFUND_NOTE, CANCEL_REASON, DISPATCH_NOTE]
# The audit log keeps its entries as written (append-only, hash-chained), so it holds no personal
# data: a line's stage there names its carrier and the tracking number's last four characters
# only (docs/security.md); a refund and a fulfilment move record only `has_note`.
TRACKING = [TRACKING_NUMBER, TRACKING_URL]


def _purchase(
    client: TestClient,
    context: AppContext,
    patient: Person,
    shop: Shop,
    staff_headers: dict[str, str],
) -> tuple[dict[str, Any], dict[str, Any], str]:
    """A drop-ship purchase through the API, its shipment submitted by the relay, a refund
    with a note, a cancellation request with a reason, and the line dispatched by staff with
    tracking and a note. Returns the checkout, the order and the checkout's Idempotency-Key."""
    idempotency = key()
    created = client.post(
        "/v1/checkouts",
        headers={**patient.headers, **idempotency},
        json={
            "lines": [{"product_id": str(shop.toothbrush), "quantity": 1}],
            "delivery_address": ADDRESS,
        },
    )
    assert created.status_code == 201, created.text
    assert pay(created.json()).status_code == 200
    completed = client.post(
        f"/v1/checkouts/{created.json()['id']}/complete", headers=patient.headers
    )
    assert completed.status_code == 200, completed.text
    order: dict[str, Any] = completed.json()
    context.relay.run_once()  # fulfilment.shipment_requested.v1 to the supplier network
    refunded = refund(
        client,
        staff_headers,
        order["order_id"],
        {"reason_code": "damaged_item", "amount_minor": 500, "note": REFUND_NOTE},
    )
    assert refunded.status_code == 201, refunded.text
    asked = client.post(
        f"/v1/orders/{order['order_id']}/cancellation-requests",
        headers={**patient.headers, **key()},
        json={"reason": CANCEL_REASON},
    )
    assert asked.status_code == 201, asked.text
    (line,) = order["lines"]
    dispatched = client.post(
        f"/v1/orders/{order['order_id']}/lines/{line['line_item_id']}/fulfilment",
        headers=staff_headers,
        json={
            "status": "dispatched",
            "carrier": "DPD",
            "tracking_number": TRACKING_NUMBER,
            "tracking_url": TRACKING_URL,
            "note": DISPATCH_NOTE,
        },
    )
    assert dispatched.status_code == 200, dispatched.text
    return created.json(), order, idempotency["Idempotency-Key"]


def _raw_rows(database: Database) -> dict[str, str]:
    """Every row of every table as the database returns it (no column types, so nothing is
    decrypted), as text per table."""
    found: dict[str, str] = {}
    with database.engine.connect() as connection:
        present = set(inspect(connection).get_table_names())  # a downgraded schema has fewer
        for table in metadata.sorted_tables:
            if table.name not in present:
                continue
            rows = connection.exec_driver_sql(f'SELECT * FROM "{table.name}"').all()
            found[table.name] = "\n".join(
                repr(value) + " " + str(value) for row in rows for value in row
            )
    return found


def _database_files(database: Database) -> dict[str, bytes]:
    """SQLite: the database file and its WAL (and rollback journal), as bytes."""
    path = Path(make_url(database.url).database or "")
    files = [path, Path(f"{path}-wal"), Path(f"{path}-journal")]
    return {file.name: file.read_bytes() for file in files if file.exists()}


def _tokens(database: Database) -> dict[str, list[str]]:
    """The raw stored value of every encrypted column, by table.column (non-NULL only)."""
    found: dict[str, list[str]] = {}
    with database.engine.connect() as connection:
        for table_name, columns in ENCRYPTED_COLUMNS.items():
            for name in columns:
                raw = sa_table(table_name, sa_column(name))
                values = connection.execute(
                    select(raw.c[name]).where(raw.c[name].is_not(None))
                ).scalars()
                found[f"{table_name}.{name}"] = [str(v) for v in values]
    return found


def _readable(database: Database) -> dict[str, list[str]]:
    """Every row of every table with an encrypted column, read through the column types
    (decrypted), as sorted JSON text per table."""
    with database.engine.connect() as connection:
        return {
            name: sorted(
                json.dumps(dict(row), default=str, sort_keys=True)
                for row in connection.execute(select(metadata.tables[name])).mappings()
            )
            for name in ENCRYPTED_COLUMNS
        }


def test_a_drop_ship_purchase_leaves_no_plaintext_address_name_or_note_in_the_database(
    client: TestClient,
    context: AppContext,
    world: World,
    shop: Shop,
    suppliers_url: str,
    with_mfa: Callable[..., dict[str, str]],
    engine_name: str,
) -> None:
    patient = world.patient_a2
    checkout, order, idempotency_key = _purchase(
        client, context, patient, shop, with_mfa(world.admin_a)
    )
    first_name = str(patient.actor.name).split()[0]

    # The patient still sees their address; a replay of the checkout POST (its stored answer,
    # encrypted) gives it back too.
    read = client.get(f"/v1/checkouts/{checkout['id']}", headers=patient.headers)
    assert read.status_code == 200, read.text
    assert {k: read.json()["delivery_address"][k] for k in ADDRESS} == ADDRESS
    replay = client.post(
        "/v1/checkouts",
        headers={**patient.headers, "Idempotency-Key": idempotency_key},
        json={
            "lines": [{"product_id": str(shop.toothbrush), "quantity": 1}],
            "delivery_address": ADDRESS,
        },
    )
    assert replay.status_code == 201, replay.text
    assert replay.json()["delivery_address"] == checkout["delivery_address"]
    # The relay decrypted the event: the supplier network got the address in plaintext.
    shipments = httpx.get(f"{suppliers_url}/_simulator/shipments").json()["shipments"]
    (shipment,) = [s for s in shipments if s["order_id"] == order["order_id"]]
    assert shipment["delivery_address"]["recipient_name"] == RECIPIENT
    assert shipment["delivery_address"]["line1"] == ADDRESS["line1"]
    with context.database.reading() as session:
        stored = session.get(Checkout, uuid.UUID(checkout["id"]))
        assert stored is not None
        assert stored.patient_first_name == first_name

    # Staff and the patient still read the tracking (decrypted).
    for reader in (world.admin_a, patient):
        shown = client.get(f"/v1/orders/{order['order_id']}", headers=reader.headers)
        assert shown.status_code == 200, shown.text
        (line,) = shown.json()["lines"]
        assert line["tracking"]["tracking_number"] == TRACKING_NUMBER
        assert line["tracking"]["tracking_url"] == TRACKING_URL

    # The refund and the dispatch are audited, each saying that a note came with it.
    with context.database.reading() as session:
        trail = {
            entry.action: entry.after
            for entry in session.scalars(
                select(AuditEntry).where(
                    AuditEntry.stream_type == "order", AuditEntry.stream_id == order["order_id"]
                )
            )
        }
    for action in ("refund.succeeded", "fulfilment.dispatched"):
        assert trail[action] is not None, action
        assert trail[action]["has_note"] is True, action
        assert "note" not in trail[action], action

    raw = _raw_rows(context.database)
    # The scan sees plaintext where there is some (the product's name, the order's id, the
    # audit log's actions and tracking ends), so finding no secret means they are not there.
    assert "Oral-B Pro 3" in raw["order_lines"]
    assert order["order_id"].replace("-", "") in raw["orders"].replace("-", "")
    assert "refund.succeeded" in raw["audit_entries"]
    assert "fulfilment.dispatched" in raw["audit_entries"]
    assert "tracking_number_ends" in raw["audit_entries"]
    assert TRACKING_NUMBER[-4:] in raw["audit_entries"]
    leaks = [
        f"{table}: {secret!r}"
        for table, text in raw.items()
        for secret in [*SECRETS, first_name, *TRACKING]
        if secret in text
    ]
    assert leaks == []
    # What is there instead: tokens under the current key, in every encrypted column written.
    tokens = _tokens(context.database)
    for column in (
        "checkouts.delivery_address",
        "checkouts.patient_first_name",
        "refunds.note",
        "cancellation_requests.reason",
        "idempotency_keys.response_body",
        "outbox_events.data",
        "order_lines.tracking_number",
        "order_lines.tracking_url",
    ):
        assert tokens[column], f"{column} holds nothing"
        assert all(t.startswith("v1.demo.") for t in tokens[column]), column

    if engine_name == "sqlite":
        files = _database_files(context.database)
        assert files, "no database file found"
        everything = b"".join(files.values())
        assert b"Oral-B Pro 3" in everything  # the bytes hold plaintext where there is some
        for secret in [*ADDRESS.values(), first_name, REFUND_NOTE, DISPATCH_NOTE]:
            assert secret.encode() not in everything, f"{secret!r} in the database files"


def test_a_token_moved_to_another_column_or_altered_fails_authentication(
    client: TestClient,
    context: AppContext,
    world: World,
    shop: Shop,
    with_mfa: Callable[..., dict[str, str]],
) -> None:
    checkout, _, _ = _purchase(client, context, world.patient_a2, shop, with_mfa(world.admin_a))
    checkout_id = uuid.UUID(checkout["id"])
    raw = sa_table(
        "checkouts",
        sa_column("checkout_id", Checkout.__table__.c.checkout_id.type),
        sa_column("delivery_address"),
        sa_column("patient_first_name"),
    )
    with context.database.engine.connect() as connection:
        token = connection.execute(
            select(raw.c.delivery_address).where(raw.c.checkout_id == checkout_id)
        ).scalar_one()

    def read() -> None:
        with context.database.reading() as session:
            session.execute(select(Checkout).where(Checkout.checkout_id == checkout_id)).one()

    read()  # as stored, it reads
    with context.database.engine.begin() as connection:
        connection.execute(
            raw.update().where(raw.c.checkout_id == checkout_id).values(patient_first_name=token)
        )
    with pytest.raises(FieldDecryptionError, match=r"checkouts\.patient_first_name: .*another"):
        read()

    version, key_id, data = token.split(".", 2)
    sealed = bytearray(base64.urlsafe_b64decode(data))
    sealed[20] ^= 0x04
    altered = f"{version}.{key_id}.{base64.urlsafe_b64encode(bytes(sealed)).decode()}"
    with context.database.engine.begin() as connection:
        connection.execute(
            raw.update()
            .where(raw.c.checkout_id == checkout_id)
            .values(delivery_address=altered, patient_first_name=None)
        )
    with pytest.raises(FieldDecryptionError, match=r"checkouts\.delivery_address: .*altered"):
        read()


@pytest.fixture
def configured(database: Database, monkeypatch: pytest.MonkeyPatch) -> Iterator[Database]:
    """The test's database as the configured one, no other PRODUCT_SHOP_* variable, and the
    process-wide keyring put back afterwards."""
    for name in list(os.environ):
        if name.startswith("PRODUCT_SHOP_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("PRODUCT_SHOP_DATABASE_URL", database.url)
    with using_keyring(current_keyring()):
        yield database


def test_rotating_keys_keeps_every_value_readable_and_the_old_key_can_go(
    client: TestClient,
    context: AppContext,
    world: World,
    shop: Shop,
    with_mfa: Callable[..., dict[str, str]],
    configured: Database,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    patient = world.patient_a2
    checkout, order, _ = _purchase(client, context, patient, shop, with_mfa(world.admin_a))
    _purchase(client, context, world.patient_a, shop, with_mfa(world.admin_a))
    before = _readable(configured)
    assert RECIPIENT in "".join(before["checkouts"])
    assert all(t.startswith("v1.demo.") for ts in _tokens(configured).values() for t in ts)

    new_key = new_key_text()
    demo = base64.b64encode(DEMO_KEY).decode()
    monkeypatch.setenv("PRODUCT_SHOP_ENCRYPTION_KEYS", json.dumps({"demo": demo, "k2": new_key}))
    monkeypatch.setenv("PRODUCT_SHOP_ENCRYPTION_KEY_ID", "k2")
    assert main(["keys", "rotate", "--batch-size", "2"]) == 0
    out = capsys.readouterr().out
    assert "rotating to key k2 (batches of 2)" in out
    assert "checkouts.delivery_address: batch 1" in out
    assert "outbox_events.data: batch 2" in out  # several batches: more than two events
    assert new_key not in out
    assert RECIPIENT not in out

    tokens = _tokens(configured)
    assert sum(len(ts) for ts in tokens.values()) > 10
    stale = [(c, t[:8]) for c, ts in tokens.items() for t in ts if not t.startswith("v1.k2.")]
    assert stale == []
    assert main(["keys", "status", "--json"]) == 0
    status = json.loads(capsys.readouterr().out)
    assert status["current_key_id"] == "k2"
    assert all(counts["demo"] == 0 for counts in status["columns"].values())
    assert all(counts["other"] == 0 for counts in status["columns"].values())
    # Run again: nothing left to do (resumable, idempotent).
    assert main(["keys", "rotate"]) == 0
    assert "done: 0 value(s) now under key k2" in capsys.readouterr().out

    # The demo key dropped: everything still reads, the same as before the rotation.
    only_new = Keyring.from_text({"k2": new_key}, "k2")
    with using_keyring(only_new):
        assert _readable(configured) == before
        read = client.get(f"/v1/checkouts/{checkout['id']}", headers=patient.headers)
        assert read.status_code == 200, read.text
        assert read.json()["delivery_address"]["recipient_name"] == RECIPIENT
        refunds = client.get(
            f"/v1/orders/{order['order_id']}/refunds", headers=world.admin_a.headers
        )
        assert refunds.status_code == 200, refunds.text
        assert REFUND_NOTE in refunds.text
    # And without the new key nothing does: the values really are under it.
    with (
        using_keyring(Keyring.from_text({"demo": demo}, "demo")),
        pytest.raises(FieldDecryptionError, match="key 'k2', which the keyring does not hold"),
    ):
        _readable(configured)


def test_the_migration_encrypts_plaintext_rows_and_its_downgrade_decrypts_them(
    client: TestClient,
    context: AppContext,
    world: World,
    shop: Shop,
    with_mfa: Callable[..., dict[str, str]],
) -> None:
    """Rows written before 0017 (plaintext) are encrypted by it; going down decrypts them."""
    _purchase(client, context, world.patient_a2, shop, with_mfa(world.admin_a))
    before = _readable(context.database)
    owner = make_engine(context.database.url)  # migrations run as the schema's owner
    try:
        downgrade(owner, "0016")
        plain = _raw_rows(context.database)
        assert RECIPIENT in plain["checkouts"]
        assert REFUND_NOTE in plain["refunds"]
        assert ADDRESS["line1"] in plain["outbox_events"]
        assert TRACKING_NUMBER in plain["order_lines"]
        assert TRACKING_URL in plain["order_lines"]
        upgrade(owner)
        if context.database.role:  # tables made again by the upgrade: granted again
            with owner.begin() as connection:
                grant_service_role(connection, context.database.role)
    finally:
        owner.dispose()
        context.database.engine.dispose()  # no connection keeps plans of the old columns
    raw = _raw_rows(context.database)
    assert not [s for s in SECRETS if s in raw["checkouts"] + raw["outbox_events"]]
    assert REFUND_NOTE not in raw["refunds"]
    assert CANCEL_REASON not in raw["cancellation_requests"]
    assert not [t for t in TRACKING if t in raw["order_lines"]]
    assert _readable(context.database) == before
