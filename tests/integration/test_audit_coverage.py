"""Spec §8 Audit & Compliance, bullet by bullet: each action is driven through the HTTP API, then
its entry is found in `audit_entries` with the fields the clause names.

Not here: AI-generated product suggestions (not built) and Communication Hub events (their own
tests). Chains, export and tamper evidence: `test_catalogue_changes.py`, `test_audit_feed.py`.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from product_shop.access.actor import Actor, Role
from product_shop.audit.tables import AuditEntry
from product_shop.context import AppContext
from product_shop.db.engine import Database
from tests.conftest import Person, TokenFactory, World
from tests.integration.checkout_support import ADDRESS, Shop, key, pay, start_checkout
from tests.integration.fulfilment_support import line_named, place_order, read_order, wait_for
from tests.integration.refund_support import refund, simulator_refunds

KIT, BRUSH, VOUCHER = "Home Whitening Kit", "Oral-B Pro 3", "Hygienist voucher"
SYSTEM, SUPPLIERS = ("product-shop", "service"), ("supplier-network", "service")


def _entries(database: Database, *where: Any) -> list[AuditEntry]:
    """Audit entries matching `where`, in log order."""
    with Session(database.engine) as session:
        return list(session.scalars(select(AuditEntry).where(*where).order_by(AuditEntry.position)))


def _order_trail(database: Database, order_id: str) -> list[AuditEntry]:
    return _entries(database, AuditEntry.stream_type == "order", AuditEntry.stream_id == order_id)


def _reads(database: Database, action: str) -> list[AuditEntry]:
    return _entries(database, AuditEntry.stream_type == "order_read", AuditEntry.action == action)


def _who(entry: AuditEntry) -> tuple[str, str]:
    return entry.actor_id, entry.actor_role


def _as(person: Person) -> tuple[str, str]:
    return person.actor.actor_id, person.actor.role.value


def _within(entry: AuditEntry, start: datetime, end: datetime) -> bool:
    """The entry was recorded, in UTC, while the action ran."""
    at = entry.recorded_at
    return at.tzinfo is not None and start <= at <= end


def _now() -> datetime:
    return datetime.now(UTC)


def _staff_move(
    client: TestClient, person: Person, order: dict[str, Any], line: str, status: str
) -> dict[str, Any]:
    line_item_id = line_named(order, line)["line_item_id"]
    response = client.post(
        f"/v1/orders/{order['order_id']}/lines/{line_item_id}/fulfilment",
        headers=person.headers,
        json={"status": status},
    )
    assert response.status_code == 200, response.text
    document: dict[str, Any] = response.json()
    return document


# ---- 1. order state transitions, with actor identity and timestamp ---------------------------


def test_an_order_its_stages_and_its_status_changes_are_audited_with_actor_and_time(
    client: TestClient, world: World, shop: Shop, database: Database
) -> None:
    # when the patient buys a kit, and staff then hand it over
    start = _now()
    order = place_order(client, world.patient_a, [(shop.kit, 1)])
    created_by = _now()
    ready = _staff_move(client, world.staff_a, order, KIT, "ready_for_collection")
    readied_by = _now()
    done = _staff_move(client, world.clinician_a, ready, KIT, "collected")
    end = _now()
    assert done["status"] == "Completed"

    trail = _order_trail(database, order["order_id"])
    by_action: dict[str, list[AuditEntry]] = {}
    for entry in trail:
        by_action.setdefault(entry.action, []).append(entry)
    # then the order's creation names the patient who completed the checkout, and when
    (created,) = by_action["order.created"]
    assert _who(created) == _as(world.patient_a)
    assert _within(created, start, created_by)
    assert created.before == {"status": None}
    assert created.after is not None
    assert created.after["status"] == "Created"
    assert created.practice_id == world.practice_a
    # and each stage of the kit names who moved it, and when
    (preparing,) = by_action["fulfilment.preparing"]
    assert _who(preparing) == SYSTEM
    (readied,) = by_action["fulfilment.ready_for_collection"]
    assert _who(readied) == _as(world.staff_a)
    assert readied.actor_name == "Stan Staff"
    assert _within(readied, created_by, readied_by)
    (collected,) = by_action["fulfilment.collected"]
    assert _who(collected) == _as(world.clinician_a)
    assert _within(collected, readied_by, end)
    kit_line = line_named(order, KIT)["line_item_id"]
    assert {e.after["line_item_id"] for e in (preparing, readied, collected) if e.after} == {
        kit_line
    }
    # and each change of the order's status, before and after, by whom and when
    changes = [
        (e.before["status"] if e.before else None, e.after["status"] if e.after else None, _who(e))
        for e in by_action["order.status_changed"]
    ]
    assert changes == [
        ("Created", "Fulfilment-In-Progress", SYSTEM),
        ("Fulfilment-In-Progress", "Completed", _as(world.clinician_a)),
    ]
    last = by_action["order.status_changed"][-1]
    assert _within(last, readied_by, end)
    assert all(_within(e, start, end) for e in trail)


def test_a_stage_the_supplier_network_reports_is_audited_as_the_suppliers(
    client: TestClient, context: AppContext, world: World, shop: Shop, database: Database
) -> None:
    order = place_order(client, world.patient_a, [(shop.toothbrush, 1)])
    start = _now()

    # when the relay submits the brush and the supplier network accepts it
    context.relay.run_once()
    end = _now()

    # then the stage and the order's status change name the supplier network, and when
    trail = _order_trail(database, order["order_id"])
    (accepted,) = [e for e in trail if e.action == "fulfilment.sent_to_supplier"]
    assert _who(accepted) == SUPPLIERS
    assert accepted.after is not None
    assert (accepted.after["line_item_id"], accepted.after["status"]) == (
        line_named(order, BRUSH)["line_item_id"],
        "sent_to_supplier",
    )
    assert _within(accepted, start, end)
    (status,) = [e for e in trail if e.action == "order.status_changed"]
    assert (status.before, status.after) == (
        {"status": "Created", "fulfilment_status": "Created"},
        {"status": "Fulfilment-In-Progress", "fulfilment_status": "Fulfilment-In-Progress"},
    )
    assert _who(status) == SUPPLIERS
    assert _within(status, start, end)


# ---- 2. refund actions: reason code, actor, amount, the original DNA Payments transaction -----


def test_a_refund_is_audited_with_reason_actor_amount_and_the_original_transaction(
    client: TestClient,
    world: World,
    shop: Shop,
    database: Database,
    payments_url: str,
    with_mfa: Callable[..., dict[str, str]],
) -> None:
    order = place_order(client, world.patient_a, [(shop.toothbrush, 1)])
    payment_ref = order["payment"]["payment_ref"]
    start = _now()

    response = refund(
        client,
        with_mfa(world.finance_a),
        order["order_id"],
        {"reason_code": "damaged_item", "amount_minor": 999},
    )
    end = _now()

    assert response.status_code == 201, response.text
    (entry,) = [
        e for e in _order_trail(database, order["order_id"]) if e.action.startswith("refund")
    ]
    assert entry.action == "refund.succeeded"
    assert (*_who(entry), entry.actor_name) == (*_as(world.finance_a), "Fin Ance")
    assert _within(entry, start, end)
    after = entry.after
    assert after is not None
    assert after["refund_id"] == response.json()["refund_id"]
    assert (after["reason_code"], after["amount_minor"], after["currency"]) == (
        "damaged_item",
        999,
        "GBP",
    )
    # the original DNA Payments transaction: the capture's reference, the one refunded
    assert after["payment_ref"] == payment_ref
    (captured,) = [
        e for e in _order_trail(database, order["order_id"]) if e.action == "payment.captured"
    ]
    assert captured.after is not None
    assert captured.after["payment_ref"] == payment_ref
    (made,) = simulator_refunds(payments_url, payment_ref)
    assert made["amount_minor"] == 999
    assert after["provider_refund_ref"] == response.json()["provider_refund_ref"]
    # and the order's status change it made (the Refunded overlay), before and after
    assert entry.before is not None
    assert (entry.before["status"], after["status"]) == ("Created", "Refunded")
    assert (entry.before["refunded_minor"], after["refunded_minor"]) == (0, 999)


def test_a_refund_the_gateway_refuses_is_audited_with_the_same_fields(
    client: TestClient,
    world: World,
    shop: Shop,
    database: Database,
    payments_url: str,
    with_mfa: Callable[..., dict[str, str]],
) -> None:
    order = place_order(client, world.patient_a, [(shop.toothbrush, 1)])
    httpx.post(
        f"{payments_url}/_simulator/faults",
        json={"operation": "refund", "mode": "error", "status": 422},
    ).raise_for_status()
    start = _now()

    response = refund(
        client, with_mfa(world.admin_a), order["order_id"], {"reason_code": "customer_request"}
    )
    end = _now()

    assert response.status_code == 422, response.text
    (entry,) = [
        e for e in _order_trail(database, order["order_id"]) if e.action.startswith("refund")
    ]
    assert entry.action == "refund.failed"
    assert (*_who(entry), entry.actor_name) == (*_as(world.admin_a), "Alice Admin")
    assert _within(entry, start, end)
    assert entry.after is not None
    assert (entry.after["reason_code"], entry.after["amount_minor"]) == ("customer_request", 5999)
    assert entry.after["payment_ref"] == order["payment"]["payment_ref"]
    assert entry.after["failure_code"]


# ---- 3. reads of patient-bound order and fulfilment records -----------------------------------


def test_a_staff_member_reading_an_order_is_audited_with_who_read_which_order(
    client: TestClient, world: World, shop: Shop, database: Database
) -> None:
    order = place_order(client, world.patient_a, [(shop.voucher, 1)])
    start = _now()

    read_order(client, world.clinician_a, order["order_id"])
    read_order(client, world.admin_a, order["order_id"])

    entries = _reads(database, "order.read")
    assert [(_who(e), e.actor_name, e.after) for e in entries] == [
        (_as(world.clinician_a), "Dr Clare", {"order_ids": [order["order_id"]]}),
        (_as(world.admin_a), "Alice Admin", {"order_ids": [order["order_id"]]}),
    ]
    assert all(e.practice_id == world.practice_a and _within(e, start, _now()) for e in entries)


def test_a_patient_reading_their_own_orders_is_audited(
    client: TestClient, world: World, shop: Shop, database: Database
) -> None:
    order = place_order(client, world.patient_a, [(shop.voucher, 1)])

    read_order(client, world.patient_a, order["order_id"])
    mine = client.get("/v1/me/orders", headers=world.patient_a.headers)
    assert mine.status_code == 200, mine.text

    (one,) = _reads(database, "order.read")
    assert _who(one) == _as(world.patient_a)
    assert one.after == {"order_ids": [order["order_id"]]}
    (listed,) = _reads(database, "orders.listed_own")
    assert _who(listed) == _as(world.patient_a)
    assert listed.after == {"order_ids": [order["order_id"]]}


def test_a_staff_order_list_is_audited_with_its_filters_and_the_orders_it_showed(
    client: TestClient, world: World, shop: Shop, database: Database
) -> None:
    start = _now() - timedelta(minutes=1)
    mine = place_order(client, world.patient_a, [(shop.voucher, 1)])
    place_order(client, world.patient_a2, [(shop.voucher, 1)])  # filtered out by patient
    place_order(client, world.patient_a, [(shop.toothbrush, 1)])  # by status and type
    end = _now() + timedelta(minutes=1)
    filters = {
        "status": "Completed",
        "fulfilment_type": "Digital",
        "patient_id": world.patient_a.actor.actor_id,
        "created_from": start.isoformat(),
        "created_to": end.isoformat(),
    }

    response = client.get("/v1/orders", headers=world.admin_a.headers, params=filters)

    assert response.status_code == 200, response.text
    assert [item["order_id"] for item in response.json()["items"]] == [mine["order_id"]]
    (entry,) = _reads(database, "orders.listed")
    assert _who(entry) == _as(world.admin_a)
    assert entry.practice_id == world.practice_a
    assert entry.after is not None
    assert entry.after["order_ids"] == [mine["order_id"]]
    recorded = entry.after["filters"]
    assert set(recorded) == set(filters)
    assert {k: recorded[k] for k in ("status", "fulfilment_type", "patient_id")} == {
        k: filters[k] for k in ("status", "fulfilment_type", "patient_id")
    }
    for moment in ("created_from", "created_to"):
        assert datetime.fromisoformat(recorded[moment]) == datetime.fromisoformat(filters[moment])


def test_reading_the_fulfilment_lists_is_audited_with_who_read_which_orders(
    client: TestClient, context: AppContext, world: World, shop: Shop, database: Database
) -> None:
    # given a kit being prepared and a brush the supplier refused (an exception)
    kit = place_order(client, world.patient_a, [(shop.kit, 1)])
    checkout = start_checkout(
        client,
        world.patient_a2,
        [(shop.toothbrush, 1)],
        delivery_address={**ADDRESS, "postcode": "XX0 0XX"},  # the simulator cannot deliver
    ).json()
    assert pay(checkout).status_code == 200
    brush = client.post(
        f"/v1/checkouts/{checkout['id']}/complete", headers=world.patient_a2.headers
    ).json()
    context.relay.run_once()

    # when staff read the collection list and the exception queue (and another practice its own)
    collections = client.get("/v1/fulfilment/collections", headers=world.staff_a.headers)
    exceptions = client.get("/v1/fulfilment/exceptions", headers=world.admin_a.headers)
    elsewhere = client.get("/v1/fulfilment/exceptions", headers=world.admin_b.headers)

    # then each read is an entry naming who read which orders' lines
    assert [r.status_code for r in (collections, exceptions, elsewhere)] == [200, 200, 200]
    (collected,) = _reads(database, "fulfilment.collections_listed")
    assert _who(collected) == _as(world.staff_a)
    assert collected.practice_id == world.practice_a
    assert collected.after == {
        "order_ids": [kit["order_id"]],
        "line_item_ids": [line_named(kit, KIT)["line_item_id"]],
    }
    queued = _reads(database, "fulfilment.exceptions_listed")
    assert [(_who(e), e.practice_id, e.after) for e in queued] == [
        (
            _as(world.admin_a),
            world.practice_a,
            {
                "order_ids": [brush["order_id"]],
                "line_item_ids": [line_named(brush, BRUSH)["line_item_id"]],
            },
        ),
        (_as(world.admin_b), world.practice_b, {"order_ids": [], "line_item_ids": []}),
    ]


# ---- 4. catalogue changes (availability, pricing) with actor and timestamp --------------------


def test_a_practice_price_and_availability_change_is_audited_with_actor_and_time(
    client: TestClient, world: World, shop: Shop, database: Database
) -> None:
    start = _now()
    response = client.put(
        f"/v1/catalogue/{shop.kit}/practice-settings",
        headers=world.admin_a.headers,
        json={"retail_price_minor": 19900, "visible": True, "in_clinic_stock_available": False},
    )
    end = _now()

    assert response.status_code == 200, response.text
    entry = _entries(database, AuditEntry.action == "practice_product.settings_changed")[-1]
    assert (*_who(entry), entry.actor_name) == (*_as(world.admin_a), "Alice Admin")
    assert _within(entry, start, end)
    assert entry.practice_id == world.practice_a
    assert entry.before is not None
    assert entry.after is not None
    assert entry.before["product_id"] == entry.after["product_id"] == str(shop.kit)
    before, after = entry.before["settings"], entry.after["settings"]
    assert (before["retail_price_minor"], after["retail_price_minor"]) == (24900, 19900)
    assert (before["in_clinic_stock_available"], after["in_clinic_stock_available"]) == (
        True,
        False,
    )


def test_a_product_availability_change_is_audited_with_actor_and_time(
    client: TestClient, world: World, shop: Shop, database: Database
) -> None:
    start = _now()
    response = client.patch(
        f"/v1/products/{shop.toothbrush}",
        headers=world.catalogue_admin.headers,
        json={"availability_status": "unavailable"},
    )
    end = _now()

    assert response.status_code == 200, response.text
    (entry,) = _entries(
        database,
        AuditEntry.stream_type == "product",
        AuditEntry.stream_id == str(shop.toothbrush),
        AuditEntry.action == "product.updated",
    )
    assert (*_who(entry), entry.actor_name) == (*_as(world.catalogue_admin), "Cat Admin")
    assert _within(entry, start, end)
    assert entry.before is not None
    assert entry.after is not None
    assert (entry.before["availability_status"], entry.after["availability_status"]) == (
        "available",
        "unavailable",
    )


# ---- 5. Rewards Manager redemptions of an order: reference, points, a later reversal ----------


def _redemption_entries(database: Database, redemption_ref: str) -> list[AuditEntry]:
    """Every entry, on any stream, that names the redemption."""
    return [
        e
        for e in _entries(database)
        if e.after is not None and e.after.get("redemption_ref") == redemption_ref
    ]


def test_a_points_redemption_on_an_order_is_audited_with_its_reference_points_and_reversal(
    client: TestClient,
    context: AppContext,
    rewards: str,
    world: World,
    shop: Shop,
    database: Database,
    with_mfa: Callable[..., dict[str, str]],
) -> None:
    # given the patient redeems 1,000 points on a toothbrush and pays the rest
    created = client.post(
        "/v1/checkouts",
        headers={**world.patient_a.headers, **key()},
        json={
            "lines": [{"product_id": str(shop.toothbrush), "quantity": 1}],
            "delivery_address": ADDRESS,
            "redeem_points": 1000,
        },
    )
    assert created.status_code == 201, created.text
    checkout_id = created.json()["id"]
    ready = wait_for(
        lambda: client.get(f"/v1/checkouts/{checkout_id}", headers=world.patient_a.headers).json(),
        lambda c: c["payment"] is not None,
    )
    assert pay(ready).status_code == 200
    completed = client.post(
        f"/v1/checkouts/{checkout_id}/complete", headers=world.patient_a.headers
    )
    assert completed.status_code == 200, completed.text
    order = completed.json()
    ref = order["redemption_ref"]
    assert ref

    # then the redemption is on record with its reference and points, tied to the order
    entries = _redemption_entries(database, ref)
    assert [(e.stream_type, e.action) for e in entries] == [
        ("checkout", "redemption.requested"),
        ("checkout", "redemption.confirmed"),
        ("order", "payment.captured"),
    ]
    requested, confirmed, captured = entries
    assert _who(requested) == _as(world.patient_a)
    assert _who(confirmed) == ("rewards-manager", "service")
    assert requested.after is not None
    assert confirmed.after is not None
    assert requested.after["points"] == confirmed.after["points"] == 1000
    assert captured.stream_id == order["order_id"]
    assert captured.after is not None
    assert captured.after["redeemed_minor"] == 1000
    (completion,) = _entries(
        database, AuditEntry.stream_id == checkout_id, AuditEntry.action == "checkout.completed"
    )
    assert completion.after is not None
    assert completion.after["order_id"] == order["order_id"]
    assert all(e.stream_id == checkout_id for e in (requested, confirmed))
    # and no reversal yet
    assert not [e for e in entries if "revers" in e.action]

    # when staff refund the order, and Rewards Manager reinstates the points
    start = _now()
    refunded = refund(
        client, with_mfa(world.finance_a), order["order_id"], {"reason_code": "customer_request"}
    )
    assert refunded.status_code == 201, refunded.text
    for _ in range(2):
        context.relay.run_once()
    wait_for(
        lambda: {"actions": [e.action for e in _redemption_entries(database, ref)]},
        lambda found: "redemption.reversed" in found["actions"],
    )

    # then the reversal asked for (by whom, how many points) and the one made are on record
    later = _redemption_entries(database, ref)[len(entries) :]
    assert [(e.stream_type, e.action) for e in later] == [
        ("order", "redemption.reversal_requested"),
        ("checkout", "redemption.reversed"),
    ]
    asked, reversed_ = later
    assert asked.stream_id == order["order_id"]
    assert (*_who(asked), asked.actor_name) == (*_as(world.finance_a), "Fin Ance")
    assert asked.after is not None
    assert (asked.after["points"], asked.after["refund_id"]) == (
        1000,
        refunded.json()["refund_id"],
    )
    assert _within(asked, start, _now())
    assert reversed_.stream_id == checkout_id
    assert _who(reversed_) == ("rewards-manager", "service")
    assert reversed_.after is not None
    assert reversed_.after["status"] == "reversed"
    assert reversed_.after["reversal_ref"]


# ---- 6. personal data in audit entries: ids only ----------------------------------------------

HOME = {
    "recipient_name": "Zelda Quixote-Marlowe",
    "line1": "77 Wisteria Crescent",
    "line2": "Flat Nine",
    "city": "Lowerbridge",
    "postcode": "LB9 7QZ",
}


@pytest.fixture
def zelda(make_token: TokenFactory, world: World) -> Person:
    """A patient of practice A who ships to herself: her name is the recipient's."""
    subject = str(uuid.uuid4())
    token = make_token(
        role="patient", subject=subject, practice_id=world.practice_a, name=HOME["recipient_name"]
    )
    actor = Actor(subject, HOME["recipient_name"], Role.PATIENT, world.practice_a, False, None)
    return Person(actor=actor, token=token)


def _audit_text(database: Database) -> str:
    """What every entry says of its subject and actor, as one text."""
    return json.dumps(
        [[e.before, e.after, e.actor_name] for e in _entries(database)], ensure_ascii=False
    )


def test_audit_entries_name_people_and_vouchers_by_id_never_by_address_or_code(
    client: TestClient,
    context: AppContext,
    zelda: Person,
    world: World,
    shop: Shop,
    database: Database,
    with_mfa: Callable[..., dict[str, str]],
) -> None:
    # when Zelda buys a brush sent to her home and two vouchers, and the order is worked on
    created = start_checkout(
        client, zelda, [(shop.toothbrush, 1), (shop.voucher, 2)], delivery_address=HOME
    )
    assert created.status_code == 201, created.text
    assert pay(created.json()).status_code == 200
    completed = client.post(f"/v1/checkouts/{created.json()['id']}/complete", headers=zelda.headers)
    assert completed.status_code == 200, completed.text
    order = completed.json()
    codes = [v["code"] for v in line_named(order, VOUCHER)["vouchers"]]
    assert len(codes) == 2
    context.relay.run_once()  # the shipment, with the address, goes to the supplier network
    read_order(client, zelda, order["order_id"])
    read_order(client, world.admin_a, order["order_id"])
    listed = client.get(
        "/v1/orders", headers=world.admin_a.headers, params={"patient_id": zelda.actor.actor_id}
    )
    assert listed.status_code == 200, listed.text
    redeemed = client.post(
        "/v1/vouchers/redemptions", headers=world.staff_a.headers, json={"code": codes[0]}
    )
    assert redeemed.status_code == 200, redeemed.text
    refunded = refund(
        client,
        with_mfa(world.admin_a),
        order["order_id"],
        {
            "reason_code": "customer_request",
            "lines": [{"line_item_id": line_named(order, BRUSH)["line_item_id"], "quantity": 1}],
        },
    )
    assert refunded.status_code == 201, refunded.text

    # then the entries name Zelda by her id, the voucher by its id and last four only
    trail = _order_trail(database, order["order_id"])
    assert _as(zelda) in [_who(e) for e in trail]
    (redemption,) = [e for e in trail if e.action == "fulfilment.voucher_redeemed"]
    assert redemption.after is not None
    assert redemption.after["last_four"] == codes[0].replace("-", "")[-4:]
    assert redemption.after["voucher_id"]
    # and no entry holds her name, address, postcode or a voucher code
    text = _audit_text(database)
    personal = [*HOME.values(), "Zelda", "Wisteria"]
    for code in codes:
        personal += [code, code.replace("-", "")]
    leaked = [value for value in personal if value in text]
    assert leaked == []
