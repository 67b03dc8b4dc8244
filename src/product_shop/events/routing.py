"""Who receives each outbound event, and why (spec §11.2, §12): the one routing table.

Every event type in `events.types` has at least one destination here, each with the spec
clause that asks for it. `docs/events.md` is this table rendered (`events_document`); a test
keeps the two the same. A deployment may re-route types (settings `event_routes`, read by
`Routing`). The relay gives each committed event one delivery per destination; a destination
whose sink is `off` keeps its deliveries queued, never dropped, until it has one.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum

from product_shop.events import types as ev


class Destination(StrEnum):
    """A receiver of events; the value is its key in settings, the database and the CLI."""

    COMMUNICATION_HUB = "communication_hub"
    FINANCE = "finance"
    FINANCIAL_INSIGHTS = "financial_insights"
    REWARDS_MANAGER = "rewards_manager"
    HYGIENE_SUBSCRIPTIONS = "hygiene_subscriptions"
    INTEGRATED_PAYMENTS = "integrated_payments"
    SUPPLIER_NETWORK = "supplier_network"
    MODULE_OWNERS = "module_owners"
    AUDIT_COMPLIANCE = "audit_compliance"

    @property
    def label(self) -> str:
        return _LABELS[self]


_LABELS = {
    Destination.COMMUNICATION_HUB: "Communication Hub",
    Destination.FINANCE: "Finance",
    Destination.FINANCIAL_INSIGHTS: "Financial Insights",
    Destination.REWARDS_MANAGER: "Rewards Manager",
    Destination.HYGIENE_SUBSCRIPTIONS: "Hygiene Subscriptions",
    Destination.INTEGRATED_PAYMENTS: "Integrated Payments",
    Destination.SUPPLIER_NETWORK: "Primoro supplier network",
    Destination.MODULE_OWNERS: "Module owners",
    Destination.AUDIT_COMPLIANCE: "Audit & Compliance",
}
# Destinations reached through another module's own API (a port and its adapter), not an event
# feed: their sinks are built from the port, not from `event_sinks` settings.
PORT_DESTINATIONS = frozenset(
    {Destination.INTEGRATED_PAYMENTS, Destination.SUPPLIER_NETWORK, Destination.REWARDS_MANAGER}
)
FEED_DESTINATIONS = tuple(d for d in Destination if d not in PORT_DESTINATIONS)
# Sent by the audit feed (`jobs/audit_feed.py`) from the audit log itself, not by the relay.
AUDIT_FEED = Destination.AUDIT_COMPLIANCE


@dataclass(frozen=True, slots=True)
class Route:
    event_type: ev.EventType
    destination: Destination
    why: str  # the spec clause


_CH, _FIN, _FI, _RM, _HS, _IP, _SN, _MO, _AC = (
    Destination.COMMUNICATION_HUB,
    Destination.FINANCE,
    Destination.FINANCIAL_INSIGHTS,
    Destination.REWARDS_MANAGER,
    Destination.HYGIENE_SUBSCRIPTIONS,
    Destination.INTEGRATED_PAYMENTS,
    Destination.SUPPLIER_NETWORK,
    Destination.MODULE_OWNERS,
    Destination.AUDIT_COMPLIANCE,
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
        ev.AUDIT_ENTRIES,
        _AC,
        "§8, §15.2 rule 4 the audit log itself, every entry in log order (the audit feed)",
    ),
    Route(
        ev.ORDER_CANCELLATION_REQUESTED,
        _CH,
        "§16 Privacy (right to cancel), §15.2 rule 12 cancellation, a staff task",
    ),
)


def destinations_of(event_type: ev.EventType) -> list[Destination]:
    return [route.destination for route in ROUTES if route.event_type == event_type]


class RoutingError(ValueError):
    """A routing override names an event type or a destination that does not exist."""


class Routing:
    """Which destinations each event type goes to: the spec's table (`ROUTES`), with the types
    a deployment re-routes (settings `event_routes`: event type, with or without the
    `com.primoro.productshop.` prefix, to the destination keys that replace its receivers;
    an empty list stops routing that type)."""

    def __init__(
        self, routes: Iterable[Route] = ROUTES, overrides: Mapping[str, Sequence[str]] | None = None
    ) -> None:
        table: dict[str, list[Destination]] = {t.name: [] for t in ev.ALL_EVENT_TYPES}
        for route in routes:
            table[route.event_type.name].append(route.destination)
        for name, keys in (overrides or {}).items():
            full = name if name.startswith(ev.PREFIX) else ev.PREFIX + name
            if full not in table:
                raise RoutingError(f"event_routes names an unknown event type: {name}")
            try:
                table[full] = [Destination(key) for key in keys]
            except ValueError as exc:
                raise RoutingError(
                    f"event_routes for {name} names an unknown destination; known: "
                    + ", ".join(d.value for d in Destination)
                ) from exc
        self._table = {name: tuple(dict.fromkeys(found)) for name, found in table.items()}

    def destinations(self, event_type: str) -> tuple[Destination, ...]:
        return self._table.get(event_type, ())

    def event_types(self, destination: Destination) -> list[str]:
        return [name for name, found in self._table.items() if destination in found]


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
        "named, under `src/product_shop/events/schemas/`. Each receiver gets its own delivery,",
        "in order per aggregate, at least once (deduplicate by the CloudEvents `id`, which is",
        "also the `webhook-id` and the JetStream `Nats-Msg-Id`). How receivers are reached",
        "(webhook, JetStream, another module's API) is in `docs/architecture.md`. Audit &",
        "Compliance receives the audit log itself: `audit.entries.v1`, runs of entries in log",
        "order with their hashes, sent by the audit feed rather than through the outbox.",
        "",
        "| event type | aggregate | schema | receiver | why (spec) |",
        "|---|---|---|---|---|",
    ]
    for event_type in ev.ALL_EVENT_TYPES:
        for route in by_type.get(event_type.name, []):
            short = event_type.name.removeprefix("com.primoro.productshop.")
            lines.append(
                f"| `{short}` | {event_type.aggregate_type} | `{event_type.schema_file}` | "
                f"{route.destination.label} | {route.why} |"
            )
    return "\n".join(lines) + "\n"
