"""Rewards Manager points redemption, atomic with payment capture (spec §5.4, §11.1, §11.2,
§15.2 rules 13-14, §15.6), over HTTP against the Rewards Manager and payments simulators."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from product_shop.audit.tables import AuditEntry
from product_shop.checkout.reversals import RedemptionReversals
from product_shop.checkout.tables import Checkout, PointsRedemption
from product_shop.context import AppContext
from product_shop.core.signing import sign
from product_shop.db.engine import Database
from product_shop.events.tables import OutboxEvent
from product_shop.orders.tables import Order
from product_shop.simulators.server import BackgroundServer
from tests.conftest import REWARDS_WEBHOOK_SECRET, Person, World
from tests.integration.checkout_support import ADDRESS, DECLINED, Shop, key, pay
from tests.integration.fulfilment_support import wait_for
from tests.integration.refund_support import refund


@pytest.fixture
def api(live_api: BackgroundServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=live_api.url, timeout=30) as client:
        yield client


def start(
    api: httpx.Client, patient: Person, product: uuid.UUID, points: int | None, quantity: int = 1
) -> httpx.Response:
    body: dict[str, Any] = {
        "lines": [{"product_id": str(product), "quantity": quantity}],
        "delivery_address": ADDRESS,
    }
    if points is not None:
        body["redeem_points"] = points
    return api.post("/v1/checkouts", headers={**patient.headers, **key()}, json=body)


def checkout_of(api: httpx.Client, patient: Person, checkout_id: str) -> dict[str, Any]:
    response = api.get(f"/v1/checkouts/{checkout_id}", headers=patient.headers)
    assert response.status_code == 200, response.text
    document: dict[str, Any] = response.json()
    return document


def confirmed(
    api: httpx.Client, patient: Person, product: uuid.UUID, points: int
) -> tuple[dict[str, Any], dict[str, Any]]:
    """A checkout redeeming `points`, as first answered and once Rewards Manager's confirmation
    opened the payment for the rest."""
    created: dict[str, Any] = start(api, patient, product, points).json()
    ready = wait_for(
        lambda: checkout_of(api, patient, created["id"]), lambda c: c["payment"] is not None
    )
    return created, ready


def redemptions_at(rewards_url: str, checkout_id: str) -> list[dict[str, Any]]:
    response = httpx.get(f"{rewards_url}/_simulator/redemptions", params={"reference": checkout_id})
    found: list[dict[str, Any]] = response.json()["redemptions"]
    return found


def reversals_at(rewards_url: str, redemption_ref: str) -> list[dict[str, Any]]:
    response = httpx.get(
        f"{rewards_url}/_simulator/reversals", params={"redemption_ref": redemption_ref}
    )
    found: list[dict[str, Any]] = response.json()["reversals"]
    return found


def intents_at(payments_url: str, checkout_id: str) -> list[dict[str, Any]]:
    """Every payment intent Integrated Payments opened for the checkout."""
    response = httpx.get(
        f"{payments_url}/_simulator/intents", params={"merchant_reference": checkout_id}
    )
    response.raise_for_status()
    found: list[dict[str, Any]] = response.json()["intents"]
    return found


def orders_of(database: Database, checkout_id: str) -> list[Order]:
    with Session(database.engine) as session:
        return list(
            session.scalars(select(Order).where(Order.checkout_id == uuid.UUID(checkout_id)))
        )


def checkout_audit(database: Database, checkout_id: str) -> list[str]:
    with Session(database.engine) as session:
        return list(
            session.scalars(
                select(AuditEntry.action)
                .where(AuditEntry.stream_type == "checkout", AuditEntry.stream_id == checkout_id)
                .order_by(AuditEntry.stream_seq)
            )
        )


def reversal_events(database: Database) -> list[OutboxEvent]:
    with Session(database.engine) as session:
        return list(
            session.scalars(
                select(OutboxEvent).where(
                    OutboxEvent.event_type.like("%redemption_reversal_requested%")
                )
            )
        )


# ---- partial and full cover ---------------------------------------------------------------------


def test_partial_cover_waits_for_the_confirmation_then_captures_the_rest(
    api: httpx.Client, rewards: str, world: World, shop: Shop, database: Database, payments_url: str
) -> None:
    # when the patient redeems 1,000 points (worth 1,000) on a 5,999 toothbrush
    created = start(api, world.patient_a, shop.toothbrush, 1000)

    # then the checkout awaits Rewards Manager, with no payment page yet
    assert created.status_code == 201, created.text
    first = created.json()
    assert first["status"] == "awaiting_redemption"
    assert first["payment"] is None
    assert (first["amount_due_minor"], first["redemption"]["amount_minor"]) == (4999, 1000)
    # and once the signed confirmation arrived, the payment page is for the rest
    ready = wait_for(
        lambda: checkout_of(api, world.patient_a, first["id"]),
        lambda c: c["status"] == "awaiting_payment" and c["payment"] is not None,
    )
    intent = httpx.get(f"{payments_url}/_simulator/intents/{ready['payment']['intent_id']}").json()
    assert intent["amount_minor"] == 4999
    assert pay(ready).status_code == 200
    completed = api.post(f"/v1/checkouts/{first['id']}/complete", headers=world.patient_a.headers)
    assert completed.status_code == 200, completed.text
    order = completed.json()
    (redemption,) = redemptions_at(rewards, first["id"])
    assert order["redemption_ref"] == redemption["redemption_ref"]
    assert (order["total_minor"], order["payment"]["captured_minor"]) == (5999, 4999)
    assert order["payment"]["redeemed_minor"] == 1000
    assert len(orders_of(database, first["id"])) == 1
    assert [
        (i["amount_minor"], i["capture_count"]) for i in intents_at(payments_url, first["id"])
    ] == [(4999, 1)]


def test_the_payment_opened_after_the_confirmation_keeps_the_checkouts_return_url(
    api: httpx.Client,
    rewards: str,
    world: World,
    shop: Shop,
    payments_url: str,
    context: AppContext,
) -> None:
    """Migration 0023: the intent for the rest, opened once Rewards Manager confirmed, sends
    the patient back where the checkout asked, as a first intent would."""
    back = "https://app.primoro.example/checkout/done"
    context.settings.payment_return_origins = ["https://app.primoro.example"]
    body = {
        "lines": [{"product_id": str(shop.toothbrush), "quantity": 1}],
        "delivery_address": ADDRESS,
        "redeem_points": 1000,
        "return_url": back,
    }
    created = api.post("/v1/checkouts", headers={**world.patient_a.headers, **key()}, json=body)
    assert created.status_code == 201, created.text
    ready = wait_for(
        lambda: checkout_of(api, world.patient_a, created.json()["id"]),
        lambda c: c["payment"] is not None,
    )
    intent = httpx.get(f"{payments_url}/_simulator/intents/{ready['payment']['intent_id']}").json()
    assert (intent["amount_minor"], intent["return_url"]) == (4999, back)


def test_full_cover_makes_the_order_on_the_settlement_with_no_charge(
    api: httpx.Client,
    rewards: str,
    world: World,
    shop: Shop,
    database: Database,
    payments_url: str,
) -> None:
    created = start(api, world.patient_a, shop.voucher, 6000)
    assert created.status_code == 201, created.text
    checkout_id = created.json()["id"]

    done = wait_for(
        lambda: checkout_of(api, world.patient_a, checkout_id), lambda c: c["order_id"] is not None
    )

    # then the order exists with the settlement reference, nothing captured and no intent
    assert done["status"] == "completed"
    assert done["payment"] is None
    (redemption,) = redemptions_at(rewards, checkout_id)
    (order,) = orders_of(database, checkout_id)
    assert order.payment_ref is None
    assert order.settlement_ref == redemption["settlement_ref"]
    assert (order.captured_minor, order.redeemed_minor, order.total_minor) == (0, 6000, 6000)
    assert order.redemption_ref == redemption["redemption_ref"]
    assert intents_at(payments_url, checkout_id) == []  # no payment intent, no charge
    shown = api.get(f"/v1/orders/{order.order_id}", headers=world.patient_a.headers).json()
    assert shown["payment"]["payment_ref"] == redemption["settlement_ref"]
    assert shown["payment"]["method"] == "points"


# ---- atomicity (spec §15.6) ---------------------------------------------------------------------


def test_a_declined_capture_after_the_confirmation_makes_no_order_and_one_reversal(
    api: httpx.Client,
    context: AppContext,
    rewards: str,
    world: World,
    shop: Shop,
    database: Database,
) -> None:
    created, ready = confirmed(api, world.patient_a, shop.toothbrush, 1000)
    # when the card is declined and the app completes (twice)
    assert pay(ready, DECLINED).status_code in (200, 402)
    for _ in range(2):
        failed = api.post(
            f"/v1/checkouts/{created['id']}/complete", headers=world.patient_a.headers
        )
        assert failed.status_code == 402, failed.text
    context.relay.run_once()
    context.relay.run_once()

    # then no order, exactly one reversal request, delivered once to Rewards Manager
    assert orders_of(database, created["id"]) == []
    assert len(reversal_events(database)) == 1
    (redemption,) = redemptions_at(rewards, created["id"])
    reversals = reversals_at(rewards, redemption["redemption_ref"])
    assert [r["points"] for r in reversals] == [1000]
    # and the checkout cannot be paid again: the points are on their way back
    retry = api.post(f"/v1/checkouts/{created['id']}/retry", headers=world.patient_a.headers)
    assert retry.status_code == 409
    assert retry.json()["code"] == "redemption_reversed"
    # and Rewards Manager's signed RedemptionReversed is recorded, starting nothing new
    wait_for(
        lambda: {"actions": checkout_audit(database, created["id"])},
        lambda found: "redemption.reversed" in found["actions"],
    )
    assert [a for a in checkout_audit(database, created["id"]) if a.startswith("redemption.")] == [
        "redemption.requested",
        "redemption.confirmed",
        "redemption.reversal_requested",
        "redemption.reversed",
    ]
    with Session(database.engine) as session:
        stored = session.get(PointsRedemption, redemption["redemption_ref"])
        assert stored is not None
        assert stored.status == "reversed"
    assert len(reversal_events(database)) == 1


def test_a_crash_between_the_failed_capture_and_the_reversal_still_reverses_once(
    api: httpx.Client,
    context: AppContext,
    rewards: str,
    world: World,
    shop: Shop,
    database: Database,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    created, ready = confirmed(api, world.patient_a, shop.toothbrush, 1000)
    pay(ready, DECLINED)
    # given the unit of work dies after the failure is recorded, before the reversal is written
    original = RedemptionReversals.after_failed_payment

    def crash(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("the process died here")

    monkeypatch.setattr(RedemptionReversals, "after_failed_payment", crash)
    crashed = api.post(f"/v1/checkouts/{created['id']}/complete", headers=world.patient_a.headers)
    assert crashed.status_code == 500
    assert checkout_of(api, world.patient_a, created["id"])["status"] == "awaiting_payment"
    assert reversal_events(database) == []

    # when the service is back and the completion comes again (the app, or the webhook)
    monkeypatch.setattr(RedemptionReversals, "after_failed_payment", original)
    again = api.post(f"/v1/checkouts/{created['id']}/complete", headers=world.patient_a.headers)
    assert again.status_code == 402
    for _ in range(3):
        context.relay.run_once()

    # then exactly one reversal request reached Rewards Manager
    (redemption,) = redemptions_at(rewards, created["id"])
    assert len(reversals_at(rewards, redemption["redemption_ref"])) == 1
    assert orders_of(database, created["id"]) == []


def test_a_confirmation_that_never_arrives_leaves_no_order_and_no_charge(
    api: httpx.Client,
    rewards: str,
    world: World,
    shop: Shop,
    database: Database,
    payments_url: str,
) -> None:
    httpx.post(f"{rewards}/_simulator/config", json={"auto_confirm": False}).raise_for_status()
    created = start(api, world.patient_a, shop.toothbrush, 1000).json()

    complete = api.post(f"/v1/checkouts/{created['id']}/complete", headers=world.patient_a.headers)
    retry = api.post(f"/v1/checkouts/{created['id']}/retry", headers=world.patient_a.headers)

    assert complete.status_code == 409
    assert retry.status_code == 409
    assert retry.json()["code"] == "checkout_awaiting_redemption"
    now = checkout_of(api, world.patient_a, created["id"])
    assert (now["status"], now["payment"]) == ("awaiting_redemption", None)
    assert orders_of(database, created["id"]) == []
    assert intents_at(payments_url, created["id"]) == []


def test_a_duplicated_confirmation_changes_nothing_the_second_time(
    api: httpx.Client, rewards: str, world: World, shop: Shop, database: Database
) -> None:
    httpx.post(f"{rewards}/_simulator/config", json={"auto_confirm": False}).raise_for_status()
    created = start(api, world.patient_a, shop.voucher, 6000).json()
    (redemption,) = redemptions_at(rewards, created["id"])

    confirmed = httpx.post(
        f"{rewards}/_simulator/redemptions/{redemption['redemption_ref']}/confirm",
        json={"copies": 2},
        timeout=30,
    )

    assert confirmed.status_code == 200, confirmed.text
    assert len(orders_of(database, created["id"])) == 1
    with Session(database.engine) as session:
        created_events = session.scalar(
            select(func.count())
            .select_from(OutboxEvent)
            .where(OutboxEvent.event_type.like("%order.created%"))
        )
    assert created_events == 1


def test_a_forged_confirmation_is_401_and_changes_nothing(
    api: httpx.Client, rewards: str, world: World, shop: Shop, database: Database
) -> None:
    httpx.post(f"{rewards}/_simulator/config", json={"auto_confirm": False}).raise_for_status()
    created = start(api, world.patient_a, shop.voucher, 6000).json()
    (redemption,) = redemptions_at(rewards, created["id"])
    body = json.dumps(
        {
            "id": "evt_forged",
            "type": "redemption.confirmed",
            "data": {
                "redemption_ref": redemption["redemption_ref"],
                "reference": created["id"],
                "points": 6000,
                "amount_minor": 6000,
                "currency": "GBP",
                "settlement_ref": "RM-ST-FORGED",
            },
        }
    ).encode()
    wrong = "whsec_" + "Zm9yZ2VkLXNlY3JldC1mb3JnZWQtc2VjcmV0LTMy"
    headers = sign(wrong, "evt_forged", int(time.time()), body).as_dict()

    response = api.post(
        "/v1/webhooks/rewards",
        content=body,
        headers={**headers, "Content-Type": "application/json"},
    )

    assert response.status_code == 401
    assert response.json()["code"] == "invalid_signature"
    assert orders_of(database, created["id"]) == []
    assert checkout_of(api, world.patient_a, created["id"])["status"] == "awaiting_redemption"
    # the same body signed with the real secret is accepted
    genuine = api.post(
        "/v1/webhooks/rewards",
        content=body,
        headers={
            **sign(REWARDS_WEBHOOK_SECRET, "evt_forged", int(time.time()), body).as_dict(),
            "Content-Type": "application/json",
        },
    )
    assert genuine.status_code == 200
    assert genuine.json()["status"] == "order_created"
    assert len(orders_of(database, created["id"])) == 1


# ---- refusals and the balance ------------------------------------------------------------------


def test_redemption_is_refused_where_rewards_are_off_or_the_points_exceed_the_order(
    api: httpx.Client, rewards: str, world: World, shop: Shop, make_product: Any, offer: Any
) -> None:
    too_many = start(api, world.patient_a, shop.toothbrush, 6000)
    assert too_many.status_code == 422
    assert too_many.json()["code"] == "points_exceed_order"
    short = start(api, world.patient_a, shop.kit, 8001, quantity=1)
    assert short.status_code == 422
    assert short.json()["code"] == "insufficient_points"
    # practice B has no rewards
    product = make_product(name="Floss", fulfilment_type="Drop-Ship", cost_price_minor=100)
    offer(world.admin_b, product, 500)
    off = start(api, world.patient_b, product, 10)
    assert off.status_code == 422
    assert off.json()["code"] == "rewards_disabled"


def test_the_patient_sees_their_points_and_what_they_are_worth(
    api: httpx.Client, rewards: str, world: World
) -> None:
    response = api.get("/v1/me/rewards", headers=world.patient_a.headers)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["enabled"] is True
    assert body["value_minor"] == body["balance_points"] * body["value_minor_per_point"]
    off = api.get("/v1/me/rewards", headers=world.patient_b.headers).json()
    assert (off["enabled"], off["balance_points"]) == (False, 0)
    assert api.get("/v1/me/rewards", headers=world.admin_a.headers).status_code == 403


def test_refunding_an_order_paid_partly_with_points_asks_rewards_manager_for_them_back(
    api: httpx.Client,
    context: AppContext,
    rewards: str,
    world: World,
    shop: Shop,
    with_mfa: Any,
) -> None:
    created, ready = confirmed(api, world.patient_a, shop.toothbrush, 1000)
    pay(ready)
    order = api.post(
        f"/v1/checkouts/{created['id']}/complete", headers=world.patient_a.headers
    ).json()

    # when staff refund the whole order (the 4,999 captured)
    refunded = refund(
        api, with_mfa(world.finance_a), order["order_id"], {"reason_code": "customer_request"}
    )
    assert refunded.status_code == 201, refunded.text
    assert refunded.json()["amount_minor"] == 4999
    for _ in range(2):
        context.relay.run_once()

    # then Rewards Manager is asked to reinstate the 1,000 points, once; we changed no balance
    (redemption,) = redemptions_at(rewards, created["id"])
    assert [r["points"] for r in reversals_at(rewards, redemption["redemption_ref"])] == [1000]


# ---- expiry ------------------------------------------------------------------------------------


def _expire_now(database: Database, checkout_id: str) -> None:
    with Session(database.engine) as session, session.begin():
        session.execute(
            update(Checkout)
            .where(Checkout.checkout_id == uuid.UUID(checkout_id))
            .values(expires_at=datetime.now(UTC) - timedelta(minutes=1))
        )


def test_a_checkout_that_expires_after_the_confirmation_gives_the_points_back_once(
    api: httpx.Client,
    context: AppContext,
    rewards: str,
    world: World,
    shop: Shop,
    database: Database,
    payments_url: str,
) -> None:
    created, ready = confirmed(api, world.patient_a, shop.toothbrush, 1000)
    # when the patient never pays and the checkout's time passes
    _expire_now(database, created["id"])
    assert context.checkout_expiry.run_once() == 1
    assert context.checkout_expiry.run_once() == 0
    for _ in range(2):
        context.relay.run_once()

    # then it expired with its payment page closed, no order, and the points asked back once
    assert checkout_of(api, world.patient_a, created["id"])["status"] == "expired"
    intent = httpx.get(f"{payments_url}/_simulator/intents/{ready['payment']['intent_id']}")
    assert intent.json()["status"] == "cancelled"
    assert orders_of(database, created["id"]) == []
    (redemption,) = redemptions_at(rewards, created["id"])
    assert [r["points"] for r in reversals_at(rewards, redemption["redemption_ref"])] == [1000]


def test_a_confirmation_arriving_after_the_expiry_is_reversed_not_paid(
    api: httpx.Client,
    context: AppContext,
    rewards: str,
    world: World,
    shop: Shop,
    database: Database,
) -> None:
    httpx.post(f"{rewards}/_simulator/config", json={"auto_confirm": False}).raise_for_status()
    created = start(api, world.patient_a, shop.toothbrush, 1000).json()
    _expire_now(database, created["id"])
    assert context.checkout_expiry.run_once() == 1
    (redemption,) = redemptions_at(rewards, created["id"])

    # when Rewards Manager's confirmation comes late
    httpx.post(
        f"{rewards}/_simulator/redemptions/{redemption['redemption_ref']}/confirm",
        json={"copies": 1},
        timeout=30,
    ).raise_for_status()
    for _ in range(2):
        context.relay.run_once()

    # then no payment opens and the points are asked back, once
    after = checkout_of(api, world.patient_a, created["id"])
    assert (after["status"], after["payment"]) == ("expired", None)
    assert [r["points"] for r in reversals_at(rewards, redemption["redemption_ref"])] == [1000]
    assert orders_of(database, created["id"]) == []


# ---- what the review found ----------------------------------------------------------------------


def test_a_payment_after_the_points_were_returned_makes_no_order_at_the_discount(
    api: httpx.Client,
    context: AppContext,
    rewards: str,
    world: World,
    shop: Shop,
    database: Database,
) -> None:
    created, ready = confirmed(api, world.patient_a, shop.toothbrush, 1000)
    pay(ready, DECLINED)
    declined = api.post(f"/v1/checkouts/{created['id']}/complete", headers=world.patient_a.headers)
    assert declined.status_code == 402
    # when the patient pays on the same page with another card after the points went back
    assert pay(ready).status_code == 200
    late = api.post(f"/v1/checkouts/{created['id']}/complete", headers=world.patient_a.headers)

    # then no order: the capture is a payment exception for a staff refund
    assert late.status_code == 409, late.text
    assert late.json()["code"] == "redemption_reversed"
    assert orders_of(database, created["id"]) == []
    listed = api.get("/v1/payment-exceptions", headers=world.finance_a.headers).json()["items"]
    assert [
        (e["reason"], e["amount_minor"]) for e in listed if e["checkout_id"] == created["id"]
    ] == [("redemption_reversed", 4999)]
    assert len(reversal_events(database)) == 1


def test_a_points_checkout_stopped_because_a_product_went_gives_the_points_back(
    api: httpx.Client,
    context: AppContext,
    rewards: str,
    world: World,
    shop: Shop,
    database: Database,
    offer: Any,
) -> None:
    created = start(api, world.patient_a, shop.toothbrush, 1000).json()
    wait_for(
        lambda: checkout_of(api, world.patient_a, created["id"]),
        lambda c: c["payment"] is not None,
    )
    # when the practice hides the product before the patient pays
    offer(world.admin_a, shop.toothbrush, 5999, visible=False)
    for _ in range(2):
        context.relay.run_once()

    # then the checkout failed and the points were asked back, once
    assert checkout_of(api, world.patient_a, created["id"])["status"] == "failed"
    (redemption,) = redemptions_at(rewards, created["id"])
    assert [r["points"] for r in reversals_at(rewards, redemption["redemption_ref"])] == [1000]


def test_a_refund_whose_answer_was_lost_is_replayed_not_made_twice(
    api: httpx.Client,
    context: AppContext,
    rewards: str,
    world: World,
    shop: Shop,
    payments_url: str,
    with_mfa: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from tests.integration.fulfilment_support import place_order

    order = place_order(api, world.patient_a, [(shop.toothbrush, 1)])  # type: ignore[arg-type]
    headers = {**with_mfa(world.finance_a), "Idempotency-Key": str(uuid.uuid4())}
    body = {"reason_code": "customer_request"}
    # given the request dies after the refund was reserved, before Integrated Payments is called
    settlement = type(context.refund_settlement)

    def dies(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("the process died here")

    monkeypatch.setattr(settlement, "send", dies)
    first = api.post(f"/v1/orders/{order['order_id']}/refunds", headers=headers, json=body)
    assert first.status_code == 500
    monkeypatch.undo()

    # when the client sends it again with the same key
    again = api.post(f"/v1/orders/{order['order_id']}/refunds", headers=headers, json=body)

    # then it is the same refund, still pending, settled once by the job
    assert again.status_code == 202, again.text
    assert again.headers["Idempotent-Replayed"] == "true"
    context.refund_settlement._settle_after = timedelta(0)
    assert context.refund_settlement.run_once() == 1
    payment_ref = order["payment"]["payment_ref"]
    made = httpx.get(
        f"{payments_url}/_simulator/refunds", params={"transaction_ref": payment_ref}
    ).json()["refunds"]
    assert [(r["amount_minor"], r["merchant_reference"]) for r in made] == [
        (5999, again.json()["refund_id"])
    ]


def test_hostile_but_signed_rewards_callbacks_never_500(
    api: httpx.Client, rewards: str, world: World, shop: Shop, database: Database
) -> None:
    httpx.post(f"{rewards}/_simulator/config", json={"auto_confirm": False}).raise_for_status()
    created = start(api, world.patient_a, shop.voucher, 6000).json()
    (redemption,) = redemptions_at(rewards, created["id"])

    def send(event_id: str, event_type: str, data: dict[str, Any]) -> httpx.Response:
        body = json.dumps({"id": event_id, "type": event_type, "data": data}).encode()
        signed = sign(REWARDS_WEBHOOK_SECRET, event_id, int(time.time()), body).as_dict()
        return api.post(
            "/v1/webhooks/rewards",
            content=body,
            headers={**signed, "Content-Type": "application/json"},
        )

    # a reversal of a redemption never confirmed is recorded, not applied
    reversed_early = send(
        "evt_rev", "redemption.reversed", {"redemption_ref": redemption["redemption_ref"]}
    )
    assert reversed_early.status_code == 200, reversed_early.text
    # numbers beyond reason are a 400, not a crash
    huge = (
        b'{"id": "evt_big", "type": "redemption.confirmed", "data": {"redemption_ref": "x", '
        b'"reference": "y", "points": 1e999, "amount_minor": 1, "currency": "GBP", '
        b'"settlement_ref": "z"}}'
    )
    signed = sign(REWARDS_WEBHOOK_SECRET, "evt_big", int(time.time()), huge).as_dict()
    crash = api.post(
        "/v1/webhooks/rewards", content=huge, headers={**signed, "Content-Type": "application/json"}
    )
    assert crash.status_code == 400
    assert crash.json()["code"] == "malformed_webhook"
    # and the redemption still confirms normally afterwards
    httpx.post(
        f"{rewards}/_simulator/redemptions/{redemption['redemption_ref']}/confirm",
        json={"copies": 1},
        timeout=30,
    ).raise_for_status()
    assert len(orders_of(database, created["id"])) == 1


def test_an_order_paid_wholly_with_points_is_refunded_by_asking_for_the_points_back(
    api: httpx.Client,
    context: AppContext,
    rewards: str,
    world: World,
    shop: Shop,
    database: Database,
    payments_url: str,
    with_mfa: Any,
) -> None:
    created = start(api, world.patient_a, shop.voucher, 6000).json()
    done = wait_for(
        lambda: checkout_of(api, world.patient_a, created["id"]),
        lambda c: c["order_id"] is not None,
    )
    order_id = done["order_id"]
    staff = with_mfa(world.finance_a)
    # a part of it cannot be refunded: there is no money, only the points
    part = refund(api, staff, order_id, {"reason_code": "customer_request", "amount_minor": 100})
    assert part.status_code == 422
    assert part.json()["code"] == "points_refund_whole"

    # when named staff with MFA refund it
    made = refund(api, staff, order_id, {"reason_code": "customer_request"})

    # then it is a points refund: no money, Integrated Payments not called, the order Refunded
    assert made.status_code == 201, made.text
    body = made.json()
    assert (body["kind"], body["amount_minor"], body["points"]) == ("points", 0, 6000)
    assert body["initiated_by_name"] == "Fin Ance"
    assert intents_at(payments_url, created["id"]) == []
    after = api.get(f"/v1/orders/{order_id}", headers=world.admin_a.headers).json()
    assert (after["status"], after["refund_status"]) == ("Refunded", "full")
    assert "refund.succeeded" in [e["action"] for e in after["audit_trail"]]
    # and Rewards Manager is asked, once, to reinstate all the points
    for _ in range(2):
        context.relay.run_once()
    (redemption,) = redemptions_at(rewards, created["id"])
    assert [r["points"] for r in reversals_at(rewards, redemption["redemption_ref"])] == [6000]
    again = refund(api, staff, order_id, {"reason_code": "customer_request"})
    assert again.status_code == 409
    assert again.json()["code"] == "nothing_to_refund"
    # without MFA nothing happens
    no_mfa = refund(api, world.finance_a.headers, order_id, {"reason_code": "customer_request"})
    assert no_mfa.status_code == 403


def _send_rewards(api: httpx.Client, event_id: str, event_type: str, data: Any) -> httpx.Response:
    body = json.dumps({"id": event_id, "type": event_type, "data": data}).encode()
    signed = sign(REWARDS_WEBHOOK_SECRET, event_id, int(time.time()), body).as_dict()
    return api.post(
        "/v1/webhooks/rewards", content=body, headers={**signed, "Content-Type": "application/json"}
    )


def _confirmation(redemption: dict[str, Any], **changes: Any) -> dict[str, Any]:
    return {
        "redemption_ref": redemption["redemption_ref"],
        "reference": redemption["reference"],
        "points": redemption["points"],
        "amount_minor": redemption["amount_minor"],
        "currency": redemption["currency"],
        "settlement_ref": "RM-SET-SHARED",
        **changes,
    }


def test_a_confirmation_of_the_wrong_types_or_a_reused_settlement_is_refused_not_a_500(
    api: httpx.Client, rewards: str, world: World, shop: Shop, database: Database
) -> None:
    """A number is a number (not `true`, not 100.99 cut to 100), a reference is never cut short
    (two long ones must not become one), and one settlement settles one redemption."""
    httpx.post(f"{rewards}/_simulator/config", json={"auto_confirm": False}).raise_for_status()
    first = start(api, world.patient_a, shop.voucher, 2000).json()
    second = start(api, world.patient_a, shop.voucher, 2000).json()
    (one,) = redemptions_at(rewards, first["id"])
    (two,) = redemptions_at(rewards, second["id"])

    for n, changes in enumerate(
        [
            {"points": True},
            {"points": one["points"] + 0.99},
            {"amount_minor": str(one["amount_minor"])},
            {"settlement_ref": "S" * 65},
            {"redemption_ref": one["redemption_ref"] + "\u0000"},
        ]
    ):
        refused = _send_rewards(
            api, f"evt_bad_{n}", "redemption.confirmed", _confirmation(one, **changes)
        )
        assert refused.status_code == 400, (changes, refused.text)
        assert refused.json()["code"] == "malformed_webhook"
    assert orders_of(database, first["id"]) == []

    accepted = _send_rewards(api, "evt_one", "redemption.confirmed", _confirmation(one))
    assert accepted.status_code == 200, accepted.text
    assert accepted.json()["status"] == "awaiting_payment"  # the rest is paid by card
    reused = _send_rewards(api, "evt_two", "redemption.confirmed", _confirmation(two))

    assert reused.status_code == 409, reused.text
    assert reused.json()["code"] == "settlement_ref_reused"
    assert orders_of(database, second["id"]) == []
    with Session(database.engine) as session:
        assert session.get(PointsRedemption, two["redemption_ref"]).status == "requested"  # type: ignore[union-attr]
    assert checkout_of(api, world.patient_a, second["id"])["status"] == "awaiting_redemption"


def test_a_reversal_rewards_manager_made_on_its_own_is_recorded_and_the_order_can_still_be_refunded(
    api: httpx.Client, rewards: str, world: World, shop: Shop, database: Database, with_mfa: Any
) -> None:
    """README: `redemption.reversed` is recorded only; we never act on one we did not ask for."""
    created = start(api, world.patient_a, shop.voucher, 6000).json()
    done = wait_for(
        lambda: checkout_of(api, world.patient_a, created["id"]),
        lambda c: c["order_id"] is not None,
    )
    (redemption,) = redemptions_at(rewards, created["id"])

    unasked = _send_rewards(
        api,
        "evt_unasked",
        "redemption.reversed",
        {"redemption_ref": redemption["redemption_ref"], "reversal_ref": "RV-1", "points": 6000},
    )

    assert unasked.status_code == 200, unasked.text
    assert unasked.json()["status"] == "recorded"
    assert "redemption.reversed" in checkout_audit(database, created["id"])
    with Session(database.engine) as session:
        assert session.get(PointsRedemption, redemption["redemption_ref"]).status == "confirmed"  # type: ignore[union-attr]
    made = refund(
        api, with_mfa(world.finance_a), done["order_id"], {"reason_code": "customer_request"}
    )
    assert made.status_code == 201, made.text
