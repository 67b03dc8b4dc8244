"""Every catalogue change: one transaction with its audit entry and outbox events (invariant 5)."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import jsonschema
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from product_shop.audit.log import verify_stream
from product_shop.audit.tables import AuditEntry
from product_shop.catalogue.tables import PracticeProductSetting, Product
from product_shop.context import AppContext
from product_shop.db.engine import Database
from product_shop.events.outbox import Outbox, to_cloudevent
from product_shop.events.tables import OutboxEvent
from product_shop.events.types import BY_NAME
from tests.conftest import World
from tests.integration.conftest import count_rows

MakeProduct = Callable[..., uuid.UUID]
Offer = Callable[..., None]


def _events(database: Database) -> list[OutboxEvent]:
    with Session(database.engine) as session:
        return list(session.scalars(select(OutboxEvent).order_by(OutboxEvent.position)))


def _audit(database: Database) -> list[AuditEntry]:
    with Session(database.engine) as session:
        return list(session.scalars(select(AuditEntry).order_by(AuditEntry.position)))


def _assert_valid_cloudevents(events: list[OutboxEvent]) -> None:
    for row in events:
        document = to_cloudevent(row)
        assert document["specversion"] == "1.0"
        assert document["subject"] == row.aggregate_id
        jsonschema.validate(
            document["data"],
            BY_NAME[row.event_type].schema(),
            format_checker=jsonschema.FormatChecker(),
        )


def test_creating_a_product_writes_one_audit_entry_and_one_event(
    client: TestClient, world: World, database: Database
) -> None:
    response = client.post(
        "/v1/products",
        headers={**world.catalogue_admin.headers, "Idempotency-Key": str(uuid.uuid4())},
        json={
            "name": "Oral-B iO9",
            "category": "Electric toothbrushes",
            "fulfilment_type": "Drop-Ship",
            "cost_price_minor": 15999,
        },
    )
    assert response.status_code == 201
    product_id = response.json()["product_id"]

    (entry,) = _audit(database)
    assert entry.action == "product.created"
    assert entry.stream_id == product_id
    assert entry.actor_id == world.catalogue_admin.actor.actor_id
    assert entry.actor_role == "catalogue_admin"
    assert entry.actor_name == "Cat Admin"
    assert entry.before is None
    assert entry.after is not None
    assert entry.after["cost_price_minor"] == 15999
    (event,) = _events(database)
    assert event.event_type == "com.primoro.productshop.product.created.v1"
    assert event.subject == product_id
    _assert_valid_cloudevents([event])


def test_a_price_change_is_audited_with_before_and_after(
    client: TestClient, world: World, database: Database, make_product: MakeProduct, offer: Offer
) -> None:
    product = make_product()
    offer(world.admin_a, product, 5999)

    client.put(
        f"/v1/catalogue/{product}/practice-settings",
        headers=world.admin_a.headers,
        json={"retail_price_minor": 4999, "visible": True},
    )

    changes = [e for e in _audit(database) if e.action == "practice_product.settings_changed"]
    assert [c.practice_id for c in changes] == [world.practice_a, world.practice_a]
    last = changes[-1]
    assert last.actor_id == world.admin_a.actor.actor_id
    assert last.before is not None
    assert last.before["settings"]["retail_price_minor"] == 5999
    assert last.after is not None
    assert last.after["settings"]["retail_price_minor"] == 4999
    events = [e for e in _events(database) if e.event_type.endswith("settings_changed.v1")]
    assert events[-1].data["before"]["retail_price_minor"] == 5999
    assert events[-1].data["after"]["retail_price_minor"] == 4999
    _assert_valid_cloudevents(_events(database))


def test_an_unchanged_write_records_nothing(
    client: TestClient, world: World, database: Database, make_product: MakeProduct, offer: Offer
) -> None:
    product = make_product()
    offer(world.admin_a, product, 5999)
    audit_before, events_before = len(_audit(database)), len(_events(database))

    response = client.put(
        f"/v1/catalogue/{product}/practice-settings",
        headers=world.admin_a.headers,
        json={"retail_price_minor": 5999, "visible": True},
    )

    assert response.status_code == 200
    assert (len(_audit(database)), len(_events(database))) == (audit_before, events_before)


def test_deprecating_a_product_makes_it_unavailable_and_names_the_affected_references(
    client: TestClient, world: World, database: Database, make_product: MakeProduct, offer: Offer
) -> None:
    product = make_product()
    offer(world.admin_a, product)

    response = client.patch(
        f"/v1/products/{product}",
        headers=world.catalogue_admin.headers,
        json={"availability_status": "deprecated"},
    )

    assert response.status_code == 200
    types = [e.event_type.split(".")[-2] for e in _events(database)]
    assert types[-3:] == ["updated", "availability_changed", "deprecated"]
    deprecated = _events(database)[-1]
    assert deprecated.data["affected"] == {
        "active_order_ids": [],
        "hygiene_subscriptions": {
            "product_id": str(product),
            "action": "check_plans_referencing_product",
        },
    }
    assert deprecated.data["notify_module_owners"] == ["product_shop", "hygiene_subscriptions"]
    _assert_valid_cloudevents(_events(database))
    assert "product.deprecated" in [e.action for e in _audit(database)]
    listing = client.get("/v1/catalogue", headers=world.patient_a.headers).json()
    assert str(product) not in {i["product_id"] for i in listing["items"]}
    staff = client.get(f"/v1/catalogue/{product}", headers=world.admin_a.headers).json()
    assert staff["availability_status"] == "deprecated"
    assert staff["purchasable"] is False


def test_a_deprecated_product_cannot_be_revived_or_repriced(
    client: TestClient, world: World, database: Database, make_product: MakeProduct
) -> None:
    product = make_product()
    client.patch(
        f"/v1/products/{product}",
        headers=world.catalogue_admin.headers,
        json={"availability_status": "deprecated"},
    )
    audit_count = len(_audit(database))

    revive = client.patch(
        f"/v1/products/{product}",
        headers=world.catalogue_admin.headers,
        json={"availability_status": "available"},
    )
    reprice = client.put(
        f"/v1/catalogue/{product}/practice-settings",
        headers=world.admin_a.headers,
        json={"retail_price_minor": 100, "visible": True},
    )

    assert (revive.status_code, revive.json()["code"]) == (409, "product_deprecated")
    assert (reprice.status_code, reprice.json()["code"]) == (409, "product_deprecated")
    assert len(_audit(database)) == audit_count


def _fail_on(monkeypatch: pytest.MonkeyPatch, event_suffix: str) -> None:
    """Make the outbox fail when it writes this event: the change fails part-way."""
    real_emit = Outbox.emit

    def failing_emit(self: Outbox, session: Session, event_type: Any, **kwargs: Any) -> Any:
        if event_type.name.endswith(event_suffix):
            raise RuntimeError("outbox write failed")
        return real_emit(self, session, event_type, **kwargs)

    monkeypatch.setattr(Outbox, "emit", failing_emit)


def test_a_product_creation_that_fails_part_way_leaves_no_product_no_audit_and_no_event(
    client: TestClient, world: World, database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    _fail_on(monkeypatch, "product.created.v1")

    response = client.post(
        "/v1/products",
        headers={**world.catalogue_admin.headers, "Idempotency-Key": str(uuid.uuid4())},
        json={"name": "X", "category": "Y", "fulfilment_type": "Digital", "cost_price_minor": 0},
    )

    assert response.status_code == 500
    assert response.json()["code"] == "internal_error"
    assert "Traceback" not in response.text
    assert "outbox write failed" not in response.text
    assert count_rows(database, Product) == 0
    assert count_rows(database, AuditEntry) == 0
    assert count_rows(database, OutboxEvent) == 0


def test_a_deprecation_that_fails_part_way_leaves_the_product_available_and_nothing_recorded(
    client: TestClient,
    world: World,
    database: Database,
    make_product: MakeProduct,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    product = make_product()
    audit_before, events_before = len(_audit(database)), len(_events(database))
    _fail_on(monkeypatch, "product.deprecated.v1")  # after the update, audit and first events

    response = client.patch(
        f"/v1/products/{product}",
        headers=world.catalogue_admin.headers,
        json={"availability_status": "deprecated"},
    )

    assert response.status_code == 500
    with Session(database.engine) as session:
        stored = session.get(Product, product)
        assert stored is not None
        assert (stored.availability_status, stored.version) == ("available", 1)
    assert (len(_audit(database)), len(_events(database))) == (audit_before, events_before)


def test_a_settings_change_that_fails_part_way_leaves_no_setting(
    client: TestClient,
    world: World,
    database: Database,
    make_product: MakeProduct,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    product = make_product()
    _fail_on(monkeypatch, "settings_changed.v1")

    response = client.put(
        f"/v1/catalogue/{product}/practice-settings",
        headers=world.admin_a.headers,
        json={"retail_price_minor": 4999, "visible": True},
    )

    assert response.status_code == 500
    assert count_rows(database, PracticeProductSetting) == 0
    assert count_rows(database, AuditEntry, AuditEntry.stream_type == "practice_catalogue") == 0


def test_the_response_is_sent_only_after_the_commit(
    client: TestClient, world: World, database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A failing commit must never be reported as success (unit of work at the request edge)."""

    def failing_commit(self: Session) -> None:
        raise RuntimeError("commit lost")

    monkeypatch.setattr(Session, "commit", failing_commit)
    response = client.post(
        "/v1/products",
        headers={**world.catalogue_admin.headers, "Idempotency-Key": str(uuid.uuid4())},
        json={"name": "X", "category": "Y", "fulfilment_type": "Digital", "cost_price_minor": 0},
    )
    monkeypatch.undo()

    assert response.status_code == 500
    assert count_rows(database, Product) == 0


def test_a_stale_if_match_is_refused_without_writing(
    client: TestClient, world: World, database: Database, make_product: MakeProduct
) -> None:
    product = make_product()
    client.patch(
        f"/v1/products/{product}", headers=world.catalogue_admin.headers, json={"name": "Renamed"}
    )

    response = client.patch(
        f"/v1/products/{product}",
        headers={**world.catalogue_admin.headers, "If-Match": '"1"'},
        json={"name": "Lost update"},
    )

    assert (response.status_code, response.json()["code"]) == (412, "version_mismatch")
    with Session(database.engine) as session:
        stored = session.get(Product, product)
        assert stored is not None
        assert stored.name == "Renamed"


def test_each_streams_audit_chain_verifies_and_tampering_is_detected(
    client: TestClient, world: World, database: Database, make_product: MakeProduct
) -> None:
    product = make_product()
    for name in ("A", "B", "C"):
        client.patch(
            f"/v1/products/{product}", headers=world.catalogue_admin.headers, json={"name": name}
        )
    stream = [e for e in _audit(database) if e.stream_id == str(product)]
    assert [e.stream_seq for e in stream] == [1, 2, 3, 4]
    assert verify_stream(stream)

    stream[2].after = {**(stream[2].after or {}), "name": "forged"}
    assert not verify_stream(stream)
    assert not verify_stream([stream[0], stream[1], stream[3]])  # a removed entry


@pytest.mark.postgres_only
def test_concurrent_edits_with_the_same_version_let_exactly_one_win(
    context: AppContext, world: World, make_product: MakeProduct
) -> None:
    """Optimistic concurrency on real PostgreSQL: row lock + version check."""
    import threading

    from product_shop.catalogue.schemas import ProductPatch
    from product_shop.core.errors import PreconditionFailed

    product = make_product()
    results: list[str] = []
    barrier = threading.Barrier(8)

    def edit(index: int) -> None:
        barrier.wait()
        try:
            with context.database.unit_of_work() as session:
                context.catalogue.update_product(
                    session,
                    world.catalogue_admin.actor,
                    product,
                    ProductPatch(name=f"Name {index}"),
                    expected_version=1,
                )
            results.append("ok")
        except PreconditionFailed:
            results.append("412")

    threads = [threading.Thread(target=edit, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)

    assert sorted(results) == ["412"] * 7 + ["ok"]
    assert count_rows(context.database, AuditEntry, AuditEntry.action == "product.updated") == 1
