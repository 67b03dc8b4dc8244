"""Reading orders through the API: who sees which order, the staff list's filters and pages, and
the optional PMS invoice reference (spec §5.2, §9, §15.1)."""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from product_shop.audit.tables import AuditEntry
from product_shop.db.engine import Database
from product_shop.orders.tables import Order
from tests.conftest import Person, World
from tests.integration.checkout_support import Shop, paid_checkout
from tests.integration.conftest import count_rows

PMS_SET = AuditEntry.action == "order.pms_invoice_ref_set"


def place_order(
    client: TestClient, patient: Person, lines: list[tuple[uuid.UUID, int]]
) -> dict[str, Any]:
    """Check out, pay on the hosted page and complete: the order document."""
    checkout = paid_checkout(client, patient, lines)
    completed = client.post(f"/v1/checkouts/{checkout['id']}/complete", headers=patient.headers)
    assert completed.status_code == 200, completed.text
    order: dict[str, Any] = completed.json()
    return order


def listed(client: TestClient, person: Person, **params: Any) -> list[str]:
    """Order ids of one page of GET /v1/orders (the page must be the last)."""
    response = client.get("/v1/orders", headers=person.headers, params=params)
    assert response.status_code == 200, response.text
    page = response.json()
    assert page["next_cursor"] is None
    return [item["order_id"] for item in page["items"]]


def _problem(response: Any) -> dict[str, Any]:
    """The parts of a problem document that do not name the request."""
    body = response.json()
    return {k: v for k, v in body.items() if k not in ("instance", "request_id")}


# ---- who sees which order ---------------------------------------------------------------------


def test_another_patient_of_the_same_practice_gets_the_same_404_as_for_no_order(
    client: TestClient, world: World, shop: Shop
) -> None:
    order = place_order(client, world.patient_a, [(shop.voucher, 1)])

    other = client.get(f"/v1/orders/{order['order_id']}", headers=world.patient_a2.headers)
    missing = client.get(f"/v1/orders/{uuid.uuid4()}", headers=world.patient_a2.headers)

    assert other.status_code == missing.status_code == 404
    assert _problem(other) == _problem(missing)
    assert _problem(other)["code"] == "not_found"


def test_staff_of_another_practice_get_404_for_an_order(
    client: TestClient, world: World, shop: Shop
) -> None:
    order = place_order(client, world.patient_a, [(shop.voucher, 1)])

    response = client.get(f"/v1/orders/{order['order_id']}", headers=world.admin_b.headers)
    missing = client.get(f"/v1/orders/{uuid.uuid4()}", headers=world.admin_b.headers)

    assert response.status_code == 404
    assert _problem(response) == _problem(missing)


def test_staff_read_the_full_order_and_the_patient_a_timeline_without_the_internal_trail(
    client: TestClient, world: World, shop: Shop
) -> None:
    """Issue 8 item 5: the patient's view carries no staff names, roles, PMS reference or
    before/after values; the practice's staff read the full audit trail."""
    order = place_order(client, world.patient_a, [(shop.toothbrush, 1), (shop.voucher, 2)])
    assert _pms(client, world.admin_a, order["order_id"], "INV-SECRET-7").status_code == 200

    documents = []
    for person in (world.admin_a, world.clinician_a, world.patient_a):
        response = client.get(f"/v1/orders/{order['order_id']}", headers=person.headers)
        assert response.status_code == 200, (person.actor.role, response.text)
        documents.append(response.json())
    admin, clinician, patient = documents

    assert admin == clinician
    assert admin["view"] == "staff"
    assert [e["action"] for e in admin["audit_trail"]] == [
        "payment.captured",
        "order.created",
        "fulfilment.shipment_requested",
        "fulfilment.delivered",
        "order.pms_invoice_ref_set",
    ]
    assert admin["audit_trail"][-1]["actor_name"] == "Alice Admin"
    assert admin["pms_invoice_ref"] == "INV-SECRET-7"
    assert patient["view"] == "patient"
    for internal in ("audit_trail", "pms_invoice_ref", "created_by", "version"):
        assert internal not in patient
    text = json.dumps(patient)
    for secret in ("Alice Admin", "practice_admin", "INV-SECRET-7", "before", "actor"):
        assert secret not in text
    assert [(e["event"], e["description"]) for e in patient["timeline"]] == [
        ("payment_received", "Payment received"),
        ("order_placed", "Order placed"),
        ("delivered", "Hygienist voucher: delivered"),
    ]
    assert patient["timeline"] == admin["timeline"]
    shared = {
        k: v for k, v in admin.items() if k in patient and k not in ("view", "updated_at", "lines")
    }
    assert shared == {k: v for k, v in patient.items() if k in shared}
    # The same lines, but the patient's own voucher codes in full where staff see them masked.
    staff_voucher, patient_voucher = (
        admin["lines"][1]["vouchers"][0],
        patient["lines"][1]["vouchers"][0],
    )
    assert staff_voucher["last_four"] == patient_voucher["last_four"]
    assert staff_voucher["code"].endswith(staff_voucher["last_four"])
    assert "••••" in staff_voucher["code"]
    assert patient_voucher["code"].replace("-", "").endswith(patient_voucher["last_four"])
    assert "•" not in patient_voucher["code"]
    assert patient_voucher["code"] not in json.dumps(admin)
    assert {k: v for k, v in order.items() if k != "updated_at"} == {
        k: v for k, v in patient.items() if k != "updated_at"
    }


@pytest.mark.parametrize("who", ["finance_a", "staff_a", "catalogue_admin", "service"])
def test_roles_outside_section_9_may_not_list_practice_orders(
    client: TestClient, world: World, shop: Shop, who: str
) -> None:
    place_order(client, world.patient_a, [(shop.voucher, 1)])
    person: Person = getattr(world, who)

    response = client.get("/v1/orders", headers=person.headers)

    assert response.status_code == 403
    assert response.json()["code"] == "forbidden"
    assert "items" not in response.json()


def test_a_patient_may_not_list_practice_orders_but_lists_only_their_own(
    client: TestClient, world: World, shop: Shop
) -> None:
    mine_first = place_order(client, world.patient_a, [(shop.voucher, 1)])
    theirs = place_order(client, world.patient_a2, [(shop.voucher, 1)])
    mine_second = place_order(client, world.patient_a, [(shop.toothbrush, 1)])

    practice = client.get("/v1/orders", headers=world.patient_a.headers)
    mine = client.get("/v1/me/orders", headers=world.patient_a.headers)
    other = client.get("/v1/me/orders", headers=world.patient_a2.headers)

    assert (practice.status_code, practice.json()["code"]) == (403, "forbidden")
    assert mine.status_code == 200
    assert [o["order_id"] for o in mine.json()["items"]] == [
        mine_second["order_id"],
        mine_first["order_id"],
    ]
    assert {o["patient_id"] for o in mine.json()["items"]} == {world.patient_a.actor.actor_id}
    assert [o["order_id"] for o in other.json()["items"]] == [theirs["order_id"]]
    staff = client.get("/v1/me/orders", headers=world.admin_a.headers)
    assert (staff.status_code, staff.json()["code"]) == (403, "forbidden")


# ---- the staff list: filters and pages --------------------------------------------------------


@pytest.fixture
def orders(
    client: TestClient, world: World, shop: Shop, offer: Callable[..., None]
) -> dict[str, dict[str, Any]]:
    """Five orders at practice A (oldest first in insertion order) and one at practice B."""
    offer(world.admin_b, shop.toothbrush, 6499)
    placed = {
        "a_brush": place_order(client, world.patient_a, [(shop.toothbrush, 1)]),
        "a_voucher": place_order(client, world.patient_a, [(shop.voucher, 1)]),
        "a2_kit": place_order(client, world.patient_a2, [(shop.kit, 1)]),
        "a2_mixed": place_order(
            client, world.patient_a2, [(shop.toothbrush, 1), (shop.voucher, 1)]
        ),
        "a_kit": place_order(client, world.patient_a, [(shop.kit, 2)]),
        "b_brush": place_order(client, world.patient_b, [(shop.toothbrush, 1)]),
    }
    return placed


PRACTICE_A = ["a_brush", "a_voucher", "a2_kit", "a2_mixed", "a_kit"]


def _ids(orders: dict[str, dict[str, Any]], *names: str) -> list[str]:
    return [orders[name]["order_id"] for name in names]


def test_the_staff_list_shows_the_practices_orders_newest_first_and_never_another_practices(
    client: TestClient, world: World, orders: dict[str, dict[str, Any]]
) -> None:
    expected = _ids(orders, *reversed(PRACTICE_A))

    assert listed(client, world.admin_a) == expected
    assert listed(client, world.clinician_a) == expected
    assert listed(client, world.admin_b) == _ids(orders, "b_brush")
    everything = client.get("/v1/orders", headers=world.admin_a.headers, params={"limit": 200})
    assert orders["b_brush"]["order_id"] not in everything.text


def test_the_staff_list_filters_by_patient(
    client: TestClient, world: World, orders: dict[str, dict[str, Any]]
) -> None:
    patient_a = world.patient_a.actor.actor_id
    patient_a2 = world.patient_a2.actor.actor_id
    patient_b = world.patient_b.actor.actor_id

    assert listed(client, world.admin_a, patient_id=patient_a) == _ids(
        orders, "a_kit", "a_voucher", "a_brush"
    )
    assert listed(client, world.admin_a, patient_id=patient_a2) == _ids(
        orders, "a2_mixed", "a2_kit"
    )
    assert listed(client, world.admin_a, patient_id=patient_b) == []
    assert listed(client, world.admin_a, patient_id=str(uuid.uuid4())) == []


@pytest.mark.parametrize(
    ("fulfilment_type", "names"),
    [
        ("Digital", ["a2_mixed", "a_voucher"]),
        ("In-Clinic", ["a_kit", "a2_kit"]),
        ("Drop-Ship", ["a2_mixed", "a_brush"]),
    ],
)
def test_the_staff_list_filters_by_fulfilment_type(
    client: TestClient,
    world: World,
    orders: dict[str, dict[str, Any]],
    fulfilment_type: str,
    names: list[str],
) -> None:
    response = client.get(
        "/v1/orders", headers=world.admin_a.headers, params={"fulfilment_type": fulfilment_type}
    )

    assert response.status_code == 200
    items = response.json()["items"]
    assert [item["order_id"] for item in items] == _ids(orders, *names)
    assert all(fulfilment_type in item["fulfilment_types"] for item in items)


def test_an_unknown_fulfilment_type_is_a_validation_error(
    client: TestClient, world: World, orders: dict[str, dict[str, Any]]
) -> None:
    response = client.get(
        "/v1/orders", headers=world.admin_a.headers, params={"fulfilment_type": "Teleport"}
    )
    assert (response.status_code, response.json()["code"]) == (422, "validation_failed")


def test_the_staff_list_filters_by_status(
    client: TestClient, world: World, orders: dict[str, dict[str, Any]]
) -> None:
    # A voucher is delivered at once; an in-clinic line is being prepared; a drop-ship line
    # waits for the supplier network.
    assert listed(client, world.admin_a, status="Created") == _ids(orders, "a2_mixed", "a_brush")
    assert listed(client, world.admin_a, status="Completed") == _ids(orders, "a_voucher")
    assert listed(client, world.admin_a, status="Fulfilment-In-Progress") == _ids(
        orders, "a_kit", "a2_kit"
    )
    assert listed(client, world.admin_a, status="Refunded") == []
    unknown = client.get("/v1/orders", headers=world.admin_a.headers, params={"status": "Lost"})
    assert (unknown.status_code, unknown.json()["code"]) == (422, "validation_failed")


def test_the_staff_list_filters_by_creation_time(
    client: TestClient, world: World, orders: dict[str, dict[str, Any]]
) -> None:
    now = datetime.now(UTC)
    around_now = {
        "created_from": (now - timedelta(hours=1)).isoformat(),
        "created_to": (now + timedelta(hours=1)).isoformat(),
    }
    in_the_past = {
        "created_from": (now - timedelta(days=2)).isoformat(),
        "created_to": (now - timedelta(days=1)).isoformat(),
    }

    assert listed(client, world.admin_a, **around_now) == _ids(orders, *reversed(PRACTICE_A))
    assert listed(client, world.admin_a, **in_the_past) == []


def test_created_from_is_inclusive_and_created_to_is_exclusive(
    client: TestClient, world: World, orders: dict[str, dict[str, Any]]
) -> None:
    oldest = orders["a_brush"]["created_at"]
    newest = orders["a_kit"]["created_at"]

    window = listed(client, world.admin_a, created_from=oldest, created_to=newest)
    from_newest = listed(client, world.admin_a, created_from=newest)
    before_oldest = listed(client, world.admin_a, created_to=oldest)

    assert window == _ids(orders, "a2_mixed", "a2_kit", "a_voucher", "a_brush")
    assert from_newest == _ids(orders, "a_kit")
    assert before_oldest == []


def test_filters_combine(
    client: TestClient, world: World, orders: dict[str, dict[str, Any]]
) -> None:
    assert listed(
        client,
        world.admin_a,
        patient_id=world.patient_a2.actor.actor_id,
        fulfilment_type="Digital",
        status="Created",
    ) == _ids(orders, "a2_mixed")


def test_pages_of_two_walk_every_order_exactly_once_newest_first(
    client: TestClient, world: World, orders: dict[str, dict[str, Any]]
) -> None:
    seen: list[str] = []
    page_sizes: list[int] = []
    cursor: str | None = None
    while True:
        params: dict[str, Any] = {"limit": 2}
        if cursor is not None:
            params["cursor"] = cursor
        response = client.get("/v1/orders", headers=world.admin_a.headers, params=params)
        assert response.status_code == 200, response.text
        page = response.json()
        seen.extend(item["order_id"] for item in page["items"])
        page_sizes.append(len(page["items"]))
        cursor = page["next_cursor"]
        if cursor is None:
            break
        assert len(page_sizes) < 10, "pagination does not end"

    assert page_sizes == [2, 2, 1]
    assert seen == _ids(orders, *reversed(PRACTICE_A))


def test_pages_keep_the_filters(
    client: TestClient, world: World, orders: dict[str, dict[str, Any]]
) -> None:
    params: dict[str, Any] = {"limit": 2, "patient_id": world.patient_a.actor.actor_id}
    first = client.get("/v1/orders", headers=world.admin_a.headers, params=params).json()
    second = client.get(
        "/v1/orders",
        headers=world.admin_a.headers,
        params={**params, "cursor": first["next_cursor"]},
    ).json()

    assert [o["order_id"] for o in first["items"]] == _ids(orders, "a_kit", "a_voucher")
    assert [o["order_id"] for o in second["items"]] == _ids(orders, "a_brush")
    assert second["next_cursor"] is None


def test_a_date_filter_without_a_time_zone_is_a_422_not_a_500(
    client: TestClient, world: World, orders: dict[str, dict[str, Any]]
) -> None:
    response = client.get(
        "/v1/orders", headers=world.admin_a.headers, params={"created_from": "2020-01-01T00:00:00"}
    )
    assert response.status_code == 422
    assert response.json()["code"] == "validation_failed"


@pytest.mark.parametrize(
    "cursor",
    [
        "not-a-cursor",
        base64.urlsafe_b64encode(b"yesterday|not-a-uuid").decode(),
        base64.urlsafe_b64encode(b"only-one-part").decode(),
        pytest.param(
            base64.urlsafe_b64encode(f"2999-01-01T00:00:00|{uuid.UUID(int=1)}".encode()).decode(),
            id="naive-timestamp",
        ),
    ],
)
def test_an_invalid_cursor_is_refused(
    client: TestClient, world: World, orders: dict[str, dict[str, Any]], cursor: str
) -> None:
    response = client.get("/v1/orders", headers=world.admin_a.headers, params={"cursor": cursor})

    assert response.status_code == 400
    assert response.json()["code"] == "invalid_cursor"


# ---- the PMS invoice reference ----------------------------------------------------------------


def _pms(client: TestClient, person: Person, order_id: str, value: str | None) -> Any:
    return client.put(
        f"/v1/orders/{order_id}/pms-invoice-ref",
        headers=person.headers,
        json={"pms_invoice_ref": value},
    )


def test_an_order_is_created_without_a_pms_invoice_ref(
    client: TestClient, world: World, shop: Shop
) -> None:
    order = place_order(client, world.patient_a, [(shop.toothbrush, 1), (shop.voucher, 1)])

    assert order["status"] == "Created"
    fetched = client.get(f"/v1/orders/{order['order_id']}", headers=world.admin_a.headers).json()
    assert fetched["pms_invoice_ref"] is None
    assert "order.pms_invoice_ref_set" not in [e["action"] for e in fetched["audit_trail"]]


@pytest.mark.parametrize("who", ["admin_a", "finance_a"])
def test_practice_admin_and_finance_record_the_pms_invoice_ref_with_an_audit_entry(
    client: TestClient, world: World, shop: Shop, database: Database, who: str
) -> None:
    order = place_order(client, world.patient_a, [(shop.voucher, 1)])
    person: Person = getattr(world, who)

    response = _pms(client, person, order["order_id"], "INV-2026-0042")

    assert response.status_code == 200, response.text
    assert response.json()["pms_invoice_ref"] == "INV-2026-0042"
    fetched = client.get(f"/v1/orders/{order['order_id']}", headers=world.admin_a.headers).json()
    assert fetched == response.json()
    assert fetched["status"] == order["status"] == "Completed"  # a voucher: delivered at once
    entry = fetched["audit_trail"][-1]
    assert entry["action"] == "order.pms_invoice_ref_set"
    assert entry["before"] == {"pms_invoice_ref": None}
    assert entry["after"] == {"pms_invoice_ref": "INV-2026-0042"}
    assert (entry["actor_id"], entry["actor_role"], entry["actor_name"]) == (
        person.actor.actor_id,
        person.actor.role.value,
        person.actor.name,
    )
    assert [e["action"] for e in fetched["audit_trail"][:-1]] == [
        "payment.captured",
        "order.created",
        "fulfilment.delivered",  # a voucher is delivered at once
        "order.status_changed",
    ]
    assert count_rows(database, AuditEntry, PMS_SET) == 1
    patient_view = client.get(f"/v1/orders/{order['order_id']}", headers=world.patient_a.headers)
    assert "pms_invoice_ref" not in patient_view.json()


def test_the_pms_invoice_ref_can_be_changed_and_cleared(
    client: TestClient, world: World, shop: Shop, database: Database
) -> None:
    order_id = place_order(client, world.patient_a, [(shop.voucher, 1)])["order_id"]
    assert _pms(client, world.admin_a, order_id, "INV-2026-0042").status_code == 200

    changed = _pms(client, world.finance_a, order_id, "INV-2026-0043")
    cleared = _pms(client, world.admin_a, order_id, None)

    assert changed.status_code == cleared.status_code == 200
    assert changed.json()["pms_invoice_ref"] == "INV-2026-0043"
    assert cleared.json()["pms_invoice_ref"] is None
    fetched = client.get(f"/v1/orders/{order_id}", headers=world.admin_a.headers).json()
    assert fetched["pms_invoice_ref"] is None
    trail = [
        (e["before"], e["after"], e["actor_role"])
        for e in fetched["audit_trail"]
        if e["action"] == "order.pms_invoice_ref_set"
    ]
    assert trail == [
        ({"pms_invoice_ref": None}, {"pms_invoice_ref": "INV-2026-0042"}, "practice_admin"),
        ({"pms_invoice_ref": "INV-2026-0042"}, {"pms_invoice_ref": "INV-2026-0043"}, "finance"),
        ({"pms_invoice_ref": "INV-2026-0043"}, {"pms_invoice_ref": None}, "practice_admin"),
    ]
    assert count_rows(database, AuditEntry, PMS_SET) == 3


def test_setting_the_same_pms_invoice_ref_again_writes_no_second_audit_entry(
    client: TestClient, world: World, shop: Shop, database: Database
) -> None:
    order_id = place_order(client, world.patient_a, [(shop.voucher, 1)])["order_id"]
    first = _pms(client, world.admin_a, order_id, "INV-2026-0042")

    again = _pms(client, world.finance_a, order_id, "INV-2026-0042")

    assert again.status_code == 200
    assert again.json() == first.json()
    assert count_rows(database, AuditEntry, PMS_SET) == 1


@pytest.mark.parametrize("who", ["patient_a", "clinician_a", "staff_a", "catalogue_admin"])
def test_other_roles_may_not_set_the_pms_invoice_ref(
    client: TestClient, world: World, shop: Shop, database: Database, who: str
) -> None:
    order_id = place_order(client, world.patient_a, [(shop.voucher, 1)])["order_id"]
    person: Person = getattr(world, who)

    response = _pms(client, person, order_id, "INV-2026-0042")

    assert (response.status_code, response.json()["code"]) == (403, "forbidden")
    assert count_rows(database, Order, Order.pms_invoice_ref.is_not(None)) == 0
    assert count_rows(database, AuditEntry, PMS_SET) == 0


def test_another_practices_admin_gets_404_setting_the_pms_invoice_ref(
    client: TestClient, world: World, shop: Shop, database: Database
) -> None:
    order_id = place_order(client, world.patient_a, [(shop.voucher, 1)])["order_id"]

    response = _pms(client, world.admin_b, order_id, "INV-2026-0042")
    missing = _pms(client, world.admin_a, str(uuid.uuid4()), "INV-2026-0042")

    assert response.status_code == missing.status_code == 404
    assert _problem(response) == _problem(missing)
    assert count_rows(database, Order, Order.pms_invoice_ref.is_not(None)) == 0
    assert count_rows(database, AuditEntry, PMS_SET) == 0


@pytest.mark.parametrize(
    "body",
    [
        {"pms_invoice_ref": ""},
        {"pms_invoice_ref": "   "},
        {"pms_invoice_ref": "X" * 121},
        {"pms_invoice_ref": "INV-1", "pms_system": "Dentally"},
        {},
    ],
)
def test_a_malformed_pms_invoice_ref_is_refused(
    client: TestClient, world: World, shop: Shop, database: Database, body: dict[str, Any]
) -> None:
    order_id = place_order(client, world.patient_a, [(shop.voucher, 1)])["order_id"]

    response = client.put(
        f"/v1/orders/{order_id}/pms-invoice-ref", headers=world.admin_a.headers, json=body
    )

    assert (response.status_code, response.json()["code"]) == (422, "validation_failed")
    assert count_rows(database, AuditEntry, PMS_SET) == 0


def _read_entries(database: Database) -> list[AuditEntry]:
    with Session(database.engine) as session:
        return list(
            session.scalars(
                select(AuditEntry)
                .where(AuditEntry.stream_type == "order_read")
                .order_by(AuditEntry.position)
            )
        )


def test_every_read_of_an_order_is_audited_with_who_read_what(
    client: TestClient, world: World, orders: dict[str, dict[str, Any]], database: Database
) -> None:
    order_id = orders["a_voucher"]["order_id"]
    before = len(_read_entries(database))

    client.get(f"/v1/orders/{order_id}", headers=world.patient_a.headers)
    client.get(f"/v1/orders/{order_id}", headers=world.clinician_a.headers)
    client.get("/v1/me/orders", headers=world.patient_a.headers)
    client.get("/v1/orders", headers=world.admin_a.headers, params={"fulfilment_type": "Digital"})

    entries = _read_entries(database)[before:]
    assert [(e.action, e.actor_id) for e in entries] == [
        ("order.read", world.patient_a.actor.actor_id),
        ("order.read", world.clinician_a.actor.actor_id),
        ("orders.listed_own", world.patient_a.actor.actor_id),
        ("orders.listed", world.admin_a.actor.actor_id),
    ]
    assert entries[0].after == {"order_ids": [order_id]}
    assert order_id in entries[2].after["order_ids"]  # type: ignore[index]
    assert entries[3].after["filters"] == {"fulfilment_type": "Digital"}  # type: ignore[index]


def test_a_refused_read_is_not_logged_as_a_read(
    client: TestClient, world: World, orders: dict[str, dict[str, Any]], database: Database
) -> None:
    before = len(_read_entries(database))
    response = client.get(
        f"/v1/orders/{orders['a_voucher']['order_id']}", headers=world.patient_b.headers
    )
    assert response.status_code == 404
    assert len(_read_entries(database)) == before


# ---- optimistic concurrency, role before body, bounded filters (issue 8 item 9) ------------


def test_a_stale_if_match_on_the_pms_invoice_ref_is_412_and_changes_nothing(
    client: TestClient, world: World, shop: Shop, database: Database
) -> None:
    order = place_order(client, world.patient_a, [(shop.voucher, 1)])
    read = client.get(f"/v1/orders/{order['order_id']}", headers=world.admin_a.headers)
    etag = read.headers["ETag"]
    assert etag == f'"{read.json()["version"]}"'
    first = client.put(
        f"/v1/orders/{order['order_id']}/pms-invoice-ref",
        headers={**world.admin_a.headers, "If-Match": etag},
        json={"pms_invoice_ref": "INV-1"},
    )
    assert first.status_code == 200, first.text
    assert first.headers["ETag"] == f'"{first.json()["version"]}"' != etag

    stale = client.put(
        f"/v1/orders/{order['order_id']}/pms-invoice-ref",
        headers={**world.finance_a.headers, "If-Match": etag},
        json={"pms_invoice_ref": "INV-2"},
    )

    assert stale.status_code == 412
    assert stale.json()["code"] == "version_mismatch"
    after = client.get(f"/v1/orders/{order['order_id']}", headers=world.admin_a.headers).json()
    assert after["pms_invoice_ref"] == "INV-1"
    assert count_rows(database, AuditEntry, PMS_SET) == 1


@pytest.mark.parametrize("who", ["patient_a", "clinician_a", "staff_a"])
def test_a_caller_who_may_not_use_a_staff_route_gets_403_before_the_body_is_checked(
    client: TestClient, world: World, shop: Shop, who: str
) -> None:
    order = place_order(client, world.patient_a, [(shop.voucher, 1)])
    person: Person = getattr(world, who)

    response = client.put(
        f"/v1/orders/{order['order_id']}/pms-invoice-ref", headers=person.headers, json={}
    )

    assert response.status_code == 403
    assert response.json()["code"] == "forbidden"
    assert "errors" not in response.json()


def test_an_inverted_date_range_is_422_naming_the_filter(client: TestClient, world: World) -> None:
    response = client.get(
        "/v1/orders",
        headers=world.admin_a.headers,
        params={"created_from": "2026-02-01T00:00:00Z", "created_to": "2026-01-01T00:00:00Z"},
    )

    assert response.status_code == 422
    assert response.json()["code"] == "invalid_date_range"


# ---- what was bought, in the lists (issue 8 item 12) ---------------------------------------


def test_order_lists_say_what_was_bought_for_the_patient_and_the_staff(
    client: TestClient, world: World, shop: Shop
) -> None:
    place_order(client, world.patient_a, [(shop.toothbrush, 2), (shop.voucher, 1)])

    mine = client.get("/v1/me/orders", headers=world.patient_a.headers).json()["items"]
    practice = client.get("/v1/orders", headers=world.admin_a.headers).json()["items"]

    for items in (mine, practice):
        assert [(i["name"], i["quantity"]) for i in items[0]["items"]] == [
            ("Oral-B Pro 3", 2),
            ("Hygienist voucher", 1),
        ]
        assert items[0]["items"][0]["product_id"] == str(shop.toothbrush)
