"""Who receives each outbound event, and why (spec §11.2, §12): the one routing table.

Every event type in `events.types` has at least one destination here, each with the spec
clause that asks for it. `docs/events.md` is this table rendered (`events_document`); a test
keeps the two the same. The relay delivers the types whose destination has a sink today
(`context.py`: Integrated Payments, the supplier network, Rewards Manager); the others wait in the
outbox, queued and never dropped, until the events issue gives their destinations sinks.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum

from product_shop.events import types as ev


class Destination(StrEnum):
    COMMUNICATION_HUB = "Communication Hub"
    FINANCE = "Finance"
    FINANCIAL_INSIGHTS = "Financial Insights"
    REWARDS_MANAGER = "Rewards Manager"
    HYGIENE_SUBSCRIPTIONS = "Hygiene Subscriptions"
    INTEGRATED_PAYMENTS = "Integrated Payments"
    SUPPLIER_NETWORK = "Primoro supplier network"
    MODULE_OWNERS = "Module owners"


@dataclass(frozen=True, slots=True)
class Route:
    event_type: ev.EventType
    destination: Destination
    why: str  # the spec clause


_CH, _FIN, _FI, _RM, _HS, _IP, _SN, _MO = (
    Destination.COMMUNICATION_HUB,
    Destination.FINANCE,
    Destination.FINANCIAL_INSIGHTS,
    Destination.REWARDS_MANAGER,
    Destination.HYGIENE_SUBSCRIPTIONS,
    Destination.INTEGRATED_PAYMENTS,
    Destination.SUPPLIER_NETWORK,
    Destination.MODULE_OWNERS,
)

ROUTES: tuple[Route, ...] = (
    Route(ev.PRODUCT_CREATED, _HS, "§3.1 catalogue changes reach subscription plans"),
    Route(ev.PRODUCT_UPDATED, _HS, "§3.1 price changes propagate to every surface at once"),
    Route(ev.PRODUCT_AVAILABILITY_CHANGED, _HS, "§3.1 availability changes propagate at once"),
    Route(ev.PRODUCT_DEPRECATED, _HS, "§3.1 deprecation checks active plans"),
    Route(ev.PRODUCT_DEPRECATED, _MO, "§3.1 deprecation notifies module owners"),
    Route(
        ev.PRACTICE_PRODUCT_SETTINGS_CHANGED,
        _HS,
        "§3.1, §15.3 a practice's retail price and visibility reach its plans",
    ),
    Route(ev.ORDER_CREATED, _CH, "§11.2, §15.2 rule 12 order confirmation"),
    Route(ev.PAYMENT_RECEIPT, _CH, "§11.2, §15.2 rule 12 payment receipt"),
    Route(ev.REVENUE_SALE, _FI, "§11.2, §15.2 rule 15 revenue event for every confirmed order"),
    Route(ev.FINANCE_ORDER_RECORDED, _FIN, "§11.2 order-level data for reconciliation"),
    Route(ev.PAYMENT_ORDER_REFERENCE, _IP, "§5.2 the commerce order reference on the payment"),
    Route(ev.CHECKOUT_PAYMENT_FAILED, _CH, "§5.3 surface payment exceptions"),
    Route(ev.CHECKOUT_CANCELLED, _IP, "§5.2 a stopped checkout's payment intent is cancelled"),
    Route(ev.CHECKOUT_CANCELLED, _CH, "§5.2 the patient is told the checkout stopped"),
    Route(ev.PAYMENT_ORPHANED_CAPTURE, _CH, "§5.3 surface payment exceptions for a staff refund"),
    Route(ev.SHIPMENT_REQUESTED, _SN, "§6.1 drop-ship fulfilment by the supplier network"),
    Route(
        ev.FULFILMENT_STAGE_CHANGED,
        _CH,
        "§11.2, §15.2 rule 12 shipment, pickup ready, delivered, delivery exception",
    ),
    Route(ev.STAFF_TASK, _CH, "§2.1, §6.2 tasks for the practice's staff"),
    Route(ev.REFUND_ISSUED, _CH, "§11.2, §15.2 rule 12 refund notice"),
    Route(ev.REVENUE_REFUND, _FI, "§15.2 rule 15 revenue event for every processed refund"),
    Route(ev.FINANCE_REFUND_RECORDED, _FIN, "§11.2 order-level refund data"),
    Route(
        ev.REDEMPTION_REVERSAL_REQUESTED,
        _RM,
        "§5.4, §11.2, §15.2 rules 13-14 reinstate redeemed points",
    ),
    Route(ev.PAYMENT_EXCEPTION_REFUNDED, _CH, "§5.3 the patient is told the payment was refunded"),
    Route(ev.PAYMENT_EXCEPTION_REFUNDED, _FIN, "§11.2 refund data for reconciliation"),
    Route(
        ev.SHIPMENT_CANCELLATION_REQUESTED,
        _SN,
        "§5.3, §6.1 a refunded line's shipment is stopped before dispatch",
    ),
    Route(
        ev.ORDER_CANCELLATION_REQUESTED,
        _CH,
        "§16 Privacy (right to cancel), §15.2 rule 12 cancellation, a staff task",
    ),
)


def destinations_of(event_type: ev.EventType) -> list[Destination]:
    return [route.destination for route in ROUTES if route.event_type == event_type]


def events_document(routes: Iterable[Route] = ROUTES) -> str:
    """`docs/events.md`: every event type, its schema, who receives it and why."""
    by_type: dict[str, list[Route]] = {}
    for route in routes:
        by_type.setdefault(route.event_type.name, []).append(route)
    lines = [
        "# Events: what Product Shop emits, who receives it, and why",
        "",
        "Generated from `src/product_shop/events/routing.py` (`events_document`); a test keeps",
        "this file and the routing table the same. Every event is a CloudEvents 1.0 structured",
        "document (`type` below with the `com.primoro.productshop.` prefix, `source`",
        "`/primoro/product-shop`, `subject` the aggregate id); its `data` follows the JSON Schema",
        "named, under `src/product_shop/events/schemas/`. Audit & Compliance receives the audit",
        "log itself (every entry, hash-chained per stream), not these events.",
        "",
        "| event type | aggregate | schema | receiver | why (spec) |",
        "|---|---|---|---|---|",
    ]
    for event_type in ev.ALL_EVENT_TYPES:
        for route in by_type.get(event_type.name, []):
            short = event_type.name.removeprefix("com.primoro.productshop.")
            lines.append(
                f"| `{short}` | {event_type.aggregate_type} | `{event_type.schema_file}` | "
                f"{route.destination.value} | {route.why} |"
            )
    return "\n".join(lines) + "\n"
