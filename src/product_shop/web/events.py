"""Event delivery for Primoro's operations team: how each destination's backlog stands, and
parked deliveries queued again (the same as `product-shop events status|redeliver`)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Depends
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from product_shop.access.actor import Actor
from product_shop.access.policy import Action
from product_shop.core.moments import Timestamp
from product_shop.events.routing import Destination
from product_shop.events.status import delivery_status
from product_shop.web.deps import ContextDep, permitted
from product_shop.web.problems import problem_responses

router = APIRouter(prefix="/v1", tags=["events"])

Operator = Annotated[Actor, Depends(permitted(Action.MANAGE_EVENT_DELIVERY))]


class DestinationStatusOut(BaseModel):
    destination: Destination
    label: str
    sink: str = Field(description="api, webhook, nats, or off (its deliveries wait)")
    pending: int = Field(description="Deliveries not made yet (due or waiting to retry)")
    oldest_pending_at: datetime | None
    oldest_pending_age_seconds: float | None
    parked: int = Field(description="Deliveries given up on; queue them again with redeliver")


class DeliveryStatusOut(BaseModel):
    unrouted: int = Field(description="Committed events not yet given their deliveries")
    oldest_unrouted_at: datetime | None
    destinations: list[DestinationStatusOut]


class RedeliverIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    destination: Destination | None = Field(default=None, description="Only this destination")
    since: Timestamp | None = Field(
        default=None, description="Only events that occurred at or after this time"
    )


class RedeliverOut(BaseModel):
    queued: int


@router.get(
    "/event-deliveries",
    operation_id="getEventDeliveryStatus",
    response_model=DeliveryStatusOut,
    summary="Backlog, oldest undelivered age and parked count per destination (operations)",
    responses=problem_responses(401, 403, 422),
)
def event_delivery_status(context: ContextDep, actor: Operator) -> DeliveryStatusOut:
    with context.database.reading() as session:
        status = delivery_status(session, context.clock.now(), context.feeds.kinds)
    return DeliveryStatusOut(
        unrouted=status.unrouted,
        oldest_unrouted_at=status.oldest_unrouted_at,
        destinations=[DestinationStatusOut(**d.as_dict()) for d in status.destinations],
    )


@router.post(
    "/event-deliveries/redeliver",
    operation_id="redeliverParkedEvents",
    response_model=RedeliverOut,
    summary="Queue parked deliveries again (operations)",
    description=(
        "Parked deliveries (of one destination, of events since a time, or all) are queued "
        "again with a fresh retry horizon; the relay sends them in order per aggregate. "
        "Repeating the call queues nothing more."
    ),
    responses=problem_responses(400, 401, 403, 422),
)
async def redeliver_parked(body: RedeliverIn, context: ContextDep, actor: Operator) -> RedeliverOut:
    queued = await run_in_threadpool(
        context.relay.redeliver,
        destination=body.destination.value if body.destination else None,
        since=body.since,
    )
    return RedeliverOut(queued=queued)
