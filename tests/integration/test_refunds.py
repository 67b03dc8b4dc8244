"""Refunds (spec §5.3, §3.3, §9, §15.2 rules 5, 6, 14): named staff with fresh MFA, through
Integrated Payments only, never above the capture, recorded with the overlay, the audit entry and
the events in one transaction."""

from __future__ import annotations

import concurrent.futures
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import jsonschema
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from product_shop.audit.tables import AuditEntry
from product_shop.checkout.tables import PointsRedemption
from product_shop.context import AppContext
from product_shop.db.engine import Database
from product_shop.events.tables import OutboxEvent
from product_shop.events.types import BY_NAME
from product_shop.orders.tables import Order
from product_shop.refunds.tables import Refund
from product_shop.simulators.server import BackgroundServer
from tests.conftest import TokenFactory, World
from tests.integration.checkout_support import Shop
from tests.integration.fulfilment_support import line_named, place_order, read_order
from tests.integration.refund_support import refund, simulator_refunds

REFUND_EVENTS = ("refund.issued", "revenue.refund", "finance.refund_recorded")


def _count(database: Database, *columns: Any) -> int:
    with Session(database.engine) as session:
        return int(session.scalar(select(func.count()).select_from(*columns)) or 0)


def _footprint(database: Database, order_id: str) -> tuple[int, int, int]:
    """Refund rows, refund audit entries of the order, and refund events."""
    with Session(database.engine) as session:
        refunds = session.scalar(select(func.count()).select_from(Refund)) or 0
        audits = (
            session.scalar(
                select(func.count())
                .select_from(AuditEntry)
                .where(
                    AuditEntry.stream_id == order_id,
                    AuditEntry.action.like("refund.%"),
                )
            )
            or 0
        )
        events = (
            session.scalar(
                select(func.count())
                .select_from(OutboxEvent)
                .where(
                    OutboxEvent.event_type.like("%refund%")
                    | OutboxEvent.event_type.like("%redemption_reversal%")
                )
            )
            or 0
        )
    return int(refunds), int(audits), int(events)


# ---- who may refund (spec §3.3, §9) --------------------------------------------------------------


@pytest.mark.parametrize(
    "who",
    [
        "patient",
        "service",
        "ai_assistant",
        "staff_without_mfa",
        "staff_with_stale_mfa",
        "other_practice",
        "missing_reason",
        "unknown_reason",
        "above_balance",
        "line_above_bought",
        "clinician_not_a_refunding_role",
    ],
)
def test_refusals_leave_no_refund_row_audit_entry_event_or_payments_call(
    client: TestClient,
    world: World,
    shop: Shop,
    database: Database,
    payments_url: str,
    with_mfa: Callable[..., dict[str, str]],
    make_token: TokenFactory,
    who: str,
) -> None:
    # given a paid order of 2 toothbrushes (11998)
    order = place_order(client, world.patient_a, [(shop.toothbrush, 2)])
    order_id, payment_ref = order["order_id"], order["payment"]["payment_ref"]
    brush = line_named(order, "Oral-B Pro 3")["line_item_id"]
    before = _footprint(database, order_id)
    fresh = with_mfa(world.finance_a)
    attempts: dict[str, tuple[dict[str, str], dict[str, Any], int, str]] = {
        "patient": (world.patient_a.headers, {"reason_code": "customer_request"}, 403, "forbidden"),
        "service": (world.service.headers, {"reason_code": "customer_request"}, 403, "forbidden"),
        # The AI acts through a service identity of its own, even one claiming MFA.
        "ai_assistant": (
            {
                "Authorization": "Bearer "
                + make_token(role="service", subject="primoro-ai-assistant", mfa=True)
            },
            {"reason_code": "customer_request"},
            403,
            "forbidden",
        ),
        "staff_without_mfa": (
            with_mfa(world.finance_a, mfa=False),
            {"reason_code": "customer_request"},
            403,
            "mfa_required",
        ),
        "staff_with_stale_mfa": (
            with_mfa(world.admin_a, age=timedelta(minutes=6)),
            {"reason_code": "customer_request"},
            403,
            "mfa_required",
        ),
        "other_practice": (
            with_mfa(world.admin_b),
            {"reason_code": "customer_request"},
            404,
            "not_found",
        ),
        "missing_reason": (fresh, {"amount_minor": 100}, 422, "validation_failed"),
        "unknown_reason": (
            fresh,
            {"reason_code": "felt_like_it", "amount_minor": 100},
            422,
            "unknown_reason_code",
        ),
        "above_balance": (
            fresh,
            {"reason_code": "customer_request", "amount_minor": 11999},
            422,
            "refund_exceeds_balance",
        ),
        "line_above_bought": (
            fresh,
            {"reason_code": "damaged_item", "lines": [{"line_item_id": brush, "quantity": 3}]},
            422,
            "refund_exceeds_quantity",
        ),
        "clinician_not_a_refunding_role": (
            with_mfa(world.clinician_a),
            {"reason_code": "customer_request"},
            403,
            "forbidden",
        ),
    }
    headers, body, status, code = attempts[who]

    # when they try to refund
    response = refund(client, headers, order_id, body)

    # then it is refused with a problem, and nothing at all happened
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.json()["code"] == code
    assert _footprint(database, order_id) == before
    assert simulator_refunds(payments_url, payment_ref) == []
    again = read_order(client, world.admin_a, order_id)
    assert (again["status"], again["refunds"]["refunded_minor"]) == ("Created", 0)


def test_mfa_required_tells_the_portal_how_fresh_the_step_up_must_be(
    client: TestClient, world: World, shop: Shop, with_mfa: Callable[..., dict[str, str]]
) -> None:
    order = place_order(client, world.patient_a, [(shop.toothbrush, 1)])
    response = refund(
        client,
        with_mfa(world.admin_a, mfa=False),
        order["order_id"],
        {"reason_code": "customer_request"},
    )
    assert response.status_code == 403
    assert response.json()["code"] == "mfa_required"
    assert response.json()["max_age_seconds"] == 300


def test_the_refunding_roles_are_a_setting(
    settings: Any, database: Database, world: World, shop: Shop, make_token: TokenFactory
) -> None:
    from product_shop.web.app import create_app

    # given a practice that lets its staff role refund too
    wider = settings.model_copy(update={"refund_roles": ["practice_admin", "finance", "staff"]})
    context = AppContext.build(wider, database=database)
    try:
        with TestClient(create_app(context=context), raise_server_exceptions=False) as client:
            order = place_order(client, world.patient_a, [(shop.toothbrush, 1)])
            staff = make_token(
                role="staff",
                subject=world.staff_a.actor.actor_id,
                practice_id=world.practice_a,
                name="Stan Staff",
                mfa=True,
            )
            response = refund(
                client,
                {"Authorization": f"Bearer {staff}"},
                order["order_id"],
                {"reason_code": "customer_request"},
            )
    finally:
        context.close()
    assert response.status_code == 201, response.text
    assert response.json()["initiated_by_name"] == "Stan Staff"


# ---- partial, partial, full (spec §5.3, §3.3 overlay) --------------------------------------------


def test_two_partial_refunds_then_a_full_one_refund_only_the_remainder(
    client: TestClient,
    world: World,
    shop: Shop,
    database: Database,
    payments_url: str,
    with_mfa: Callable[..., dict[str, str]],
) -> None:
    # given a paid order of 2 toothbrushes and a kit: 5999 * 2 + 24900 = 36898
    order = place_order(client, world.patient_a, [(shop.toothbrush, 2), (shop.kit, 1)])
    order_id, payment_ref = order["order_id"], order["payment"]["payment_ref"]
    finance, admin = with_mfa(world.finance_a), with_mfa(world.admin_a)

    # when finance refunds 1000, the admin 2000, then finance the whole remaining balance
    first = refund(client, finance, order_id, {"reason_code": "damaged_item", "amount_minor": 1000})
    assert first.status_code == 201, first.text
    after_first = read_order(client, world.admin_a, order_id)
    second = refund(client, admin, order_id, {"reason_code": "wrong_item", "amount_minor": 2000})
    assert second.status_code == 201, second.text
    after_second = read_order(client, world.admin_a, order_id)
    full = refund(client, finance, order_id, {"reason_code": "customer_request"})
    assert full.status_code == 201, full.text
    after_full = read_order(client, world.admin_a, order_id)

    # then the full refund took only what was left, and each step's overlay reads right
    assert full.json()["amount_minor"] == 36898 - 3000
    assert full.json()["kind"] == "balance"
    overlays = [
        (o["status"], o["refund_status"], o["refunds"]["refunded_minor"])
        for o in (after_first, after_second, after_full)
    ]
    assert overlays == [
        ("Refunded", "partial", 1000),
        ("Refunded", "partial", 3000),
        ("Refunded", "full", 36898),
    ]
    assert [o["refunds"]["refundable_minor"] for o in (after_first, after_second, after_full)] == [
        35898,
        33898,
        0,
    ]
    # the fulfilment stage is kept under the overlay (spec §3.3)
    assert after_first["fulfilment_status"] in ("Created", "Fulfilment-In-Progress")
    # and Integrated Payments made exactly these three refunds of the original transaction
    made = simulator_refunds(payments_url, payment_ref)
    assert sorted(r["amount_minor"] for r in made) == sorted([1000, 2000, 33898])
    assert {r["method"] for r in made} == {"card"}
    # each refund names its staff member: in the audit trail ...
    trail = [e for e in after_full["audit_trail"] if e["action"] == "refund.succeeded"]
    assert [(e["actor_name"], e["after"]["amount_minor"]) for e in trail] == [
        ("Fin Ance", 1000),
        ("Alice Admin", 2000),
        ("Fin Ance", 33898),
    ]
    assert all(e["after"]["payment_ref"] == payment_ref for e in trail)
    assert all(e["after"]["reason_code"] for e in trail)
    # ... in the order's refunds ...
    assert [r["initiated_by_name"] for r in after_full["refunds"]["items"]] == [
        "Fin Ance",
        "Alice Admin",
        "Fin Ance",
    ]
    # ... and in GET /v1/refunds (newest first)
    listed = client.get("/v1/refunds", headers=world.finance_a.headers)
    assert listed.status_code == 200, listed.text
    assert [
        (r["initiated_by"], r["initiated_by_name"], r["amount_minor"], r["payment_ref"])
        for r in listed.json()["items"]
    ] == [
        (world.finance_a.actor.actor_id, "Fin Ance", 33898, payment_ref),
        (world.admin_a.actor.actor_id, "Alice Admin", 2000, payment_ref),
        (world.finance_a.actor.actor_id, "Fin Ance", 1000, payment_ref),
    ]
    # and a fourth refund finds nothing left
    more = refund(client, finance, order_id, {"reason_code": "customer_request"})
    assert more.status_code == 409
    assert more.json()["code"] == "nothing_to_refund"


def test_a_refund_records_the_spec_fields_and_emits_every_event_in_its_schema(
    client: TestClient,
    world: World,
    shop: Shop,
    database: Database,
    with_mfa: Callable[..., dict[str, str]],
) -> None:
    order = place_order(client, world.patient_a, [(shop.toothbrush, 1)])
    response = refund(
        client,
        with_mfa(world.admin_a),
        order["order_id"],
        {"reason_code": "damaged_item", "amount_minor": 999, "note": "Handle cracked"},
    )
    assert response.status_code == 201, response.text
    assert response.headers["location"] == f"/v1/refunds/{response.json()['refund_id']}"
    body = response.json()
    # spec §15.1: order, payment_ref, amount, reason code, initiated_by, initiated_at; and the
    # original payment method (spec §5.3)
    assert body["order_id"] == order["order_id"]
    assert body["payment_ref"] == order["payment"]["payment_ref"]
    assert (body["amount_minor"], body["currency"]) == (999, "GBP")
    assert body["reason_code"] == "damaged_item"
    assert body["initiated_by"] == world.admin_a.actor.actor_id
    assert body["initiated_at"]
    assert body["completed_at"]
    assert body["payment_method"] == "card"
    assert body["provider_refund_ref"].startswith("DNA-RF-")
    assert body["status"] == "succeeded"
    # and the events, each valid in its schema
    with Session(database.engine) as session:
        events = list(
            session.scalars(
                select(OutboxEvent).where(OutboxEvent.aggregate_id == order["order_id"])
            )
        )
        row = session.get(Refund, uuid.UUID(body["refund_id"]))
        assert row is not None
        assert row.audit_entry_hash is not None
        entry = session.scalar(select(AuditEntry).where(AuditEntry.entry_id == row.audit_entry_id))
        assert entry is not None
        assert entry.entry_hash == row.audit_entry_hash
        assert entry.action == "refund.succeeded"
        assert entry.actor_name == "Alice Admin"
    kinds = {e.event_type.split("productshop.")[1].rsplit(".v", 1)[0]: e for e in events}
    for name in REFUND_EVENTS:
        assert name in kinds, sorted(kinds)
        jsonschema.validate(kinds[name].data, BY_NAME[kinds[name].event_type].schema())
    revenue = kinds["revenue.refund"].data
    assert (revenue["order_id"], revenue["amount"], revenue["currency"]) == (
        order["order_id"],
        999,
        "GBP",
    )
    assert revenue["event_type"] == "refund"
    assert revenue["timestamp"]
    # no points were used, so no redemption reversal is asked for
    assert "rewards.redemption_reversal_requested" not in kinds


def test_a_refund_of_an_order_paid_partly_with_points_asks_rewards_manager_to_reverse(
    client: TestClient,
    world: World,
    shop: Shop,
    database: Database,
    with_mfa: Callable[..., dict[str, str]],
) -> None:
    # given an order that redeemed 1,000 points (its redemption confirmed by Rewards Manager)
    order = place_order(client, world.patient_a, [(shop.toothbrush, 2)])  # 11,998 captured
    with Session(database.engine) as session, session.begin():
        session.add(
            PointsRedemption(
                redemption_ref="RM-REDEEM-1",
                checkout_id=uuid.UUID(order["checkout_id"]),
                patient_id=uuid.UUID(order["patient_id"]),
                practice_id=world.practice_a,
                points=1000,
                amount_minor=1000,
                currency="GBP",
                status="confirmed",
                settlement_ref="RM-ST-1",
                requested_at=datetime.now(UTC),
            )
        )
        session.flush()
        session.execute(
            update(Order)
            .where(Order.order_id == uuid.UUID(order["order_id"]))
            .values(redemption_ref="RM-REDEEM-1")
        )
    staff = with_mfa(world.finance_a)
    # when staff refund a quarter of the money, then a penny twice (the first crosses a whole
    # point, the second does not), then the rest
    for body in (
        {"reason_code": "customer_request", "amount_minor": 2999},
        {"reason_code": "customer_request", "amount_minor": 1},
        {"reason_code": "customer_request", "amount_minor": 1},
        {"reason_code": "customer_request"},
    ):
        response = refund(client, staff, order["order_id"], body)
        assert response.status_code == 201, response.text
    # then Rewards Manager is asked for each refund's share of the points (none when it adds no
    # whole point), in all exactly the 1,000 redeemed; we change no balance ourselves
    with Session(database.engine) as session:
        reversals = list(
            session.scalars(
                select(OutboxEvent)
                .where(OutboxEvent.event_type.like("%redemption_reversal_requested%"))
                .order_by(OutboxEvent.position)
            )
        )
    assert [r.data["points"] for r in reversals] == [249, 1, 750]
    for reversal in reversals:
        assert reversal.data["redemption_ref"] == "RM-REDEEM-1"
        assert reversal.data["reason"] == "refund"
        jsonschema.validate(reversal.data, BY_NAME[reversal.event_type].schema())
    trail = read_order(client, world.admin_a, order["order_id"])["audit_trail"]
    asked = [e for e in trail if e["action"] == "redemption.reversal_requested"]
    assert [(e["after"]["points"], e["actor_name"]) for e in asked] == [
        (249, "Fin Ance"),
        (1, "Fin Ance"),
        (750, "Fin Ance"),
    ]


# ---- never over-refund, under concurrency (invariant 6) ------------------------------------------


def test_concurrent_partial_refunds_never_exceed_the_capture(
    context: AppContext,
    world: World,
    shop: Shop,
    database: Database,
    payments_url: str,
    suppliers_url: str,
    with_mfa: Callable[..., dict[str, str]],
    live_api: BackgroundServer,
) -> None:
    # given a paid order of one toothbrush (5999)
    with httpx.Client(base_url=live_api.url, timeout=30) as api:
        order = place_order(api, world.patient_a, [(shop.toothbrush, 1)])  # type: ignore[arg-type]
    order_id, payment_ref = order["order_id"], order["payment"]["payment_ref"]
    headers = with_mfa(world.finance_a)

    # when 8 staff requests refund 1000 each at once (8000 > 5999)
    def attempt(_: int) -> httpx.Response:
        with httpx.Client(base_url=live_api.url, timeout=30) as api:
            return refund(
                api, headers, order_id, {"reason_code": "customer_request", "amount_minor": 1000}
            )

    with concurrent.futures.ThreadPoolExecutor(max_workers=8) as pool:
        answers = list(pool.map(attempt, range(8)))

    # then at most five succeed, every refusal is a 409 or 422, never a 500
    statuses = sorted(a.status_code for a in answers)
    assert all(status in (201, 409, 422) for status in statuses), [a.text for a in answers]
    assert statuses.count(201) == 5, statuses
    with Session(database.engine) as session:
        stored = session.get(Order, uuid.UUID(order_id))
        assert stored is not None
        assert stored.refunded_minor == 5000 <= stored.captured_minor
        assert stored.refund_pending_minor == 0
    assert sum(r["amount_minor"] for r in simulator_refunds(payments_url, payment_ref)) == 5000


def test_the_database_refuses_refund_totals_above_the_capture(
    client: TestClient, world: World, shop: Shop, database: Database
) -> None:
    """The constraint itself (not the code): refunded plus in-flight never above captured."""
    order = place_order(client, world.patient_a, [(shop.toothbrush, 1)])
    with (
        Session(database.engine) as session,
        session.begin(),
        pytest.raises(IntegrityError) as raised,
    ):
        session.execute(
            update(Order)
            .where(Order.order_id == uuid.UUID(order["order_id"]))
            .values(refunded_minor=3000, refund_pending_minor=3000)
        )
    assert "refund_within_capture" in str(raised.value)


# ---- an unknown outcome is settled, never refunded twice -----------------------------------------


def test_a_payments_timeout_during_a_refund_is_settled_into_exactly_one_refund(
    context: AppContext,
    client: TestClient,
    world: World,
    shop: Shop,
    payments_url: str,
    with_mfa: Callable[..., dict[str, str]],
) -> None:
    order = place_order(client, world.patient_a, [(shop.toothbrush, 1)])
    order_id, payment_ref = order["order_id"], order["payment"]["payment_ref"]
    # given Integrated Payments makes the refund but every answer comes after our timeout (1 s)
    httpx.post(
        f"{payments_url}/_simulator/faults",
        json={"operation": "refund", "mode": "delay_after", "seconds": 1.5, "times": 3},
    ).raise_for_status()

    # when staff refund
    response = refund(
        client, with_mfa(world.finance_a), order_id, {"reason_code": "customer_request"}
    )

    # then reading the refund's status settled it: one refund at the simulator, recorded once
    assert response.status_code == 201, response.text
    assert response.json()["status"] == "succeeded"
    made = simulator_refunds(payments_url, payment_ref)
    assert [r["amount_minor"] for r in made] == [5999]
    assert made[0]["merchant_reference"] == response.json()["refund_id"]
    assert read_order(client, world.admin_a, order_id)["refunds"]["refunded_minor"] == 5999


def test_a_refund_the_gateway_never_received_is_sent_again_under_the_same_key(
    client: TestClient,
    world: World,
    shop: Shop,
    payments_url: str,
    with_mfa: Callable[..., dict[str, str]],
) -> None:
    order = place_order(client, world.patient_a, [(shop.toothbrush, 1)])
    order_id, payment_ref = order["order_id"], order["payment"]["payment_ref"]
    # given every send of the refund fails before Integrated Payments makes it (503, 3 times)
    httpx.post(
        f"{payments_url}/_simulator/faults",
        json={"operation": "refund", "mode": "error", "status": 503, "times": 3},
    ).raise_for_status()

    # when staff refund: the outcome is unknown, the status read finds no refund
    response = refund(
        client, with_mfa(world.finance_a), order_id, {"reason_code": "customer_request"}
    )

    # then the same request went again (same Idempotency-Key) and made exactly one refund
    assert response.status_code == 201, response.text
    made = simulator_refunds(payments_url, payment_ref)
    assert [(r["amount_minor"], r["merchant_reference"]) for r in made] == [
        (5999, response.json()["refund_id"])
    ]


@pytest.mark.parametrize(
    "status_read",
    [
        {"mode": "delay_after", "seconds": 1.5, "times": 6},  # no answer in time
        {"mode": "error", "status": 400, "times": 6},  # a refusal of the read itself
    ],
    ids=["unanswered", "refused"],
)
def test_a_refund_left_pending_by_an_unreachable_gateway_is_settled_later_exactly_once(
    context: AppContext,
    client: TestClient,
    world: World,
    shop: Shop,
    payments_url: str,
    with_mfa: Callable[..., dict[str, str]],
    status_read: dict[str, Any],
) -> None:
    order = place_order(client, world.patient_a, [(shop.toothbrush, 1)])
    order_id, payment_ref = order["order_id"], order["payment"]["payment_ref"]
    # given the refund goes through at Integrated Payments but its answer comes too late, and
    # its status cannot be read: the refund may have been made, so it must not count as failed
    httpx.post(
        f"{payments_url}/_simulator/faults",
        json={"operation": "refund", "mode": "delay_after", "seconds": 1.5, "times": 3},
    ).raise_for_status()
    httpx.post(
        f"{payments_url}/_simulator/faults", json={"operation": "get_refund", **status_read}
    ).raise_for_status()
    response = refund(
        client, with_mfa(world.finance_a), order_id, {"reason_code": "customer_request"}
    )
    # then the answer says it is pending (202), and holds the amount against a second refund
    assert response.status_code == 202, response.text
    assert response.json()["status"] == "pending"
    pending = read_order(client, world.admin_a, order_id)["refunds"]
    assert (pending["refund_pending_minor"], pending["refundable_minor"]) == (5999, 0)
    again = refund(client, with_mfa(world.finance_a), order_id, {"reason_code": "customer_request"})
    assert again.status_code == 409

    # when the gateway answers again and the settlement job runs
    httpx.post(f"{payments_url}/_simulator/reset").raise_for_status()
    settlement = context.refund_settlement
    settlement._settle_after = timedelta(0)
    assert settlement.run_once() == 1
    assert settlement.run_once() == 0

    # then exactly one refund exists at the simulator, recorded once
    assert [r["amount_minor"] for r in simulator_refunds(payments_url, payment_ref)] == [5999]
    settled = read_order(client, world.admin_a, order_id)
    assert (settled["refund_status"], settled["refunds"]["refunded_minor"]) == ("full", 5999)
    (item,) = settled["refunds"]["items"]
    assert item["status"] == "succeeded"


def test_a_refund_the_gateway_refuses_refunds_nothing_and_says_why(
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

    response = refund(
        client, with_mfa(world.finance_a), order["order_id"], {"reason_code": "damaged_item"}
    )

    assert response.status_code == 422, response.text
    assert response.json()["code"] == "refund_rejected"
    assert response.json()["payments_code"] == "simulated_failure"
    after = read_order(client, world.admin_a, order["order_id"])
    assert (after["status"], after["refunds"]["refunded_minor"]) == ("Created", 0)
    assert after["refunds"]["refundable_minor"] == 5999
    (attempt,) = after["refunds"]["items"]
    assert attempt["status"] == "failed"
    assert "refund.failed" in [e["action"] for e in after["audit_trail"]]
    # and it may be refunded again at once
    retry = refund(
        client, with_mfa(world.finance_a), order["order_id"], {"reason_code": "damaged_item"}
    )
    assert retry.status_code == 201, retry.text


# ---- reason codes and the list -------------------------------------------------------------------


def test_reason_codes_come_from_integrated_payments(
    client: TestClient, world: World, payments_url: str
) -> None:
    response = client.get("/v1/refund-reason-codes", headers=world.finance_a.headers)
    assert response.status_code == 200, response.text
    codes = [r["code"] for r in response.json()["reasons"]]
    gateway = httpx.get(
        f"{payments_url}/v1/refund-reasons",
        headers={"Authorization": "Bearer test-payments-api-key"},
    ).json()
    assert codes == [r["code"] for r in gateway["reasons"]]
    assert client.get("/v1/refund-reason-codes", headers=world.patient_a.headers).status_code == 403


def test_the_refund_list_filters_by_date_reason_and_staff_and_exports_csv(
    client: TestClient,
    world: World,
    shop: Shop,
    with_mfa: Callable[..., dict[str, str]],
) -> None:
    order = place_order(client, world.patient_a, [(shop.kit, 1)])
    order_id = order["order_id"]
    refund(
        client,
        with_mfa(world.finance_a),
        order_id,
        {"reason_code": "damaged_item", "amount_minor": 100},
    )
    refund(
        client,
        with_mfa(world.admin_a),
        order_id,
        {"reason_code": "wrong_item", "amount_minor": 200},
    )
    today = datetime.now(UTC).date()

    def amounts(**params: Any) -> list[int]:
        response = client.get("/v1/refunds", headers=world.admin_a.headers, params=params)
        assert response.status_code == 200, response.text
        return [r["amount_minor"] for r in response.json()["items"]]

    assert amounts() == [200, 100]
    assert amounts(reason_code="damaged_item") == [100]
    assert amounts(initiated_by=world.admin_a.actor.actor_id) == [200]
    assert amounts(**{"from": today.isoformat(), "to": today.isoformat()}) == [200, 100]
    assert amounts(**{"from": (today + timedelta(days=1)).isoformat()}) == []
    assert amounts(limit=1) == [200]
    page = client.get("/v1/refunds", headers=world.admin_a.headers, params={"limit": 1}).json()
    rest = client.get(
        "/v1/refunds",
        headers=world.admin_a.headers,
        params={"limit": 1, "cursor": page["next_cursor"]},
    ).json()
    assert [r["amount_minor"] for r in rest["items"]] == [100]
    bad = client.get(
        "/v1/refunds",
        headers=world.admin_a.headers,
        params={"from": today.isoformat(), "to": (today - timedelta(days=1)).isoformat()},
    )
    assert bad.status_code == 422
    assert bad.json()["code"] == "invalid_date_range"

    csv = client.get("/v1/refunds", headers={**world.finance_a.headers, "Accept": "text/csv"})
    assert csv.status_code == 200
    assert csv.headers["content-type"].startswith("text/csv")
    rows = csv.text.strip().splitlines()
    assert rows[0].startswith("refund_id,order_id,")
    assert len(rows) == 3
    assert "Alice Admin" in rows[1]
    assert "Fin Ance" in rows[2]

    # the list is for practice admin and finance of the practice only
    assert client.get("/v1/refunds", headers=world.clinician_a.headers).status_code == 403
    assert client.get("/v1/refunds", headers=world.patient_a.headers).status_code == 403
    other = client.get("/v1/refunds", headers=world.admin_b.headers)
    assert other.status_code == 200
    assert other.json()["items"] == []


def test_the_patient_sees_their_refunds_without_staff_names_or_reasons(
    client: TestClient, world: World, shop: Shop, with_mfa: Callable[..., dict[str, str]]
) -> None:
    order = place_order(client, world.patient_a, [(shop.toothbrush, 1)])
    refund(
        client,
        with_mfa(world.finance_a),
        order["order_id"],
        {"reason_code": "damaged_item", "amount_minor": 500, "note": "Staff only note"},
    )
    mine = read_order(client, world.patient_a, order["order_id"])
    assert mine["view"] == "patient"
    (item,) = mine["refunds"]["items"]
    assert (item["amount_minor"], item["status"], item["payment_method"]) == (
        500,
        "succeeded",
        "card",
    )
    text = str(mine)
    for hidden in ("Fin Ance", world.finance_a.actor.actor_id, "damaged_item", "Staff only note"):
        assert hidden not in text
    assert "refunded" in [entry["event"] for entry in mine["timeline"]]
