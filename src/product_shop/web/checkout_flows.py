"""How a request runs the checkout use cases that call Integrated Payments.

The request owns its units of work (docs/architecture.md, "Who owns a transaction"): each
database step of a use case runs in a unit of work opened here, and no transaction is open while
Integrated Payments is called between them; a step that writes runs in `Database.run`, which
runs it again after a deadlock or serialization failure. The use cases themselves
(`checkout.service`, `checkout.complete`) only add rows to the session they are given.
"""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from product_shop.access.actor import Actor
from product_shop.checkout.complete import PAYMENTS_ACTOR, Pending
from product_shop.checkout.outcomes import Outcome, Result, answer
from product_shop.checkout.redemption_messages import parse_confirmation
from product_shop.checkout.schemas import CheckoutIn, CheckoutOut
from product_shop.checkout.service import NewCheckout
from product_shop.context import AppContext
from product_shop.core.errors import Conflict, Unprocessable
from product_shop.core.timing import timed
from product_shop.db.engine import is_retryable
from product_shop.idempotency.store import Claim
from product_shop.integrations.rewards import RewardsRejected
from product_shop.orders.queries import patient_view
from product_shop.orders.schemas import PatientOrderOut
from product_shop.web.idempotency import stored_with_answer


class CheckoutStart:
    """Starting a checkout (`POST /v1/checkouts`), in the steps `web.idempotency.run_idempotent`
    runs: `price` in the unit of work that claims the Idempotency-Key (the catalogue's prices
    and availability now), then `create`: the payment intent opened at Integrated Payments (no
    transaction open), and the checkout stored with the idempotent response (unit of work)."""

    def __init__(self, context: AppContext, actor: Actor, body: CheckoutIn) -> None:
        self._context = context
        self._actor = actor
        self._body = body
        self._new: NewCheckout | None = None

    def price(self, session: Session) -> None:
        self._new = self._context.checkout.price(session, self._actor, self._body)

    def create(self, claim: Claim) -> tuple[CheckoutOut, str]:
        context, actor, new = self._context, self._actor, self._new
        assert new is not None, "priced first, in the claim's unit of work"
        location = f"/v1/checkouts/{new.checkout_id}"
        if self._body.redeem_points is not None:
            view = _create_with_points(context, actor, new, self._body.redeem_points, claim)
            return view, location
        intent = context.checkout.open_intent(new)
        view = stored_with_answer(
            context,
            claim,
            location,
            lambda session: context.checkout.record_new(session, actor, new, intent),
        )
        return view, location


def _create_with_points(
    context: AppContext, actor: Actor, new: NewCheckout, points: int, claim: Claim
) -> CheckoutOut:
    """A checkout that redeems points (spec §5.4): the points' value at the practice (Rewards
    Manager); the checkout stored `awaiting_redemption`, no payment intent (unit of work); the
    redemption asked of Rewards Manager; what it said, with the idempotent response (unit of
    work). Rewards Manager's signed confirmation then opens the payment for the rest, or makes
    the order when the points cover it all."""
    redemptions = context.redemptions
    planned = redemptions.plan(new, points)
    location = f"/v1/checkouts/{new.checkout_id}"

    def stored(session: Session) -> None:
        # The key answers with this checkout from the moment it exists: a replay never starts a
        # second checkout (or a second redemption), whatever happens after.
        view = context.checkout.record_new(
            session, actor, new, None, points=(planned.points, planned.amount_minor)
        )
        context.idempotency.complete(session, claim, 201, view.model_dump(mode="json"), location)

    context.database.run(stored)
    try:
        redemption = redemptions.request(new, planned)
    except RewardsRejected as exc:
        refusal = exc

        def refused(session: Session) -> None:
            redemptions.refused(session, new.checkout_id, refusal)
            context.idempotency.release(session, claim, answered=True)

        context.database.run(refused)
        raise Unprocessable(
            f"Rewards Manager refused the redemption: {exc.message}", code=exc.code
        ) from exc

    def record(session: Session) -> CheckoutOut:
        redemptions.record_requested(session, actor, new.checkout_id, planned, redemption)
        session.flush()
        view = context.checkout.get(session, actor, new.checkout_id)
        context.idempotency.complete(session, claim, 201, view.model_dump(mode="json"), location)
        return view

    return context.database.run(record)


def rewards_callback(
    context: AppContext, message_id: str, event_type: str, data: dict[str, Any]
) -> str:
    """Process an authentic Rewards Manager callback once; what happened, for the
    acknowledgement. A confirmation that leaves the rest to pay opens the payment intent
    (Integrated Payments, nothing open) and stores it; if that fails, the callback is answered
    503 and not recorded as seen, so Rewards Manager sends it again."""
    redemptions = context.redemptions
    if event_type == "redemption.reversed":
        return context.database.run(lambda session: redemptions.reversed(session, message_id, data))
    if event_type != "redemption.confirmed":
        return "ignored"
    confirmation = parse_confirmation(data)
    step = context.database.run(
        lambda session: redemptions.confirmed(session, message_id, confirmation)
    )
    if isinstance(step, str):
        return step
    intent = context.checkout.open_intent_for(
        step.checkout_id, step.amount_minor, step.currency, step.return_url
    )
    return context.database.run(
        lambda session: redemptions.intent_opened(
            session, message_id, step.checkout_id, intent.intent_id, intent.payment_url
        )
    )


def get_checkout(context: AppContext, actor: Actor, checkout_id: uuid.UUID) -> CheckoutOut:
    with context.database.reading() as session:
        return context.checkout.get(session, actor, checkout_id)


def retry_checkout(context: AppContext, actor: Actor, checkout_id: uuid.UUID) -> CheckoutOut:
    """Read (unit of work 1), close the previous payment page and open a new one (Integrated
    Payments), store the new intent (unit of work 2); close the new one if it went unused."""
    service = context.checkout
    with context.database.unit_of_work() as session:
        retry = service.prepare_retry(session, actor, checkout_id)
    if isinstance(retry, CheckoutOut):
        return retry
    service.close_previous(retry)
    intent = service.open_retry_intent(retry)
    view, stored = context.database.run(
        lambda session: service.record_retry(session, actor, retry, intent)
    )
    if not stored:
        service.close_unused(intent)
    return view


def complete_for_patient(
    context: AppContext, actor: Actor, checkout_id: uuid.UUID
) -> PatientOrderOut:
    """The patient's order (their view of it) once the capture is confirmed."""
    outcome = _complete(context, checkout_id, actor, owner=actor)
    return patient_view(answer(outcome), context.orders.reveal)


def payment_callback(
    context: AppContext, message_id: str, intent_id: str, merchant_reference: str
) -> str:
    """Process an authentic payments callback once; what happened, for the acknowledgement.
    The callback only says which intent to look at: its status is read through the sync API."""
    try:
        checkout_id = uuid.UUID(merchant_reference)
    except ValueError:
        return "ignored"
    with context.database.unit_of_work() as session:
        settled = context.completion.webhook_seen(session, message_id, checkout_id)
    if settled is not None:
        return settled
    try:
        outcome = _complete(
            context, checkout_id, PAYMENTS_ACTOR, message=message_id, intent_id=intent_id
        )
    except Conflict:
        return Result.NOT_CAPTURED.value
    return outcome.result.value


def _complete(
    context: AppContext,
    checkout_id: uuid.UUID,
    actor: Actor,
    *,
    owner: Actor | None = None,
    message: str | None = None,
    intent_id: str | None = None,
) -> Outcome:
    database, completion = context.database, context.completion
    # A read with no transaction (PostgreSQL: one round trip), unless a webhook's message id
    # may be recorded on the way.
    first = database.reading() if message is None else database.unit_of_work()
    with first as session:
        step = completion.begin(
            session, checkout_id, owner=owner, intent_id=intent_id, message=message
        )
    if isinstance(step, Outcome):
        return step
    status = completion.confirm(step)

    def record(session: Session, pending: Pending = step) -> Outcome:
        return completion.record(session, pending, status, actor, message)

    with timed("order-create"):
        # Concurrent completions race on the checkout (PostgreSQL: its row lock; SQLite: the
        # single writer, or the unique order per checkout): the loser runs again and finds the
        # winner's order.
        outcome = database.run(record, retry_if=_lost_race)
    completion.after_commit(outcome)
    return outcome


def _lost_race(error: BaseException) -> bool:
    return isinstance(error, IntegrityError) or is_retryable(error)
